//! Cross-site request forgery: the one check for a cookie-authenticated
//! request that changes state.
//!
//! Such a request (any method but GET, HEAD, OPTIONS, TRACE) is admitted
//! only when both hold:
//!
//! 1. it comes from one of the service's own pages: its `Origin` — or,
//!    when a browser sent none, the origin of its `Referer` — is exactly
//!    one of `server.public_origins`; `Origin: null` (sandboxed frames,
//!    some redirects, `file:`) is refused;
//! 2. it carries [`CSRF_HEADER`] with the value `1`, which an HTML form
//!    cannot send, and a script on another site cannot either without a
//!    CORS preflight, which browser routes never answer.
//!
//! So a same-site page submits with `fetch(…, {headers: {"x-twig-csrf":
//! "1"}})`. A refusal is 403 with the reason in the body. An endpoint
//! that receives cross-site POSTs by design (SAML's POST binding to an
//! ACS) is not cookie-authenticated in this sense: it authenticates the
//! message it receives and does not use this check.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::IntoResponse;
use futures::future::BoxFuture;
use http::{HeaderMap, Method, Request, Response, StatusCode};

/// The header a cross-site form cannot send.
pub const CSRF_HEADER: &str = "x-twig-csrf";

/// Why a state-changing request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfRefusal {
    /// Neither `Origin` nor a readable `Referer`.
    #[error("cross-site request refused: no Origin or Referer")]
    NoOrigin,
    /// `Origin: null`.
    #[error("cross-site request refused: Origin null")]
    NullOrigin,
    /// An origin that is not one of the service's own.
    #[error("cross-site request refused: origin {0:?} is not one of server.public_origins")]
    ForeignOrigin(String),
    /// More than one `Origin` header.
    #[error("cross-site request refused: more than one Origin header")]
    TwoOrigins,
    /// No `x-twig-csrf: 1`.
    #[error("cross-site request refused: the x-twig-csrf header is missing")]
    MissingHeader,
}

impl IntoResponse for CsrfRefusal {
    fn into_response(self) -> axum::response::Response {
        (StatusCode::FORBIDDEN, self.to_string()).into_response()
    }
}

/// The check, over the configured public origins.
#[derive(Debug, Clone)]
pub struct Csrf {
    origins: Arc<[String]>,
}

impl Csrf {
    /// Admits state-changing requests from `origins` only
    /// (`server.public_origins`, already validated).
    pub fn new(origins: &[String]) -> Self {
        Self {
            origins: origins.iter().cloned().collect(),
        }
    }

    /// From the configuration's `server.public_origins`.
    pub fn from_config(config: &twig_config::Config) -> Self {
        Self::new(&config.server.public_origins)
    }

    /// Whether a request with this method and these headers may go on.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), CsrfRefusal> {
        if matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) {
            return Ok(());
        }
        let mut origins = headers.get_all(http::header::ORIGIN).iter();
        let origin = match (origins.next(), origins.next()) {
            (Some(_), Some(_)) => return Err(CsrfRefusal::TwoOrigins),
            (Some(origin), None) => {
                let origin = origin.to_str().map_err(|_| {
                    CsrfRefusal::ForeignOrigin(String::from_utf8_lossy(origin.as_bytes()).into())
                })?;
                if origin == "null" {
                    return Err(CsrfRefusal::NullOrigin);
                }
                origin.to_string()
            }
            (None, _) => headers
                .get(http::header::REFERER)
                .and_then(|r| r.to_str().ok())
                .and_then(origin_of)
                .ok_or(CsrfRefusal::NoOrigin)?,
        };
        if !self.origins.contains(&origin) {
            return Err(CsrfRefusal::ForeignOrigin(origin));
        }
        let mut marks = headers.get_all(CSRF_HEADER).iter();
        match (marks.next(), marks.next()) {
            (Some(mark), None) if mark == "1" => Ok(()),
            _ => Err(CsrfRefusal::MissingHeader),
        }
    }

    /// A layer refusing every request [`Csrf::check`] refuses, for the
    /// routes it wraps (`Router::route_layer`).
    pub fn layer(&self) -> CsrfLayer {
        CsrfLayer { csrf: self.clone() }
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

/// Builds [`CsrfService`].
#[derive(Debug, Clone)]
pub struct CsrfLayer {
    csrf: Csrf,
}

impl<S> tower::Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            csrf: self.csrf.clone(),
        }
    }
}

/// Refuses what [`Csrf::check`] refuses with 403, before `S`.
#[derive(Debug, Clone)]
pub struct CsrfService<S> {
    inner: S,
    csrf: Csrf,
}

impl<S> tower::Service<Request<Body>> for CsrfService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Err(refusal) = self.csrf.check(request.method(), request.headers()) {
            tracing::debug!(%refusal, path = request.uri().path(), "browser request refused");
            return Box::pin(async move { Ok(refusal.into_response()) });
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const SITE: &str = "https://id.example.com";

    fn csrf() -> Csrf {
        Csrf::new(&[SITE.to_string(), "http://localhost:8080".to_string()])
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn same_origin_with_the_header_passes() {
        let h = headers(&[("origin", SITE), (CSRF_HEADER, "1")]);
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(csrf().check(&method, &h), Ok(()), "{method}");
        }
        let h = headers(&[("origin", "http://localhost:8080"), (CSRF_HEADER, "1")]);
        assert_eq!(csrf().check(&Method::POST, &h), Ok(()));
    }

    #[test]
    fn safe_methods_are_not_checked() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(csrf().check(&method, &HeaderMap::new()), Ok(()));
        }
    }

    #[test]
    fn missing_origin_and_referer_is_refused() {
        let h = headers(&[(CSRF_HEADER, "1")]);
        assert_eq!(csrf().check(&Method::POST, &h), Err(CsrfRefusal::NoOrigin));
        let h = headers(&[(CSRF_HEADER, "1"), ("referer", "not a url")]);
        assert_eq!(csrf().check(&Method::POST, &h), Err(CsrfRefusal::NoOrigin));
    }

    #[test]
    fn referer_stands_in_for_a_missing_origin() {
        let h = headers(&[
            (CSRF_HEADER, "1"),
            ("referer", "https://id.example.com/sso/x?y=1"),
        ]);
        assert_eq!(csrf().check(&Method::POST, &h), Ok(()));
        let h = headers(&[
            (CSRF_HEADER, "1"),
            ("referer", "https://evil.example/id.example.com"),
        ]);
        assert_eq!(
            csrf().check(&Method::POST, &h),
            Err(CsrfRefusal::ForeignOrigin("https://evil.example".into()))
        );
        // Userinfo tricks are not an origin.
        let h = headers(&[
            (CSRF_HEADER, "1"),
            ("referer", "https://id.example.com@evil.example/"),
        ]);
        assert_eq!(csrf().check(&Method::POST, &h), Err(CsrfRefusal::NoOrigin));
    }

    #[test]
    fn foreign_origins_are_refused() {
        for origin in [
            "https://evil.example",
            "http://id.example.com",
            "https://id.example.com:8443",
            "https://id.example.com.evil.example",
            "https://ID.example.com",
        ] {
            let h = headers(&[("origin", origin), (CSRF_HEADER, "1")]);
            assert_eq!(
                csrf().check(&Method::POST, &h),
                Err(CsrfRefusal::ForeignOrigin(origin.into())),
                "{origin}"
            );
        }
        // Origin wins over a good Referer.
        let h = headers(&[
            ("origin", "https://evil.example"),
            ("referer", "https://id.example.com/"),
            (CSRF_HEADER, "1"),
        ]);
        assert!(csrf().check(&Method::POST, &h).is_err());
    }

    #[test]
    fn null_origin_is_refused() {
        let h = headers(&[
            ("origin", "null"),
            (CSRF_HEADER, "1"),
            ("referer", "https://id.example.com/"),
        ]);
        assert_eq!(
            csrf().check(&Method::POST, &h),
            Err(CsrfRefusal::NullOrigin)
        );
    }

    #[test]
    fn two_origins_are_refused() {
        let h = headers(&[("origin", SITE), ("origin", SITE), (CSRF_HEADER, "1")]);
        assert_eq!(
            csrf().check(&Method::POST, &h),
            Err(CsrfRefusal::TwoOrigins)
        );
    }

    #[test]
    fn a_form_post_without_the_header_is_refused() {
        // What a same-origin (or forged) HTML form sends.
        let h = headers(&[
            ("origin", SITE),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert_eq!(
            csrf().check(&Method::POST, &h),
            Err(CsrfRefusal::MissingHeader)
        );
        for bad in ["0", "true", ""] {
            let h = headers(&[("origin", SITE), (CSRF_HEADER, bad)]);
            assert_eq!(
                csrf().check(&Method::POST, &h),
                Err(CsrfRefusal::MissingHeader),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn no_configured_origins_refuses_everything() {
        let h = headers(&[("origin", SITE), (CSRF_HEADER, "1")]);
        assert!(Csrf::new(&[]).check(&Method::POST, &h).is_err());
    }

    #[tokio::test]
    async fn the_layer_answers_403_with_the_reason() {
        use tower::ServiceExt;
        let router = axum::Router::new()
            .route("/x", axum::routing::post(|| async { "done" }))
            .route_layer(csrf().layer());
        let response = router
            .clone()
            .oneshot(
                Request::post("/x")
                    .header("origin", "https://evil.example")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = router
            .oneshot(
                Request::post("/x")
                    .header("origin", SITE)
                    .header(CSRF_HEADER, "1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
