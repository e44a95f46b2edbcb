//! Who sent a browser request, as the process serving it may believe it.
//!
//! A request straight from a client: its peer address (through
//! `server.trusted_proxies`, as for gRPC), the `Host` it asked for, and
//! `http` (or a trusted proxy's `X-Forwarded-Proto`). A request the edge
//! forwarded carries the edge's credential in
//! [`EDGE_CREDENTIAL_HEADER`](crate::EDGE_CREDENTIAL_HEADER); only when
//! that matches `auth.edge_token` (SHA-256, compared in constant time)
//! are its `X-Forwarded-For/-Proto/-Host` believed. A request carrying any
//! other value there is refused with 403. The credential and the
//! `X-Forwarded-*` headers are removed before the route runs: routes read
//! [`ClientInfo`].

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::IntoResponse;
use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response, StatusCode};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::EDGE_CREDENTIAL_HEADER;

pub(crate) const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub(crate) const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub(crate) const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// The client of a browser request, in the request's extensions (and an
/// axum extractor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address, when known.
    pub ip: Option<IpAddr>,
    /// `http` or `https`, as the client used it.
    pub proto: String,
    /// The host the client asked for.
    pub host: Option<String>,
    /// Whether the edge forwarded the request.
    pub via_edge: bool,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientInfo {
    type Rejection = StatusCode;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// What the receiving process trusts: the edge's credential
/// (`auth.edge_token`) and its trusted proxies.
#[derive(Clone)]
pub struct EdgeTrust {
    edge: Option<[u8; 32]>,
    trusted_proxies: Arc<[IpNet]>,
}

impl std::fmt::Debug for EdgeTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeTrust")
            .field("edge", &self.edge.map(|_| "[redacted]"))
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl EdgeTrust {
    /// From `auth.edge_token` and `server.trusted_proxies`.
    pub fn from_config(config: &twig_config::Config) -> Self {
        Self::new(
            config.auth.edge_token.as_ref().map(|t| t.expose()),
            &config.server.trusted_proxies,
        )
    }

    /// Believes forwarded headers next to `edge_token` only.
    pub fn new(edge_token: Option<&str>, trusted_proxies: &[IpNet]) -> Self {
        Self {
            edge: edge_token.map(|t| Sha256::digest(t.as_bytes()).into()),
            trusted_proxies: trusted_proxies.into(),
        }
    }

    /// The client of `request` (removing the credential and the
    /// `X-Forwarded-*` headers), or why the request is refused.
    pub fn client(&self, request: &mut Request<Body>) -> Result<ClientInfo, StatusCode> {
        let presented: Vec<_> = request
            .headers()
            .get_all(EDGE_CREDENTIAL_HEADER)
            .iter()
            .map(|v| -> [u8; 32] { Sha256::digest(v.as_bytes()).into() })
            .collect();
        let headers = request.headers_mut();
        headers.remove(EDGE_CREDENTIAL_HEADER);
        let info = if presented.is_empty() {
            let peer = request
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|a| a.ip());
            let headers = request.headers();
            let ip = peer.map(|peer| {
                twig_auth::client_ip(
                    peer,
                    values(headers, X_FORWARDED_FOR),
                    &self.trusted_proxies,
                )
            });
            let proxied = peer.is_some_and(|p| {
                self.trusted_proxies
                    .iter()
                    .any(|net| net.contains(&p.to_canonical()))
            });
            let proto = proxied
                .then(|| last(headers, X_FORWARDED_PROTO))
                .flatten()
                .filter(|p| *p == "https" || *p == "http")
                .unwrap_or("http")
                .to_string();
            let host = headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| request.uri().authority().map(|a| a.to_string()));
            ClientInfo {
                ip,
                proto,
                host,
                via_edge: false,
            }
        } else {
            let from_edge = presented.len() == 1
                && self
                    .edge
                    .is_some_and(|edge| bool::from(edge.ct_eq(&presented[0])));
            if !from_edge {
                return Err(StatusCode::FORBIDDEN);
            }
            let headers = request.headers();
            ClientInfo {
                ip: last(headers, X_FORWARDED_FOR)
                    .and_then(|v| v.rsplit(',').next())
                    .and_then(|v| v.trim().parse::<IpAddr>().ok())
                    .map(|ip| ip.to_canonical()),
                proto: last(headers, X_FORWARDED_PROTO)
                    .filter(|p| *p == "https" || *p == "http")
                    .unwrap_or("http")
                    .to_string(),
                host: last(headers, X_FORWARDED_HOST).map(str::to_string),
                via_edge: true,
            }
        };
        let headers = request.headers_mut();
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            "forwarded",
        ] {
            headers.remove(name);
        }
        Ok(info)
    }

    /// A layer putting [`ClientInfo`] in each request's extensions.
    pub fn layer(&self) -> EdgeTrustLayer {
        EdgeTrustLayer {
            trust: self.clone(),
        }
    }
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
}

fn last<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    values(headers, name).last()
}

/// Builds [`EdgeTrustService`].
#[derive(Clone, Debug)]
pub struct EdgeTrustLayer {
    trust: EdgeTrust,
}

impl<S> tower::Layer<S> for EdgeTrustLayer {
    type Service = EdgeTrustService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EdgeTrustService {
            inner,
            trust: self.trust.clone(),
        }
    }
}

/// Puts [`ClientInfo`] in the request, or refuses a forged forwarding.
#[derive(Clone, Debug)]
pub struct EdgeTrustService<S> {
    inner: S,
    trust: EdgeTrust,
}

impl<S> tower::Service<Request<Body>> for EdgeTrustService<S>
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

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        match self.trust.client(&mut request) {
            Ok(info) => {
                request.extensions_mut().insert(info);
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(status) => {
                tracing::warn!(
                    path = request.uri().path(),
                    "browser request with a forwarding credential that is not the edge's"
                );
                Box::pin(
                    async move { Ok((status, "forwarding credential refused").into_response()) },
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    const EDGE: &str = "edge-token-0123456789abcdef0123456789";

    fn request(peer: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut r = Request::get("/sso/x").header("host", "id.example.com");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut r = r.body(Body::empty()).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        r.extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer),
            });
        r
    }

    #[test]
    fn a_direct_request_is_its_peer_whatever_it_claims() {
        let trust = EdgeTrust::new(Some(EDGE), &[]);
        let mut r = request(
            "198.51.100.4:5000",
            &[
                ("x-forwarded-for", "203.0.113.1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
            ],
        );
        let info = trust.client(&mut r).unwrap();
        assert_eq!(
            info,
            ClientInfo {
                ip: Some("198.51.100.4".parse().unwrap()),
                proto: "http".into(),
                host: Some("id.example.com".into()),
                via_edge: false,
            }
        );
        assert!(r.headers().get("x-forwarded-for").is_none());
    }

    #[test]
    fn a_trusted_proxy_is_read_as_for_grpc() {
        let trust = EdgeTrust::new(None, &["10.0.0.0/8".parse().unwrap()]);
        let mut r = request(
            "10.0.0.2:5000",
            &[
                ("x-forwarded-for", "203.0.113.1"),
                ("x-forwarded-proto", "https"),
            ],
        );
        let info = trust.client(&mut r).unwrap();
        assert_eq!(info.ip, Some("203.0.113.1".parse().unwrap()));
        assert_eq!(info.proto, "https");
    }

    #[test]
    fn the_edge_is_believed_with_its_credential_only() {
        let trust = EdgeTrust::new(Some(EDGE), &[]);
        let forwarded = [
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "id.example.com:8443"),
        ];
        let mut with = forwarded.to_vec();
        with.push((EDGE_CREDENTIAL_HEADER, EDGE));
        let mut r = request("10.1.2.3:5000", &with);
        let info = trust.client(&mut r).unwrap();
        assert_eq!(
            info,
            ClientInfo {
                ip: Some("203.0.113.1".parse().unwrap()),
                proto: "https".into(),
                host: Some("id.example.com:8443".into()),
                via_edge: true,
            }
        );
        assert!(r.headers().get(EDGE_CREDENTIAL_HEADER).is_none());

        let mut forged = forwarded.to_vec();
        forged.push((
            EDGE_CREDENTIAL_HEADER,
            "edge-token-0123456789abcdef0123456780",
        ));
        assert_eq!(
            trust.client(&mut request("10.1.2.3:5000", &forged)),
            Err(StatusCode::FORBIDDEN)
        );
        let mut twice = with.clone();
        twice.push((EDGE_CREDENTIAL_HEADER, EDGE));
        assert_eq!(
            trust.client(&mut request("10.1.2.3:5000", &twice)),
            Err(StatusCode::FORBIDDEN)
        );
        // Without an edge configured, nobody is the edge.
        assert_eq!(
            EdgeTrust::new(None, &[]).client(&mut request("10.1.2.3:5000", &with)),
            Err(StatusCode::FORBIDDEN)
        );
    }
}
