//! Calls to a service in another process: after the auth layer decided
//! who called, the gRPC call goes on to the service's address with that
//! caller (`x-twig-principal-bin`) and the edge's credential in place of
//! the client's.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use opentelemetry::propagation::Injector;
use tonic::body::Body;
use tonic::transport::Channel;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use twig_auth::{
    Authentication, ClientIp, FORWARDED_HEADER, ForwardedCaller, InternalCaller, ServiceCredential,
};
use twig_errors::ApiError;

/// Headers that belong to the client's connection or credentials, never
/// passed on.
const NOT_FORWARDED: [HeaderName; 7] = [
    header::AUTHORIZATION,
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Forwards the gRPC calls it is routed to one service at its address.
#[derive(Clone)]
pub struct Forward {
    service: &'static str,
    channel: Channel,
    credential: ServiceCredential,
}

impl Forward {
    /// Forwards to `service` (its name, for errors) on `channel`,
    /// presenting `credential` (the service's `auth.edge_token`).
    pub fn new(service: &'static str, channel: Channel, credential: ServiceCredential) -> Self {
        Self {
            service,
            channel,
            credential,
        }
    }

    /// The call as it leaves for the service.
    fn outgoing<B>(&self, request: Request<B>) -> Request<Body>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let (mut parts, body) = request.into_parts();
        let caller = ForwardedCaller {
            principal: match parts.extensions.get::<Authentication>() {
                Some(Authentication(Ok(principal))) => Some(principal.clone()),
                _ => None,
            },
            internal: parts.extensions.get::<InternalCaller>().cloned(),
            client_ip: parts.extensions.get::<ClientIp>().map(|ip| ip.0),
        };
        for name in NOT_FORWARDED {
            parts.headers.remove(name);
        }
        // Replaces the client's own service credential, if it sent one.
        self.credential.attach(&mut parts.headers);
        parts.headers.insert(FORWARDED_HEADER, caller.to_header());
        // The service's span joins this call's span, not the client's.
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(&mut parts.headers));
        });
        parts.version = http::Version::HTTP_2;
        parts.extensions = http::Extensions::new();
        Request::from_parts(parts, Body::new(body))
    }
}

impl<B> tower::Service<Request<B>> for Forward
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let outgoing = self.outgoing(request);
        let channel = self.channel.clone();
        let service = self.service;
        Box::pin(async move {
            match tower::ServiceExt::oneshot(channel, outgoing).await {
                Ok(answer) => Ok(answer),
                Err(e) => {
                    let status = tonic::Status::from(ApiError::unavailable(format!(
                        "the {service} service could not be reached: {e}"
                    )));
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// Writes trace context (`traceparent`, `tracestate`) into headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt as _;
    use twig_auth::{INTERNAL_TOKEN_HEADER, Principal};

    use super::*;

    fn forward() -> Forward {
        let channel = Channel::from_static("http://127.0.0.1:9").connect_lazy();
        let credential = ServiceCredential::new(&twig_config::Secret::new("e".repeat(32))).unwrap();
        Forward::new("sessions", channel, credential)
    }

    fn incoming() -> Request<http_body_util::Empty<bytes::Bytes>> {
        let mut request = Request::post("/twig.sessions.v1.SessionService/ListSessions")
            .header("authorization", "Bearer twig_st_client")
            .header(INTERNAL_TOKEN_HEADER, "the client's own")
            .header("connection", "keep-alive")
            .header("user-agent", "curl/8")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .body(http_body_util::Empty::new())
            .unwrap();
        let principal = Principal {
            user_id: uuid::Uuid::new_v4(),
            org_id: uuid::Uuid::new_v4(),
            roles: Vec::new(),
            scopes: Vec::new(),
            credential: twig_auth::Credential::Session {
                session_id: uuid::Uuid::new_v4(),
            },
            expires_at: None,
        };
        request
            .extensions_mut()
            .insert(Authentication(Ok(principal)));
        request
            .extensions_mut()
            .insert(ClientIp("198.51.100.7".parse().unwrap()));
        request
    }

    #[tokio::test]
    async fn the_call_carries_the_edges_caller_and_credential_only() {
        let out = forward().outgoing(incoming());
        let headers = out.headers();
        assert!(headers.get("authorization").is_none());
        assert!(headers.get("connection").is_none());
        assert_eq!(headers[INTERNAL_TOKEN_HEADER], "e".repeat(32).as_str());
        assert_eq!(headers["user-agent"], "curl/8");
        let caller = ForwardedCaller::from_header(&headers[FORWARDED_HEADER]).unwrap();
        assert_eq!(caller.client_ip, Some("198.51.100.7".parse().unwrap()));
        assert!(caller.principal.is_some() && caller.internal.is_none());
        assert_eq!(out.version(), http::Version::HTTP_2);
        assert!(out.extensions().get::<Authentication>().is_none());
    }

    #[tokio::test]
    async fn the_service_joins_the_edges_span() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);
        let span = tracing::info_span!("rpc");
        let _entered = span.enter();
        let ours = span.context().span().span_context().clone();
        assert!(ours.is_valid());
        let out = forward().outgoing(incoming());
        let traceparent = out.headers()["traceparent"].to_str().unwrap();
        assert!(
            traceparent.contains(&ours.span_id().to_string()),
            "{traceparent} names the edge's span {}",
            ours.span_id()
        );
    }
}
