//! The one reader of presented credentials: the auth layer's
//! `authorization` header and `Authorize`'s `credential` field both go
//! through it. Exact bytes: nothing is trimmed, folded or guessed, so a
//! credential with a trailing newline, a space, a tab or any Unicode
//! space is refused here as it is by `VerifyApiKey` and `VerifySession`.
//!
//! The syntax is RFC 6750's `b64token`; whether the token is one of ours
//! (prefix, length, checksum) is decided by the service that checks it.

use http::HeaderMap;
use twig_errors::ApiError;

/// The credential passed as a value (not a header): exactly the token.
pub fn credential(text: &str) -> Result<&str, ApiError> {
    if text.is_empty() {
        return Err(ApiError::unauthenticated("no credential was presented"));
    }
    if !is_b64token(text) {
        let hint = if scheme_and_token(text).is_some() {
            "pass the token alone, without the `Bearer ` scheme"
        } else {
            "a credential is one token: no spaces, line breaks or other characters around it"
        };
        return Err(ApiError::unauthenticated(format!(
            "the credential is malformed: {hint}"
        )));
    }
    Ok(text)
}

/// The token of the request's `authorization` header: `None` without
/// one; refused when the header is repeated, is not `Bearer <token>`
/// (the scheme in any case, one space, the token and nothing else), or
/// the token is malformed.
pub fn from_headers(headers: &HeaderMap) -> Option<Result<&str, ApiError>> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return Some(Err(ApiError::unauthenticated(
            "more than one authorization header; send exactly one",
        )));
    }
    let malformed = || {
        ApiError::unauthenticated(
            "the authorization header must be exactly `Bearer <token>`: one space, no other characters",
        )
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(scheme_and_token)
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && is_b64token(token))
        .map(|(_, token)| token)
        .ok_or_else(malformed);
    Some(parsed)
}

/// `<scheme> <rest>` split at the first space.
fn scheme_and_token(value: &str) -> Option<(&str, &str)> {
    value.split_once(' ')
}

/// RFC 6750: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "twig_sk_0123456789abcdefghijABCDEFGHIJ0123456789abcXYZ123";

    /// What clients have sent around a real token; each is refused.
    const DECORATIONS: [(&str, &str); 12] = [
        ("", "\n"),
        ("", "\r\n"),
        ("", " "),
        (" ", ""),
        ("", "\t"),
        ("", "\u{a0}"),
        ("", "\u{3000}"),
        ("", "\u{2028}"),
        ("\u{feff}", ""),
        ("", "\u{200b}"),
        ("", "\0"),
        ("Bearer ", ""),
    ];

    #[test]
    fn a_credential_is_the_token_exactly() {
        assert_eq!(credential(KEY).unwrap(), KEY);
        for (before, after) in DECORATIONS {
            let text = format!("{before}{KEY}{after}");
            assert!(credential(&text).is_err(), "{text:?} was accepted");
        }
        assert!(credential("").is_err());
        assert!(credential("==").is_err());
    }

    #[test]
    fn the_bearer_prefix_is_refused_with_a_hint() {
        let err = credential(&format!("Bearer {KEY}")).unwrap_err();
        assert!(format!("{err:?}").contains("without the `Bearer ` scheme"));
    }

    fn header(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("authorization", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_header_is_bearer_one_space_and_the_token() {
        assert!(from_headers(&HeaderMap::new()).is_none());
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let h = header(&[&format!("{scheme} {KEY}")]);
            assert_eq!(from_headers(&h).unwrap().unwrap(), KEY);
        }
        for bad in [
            format!("Bearer  {KEY}"),
            format!("Bearer {KEY} "),
            format!("Bearer\t{KEY}"),
            format!("Bearer {KEY}\t"),
            format!("Basic {KEY}"),
            format!("Bearer {KEY} {KEY}"),
            "Bearer ".to_string(),
            "Bearer".to_string(),
            KEY.to_string(),
        ] {
            let h = header(&[&bad]);
            assert!(from_headers(&h).unwrap().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn non_ascii_header_values_are_refused() {
        let mut h = HeaderMap::new();
        let value =
            http::HeaderValue::from_bytes(format!("Bearer {KEY}\u{a0}").as_bytes()).unwrap();
        h.insert("authorization", value);
        assert!(from_headers(&h).unwrap().is_err());
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let h = header(&[&format!("Bearer {KEY}"), "Bearer other"]);
        let err = from_headers(&h).unwrap().unwrap_err();
        assert!(format!("{err:?}").contains("more than one authorization header"));
        let same = header(&[&format!("Bearer {KEY}"), &format!("Bearer {KEY}")]);
        assert!(from_headers(&same).unwrap().is_err());
    }
}
