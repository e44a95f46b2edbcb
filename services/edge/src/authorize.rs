//! One request's whole decision: who, may they, and is there quota left.

use std::net::IpAddr;
use std::sync::Arc;

pub use twig_auth::Denial;
use twig_auth::{AccessPolicy, Presented, Principal, Scope};
use twig_errors::ApiError;
use twig_module::Needed;
use twig_quota::{Outcome, RequestCounting};

use crate::router::CredentialRouter;

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A twig RPC path: its declared caller and scope apply.
    Method(String),
    /// A scope the caller's own operation needs (`None`: any principal).
    Scope(Option<Scope>),
}

/// The decision about one request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Who called, once authenticated.
    pub principal: Option<Principal>,
    /// Why not, when refused (with the message for the end client).
    pub refusal: Option<(Denial, ApiError)>,
    /// The quota after this request, when one applies.
    pub quota: Option<Outcome>,
}

impl Decision {
    /// Whether the request may go ahead.
    pub fn allowed(&self) -> bool {
        self.refusal.is_none()
    }
}

/// Makes the edge's decision for the `Authorize` RPC: the auth layer's own
/// ([`twig_auth::decide`]), over the credential router, the declared
/// requirement or the required scope, then the quota (so refused requests
/// spend nothing).
#[derive(Clone)]
pub struct Authorizer {
    credentials: CredentialRouter,
    quota: Needed<RequestCounting>,
    policy: Arc<AccessPolicy>,
}

impl Authorizer {
    /// An authorizer over the credential services, the quota (in this
    /// process or another) and the declared access policy.
    pub fn new(
        credentials: CredentialRouter,
        quota: Needed<RequestCounting>,
        policy: Arc<AccessPolicy>,
    ) -> Self {
        Self {
            credentials,
            quota,
            policy,
        }
    }

    /// Decides about a request presenting `credential` from `client_ip`,
    /// for `target`, costing `cost` quota units. Refusals are decisions;
    /// errors are bad input (INVALID_ARGUMENT) and stores that cannot be
    /// reached (UNAVAILABLE) — never an allowance.
    pub async fn decide(
        &self,
        credential: &str,
        target: &Target,
        client_ip: IpAddr,
        cost: u64,
    ) -> Result<Decision, ApiError> {
        let target = match target {
            Target::Method(path) => twig_auth::Target::PrincipalFor(
                self.policy.requirement(path).ok_or_else(|| {
                    ApiError::invalid_field(
                        "method",
                        "not a twig RPC path (/package.Service/Method); pass required_scope for other operations",
                    )
                })?,
            ),
            Target::Scope(scope) => twig_auth::Target::PrincipalWith(*scope),
        };
        let quota = self.quota.get().map(|RequestCounting(counter)| &**counter);
        let decision = twig_auth::decide(
            &self.credentials,
            Presented::Value(credential),
            None,
            target,
            Some(client_ip),
            cost,
            quota,
        )
        .await?;
        let refusal = decision.refusal.map(|why| {
            let denial = Denial::of(&why).unwrap_or(Denial::PermissionDenied);
            (denial, why)
        });
        Ok(Decision {
            principal: decision.principal.and_then(Result::ok),
            refusal,
            quota: decision.quota,
        })
    }
}
