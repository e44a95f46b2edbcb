//! One tracing span per request, joined to the caller's trace when the
//! request carries W3C trace context (`traceparent`, `tracestate`), and
//! the request counters and latency histogram of every RPC.
//!
//! The status code counted is the `grpc-status` of the response head
//! (where unary errors travel); a response without one counts as `OK`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request};
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Wraps every request in an `rpc` span.
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

impl<S, B, R> tower::Service<Request<B>> for TraceService<S>
where
    S: tower::Service<Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        let labels = [
            ("service", service.to_string()),
            ("method", method.to_string()),
        ];
        let started = Instant::now();
        let call: Instrumented<S::Future> = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let result = call.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", |c| {
                        twig_errors::grpc_code_name(tonic::Code::from_i32(c))
                    }),
                Err(_) => "TRANSPORT_ERROR",
            };
            metrics::histogram!("twig_rpc_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            let [(_, service), (_, method)] = labels;
            metrics::counter!(
                "twig_rpc_requests_total",
                "service" => service,
                "method" => method,
                "code" => code,
            )
            .increment(1);
            result
        })
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
