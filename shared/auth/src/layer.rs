//! The tower layer that authenticates every request once.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderMap, Request};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use twig_config::{AuthConfig, Secret};
use twig_errors::ApiError;

use crate::access::AccessPolicy;
use crate::decide::{Presented, Target, decide};
use crate::forwarded::{FORWARDED_HEADER, Forwarded, ForwardedCaller};
use crate::principal::{Authentication, Authenticator, InternalCaller, RequestQuota};

/// Header that carries the internal service credential.
pub const INTERNAL_TOKEN_HEADER: &str = "x-twig-internal-token";

/// Headers starting with this are ours to set; a client's copy is removed.
const PRINCIPAL_HEADER_PREFIX: &str = "x-twig-principal";

/// The client's address as the auth layer found it (peer, or
/// `X-Forwarded-For` through trusted proxies), in request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Builds [`AuthService`]s.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<dyn Authenticator>,
    /// SHA-256 of each internal credential (so comparisons are
    /// fixed-length) and who presents it.
    internal: Arc<Vec<([u8; 32], InternalCaller)>>,
    /// SHA-256 of the edge's credential: its calls carry the caller it
    /// decided.
    edge: Option<[u8; 32]>,
    trusted_proxies: Arc<Vec<IpNet>>,
    policy: Arc<AccessPolicy>,
    quota: Option<Arc<dyn RequestQuota>>,
}

impl AuthLayer {
    /// A layer that authenticates bearers with `authenticator`, accepts
    /// the internal credentials of `auth` from internal callers and the
    /// edge's forwarded callers next to `auth.edge_token`, reads
    /// `X-Forwarded-For` only from `trusted_proxies`, refuses calls that
    /// do not meet their RPC's requirement in `policy`, then counts the
    /// rest against `quota`.
    pub fn new(
        authenticator: Arc<dyn Authenticator>,
        auth: &AuthConfig,
        trusted_proxies: Vec<IpNet>,
        policy: Arc<AccessPolicy>,
        quota: Option<Arc<dyn RequestQuota>>,
    ) -> Self {
        let digest = |t: &Secret| -> [u8; 32] { Sha256::digest(t.expose().as_bytes()).into() };
        let mut internal = Vec::new();
        if let Some(t) = &auth.internal_token {
            internal.push((
                digest(t),
                InternalCaller {
                    name: "internal".into(),
                    scopes: Vec::new(),
                },
            ));
        }
        for client in &auth.internal_clients {
            internal.push((
                digest(&client.token),
                InternalCaller {
                    name: client.name.clone(),
                    scopes: client.scopes.clone(),
                },
            ));
        }
        Self {
            authenticator,
            internal: Arc::new(internal),
            edge: auth.edge_token.as_ref().map(digest),
            trusted_proxies: Arc::new(trusted_proxies),
            policy,
            quota,
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
where
    S: tower::Service<Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let forwarded = request.headers_mut().remove(FORWARDED_HEADER);
            strip_principal_headers(request.headers_mut());
            let grpc = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/grpc"));
            // The presented service credential, hashed once for every
            // comparison below.
            let presented = grpc
                .then(|| request.headers().get(INTERNAL_TOKEN_HEADER))
                .flatten()
                .map(|given| -> [u8; 32] { Sha256::digest(given.as_bytes()).into() });
            let from_edge = presented.is_some_and(|given| layer.is_edge(&given));
            // Who calls, by where the call comes from; then the one
            // decision (`decide`) about it.
            let (credential, internal, client) = match (from_edge, forwarded) {
                // The edge decided who called; its own credential stands
                // for nobody here.
                (true, Some(value)) => match ForwardedCaller::from_header(&value) {
                    Ok(caller) => {
                        request.extensions_mut().insert(Forwarded);
                        let credential = match caller.principal {
                            Some(principal) => Presented::Decided(principal),
                            None => Presented::Nothing,
                        };
                        (credential, caller.internal, caller.client_ip)
                    }
                    Err(refused) => return Ok(refuse(refused)),
                },
                // The edge calling on its own behalf (VerifySession, Check).
                (true, None) => {
                    let edge = InternalCaller {
                        name: "edge".into(),
                        scopes: Vec::new(),
                    };
                    (Presented::Nothing, Some(edge), None)
                }
                (false, _) => {
                    let internal = presented.and_then(|given| layer.internal_caller(&given));
                    let client = layer.client_ip(&request);
                    // Only gRPC (and gRPC-web, already translated) is
                    // authenticated here. HTTP/JSON routes re-enter as gRPC
                    // calls, which are; a request that is neither still
                    // meets its RPC's requirement, without credentials.
                    let credential = match grpc {
                        true => Presented::Headers(request.headers()),
                        false => Presented::Nothing,
                    };
                    (credential, internal, client)
                }
            };
            let target = Target::Rpc(layer.policy.requirement(request.uri().path()));
            let decided = decide(
                &*layer.authenticator,
                credential,
                internal.as_ref(),
                target,
                client,
                1,
                layer.quota.as_deref(),
            )
            .await;
            let decision = match decided {
                Ok(decision) => decision,
                Err(refused) => return Ok(refuse(refused)),
            };
            let extensions = request.extensions_mut();
            if let Some(ip) = client {
                extensions.insert(ClientIp(ip));
            }
            if let Some(internal) = internal {
                extensions.insert(internal);
            }
            if let Some(authentication) = decision.principal {
                extensions.insert(Authentication(authentication));
            }
            if let Some(refused) = decision.refusal {
                return Ok(refuse(refused));
            }
            inner.call(request).await
        })
    }
}

impl AuthLayer {
    /// The client's address of a request from outside: its peer, or
    /// `X-Forwarded-For` through trusted proxies.
    fn client_ip<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .map(|addr| addr.ip())?;
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Some(crate::client_ip(peer, forwarded, &self.trusted_proxies))
    }

    /// Whether the presented credential (SHA-256) is the edge's
    /// (constant time).
    fn is_edge(&self, given: &[u8; 32]) -> bool {
        self.edge
            .is_some_and(|expected| bool::from(expected.ct_eq(given)))
    }

    /// Compares the presented credential (SHA-256) with every configured
    /// one in constant time (no early exit).
    fn internal_caller(&self, given: &[u8; 32]) -> Option<InternalCaller> {
        let mut found = None;
        for (expected, caller) in self.internal.iter() {
            if bool::from(expected.ct_eq(given)) {
                found = Some(caller.clone());
            }
        }
        found
    }
}

/// The refusal as a gRPC answer, counted.
fn refuse(refused: ApiError) -> http::Response<tonic::body::Body> {
    let status = tonic::Status::from(refused);
    metrics::counter!(
        "twig_auth_refused_total",
        "code" => twig_errors::grpc_code_name(status.code())
    )
    .increment(1);
    status.into_http()
}

fn strip_principal_headers(headers: &mut HeaderMap) {
    let forged: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(PRINCIPAL_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_principal_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("x-twig-principal-user", "someone".parse().unwrap());
        h.insert("x-twig-principal", "someone".parse().unwrap());
        h.insert("x-other", "kept".parse().unwrap());
        strip_principal_headers(&mut h);
        assert_eq!(h.len(), 1);
    }
}
