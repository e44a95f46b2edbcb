//! The browser session: where its refresh credential lives. One
//! definition for every module that signs a browser in (sessions'
//! password sign-in, single sign-on, social sign-in) and for the routes
//! that read it (sessions' `/auth/` routes).
//!
//! The refresh token goes in `__Secure-twig_refresh`: `HttpOnly` (no
//! script reads it), `Secure`, `SameSite=Strict` (never sent by another
//! site's request), `Path=/auth/` (sent to the auth routes only — not to
//! the API, where the short access token is the credential). The page
//! gets its access token from `POST /auth/refresh`; no token ever travels
//! in a URL.

use std::time::Duration;

use http::HeaderValue;

use crate::cookie::{Cookie, CookieError, SameSite};

/// The browser prefix of the session routes (the sessions module's).
pub const AUTH_PREFIX: &str = "/auth/";

/// The cookie holding a browser session's refresh token.
pub fn refresh_cookie() -> Cookie {
    Cookie::scoped("twig_refresh", AUTH_PREFIX)
        .expect("a valid cookie name and path")
        .same_site(SameSite::Strict)
}

/// `Set-Cookie` for a browser session's refresh token, kept until it
/// expires (`lifetime`, at least one second).
pub fn set_refresh(token: &str, lifetime: Duration) -> Result<HeaderValue, CookieError> {
    refresh_cookie().set(token, lifetime.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_cookie_is_host_only_strict_and_scoped_to_auth() {
        let header = set_refresh("twig_rt_abc", Duration::from_secs(3600)).unwrap();
        assert_eq!(
            header.to_str().unwrap(),
            "__Secure-twig_refresh=twig_rt_abc; Max-Age=3600; Path=/auth/; HttpOnly; Secure; \
             SameSite=Strict"
        );
        assert!(header.is_sensitive());
    }
}
