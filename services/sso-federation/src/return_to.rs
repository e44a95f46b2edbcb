//! Where a browser may be sent back after signing in: an exact allowlist
//! (`sso_federation.return_urls`).
//!
//! A return URL is accepted only when, parsed as a browser parses it, it
//! is `http(s)` with exactly the scheme, host and port of an allowed
//! entry and a path equal to the entry's (or under it, for an entry
//! ending in `/`), with no user name, password or fragment, and no path
//! a front end might read otherwise (an empty segment, an encoded slash,
//! backslash or dot). Before
//! parsing, anything a browser might read differently from us is refused
//! outright: backslashes, whitespace and controls, and URLs that do not
//! start with `https://` or `http://` (`//evil`, `https:evil`,
//! `javascript:`). The URL redirected to is the parsed one, so what was
//! checked is what the browser gets.

use url::Url;

/// The longest return URL.
pub const MAX_LEN: usize = 2048;

/// The allowed return URLs.
#[derive(Debug, Clone)]
pub struct ReturnUrls {
    allowed: Vec<Url>,
}

/// Why a return URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReturnRefusal {
    /// No return URL is configured, and none was given.
    #[error("no return URL is configured (sso_federation.return_urls)")]
    NoneConfigured,
    /// It is not one of the allowed ones.
    #[error("the return URL is not one of the allowed ones (sso_federation.return_urls)")]
    NotAllowed,
}

/// Checks one entry of the allowlist (at start).
pub fn check_entry(raw: &str) -> Result<Url, String> {
    let url = strict_parse(raw).ok_or_else(|| {
        format!("{raw:?} must be an absolute http(s) URL without spaces or backslashes")
    })?;
    if url.fragment().is_some() || url.query().is_some() {
        return Err(format!("{raw:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// `raw` parsed, if nothing about it is ambiguous.
fn strict_parse(raw: &str) -> Option<Url> {
    if raw.len() > MAX_LEN
        || raw
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    Some(url)
}

impl ReturnUrls {
    /// The allowlist (entries already checked with [`check_entry`]).
    pub fn new(allowed: Vec<Url>) -> Self {
        Self { allowed }
    }

    /// From the configured entries; the problems, if any.
    pub fn from_config(entries: &[String]) -> Result<Self, Vec<String>> {
        let mut allowed = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            match check_entry(entry) {
                Ok(url) => allowed.push(url),
                Err(problem) => problems.push(format!("return_urls: {problem}")),
            }
        }
        if problems.is_empty() {
            Ok(Self::new(allowed))
        } else {
            Err(problems)
        }
    }

    /// The URL to send the browser to: `raw` if allowed, the first entry
    /// when `raw` is empty.
    pub fn check(&self, raw: &str) -> Result<Url, ReturnRefusal> {
        if raw.is_empty() {
            return self
                .allowed
                .first()
                .cloned()
                .ok_or(ReturnRefusal::NoneConfigured);
        }
        let url = strict_parse(raw).ok_or(ReturnRefusal::NotAllowed)?;
        if url.fragment().is_some() {
            return Err(ReturnRefusal::NotAllowed);
        }
        // A path a front end or proxy might read as another path or host:
        // an empty segment (`//evil`), or an encoded slash, backslash or
        // dot (`..%2f`).
        let path = url.path().to_ascii_lowercase();
        if path.contains("//") || ["%2f", "%5c", "%2e"].iter().any(|e| path.contains(e)) {
            return Err(ReturnRefusal::NotAllowed);
        }
        let allowed = self.allowed.iter().any(|entry| {
            entry.scheme() == url.scheme()
                && entry.host() == url.host()
                && entry.port_or_known_default() == url.port_or_known_default()
                && (entry.path() == url.path()
                    || (entry.path().ends_with('/') && url.path().starts_with(entry.path())))
        });
        if allowed {
            Ok(url)
        } else {
            Err(ReturnRefusal::NotAllowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> ReturnUrls {
        ReturnUrls::from_config(&[
            "https://app.example.com/".into(),
            "https://admin.example.com/done".into(),
        ])
        .unwrap()
    }

    #[test]
    fn allowed_urls_pass_as_parsed() {
        let r = urls();
        for good in [
            "https://app.example.com/",
            "https://app.example.com/projects/7?tab=keys",
            "HTTPS://APP.example.com/x",
            "https://app.example.com:443/x",
            "https://admin.example.com/done",
        ] {
            assert!(r.check(good).is_ok(), "{good:?}");
        }
        assert_eq!(r.check("").unwrap().as_str(), "https://app.example.com/");
        // Dot segments are resolved before the check, as a browser would.
        assert_eq!(
            r.check("https://admin.example.com/x/../done")
                .unwrap()
                .as_str(),
            "https://admin.example.com/done"
        );
    }

    #[test]
    fn everything_else_is_refused() {
        let r = urls();
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https:evil.example",
            "https:/evil.example",
            "https:\\\\evil.example",
            "javascript:alert(1)",
            "data:text/html,x",
            "http://app.example.com/",
            "https://app.example.com.evil.example/",
            "https://evil.example/https://app.example.com/",
            "https://app.example.com@evil.example/",
            "https://evil.example#@app.example.com/",
            "https://user:pw@app.example.com/",
            "https://app.example.com\\@evil.example/",
            "https://app.example.com:8443/",
            "https://admin.example.com/done/more",
            "https://admin.example.com/donex",
            "https://admin.example.com/",
            "https://app.example.com/#frag",
            " https://app.example.com/",
            "https://app.example.com/\u{0}",
            "https://app.example.com/\nx",
            "https://xn--pp-ula.example.com/",
            "https://app.example.com/..%2f..%2fauth/",
            "https://app.example.com//evil.example",
            "https://app.example.com/%2F%2Fevil.example",
            "https://app.example.com/x%5c..",
        ] {
            assert_eq!(r.check(bad), Err(ReturnRefusal::NotAllowed), "{bad:?}");
        }
        assert!(
            r.check(&format!("https://app.example.com/{}", "a".repeat(3000)))
                .is_err()
        );
        assert_eq!(
            ReturnUrls::new(Vec::new()).check(""),
            Err(ReturnRefusal::NoneConfigured)
        );
    }

    #[test]
    fn entries_are_checked() {
        assert!(ReturnUrls::from_config(&["//app.example.com/".into()]).is_err());
        assert!(ReturnUrls::from_config(&["https://app.example.com/?a".into()]).is_err());
        assert!(ReturnUrls::from_config(&["ftp://app.example.com/".into()]).is_err());
    }
}
