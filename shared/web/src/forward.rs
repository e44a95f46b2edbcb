//! The edge's forwarding of a remote module's browser routes to the
//! module's process (its `remote.<service>` address: the same port serves
//! HTTP/1.1).
//!
//! Method, path, query, body and every end-to-end header (cookies
//! included) go on unchanged; so do the answer's status, headers
//! (`Set-Cookie`, `Location`) and body, streamed. Hop-by-hop headers stop
//! here. The client's own `X-Forwarded-*` and any forwarding credential it
//! sent are dropped; the edge adds the client as it decided it (peer,
//! through `server.trusted_proxies`) in `X-Forwarded-For/-Proto/-Host`
//! and its credential, which the module process checks ([`EdgeTrust`]).
//!
//! [`EdgeTrust`]: crate::EdgeTrust

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::MatchedPath;
use futures::future::BoxFuture;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use twig_auth::ServiceCredential;

use crate::EDGE_CREDENTIAL_HEADER;
use crate::trust::{EdgeTrust, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};

/// Headers that belong to one connection, never forwarded (RFC 9110
/// 7.6.1), plus `host` (set for the next hop).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwards browser requests to one module's process.
#[derive(Clone)]
pub struct BrowserForward {
    address: Arc<Uri>,
    credential: ServiceCredential,
    trust: EdgeTrust,
    timeout: Duration,
    client: Client<HttpConnector, Body>,
}

impl BrowserForward {
    /// To the process at `address` (`http://host:port`), presenting
    /// `credential`; the client is decided with `trust` (the edge's
    /// trusted proxies); an answer must start within `timeout`.
    pub fn new(
        address: Uri,
        credential: ServiceCredential,
        trust: EdgeTrust,
        timeout: Duration,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            address: Arc::new(address),
            credential,
            trust,
            timeout,
            client,
        }
    }

    /// A router sending every path under `prefix` (checked, `/sso/`) here.
    pub fn router(self, prefix: &str) -> axum::Router {
        let base = prefix.trim_end_matches('/');
        axum::Router::new()
            .route_service(base, self.clone())
            .route_service(prefix, self.clone())
            .route_service(&format!("{prefix}{{*rest}}"), self)
    }

    fn outgoing(&self, request: Request<Body>) -> Result<Request<Body>, StatusCode> {
        let (mut parts, body) = request.into_parts();
        // The client as the edge decides it, before its own claims go.
        let mut probe = Request::new(Body::empty());
        *probe.headers_mut() = parts.headers.clone();
        *probe.uri_mut() = parts.uri.clone();
        if let Some(info) = parts
            .extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
        {
            probe.extensions_mut().insert(info.clone());
        }
        // Whatever forwarding credential the client sent is not believed
        // here: the edge decides from the peer.
        probe.headers_mut().remove(EDGE_CREDENTIAL_HEADER);
        let client = self.trust.client(&mut probe)?;

        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut uri = self.address.as_ref().clone().into_parts();
        uri.path_and_query = Some(path.parse().map_err(|_| StatusCode::BAD_REQUEST)?);
        parts.uri = Uri::from_parts(uri).map_err(|_| StatusCode::BAD_REQUEST)?;
        parts.version = http::Version::HTTP_11;

        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        headers.remove(http::header::HOST);
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            "forwarded",
            EDGE_CREDENTIAL_HEADER,
        ] {
            headers.remove(name);
        }
        if let Some(ip) = client.ip {
            headers.insert(
                HeaderName::from_static(X_FORWARDED_FOR),
                HeaderValue::from_str(&ip.to_string()).expect("an address is a header value"),
            );
        }
        headers.insert(
            HeaderName::from_static(X_FORWARDED_PROTO),
            HeaderValue::from_str(&client.proto).expect("http or https"),
        );
        if let Some(host) = client.host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            headers.insert(HeaderName::from_static(X_FORWARDED_HOST), host);
        }
        self.credential.attach(headers);
        Ok(Request::from_parts(parts, body))
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

impl tower::Service<Request<Body>> for BrowserForward {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let template = request.extensions().get::<MatchedPath>().cloned();
        let this = self.clone();
        Box::pin(async move {
            let mut response = match this.outgoing(request) {
                Err(status) => plain(status, "request refused"),
                Ok(outgoing) => {
                    match tokio::time::timeout(this.timeout, this.client.request(outgoing)).await {
                        Ok(Ok(answer)) => {
                            let (mut parts, body) = answer.into_parts();
                            strip_hop_by_hop(&mut parts.headers);
                            Response::from_parts(parts, Body::new(body))
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(
                                address = %this.address,
                                error = &error as &dyn std::error::Error,
                                "forwarding a browser request failed"
                            );
                            plain(StatusCode::BAD_GATEWAY, "the service is unreachable")
                        }
                        Err(_) => {
                            tracing::warn!(address = %this.address, "forwarding a browser request timed out");
                            plain(
                                StatusCode::GATEWAY_TIMEOUT,
                                "the service did not answer in time",
                            )
                        }
                    }
                }
            };
            // The request metrics' route label: the forwarded prefix.
            if let Some(template) = template {
                response.extensions_mut().insert(template);
            }
            Ok(response)
        })
    }
}
