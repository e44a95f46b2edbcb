//! `twig.quota.v1.QuotaService` on the wire.

use std::sync::Arc;
use twig_errors::ApiError;

use tonic::{Request, Response, Status};
use twig_auth::{OPERATOR_SCOPE, principal, require_internal, require_internal_scope};
use twig_proto::quota::v1 as pb;

use crate::entity::quota_limit;
use crate::error::QuotaError;
use crate::limits::{Rule, Source, rule_of};
use crate::plans::Assignment;
use crate::service::{Quota, parse_org};
use crate::window::Limit;

/// The gRPC face of the quota service.
#[derive(Clone)]
pub struct QuotaGrpc {
    inner: Arc<Quota>,
}

impl QuotaGrpc {
    /// Wraps the service.
    pub fn new(inner: Arc<Quota>) -> Self {
        Self { inner }
    }
}

/// The rule asked for in a request, checked.
fn requested_rule(limit: Option<&pb::Limit>) -> Result<(String, Rule), QuotaError> {
    let l = limit.ok_or_else(|| QuotaError::invalid_field("limit", "is required"))?;
    let period = l
        .period
        .as_ref()
        .and_then(twig_proto::std_duration)
        .ok_or_else(|| QuotaError::invalid_field("limit.period", "is required and positive"))?;
    let buckets = if l.buckets == 0 {
        u32::try_from(period.as_secs().clamp(1, 600)).unwrap_or(600)
    } else {
        l.buckets
    };
    let limit = Limit::new(l.limit, period, buckets).map_err(|source| {
        let field = match source {
            crate::LimitError::ZeroLimit | crate::LimitError::HugeLimit => "limit.limit",
            crate::LimitError::Period => "limit.period",
            crate::LimitError::Buckets => "limit.buckets",
        };
        QuotaError::InvalidLimit { field, source }
    })?;
    Ok((
        l.subject.clone(),
        Rule {
            limit,
            shadow: l.shadow,
        },
    ))
}

fn wire_limit(subject: &str, rule: &Rule, stored: Option<&quota_limit::Model>) -> pb::Limit {
    pb::Limit {
        subject: subject.to_string(),
        limit: rule.limit.limit(),
        period: Some(twig_proto::duration(rule.limit.period())),
        buckets: rule.limit.buckets(),
        shadow: rule.shadow,
        updated_at: stored.map(|m| twig_proto::timestamp(m.updated_at)),
        updated_by: stored.map(|m| m.updated_by.clone()).unwrap_or_default(),
    }
}

fn wire_stored(m: &quota_limit::Model) -> Result<pb::Limit, QuotaError> {
    Ok(wire_limit(&m.subject, &rule_of(m)?, Some(m)))
}

fn wire_plan_limit(limit: &twig_config::PlanLimit) -> pb::PlanLimit {
    pb::PlanLimit {
        requests: limit.requests,
        period: Some(twig_proto::duration(limit.period)),
    }
}

fn wire_assignment(a: &Assignment) -> pb::GetOrganizationPlanResponse {
    let plan = &a.plan;
    pb::GetOrganizationPlanResponse {
        organization_id: a.org_id.to_string(),
        plan: Some(pb::Plan {
            name: plan.name.clone(),
            default_limit: Some(wire_plan_limit(&plan.config.default_limit)),
            max_custom_limit: plan.custom_limit_max().as_ref().map(wire_plan_limit),
            features: plan
                .config
                .features
                .iter()
                .map(|f| f.as_str().to_string())
                .collect(),
        }),
        assigned: a.stored.is_some(),
        updated_at: a
            .stored
            .as_ref()
            .map(|m| twig_proto::timestamp(m.updated_at)),
        updated_by: a
            .stored
            .as_ref()
            .map(|m| m.updated_by.clone())
            .unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl pb::quota_service_server::QuotaService for QuotaGrpc {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let outcome = self.inner.check(&r.subject, &r.org_id, r.cost).await?;
        let d = outcome.decision;
        let (allowed, shadow_denied) = (outcome.admitted(), outcome.shadow_denied());
        Ok(Response::new(pb::CheckResponse {
            allowed,
            limit: d.limit,
            remaining: d.remaining,
            reset_after: Some(twig_proto::duration(d.reset_after)),
            retry_after: d.retry_after.map(twig_proto::duration),
            period: Some(twig_proto::duration(d.period)),
            shadow: outcome.shadow,
            shadow_denied,
            fail_open: outcome.fail_open,
            counted_subject: outcome.subject.into_string(),
        }))
    }

    async fn throttle(
        &self,
        request: Request<pb::ThrottleRequest>,
    ) -> Result<Response<pb::ThrottleResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let period = r
            .period
            .as_ref()
            .and_then(twig_proto::std_duration)
            .ok_or_else(|| ApiError::invalid_field("period", "is required, 1 s to 1 day"))?;
        let checked = crate::brakes::checked_parts(&r.name, r.limit, period, &r.key)?;
        self.inner.count_brake(checked).await?;
        Ok(Response::new(pb::ThrottleResponse {}))
    }

    async fn set_limit(
        &self,
        request: Request<pb::SetLimitRequest>,
    ) -> Result<Response<pb::SetLimitResponse>, Status> {
        let p = principal(&request)?;
        let (subject, rule) = requested_rule(request.get_ref().limit.as_ref())?;
        let stored = self.inner.set_limit(p, &subject, rule).await?;
        Ok(Response::new(pb::SetLimitResponse {
            limit: Some(wire_stored(&stored)?),
        }))
    }

    async fn get_limit(
        &self,
        request: Request<pb::GetLimitRequest>,
    ) -> Result<Response<pb::GetLimitResponse>, Status> {
        let p = principal(&request)?;
        let e = self.inner.get_limit(p, &request.get_ref().subject).await?;
        Ok(Response::new(pb::GetLimitResponse {
            limit: Some(wire_limit(e.subject.as_str(), &e.rule, e.stored.as_ref())),
            source: match e.source {
                Source::Default => pb::LimitSource::Default,
                Source::Own => pb::LimitSource::Own,
                Source::Org => pb::LimitSource::Organisation,
                Source::Plan => pb::LimitSource::Plan,
            }
            .into(),
        }))
    }

    async fn list_limits(
        &self,
        request: Request<pb::ListLimitsRequest>,
    ) -> Result<Response<pb::ListLimitsResponse>, Status> {
        let p = principal(&request)?;
        let limits = self
            .inner
            .list_limits(p)
            .await?
            .iter()
            .map(wire_stored)
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListLimitsResponse { limits }))
    }

    async fn delete_limit(
        &self,
        request: Request<pb::DeleteLimitRequest>,
    ) -> Result<Response<pb::DeleteLimitResponse>, Status> {
        let p = principal(&request)?;
        self.inner
            .delete_limit(p, &request.get_ref().subject)
            .await?;
        Ok(Response::new(pb::DeleteLimitResponse {}))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        let caller = if require_internal(&request).is_ok() {
            None
        } else {
            Some(principal(&request)?)
        };
        let r = request.get_ref();
        let time = |t: &Option<prost_types::Timestamp>, field: &str| {
            t.as_ref()
                .and_then(twig_proto::datetime)
                .ok_or_else(|| QuotaError::invalid_field(field, "is required"))
        };
        let from = time(&r.from, "from")?;
        let to = time(&r.to, "to")?;
        let minutes = self.inner.usage(caller, &r.subject, from, to).await?;
        Ok(Response::new(pb::GetUsageResponse {
            minutes: minutes
                .into_iter()
                .map(|(minute, c)| pb::MinuteUsage {
                    minute: chrono::DateTime::from_timestamp(minute * 60, 0)
                        .map(twig_proto::timestamp),
                    allowed: c.allowed,
                    denied: c.denied,
                    shadow_denied: c.shadow_denied,
                })
                .collect(),
        }))
    }

    async fn get_organization_plan(
        &self,
        request: Request<pb::GetOrganizationPlanRequest>,
    ) -> Result<Response<pb::GetOrganizationPlanResponse>, Status> {
        let caller = if require_internal(&request).is_ok() {
            None
        } else {
            Some(principal(&request)?)
        };
        let assignment = self
            .inner
            .organization_plan(caller, &request.get_ref().organization_id)
            .await?;
        Ok(Response::new(wire_assignment(&assignment)))
    }

    async fn set_organization_plan(
        &self,
        request: Request<pb::SetOrganizationPlanRequest>,
    ) -> Result<Response<pb::SetOrganizationPlanResponse>, Status> {
        let operator = require_internal_scope(&request, OPERATOR_SCOPE)?
            .name
            .clone();
        let r = request.get_ref();
        let org = parse_org(&r.organization_id)?;
        let assignment = self
            .inner
            .set_organization_plan(&operator, org, &r.plan)
            .await?;
        Ok(Response::new(pb::SetOrganizationPlanResponse {
            plan: Some(wire_assignment(&assignment)),
        }))
    }

    async fn set_organization_limit(
        &self,
        request: Request<pb::SetOrganizationLimitRequest>,
    ) -> Result<Response<pb::SetOrganizationLimitResponse>, Status> {
        let operator = require_internal_scope(&request, OPERATOR_SCOPE)?
            .name
            .clone();
        let r = request.get_ref();
        let org = parse_org(&r.organization_id)?;
        let (subject, rule) = requested_rule(r.limit.as_ref())?;
        let stored = self
            .inner
            .set_limit_as_operator(&operator, org, &subject, rule)
            .await?;
        Ok(Response::new(pb::SetOrganizationLimitResponse {
            limit: Some(wire_stored(&stored)?),
        }))
    }
}
