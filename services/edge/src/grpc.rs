//! `twig.edge.v1.AuthorizeService` on the wire.

use std::net::IpAddr;

use tonic::{Request, Response, Status};
use twig_auth::{Credential, Principal, Scope, require_internal};
use twig_errors::ApiError;
use twig_proto::auth::v1 as auth_pb;
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

fn scope_from_pb(raw: i32) -> Result<Option<Scope>, ApiError> {
    match auth_pb::Scope::try_from(raw) {
        Ok(auth_pb::Scope::Unspecified) => Ok(None),
        Ok(auth_pb::Scope::Read) => Ok(Some(Scope::Read)),
        Ok(auth_pb::Scope::Write) => Ok(Some(Scope::Write)),
        Ok(auth_pb::Scope::Execute) => Ok(Some(Scope::Execute)),
        Ok(auth_pb::Scope::Admin) => Ok(Some(Scope::Admin)),
        Err(_) => Err(ApiError::invalid_field("required_scope", "unknown scope")),
    }
}

fn scope_to_pb(scope: Scope) -> i32 {
    (match scope {
        Scope::Read => auth_pb::Scope::Read,
        Scope::Write => auth_pb::Scope::Write,
        Scope::Execute => auth_pb::Scope::Execute,
        Scope::Admin => auth_pb::Scope::Admin,
    }) as i32
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn principal_to_pb(p: &Principal) -> pb::Principal {
    pb::Principal {
        user_id: p.user_id.to_string(),
        organization_id: p.org_id.to_string(),
        credential: Some(match p.credential {
            Credential::Session { session_id } => {
                pb::principal::Credential::SessionId(session_id.to_string())
            }
            Credential::ApiKey { key_id } => {
                pb::principal::Credential::ApiKeyId(key_id.to_string())
            }
        }),
        scopes: p.scopes.iter().map(|s| scope_to_pb(*s)).collect(),
        roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
    }
}

fn quota_to_pb(outcome: &Outcome) -> pb::QuotaState {
    let d = &outcome.decision;
    pb::QuotaState {
        limit: d.limit,
        remaining: d.remaining,
        period: Some(duration(d.period)),
        reset_after: Some(duration(d.reset_after)),
        retry_after: if d.allowed {
            None
        } else {
            d.retry_after.map(duration)
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
            Some(pb::authorize_request::Target::RequiredScope(raw)) => {
                Target::Scope(scope_from_pb(raw)?)
            }
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
            principal: decision.principal.as_ref().map(principal_to_pb),
            quota: decision.quota.as_ref().map(quota_to_pb),
        }))
    }
}
