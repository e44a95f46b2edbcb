//! The quota service in another process (`remote.quota`): requests are
//! counted there with `Check`, under the same subjects as here, and
//! organisations' plans are asked for with `GetOrganizationPlan`.

use futures::future::BoxFuture;
use tonic::transport::Channel;
use twig_auth::{Principal, ServiceCredential};
use twig_config::Feature;
use twig_errors::ApiError;
use twig_module::{OrgPlan, PlanLookup};
use twig_proto::quota::v1 as pb;
use twig_proto::quota::v1::quota_service_client::QuotaServiceClient;

use crate::requests::{RequestCounter, request_subject};
use crate::service::Outcome;
use crate::subject::Subject;
use crate::window::Decision;

/// Counts requests with the quota service at a gRPC address.
#[derive(Clone)]
pub struct RemoteQuota {
    client: QuotaServiceClient<Channel>,
    credential: ServiceCredential,
}

impl RemoteQuota {
    /// Calls the quota service on `channel`, presenting `credential`.
    pub fn new(channel: Channel, credential: ServiceCredential) -> Self {
        Self {
            client: QuotaServiceClient::new(channel),
            credential,
        }
    }
}

impl RequestCounter for RemoteQuota {
    fn count_request<'a>(
        &'a self,
        principal: &'a Principal,
        cost: u64,
    ) -> BoxFuture<'a, Result<Option<Outcome>, ApiError>> {
        Box::pin(async move {
            let Some((subject, org)) = request_subject(principal) else {
                return Ok(None);
            };
            let request = self.credential.request(pb::CheckRequest {
                subject: subject.into_string(),
                cost,
                org_id: org.to_string(),
            });
            let answer = self
                .client
                .clone()
                .check(request)
                .await
                .map_err(|status| ApiError::from_remote("quota", &status))?
                .into_inner();
            outcome_of(answer).map(Some).ok_or_else(|| {
                ApiError::unavailable(
                    "the quota service answered with a decision this process cannot read; \
                     run the services at the same version",
                )
            })
        })
    }
}

/// The outcome a `Check` answer stands for (`allowed` there is whether to
/// go ahead: the rule's decision, or a shadow or fail-open admission).
fn outcome_of(answer: pb::CheckResponse) -> Option<Outcome> {
    let duration = |d: Option<prost_types::Duration>| -> Option<std::time::Duration> {
        d.and_then(|d| std::time::Duration::try_from(d).ok())
    };
    Some(Outcome {
        decision: Decision {
            allowed: answer.allowed && !answer.shadow_denied,
            limit: answer.limit,
            period: duration(answer.period)?,
            remaining: answer.remaining,
            reset_after: duration(answer.reset_after)?,
            retry_after: duration(answer.retry_after),
        },
        subject: Subject::parse(&answer.counted_subject).ok()?,
        shadow: answer.shadow,
        fail_open: answer.fail_open,
    })
}

/// Organisations' plans from the quota service at a gRPC address
/// (`GetOrganizationPlan`, as an internal caller).
#[derive(Clone)]
pub struct RemotePlans {
    client: QuotaServiceClient<Channel>,
    credential: ServiceCredential,
}

impl RemotePlans {
    /// Asks the quota service on `channel`, presenting `credential`.
    pub fn new(channel: Channel, credential: ServiceCredential) -> Self {
        Self {
            client: QuotaServiceClient::new(channel),
            credential,
        }
    }
}

impl PlanLookup for RemotePlans {
    fn plan_of(&self, org_id: uuid::Uuid) -> BoxFuture<'_, Result<OrgPlan, ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::GetOrganizationPlanRequest {
                organization_id: org_id.to_string(),
            });
            let answer = self
                .client
                .clone()
                .get_organization_plan(request)
                .await
                .map_err(|status| ApiError::from_remote("quota", &status))?
                .into_inner();
            let plan = answer.plan.ok_or_else(|| {
                ApiError::unavailable(
                    "the quota service answered without a plan; run the services at the same \
                     version",
                )
            })?;
            Ok(OrgPlan {
                name: plan.name,
                // A feature this process does not know is not one it gates.
                features: plan
                    .features
                    .iter()
                    .filter_map(|f| Feature::parse(f))
                    .collect(),
            })
        })
    }
}

impl twig_module::Throttling for RemoteQuota {
    fn throttle<'a>(
        &'a self,
        brake: &'a twig_module::Brake,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::ThrottleRequest {
                name: brake.name.to_string(),
                key: key.to_string(),
                limit: brake.limit,
                period: Some(twig_proto::duration(brake.period)),
            });
            self.client
                .clone()
                .throttle(request)
                .await
                .map(|_| ())
                .map_err(|status| ApiError::from_remote("quota", &status))
        })
    }
}
