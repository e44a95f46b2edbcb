//! `twig.edge.v1.AuthorizeService` on the wire.

use std::net::IpAddr;

use tonic::{Request, Response, Status};
use twig_auth::wire::scope_from_pb;
use twig_auth::{Principal, require_internal};
use twig_errors::ApiError;
use twig_proto::edge::v1 as pb;
use twig_proto::edge::v1::authorize_service_server::AuthorizeService;
use twig_quota::Outcome;

use crate::authorize::{Authorizer, Denial, Target};

/// The gRPC face of the [`Authorizer`].
pub struct AuthorizeGrpc {
    inner: Authorizer,
}

impl AuthorizeGrpc {
    /// Serves `inner`.
    pub fn new(inner: Authorizer) -> Self {
        Self { inner }
    }
}

fn quota_to_pb(outcome: &Outcome) -> pb::QuotaState {
    let d = &outcome.decision;
    pb::QuotaState {
        limit: d.limit,
        remaining: d.remaining,
        period: Some(twig_proto::duration(d.period)),
        reset_after: Some(twig_proto::duration(d.reset_after)),
        retry_after: if d.allowed {
            None
        } else {
            d.retry_after.map(twig_proto::duration)
        },
        shadow: outcome.shadow,
    }
}

#[tonic::async_trait]
impl AuthorizeService for AuthorizeGrpc {
    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let target = match r.target {
            Some(pb::authorize_request::Target::Method(path)) => Target::Method(path),
            Some(pb::authorize_request::Target::RequiredScope(raw)) => Target::Scope(
                scope_from_pb(raw)
                    .map_err(|_| ApiError::invalid_field("required_scope", "unknown scope"))?,
            ),
            None => {
                return Err(ApiError::invalid_field(
                    "target",
                    "set method (a twig RPC path) or required_scope",
                )
                .into());
            }
        };
        let client_ip: IpAddr = r.client_ip.trim().parse().map_err(|_| {
            ApiError::invalid_field("client_ip", "the end client's IPv4 or IPv6 address")
        })?;
        let decision = self
            .inner
            .decide(&r.credential, &target, client_ip, r.cost)
            .await?;
        let (denial, reason) = match &decision.refusal {
            None => (pb::Denial::Unspecified, String::new()),
            Some((denial, why)) => (
                match denial {
                    Denial::Unauthenticated => pb::Denial::Unauthenticated,
                    Denial::PermissionDenied => pb::Denial::PermissionDenied,
                    Denial::ResourceExhausted => pb::Denial::ResourceExhausted,
                },
                why.message().to_string(),
            ),
        };
        Ok(Response::new(pb::AuthorizeResponse {
            allowed: decision.allowed(),
            denial: denial as i32,
            reason,
            principal: decision.principal.as_ref().map(Principal::to_pb),
            quota: decision.quota.as_ref().map(quota_to_pb),
        }))
    }
}
