//! Session and state cookies: one way to write them and one way to read
//! them.
//!
//! Every cookie written here is `HttpOnly; Secure` with an explicit
//! `SameSite` and `Path`. A cookie for the whole site is `__Host-`
//! (`Path=/`, no `Domain`: only this host can set or read it); one scoped
//! to a module's prefix is `__Secure-` with `Path=<prefix>`. Values are
//! checked against RFC 6265's cookie-octets, so a value can never end the
//! attribute list (`;`), start another cookie (`,`) or carry spaces,
//! quotes or controls.
//!
//! Reading takes the cookie's full name and refuses a request carrying it
//! more than once: a sibling subdomain or a path-scoped cookie can plant a
//! second cookie of the same name, and which one a server reads first is
//! not something to rely on.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};

/// The `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (GET), not on their
    /// POSTs or subrequests: the usual choice for a session.
    Lax,
    /// Never sent from another site.
    Strict,
    /// Sent everywhere (needed for a cross-site POST back, e.g. SAML's
    /// POST binding); always with `Secure`.
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            Self::Lax => "Lax",
            Self::Strict => "Strict",
            Self::None => "None",
        }
    }
}

/// A cookie this service writes and reads: its full name, path and
/// `SameSite`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    name: String,
    path: String,
    same_site: SameSite,
}

/// Why a cookie could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// The request carries the cookie more than once.
    #[error("the {0} cookie was sent more than once")]
    Duplicate(String),
    /// A `Cookie` header is not text.
    #[error("a Cookie header is not readable text")]
    Malformed,
    /// The value has a byte outside RFC 6265's cookie-octets (`;`, `,`,
    /// space, `"`, `\`, controls, non-ASCII).
    #[error("the {0} cookie's value has a character a cookie cannot carry")]
    BadValue(String),
    /// The name is not an RFC 7230 token or the path not a plain path
    /// (a bug in the caller).
    #[error("cookie {0:?}: name must be a token and path an absolute path")]
    BadSpec(String),
}

impl CookieError {
    /// The HTTP status for this refusal: 400 for what a request sent.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadSpec(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl axum::response::IntoResponse for CookieError {
    fn into_response(self) -> axum::response::Response {
        (self.status(), self.to_string()).into_response()
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 6265 `cookie-octet`: `%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn is_path(s: &str) -> bool {
    s.starts_with('/') && s.bytes().all(|b| b != b';' && (0x21..=0x7E).contains(&b))
}

impl Cookie {
    /// `__Host-<name>`: for the whole site (`Path=/`, no `Domain`).
    pub fn host(name: &str) -> Result<Self, CookieError> {
        Self::new(format!("__Host-{name}"), "/")
    }

    /// `__Secure-<name>` with `Path=<path>` (a module's prefix, e.g.
    /// `/sso/`): sent only to that module's routes.
    pub fn scoped(name: &str, path: &str) -> Result<Self, CookieError> {
        Self::new(format!("__Secure-{name}"), path)
    }

    fn new(name: String, path: &str) -> Result<Self, CookieError> {
        if name.ends_with('-') || !is_token(&name) || !is_path(path) {
            return Err(CookieError::BadSpec(name));
        }
        Ok(Self {
            name,
            path: path.to_string(),
            same_site: SameSite::Lax,
        })
    }

    /// With this `SameSite` (the default is `Lax`).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// The full name (`__Host-…`, `__Secure-…`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn attributes(&self) -> String {
        format!(
            "; Path={}; HttpOnly; Secure; SameSite={}",
            self.path,
            self.same_site.as_str()
        )
    }

    /// `Set-Cookie` for `value`, kept for `max_age` (whole seconds; a
    /// cookie without `Max-Age` would last the browser session).
    pub fn set(&self, value: &str, max_age: Duration) -> Result<HeaderValue, CookieError> {
        if value.is_empty() || !value.bytes().all(is_cookie_octet) {
            return Err(CookieError::BadValue(self.name.clone()));
        }
        let header = format!(
            "{}={value}; Max-Age={}{}",
            self.name,
            max_age.as_secs(),
            self.attributes()
        );
        let mut header =
            HeaderValue::from_str(&header).map_err(|_| CookieError::BadValue(self.name.clone()))?;
        header.set_sensitive(true);
        Ok(header)
    }

    /// `Set-Cookie` that removes the cookie (same name, path and
    /// attributes, empty, `Max-Age=0`).
    pub fn clear(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("{}=; Max-Age=0{}", self.name, self.attributes()))
            .expect("name and path were checked")
    }

    /// The cookie's value in the request, if it carries it; refused when
    /// it carries it more than once or with a value a cookie cannot have.
    pub fn read(&self, headers: &HeaderMap) -> Result<Option<String>, CookieError> {
        read_cookie(headers, &self.name)
    }
}

/// The value of the cookie named exactly `name` in every `Cookie` header
/// of the request (HTTP/2 may split them); `Duplicate` if it appears more
/// than once.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Result<Option<String>, CookieError> {
    let mut found: Option<&str> = None;
    for header in headers.get_all(http::header::COOKIE) {
        let text = header.to_str().map_err(|_| CookieError::Malformed)?;
        for pair in text.split(';') {
            let Some((key, value)) = pair.trim_matches(' ').split_once('=') else {
                continue;
            };
            if key != name {
                continue;
            }
            if found.is_some() {
                return Err(CookieError::Duplicate(name.to_string()));
            }
            found = Some(value);
        }
    }
    match found {
        None => Ok(None),
        Some(value) if value.bytes().all(is_cookie_octet) => Ok(Some(value.to_string())),
        Some(_) => Err(CookieError::BadValue(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(http::header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn host_cookie_is_whole_site_http_only_secure() {
        let c = Cookie::host("sso_session").unwrap();
        let set = c.set("abc123", Duration::from_secs(600)).unwrap();
        assert_eq!(
            set.to_str().unwrap(),
            "__Host-sso_session=abc123; Max-Age=600; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
        assert!(set.is_sensitive());
    }

    #[test]
    fn scoped_cookie_keeps_to_its_prefix() {
        let c = Cookie::scoped("state", "/sso/")
            .unwrap()
            .same_site(SameSite::Strict);
        assert_eq!(
            c.set("x", Duration::from_secs(60))
                .unwrap()
                .to_str()
                .unwrap(),
            "__Secure-state=x; Max-Age=60; Path=/sso/; HttpOnly; Secure; SameSite=Strict"
        );
        assert_eq!(
            c.clear().to_str().unwrap(),
            "__Secure-state=; Max-Age=0; Path=/sso/; HttpOnly; Secure; SameSite=Strict"
        );
        let none = Cookie::scoped("post", "/sso/")
            .unwrap()
            .same_site(SameSite::None);
        assert!(
            none.set("x", Duration::from_secs(1))
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with("Secure; SameSite=None")
        );
    }

    #[test]
    fn values_that_would_inject_attributes_or_cookies_are_refused() {
        let c = Cookie::host("s").unwrap();
        for bad in [
            "a; Domain=evil.example",
            "a, other=1",
            "a b",
            "\"quoted\"",
            "back\\slash",
            "new\r\nSet-Cookie: x=1",
            "tab\t",
            "é",
            "",
        ] {
            assert_eq!(
                c.set(bad, Duration::from_secs(1)),
                Err(CookieError::BadValue("__Host-s".into())),
                "{bad:?}"
            );
        }
        assert!(c.set("base64url_-AZaz09=", Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn bad_names_and_paths_are_refused() {
        assert!(Cookie::host("a;b").is_err());
        assert!(Cookie::host("a=b").is_err());
        assert!(Cookie::host("").is_err());
        assert!(Cookie::scoped("s", "sso/").is_err());
        assert!(Cookie::scoped("s", "/sso/; Domain=x").is_err());
        assert!(Cookie::scoped("s", "/a b/").is_err());
    }

    #[test]
    fn reads_the_named_cookie_exactly() {
        let c = Cookie::host("s").unwrap();
        let h = headers(&["other=1; __Host-s=value; __Host-sx=no"]);
        assert_eq!(c.read(&h), Ok(Some("value".into())));
        assert_eq!(c.read(&headers(&["s=1; x__Host-s=2"])), Ok(None));
        assert_eq!(c.read(&HeaderMap::new()), Ok(None));
        // Split across headers (HTTP/2).
        assert_eq!(
            c.read(&headers(&["a=1", "__Host-s=v2"])),
            Ok(Some("v2".into()))
        );
        // A value with '=' is one value.
        assert_eq!(c.read(&headers(&["__Host-s=a=b"])), Ok(Some("a=b".into())));
    }

    #[test]
    fn a_cookie_sent_twice_is_refused() {
        let c = Cookie::host("s").unwrap();
        for sent in [
            &["__Host-s=a; __Host-s=b"][..],
            &["__Host-s=a", "__Host-s=a"][..],
            &["__Host-s=a;__Host-s=b"][..],
        ] {
            assert_eq!(
                c.read(&headers(sent)),
                Err(CookieError::Duplicate("__Host-s".into())),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn a_value_a_cookie_cannot_carry_is_refused() {
        let c = Cookie::host("s").unwrap();
        assert_eq!(
            c.read(&headers(&["__Host-s=\"quoted\""])),
            Err(CookieError::BadValue("__Host-s".into()))
        );
        assert_eq!(
            c.read(&headers(&["__Host-s=a,b"])),
            Err(CookieError::BadValue("__Host-s".into()))
        );
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_bytes(b"__Host-s=\xff").unwrap(),
        );
        assert_eq!(c.read(&h), Err(CookieError::Malformed));
    }
}
