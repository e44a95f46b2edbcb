//! Cross-origin requests from browsers (gRPC-web).
//!
//! Only the configured origins (`server.cors_origins`) are answered, each
//! with its own origin echoed and credentials allowed; any other origin
//! gets no CORS headers at all, so the browser keeps the response from the
//! page. gRPC's status travels in headers and trailers, which browsers
//! hide unless exposed: `grpc-status`, `grpc-message` and the rest are.
//!
//! Browser routes (paths under a module's browser prefix) are same-origin
//! pages: no CORS at all there, neither headers nor preflight answers.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::Either;

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Method};
use tower_http::cors::{AllowCredentials, AllowOrigin, Cors, CorsLayer};

/// Request headers a browser client may send.
const ALLOWED: [&str; 5] = [
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
];

/// Response headers a browser client may read.
const EXPOSED: [&str; 7] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// The CORS layer for `origins` (already validated).
pub(crate) fn layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let mut allowed = vec![AUTHORIZATION, CONTENT_TYPE];
    allowed.extend(ALLOWED.map(HeaderName::from_static));
    let with_credentials = origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        // Only where the origin is echoed: no credentials flag otherwise.
        .allow_credentials(AllowCredentials::predicate(move |origin, _| {
            with_credentials.contains(origin)
        }))
        // Every method the HTTP/JSON routes use (gRPC-web is POST).
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(allowed)
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(Duration::from_secs(600))
}

/// CORS everywhere but under the browser prefixes.
#[derive(Clone)]
pub(crate) struct CorsExceptLayer {
    pub(crate) cors: CorsLayer,
    pub(crate) same_origin: Arc<[String]>,
}

impl<S: Clone> tower::Layer<S> for CorsExceptLayer {
    type Service = CorsExcept<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CorsExcept {
            plain: inner.clone(),
            cors: self.cors.layer(inner),
            same_origin: self.same_origin.clone(),
        }
    }
}

/// [`Cors`] around `S`, skipped for paths under the browser prefixes.
#[derive(Clone)]
pub(crate) struct CorsExcept<S> {
    cors: Cors<S>,
    plain: S,
    same_origin: Arc<[String]>,
}

impl<S, B> tower::Service<http::Request<B>> for CorsExcept<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<
        <Cors<S> as tower::Service<http::Request<B>>>::Future,
        tower::util::Oneshot<S, http::Request<B>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<B>>::poll_ready(&mut self.cors, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let same_origin = self.same_origin.iter().any(|prefix| {
            path.starts_with(prefix.as_str()) || path == prefix.trim_end_matches('/')
        });
        if same_origin {
            Either::Right(tower::ServiceExt::oneshot(self.plain.clone(), request))
        } else {
            Either::Left(self.cors.call(request))
        }
    }
}
