//! Cross-origin requests from browsers (gRPC-web).
//!
//! Only the configured origins (`server.cors_origins`) are answered, each
//! with its own origin echoed and credentials allowed; any other origin
//! gets no CORS headers at all, so the browser keeps the response from the
//! page. gRPC's status travels in headers and trailers, which browsers
//! hide unless exposed: `grpc-status`, `grpc-message` and the rest are.

use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Method};
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};

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
