//! One request's whole decision: who, may they, and is there quota left.

use std::net::IpAddr;
use std::sync::Arc;

use twig_auth::{AccessPolicy, Authenticator, Principal, Scope};
use twig_errors::{ApiError, ErrorCode};
use twig_module::Needed;
use twig_quota::{Outcome, Quota, RequestCounting};

use crate::router::CredentialRouter;

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A twig RPC path: its declared caller and scope apply.
    Method(String),
    /// A scope the caller's own operation needs (`None`: any principal).
    Scope(Option<Scope>),
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No valid credential.
    Unauthenticated,
    /// A valid credential without the right.
    PermissionDenied,
    /// Over the quota.
    ResourceExhausted,
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

    fn refused(principal: Option<Principal>, denial: Denial, why: ApiError) -> Self {
        Self {
            principal,
            refusal: Some((denial, why)),
            quota: None,
        }
    }
}

/// Makes the edge's decision for the `Authorize` RPC, in the auth layer's
/// order and with its parts: the credential router, the declared
/// requirement, then the quota (so refused requests spend nothing).
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
        let requirement = match target {
            Target::Method(path) => Some(self.policy.requirement(path).ok_or_else(
                || {
                    ApiError::invalid_field(
                        "method",
                        "not a twig RPC path (/package.Service/Method); pass required_scope for other operations",
                    )
                },
            )?),
            Target::Scope(_) => None,
        };
        let token = match twig_auth::bearer::credential(credential) {
            Ok(token) => token,
            Err(e) => return Ok(Decision::refused(None, Denial::Unauthenticated, e)),
        };
        let principal = match self.credentials.authenticate(token, Some(client_ip)).await {
            Ok(p) => p,
            Err(e) => {
                return match denial_of(&e) {
                    Some(denial) => Ok(Decision::refused(None, denial, e)),
                    None => Err(e),
                };
            }
        };
        let permitted = match (&requirement, target) {
            (Some(requirement), _) => requirement.check_principal(&principal),
            (None, Target::Scope(Some(scope))) => principal.require_scope(*scope),
            (None, _) => Ok(()),
        };
        if let Err(e) = permitted {
            let denial = denial_of(&e).unwrap_or(Denial::PermissionDenied);
            return Ok(Decision::refused(Some(principal), denial, e));
        }
        let quota = match self.quota.get() {
            Some(RequestCounting(quota)) => quota.count_request(&principal, cost).await?,
            None => None,
        };
        let refusal = quota
            .as_ref()
            .filter(|outcome| !outcome.admitted())
            .map(|outcome| (Denial::ResourceExhausted, Quota::refusal(outcome)));
        Ok(Decision {
            principal: Some(principal),
            refusal,
            quota,
        })
    }
}

/// The denial an authentication or authorization error stands for; `None`
/// for errors that are not answers about the caller (a store is down).
fn denial_of(e: &ApiError) -> Option<Denial> {
    match e.code() {
        ErrorCode::Unauthenticated => Some(Denial::Unauthenticated),
        ErrorCode::PermissionDenied => Some(Denial::PermissionDenied),
        ErrorCode::ResourceExhausted => Some(Denial::ResourceExhausted),
        _ => None,
    }
}
