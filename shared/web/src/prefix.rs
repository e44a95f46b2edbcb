//! The path prefix a module's browser routes live under (`/sso/`,
//! `/auth/sso/`): one per module, never overlapping another's.

/// Why a prefix cannot be a module's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `/seg/…/` of lowercase letters, digits, `-` and `_`.
    #[error("browser prefix {0:?} must be /segment/…/ (lowercase letters, digits, - and _), not /")]
    Form(String),
    /// Its first segment is the HTTP/JSON surface's (`/v1/…`).
    #[error("browser prefix {0:?} would take over the HTTP/JSON routes' /v<N>/ paths")]
    Reserved(String),
}

/// Checks a prefix: `/` + one or more segments each followed by `/`,
/// each segment of `[a-z0-9_-]` (so no template syntax, dots — gRPC paths
/// are `/package.Service/` — or encoded bytes), and not the versioned
/// HTTP/JSON paths or `/openapi.json`.
pub fn check_prefix(prefix: &str) -> Result<(), PrefixError> {
    let form = || PrefixError::Form(prefix.to_string());
    let inner = prefix
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
        .ok_or_else(form)?;
    if inner.is_empty() {
        return Err(form());
    }
    for segment in inner.split('/') {
        if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(form());
        }
    }
    let first = inner.split('/').next().unwrap_or_default();
    if first
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(PrefixError::Reserved(prefix.to_string()));
    }
    Ok(())
}

/// Whether two (checked) prefixes share any path: one contains the other.
pub fn overlaps(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_prefixes() {
        for p in ["/sso/", "/auth/sso/", "/oauth-connectors/", "/a_b/c1/"] {
            assert_eq!(check_prefix(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn bad_prefixes() {
        for p in [
            "/",
            "",
            "sso/",
            "/sso",
            "//",
            "/sso//",
            "/SSO/",
            "/{x}/",
            "/*/",
            "/a.b/",
            "/twig.sessions.v1.SessionService/",
            "/s%20/",
            "/s s/",
        ] {
            assert!(matches!(check_prefix(p), Err(PrefixError::Form(_))), "{p}");
        }
        for p in ["/v1/", "/v2/sso/"] {
            assert!(
                matches!(check_prefix(p), Err(PrefixError::Reserved(_))),
                "{p}"
            );
        }
        assert_eq!(check_prefix("/v/"), Ok(()));
        assert_eq!(check_prefix("/v1x/"), Ok(()));
    }

    #[test]
    fn overlap_is_containment_by_whole_segments() {
        assert!(overlaps("/sso/", "/sso/"));
        assert!(overlaps("/auth/", "/auth/sso/"));
        assert!(overlaps("/auth/sso/", "/auth/"));
        assert!(!overlaps("/sso/", "/sso2/"));
        assert!(!overlaps("/auth/sso/", "/auth/oauth/"));
    }
}
