//! Counting requests: the rule every front door applies to an
//! authenticated request, whether the quota service runs in this process
//! or in another.

use std::sync::Arc;

use futures::future::BoxFuture;
use twig_auth::{Credential, Principal};
use twig_errors::ApiError;
use uuid::Uuid;

use crate::service::{Outcome, Quota};
use crate::subject::Subject;

/// Counts a principal's requests: [`Quota`] here, or
/// [`crate::remote::RemoteQuota`] over gRPC.
pub trait RequestCounter: Send + Sync + 'static {
    /// `cost` units of the principal's request; `None` when its
    /// credential is not limited (see [`request_subject`]).
    fn count_request<'a>(
        &'a self,
        principal: &'a Principal,
        cost: u64,
    ) -> BoxFuture<'a, Result<Option<Outcome>, ApiError>>;
}

/// The request-counting port: what the auth layer and `Authorize` count
/// requests with.
#[derive(Clone)]
pub struct RequestCounting(pub Arc<dyn RequestCounter>);

impl twig_module::Port for RequestCounting {
    const NAME: &'static str = "request quota";
}

/// What a principal's request counts under: its API key (or, when the key
/// has no limit of its own and the organisation has one, the
/// organisation's shared limit). Session requests are not limited here:
/// people signed in are bounded by the login throttles.
pub fn request_subject(principal: &Principal) -> Option<(Subject, Uuid)> {
    match principal.credential {
        Credential::ApiKey { key_id } => Some((Subject::key(key_id), principal.org_id)),
        Credential::Session { .. } => None,
    }
}

impl RequestCounter for Quota {
    fn count_request<'a>(
        &'a self,
        principal: &'a Principal,
        cost: u64,
    ) -> BoxFuture<'a, Result<Option<Outcome>, ApiError>> {
        Box::pin(async move {
            Quota::count_request(self, principal, cost)
                .await
                .map_err(ApiError::from)
        })
    }
}

/// The auth layer's quota: one unit per request, RESOURCE_EXHAUSTED (with
/// the retry delay and the limit) when over.
pub struct PerRequest(pub Arc<dyn RequestCounter>);

impl twig_auth::RequestQuota for PerRequest {
    fn count<'a>(&'a self, principal: &'a Principal) -> twig_auth::principal::QuotaFuture<'a> {
        Box::pin(async move {
            match self.0.count_request(principal, 1).await? {
                Some(outcome) if !outcome.admitted() => Err(Quota::refusal(&outcome)),
                _ => Ok(()),
            }
        })
    }
}

/// `Authorize`'s quota: `cost` units, the outcome reported (the limit and
/// what is left); a refusal is an outcome, an error a store that cannot
/// be reached.
impl twig_auth::Count for dyn RequestCounter + '_ {
    type Outcome = Outcome;

    fn count<'a>(
        &'a self,
        principal: &'a Principal,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Option<Outcome>, ApiError>> + Send + 'a {
        self.count_request(principal, cost)
    }

    fn refusal(outcome: &Outcome) -> Option<ApiError> {
        (!outcome.admitted()).then(|| Quota::refusal(outcome))
    }
}
