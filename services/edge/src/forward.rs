//! Calls to a service in another process: after the auth layer decided
//! who called, the gRPC call goes on to the service's address with that
//! caller (`x-twig-principal-bin`) and the edge's credential in place of
//! the client's.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderName, Request, Response, header};
use tonic::body::Body;
use tonic::transport::Channel;
use twig_auth::{
    Authentication, ClientIp, FORWARDED_HEADER, ForwardedCaller, INTERNAL_TOKEN_HEADER,
    InternalCaller, ServiceCredential,
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
        parts.headers.remove(INTERNAL_TOKEN_HEADER);
        self.credential.attach(&mut parts.headers);
        parts.headers.insert(FORWARDED_HEADER, caller.to_header());
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
