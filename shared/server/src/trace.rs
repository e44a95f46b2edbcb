//! One tracing span per request, joined to the caller's trace when the
//! request carries W3C trace context (`traceparent`, `tracestate`), and
//! the request counters and latency histograms.
//!
//! Metric labels come only from what the server knows, never from the
//! path or method a client sent, so junk requests add no series:
//!
//! - gRPC and gRPC-web requests (by content type) are counted as
//!   `twig_rpc_requests_total{service, method, code}` and timed as
//!   `twig_rpc_duration_seconds{service, method}`, named after the RPC when
//!   the path is one this server knows (an RPC of the API's catalogue,
//!   [`Catalogue`]: the twig APIs, health, reflection), else `unknown`. The code is the `grpc-status` of the
//!   response head (where unary errors travel); a gRPC answer without one
//!   is `OK` (its status follows in the trailers); an answer that is not
//!   gRPC at all has the code a gRPC client reads from its HTTP status.
//! - Every other request (the HTTP/JSON surface) is counted as
//!   `twig_http_requests_total{route, status}` and timed as
//!   `twig_http_duration_seconds{route}`: the route is the method and
//!   template of the HTTP route that answered (`GET /v1/api-keys/{key_id}`;
//!   the route puts axum's [`MatchedPath`] in its response's extensions),
//!   else `unknown`; the status is the HTTP status answered.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use twig_proto::catalogue::Catalogue;

/// The label of whatever the server does not know.
const UNKNOWN: &str = "unknown";

/// Wraps every request in an `rpc` span and counts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service [`TraceLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

/// What a request is, for its span and its metrics.
enum Kind {
    /// gRPC or gRPC-web: the RPC's service and method, or `unknown`.
    Rpc {
        service: &'static str,
        method: &'static str,
    },
    /// Anything else: its HTTP method, for the route that answers it.
    Http { method: Method },
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

impl<S, B, R> tower::Service<Request<B>> for TraceService<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let (kind, span) = if is_grpc(request.headers()) {
            let known = Catalogue::get().rpc(path);
            let name = match known {
                Some(_) => path.trim_start_matches('/'),
                None => UNKNOWN,
            };
            let (service, method) = known.map_or((UNKNOWN, UNKNOWN), |m| {
                (m.service.as_str(), m.name.as_str())
            });
            let span = tracing::info_span!(
                "rpc",
                otel.name = %name,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %service,
                rpc.method = %method,
                url.path = %path,
            );
            let kind = Kind::Rpc { service, method };
            (kind, span)
        } else {
            let span = tracing::info_span!(
                "rpc",
                otel.name = "HTTP",
                otel.kind = "server",
                http.request.method = %request.method(),
                http.route = tracing::field::Empty,
                url.path = %path,
            );
            let kind = Kind::Http {
                method: request.method().clone(),
            };
            (kind, span)
        };
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        let started = Instant::now();
        let call: Instrumented<S::Future> = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let result = call.await;
            let seconds = started.elapsed().as_secs_f64();
            match kind {
                Kind::Rpc { service, method } => {
                    let code = match &result {
                        Ok(response) => grpc_code(response),
                        Err(_) => "TRANSPORT_ERROR",
                    };
                    metrics::histogram!(
                        "twig_rpc_duration_seconds",
                        "service" => service,
                        "method" => method,
                    )
                    .record(seconds);
                    metrics::counter!(
                        "twig_rpc_requests_total",
                        "service" => service,
                        "method" => method,
                        "code" => code,
                    )
                    .increment(1);
                }
                Kind::Http { method } => {
                    let (route, status) = match &result {
                        Ok(response) => (
                            route(&method, response),
                            response.status().as_u16().to_string(),
                        ),
                        Err(_) => (UNKNOWN.to_string(), "error".to_string()),
                    };
                    if route != UNKNOWN {
                        span.record("otel.name", route.as_str());
                        span.record("http.route", route.as_str());
                    }
                    metrics::histogram!("twig_http_duration_seconds", "route" => route.clone())
                        .record(seconds);
                    metrics::counter!(
                        "twig_http_requests_total",
                        "route" => route,
                        "status" => status,
                    )
                    .increment(1);
                }
            }
            result
        })
    }
}

/// The gRPC code of an answer: its `grpc-status` header, `OK` for a gRPC
/// answer whose status follows in its trailers, else the code a gRPC
/// client reads from the HTTP status.
fn grpc_code<R>(response: &Response<R>) -> &'static str {
    let headers = response.headers();
    if let Some(code) = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        return twig_errors::grpc_code_name(tonic::Code::from_i32(code));
    }
    if is_grpc(headers) {
        return "OK";
    }
    // gRPC's HTTP-to-gRPC status mapping (doc/http-grpc-status-mapping.md).
    let code = match response.status() {
        StatusCode::BAD_REQUEST => tonic::Code::Internal,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
        StatusCode::NOT_FOUND => tonic::Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    twig_errors::grpc_code_name(code)
}

/// `METHOD /template` of the HTTP route that answered, else `unknown`.
/// The route is there only when its own handler answered, so the method
/// is one the route declares (or HEAD for a GET route), never just any
/// method a client made up.
fn route<R>(method: &Method, response: &Response<R>) -> String {
    match response.extensions().get::<MatchedPath>() {
        Some(template) => format!("{method} {}", template.as_str()),
        None => UNKNOWN.to_string(),
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::extract::MatchedPath;
    use tower::{Layer, ServiceExt};

    use super::TraceLayer;

    /// The metrics page after `requests` went through a [`TraceLayer`]
    /// around `routes`, recorded by a recorder of this test's own.
    fn page_after(routes: axum::Router, requests: Vec<http::Request<axum::body::Body>>) -> String {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            futures::executor::block_on(async {
                for request in requests {
                    let _ = TraceLayer
                        .layer(routes.clone())
                        .oneshot(request)
                        .await
                        .unwrap_or_else(|never: Infallible| match never {});
                }
            });
        });
        handle.render()
    }

    fn request(
        method: &str,
        path: &str,
        content_type: Option<&str>,
    ) -> http::Request<axum::body::Body> {
        let mut request = http::Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.body(axum::body::Body::empty()).unwrap()
    }

    /// Answers like the server: a known RPC with NOT_FOUND, an HTTP route
    /// with its template, 404 for anything else (no gRPC status), and a
    /// made-up gRPC path refused with a plain 503.
    fn routes() -> axum::Router {
        axum::Router::new()
            .route(
                "/twig.apikeys.v1.ApiKeyService/GetApiKey",
                axum::routing::post(|| async {
                    (
                        [("content-type", "application/grpc"), ("grpc-status", "5")],
                        "",
                    )
                }),
            )
            .route(
                "/v1/api-keys/{key_id}",
                axum::routing::get(|template: MatchedPath| async move {
                    let mut response =
                        axum::response::IntoResponse::into_response(http::StatusCode::UNAUTHORIZED);
                    response.extensions_mut().insert(template);
                    response
                }),
            )
            .route(
                "/refused.Service/Call",
                axum::routing::post(|| async { http::StatusCode::SERVICE_UNAVAILABLE }),
            )
    }

    fn has(page: &str, line: &str) -> bool {
        page.lines().any(|l| l == line)
    }

    #[test]
    fn rpcs_and_routes_are_labelled_by_name_junk_as_unknown() {
        let grpc = Some("application/grpc");
        let web = Some("application/grpc-web+proto");
        let page = page_after(
            routes(),
            vec![
                request("POST", "/twig.apikeys.v1.ApiKeyService/GetApiKey", grpc),
                request("POST", "/twig.apikeys.v1.ApiKeyService/GetApiKey", web),
                request("POST", "/junk.Service/Nope", grpc),
                request("POST", "/junk/also", web),
                request("POST", "/refused.Service/Call", grpc),
                request("GET", "/v1/api-keys/key_123", None),
                request("GET", "/v1/api-keys/key_456", None),
                request("BREW", "/v1/api-keys/key_456", None),
                request("GET", "/nothing/here", None),
                request("POST", "/twig.apikeys.v1.ApiKeyService/GetApiKey", None),
            ],
        );
        for line in [
            r#"twig_rpc_requests_total{service="twig.apikeys.v1.ApiKeyService",method="GetApiKey",code="NOT_FOUND"} 2"#,
            r#"twig_rpc_requests_total{service="unknown",method="unknown",code="UNIMPLEMENTED"} 2"#,
            r#"twig_rpc_requests_total{service="unknown",method="unknown",code="UNAVAILABLE"} 1"#,
            r#"twig_http_requests_total{route="GET /v1/api-keys/{key_id}",status="401"} 2"#,
            r#"twig_http_requests_total{route="unknown",status="405"} 1"#,
            r#"twig_http_requests_total{route="unknown",status="404"} 1"#,
            r#"twig_http_requests_total{route="unknown",status="200"} 1"#,
            r#"twig_http_duration_seconds_count{route="GET /v1/api-keys/{key_id}"} 2"#,
            r#"twig_rpc_duration_seconds_count{service="unknown",method="unknown"} 3"#,
        ] {
            assert!(has(&page, line), "{line} in\n{page}");
        }
        assert!(!page.contains("junk"), "{page}");
        assert!(!page.contains("BREW"), "{page}");
        assert!(!page.contains("key_123"), "{page}");
    }
}
