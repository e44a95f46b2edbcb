//! Which plan each organisation is on, and what it means for limits.
//!
//! What a plan gives is the configuration's ([`PlansConfig`], shared by
//! every service that gates on a plan); which organisation is on which is
//! kept here: the platform operator's assignments in `quota_org_plans`,
//! and `plans.default_plan` for every organisation without one. Every
//! replica caches the plan it looked up per organisation and forgets it
//! when the fan-out says it changed ([`PlanChanged`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QuerySelect,
};
use twig_audit::{AuditEvent, Outcome};
use twig_cache::BoundedCache;
use twig_config::{Feature, PlanConfig, PlanLimit, PlansConfig};
use twig_errors::ApiError;
use twig_fanout::{Announcement, Fanout, Heard};
use twig_module::{OrgPlan, PlanLookup};
use uuid::Uuid;

use crate::entity::{quota_limit, quota_org_plan};
use crate::error::QuotaError;
use crate::limits::{Rule, rule_of};
use crate::subject::Subject;
use crate::window::{Limit, LimitError};

/// The lock a plan change and an admin's limit change of one organisation
/// take ([`twig_db::lock_key`]).
const PLAN_LOCK: &str = "quota.plan";

/// The fan-out announcement of an organisation moved to another plan:
/// every replica forgets the plan it cached for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanChanged(pub Uuid);

const TOPIC: &str = "quota.plans";

impl Announcement for PlanChanged {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn payload(&self) -> String {
        self.0.to_string()
    }

    fn decode(topic: &str, payload: &str) -> Option<Self> {
        if topic != TOPIC {
            return None;
        }
        Uuid::parse_str(payload).ok().map(Self)
    }
}

/// Organisations whose plan is cached at most (beyond, the least useful
/// are evicted).
const MAX_CACHED: u64 = 100_000;

/// How long a cached plan or limit is believed without an announcement:
/// with Redis, changes are announced to every replica at once and this
/// bounds one that missed an announcement; without Redis, another process
/// (the operator's `twig-identity org` command) cannot announce, so a
/// change it makes reaches a running server within the short bound.
pub fn cache_lifetime(fanout: &Fanout) -> Duration {
    if fanout.redis_handle().is_some() {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(10)
    }
}

/// A plan of the configuration, with its default limit as a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Its name.
    pub name: String,
    /// What it gives.
    pub config: PlanConfig,
    /// Its default limit as counted: one slice a second, at most 600.
    pub default_rule: Rule,
}

impl Plan {
    /// Whether the plan includes `feature`.
    pub fn has(&self, feature: Feature) -> bool {
        self.config.has(feature)
    }

    /// The largest limit admins may set; `None` when custom limits are off.
    pub fn custom_limit_max(&self) -> Option<PlanLimit> {
        self.config.custom_limit_max()
    }

    /// Whether admins of an organisation on this plan may set `limit`.
    pub fn admits(&self, limit: &Limit) -> bool {
        self.custom_limit_max()
            .is_some_and(|max| max.admits(limit.limit(), limit.period()))
    }

    /// The plan as other services see it.
    pub fn as_org_plan(&self) -> OrgPlan {
        OrgPlan {
            name: self.name.clone(),
            features: self.config.features.clone(),
        }
    }
}

/// A limit of `limit` per `period`, counted in one slice per second of the
/// period (at most 600): the rule of a plan's limits.
pub fn plan_limit(limit: &PlanLimit) -> Result<Limit, LimitError> {
    let buckets = u32::try_from(limit.period.as_secs().clamp(1, 600)).unwrap_or(600);
    Limit::new(limit.requests, limit.period, buckets)
}

/// The plan of one organisation, as the API shows it.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The organisation.
    pub org_id: Uuid,
    /// Its plan.
    pub plan: Arc<Plan>,
    /// The operator's assignment; `None` when the default plan applies.
    pub stored: Option<quota_org_plan::Model>,
}

/// The plans, and which organisation is on which.
pub struct OrgPlans {
    plans: BTreeMap<String, Arc<Plan>>,
    default: Arc<Plan>,
    db: DatabaseConnection,
    fanout: Fanout,
    cache: BoundedCache<Uuid, Arc<Plan>>,
    cached_for: Duration,
}

impl OrgPlans {
    /// The plans of `config` (checked: every default limit a valid rule,
    /// the default plan one of them), their default limits in shadow mode
    /// when `shadow`.
    pub fn new(
        config: &PlansConfig,
        shadow: bool,
        db: DatabaseConnection,
        fanout: Fanout,
    ) -> Result<Self, String> {
        let mut plans = BTreeMap::new();
        for (name, plan) in &config.plans {
            let limit = plan_limit(&plan.default_limit)
                .map_err(|e| format!("plans.{name}.default_limit: {e}"))?;
            plans.insert(
                name.clone(),
                Arc::new(Plan {
                    name: name.clone(),
                    config: plan.clone(),
                    default_rule: Rule { limit, shadow },
                }),
            );
        }
        let default = plans.get(&config.default_plan).cloned().ok_or_else(|| {
            format!(
                "plans.default_plan {:?} is not a plan; plans: {}",
                config.default_plan,
                config.names()
            )
        })?;
        Ok(Self {
            plans,
            default,
            db,
            cached_for: cache_lifetime(&fanout),
            fanout,
            cache: BoundedCache::new(MAX_CACHED),
        })
    }

    /// The plan named `name`.
    pub fn named(&self, name: &str) -> Option<Arc<Plan>> {
        self.plans.get(name).cloned()
    }

    /// The default plan.
    pub fn default_plan(&self) -> Arc<Plan> {
        self.default.clone()
    }

    /// The names of the plans, for messages.
    pub fn names(&self) -> String {
        self.plans.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The names of the plans that let admins set their own limits.
    pub fn names_with_custom_limits(&self) -> Vec<&str> {
        self.plans
            .values()
            .filter(|p| p.custom_limit_max().is_some())
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The plan a stored name stands for: a plan the configuration no
    /// longer names counts as the default plan (logged), never as more.
    fn resolve(&self, org: Uuid, stored: &str) -> Arc<Plan> {
        match self.plans.get(stored) {
            Some(plan) => plan.clone(),
            None => {
                tracing::warn!(
                    org_id = %org,
                    plan = stored,
                    default_plan = %self.default.name,
                    "the organisation is on a plan the configuration no longer names; \
                     the default plan applies until [plans] names it again or the operator \
                     moves the organisation"
                );
                self.default.clone()
            }
        }
    }

    /// The plan of `org` (cached).
    pub async fn plan_of(&self, org: Uuid) -> Result<Arc<Plan>, QuotaError> {
        if let Some(plan) = self.cache.get(&org) {
            return Ok(plan);
        }
        let generation = self.cache.generation();
        let row = quota_org_plan::Entity::find_by_id(org)
            .one(&self.db)
            .await
            .map_err(QuotaError::from)?;
        let plan = match &row {
            Some(row) => self.resolve(org, &row.plan),
            None => self.default.clone(),
        };
        self.cache
            .insert_if_current(generation, org, plan.clone(), self.cached_for);
        Ok(plan)
    }

    /// The plan of `org` read inside `txn`, with the organisation's plan
    /// lock held until `txn` ends: a plan change (which takes the same
    /// lock in [`OrgPlans::set`]) waits, so what `txn` writes against this
    /// plan cannot land after a move to a smaller one.
    pub async fn lock_in(
        &self,
        txn: &impl ConnectionTrait,
        org: Uuid,
    ) -> Result<Arc<Plan>, QuotaError> {
        twig_db::lock_key(txn, PLAN_LOCK, org.as_bytes())
            .await
            .map_err(QuotaError::from)?;
        let row = quota_org_plan::Entity::find_by_id(org)
            .one(txn)
            .await
            .map_err(QuotaError::from)?;
        Ok(match &row {
            Some(row) => self.resolve(org, &row.plan),
            None => self.default.clone(),
        })
    }

    /// The plan of `org` and the operator's assignment, read now.
    pub async fn assignment(&self, org: Uuid) -> Result<Assignment, QuotaError> {
        let stored = quota_org_plan::Entity::find_by_id(org)
            .one(&self.db)
            .await
            .map_err(QuotaError::from)?;
        let plan = match &stored {
            Some(row) => self.resolve(org, &row.plan),
            None => self.default.clone(),
        };
        Ok(Assignment {
            org_id: org,
            plan,
            stored,
        })
    }

    /// Puts `org` on the plan named `name`, with an audit event in the
    /// same transaction, and tells every replica. Limits of their own that
    /// the organisation's admins set and the new plan does not admit are
    /// removed in the same transaction (audited; the plan's default
    /// applies again): a move to a smaller plan takes back what only the
    /// bigger one allowed. The operator's own limits stay. Returns the
    /// assignment and the subjects whose limit was removed.
    pub async fn set(
        &self,
        org: Uuid,
        name: &str,
        actor: String,
        now: DateTime<Utc>,
    ) -> Result<(Assignment, Vec<Subject>), QuotaError> {
        let Some(plan) = self.named(name) else {
            return Err(QuotaError::invalid_field(
                "plan",
                format!("{name:?} is not a plan; plans: {}", self.names()),
            ));
        };
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(QuotaError::from)?;
        twig_db::lock_key(&txn, PLAN_LOCK, org.as_bytes())
            .await
            .map_err(QuotaError::from)?;
        let previous = quota_org_plan::Entity::find_by_id(org)
            .one(&txn)
            .await
            .map_err(QuotaError::from)?
            .map(|row| row.plan);
        quota_org_plan::Entity::insert(quota_org_plan::ActiveModel {
            org_id: Set(org),
            plan: Set(plan.name.clone()),
            updated_at: Set(now),
            updated_by: Set(actor.clone()),
        })
        .on_conflict(
            OnConflict::column(quota_org_plan::Column::OrgId)
                .update_columns([
                    quota_org_plan::Column::Plan,
                    quota_org_plan::Column::UpdatedAt,
                    quota_org_plan::Column::UpdatedBy,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await
        .map_err(QuotaError::from)?;
        AuditEvent::new("quota.plan_set", Outcome::Success)
            .org(org)
            .actor(actor.clone())
            .target(format!("org:{org}"))
            .details(serde_json::json!({
                "plan": plan.name,
                // `null`: the default plan applied until now.
                "previous": previous,
                "default_plan": self.default.name,
            }))
            .record_at(&txn, now)
            .await
            .map_err(QuotaError::from)?;
        let mut removed = Vec::new();
        let own = quota_limit::Entity::find()
            .filter(quota_limit::Column::OrgId.eq(org))
            .all(&txn)
            .await
            .map_err(QuotaError::from)?;
        for row in own {
            let by_operator = row.updated_by.starts_with("operator:");
            let admitted = rule_of(&row).is_ok_and(|r| !r.shadow && plan.admits(&r.limit));
            if by_operator || admitted {
                continue;
            }
            quota_limit::Entity::delete_by_id(row.subject.clone())
                .exec(&txn)
                .await
                .map_err(QuotaError::from)?;
            AuditEvent::new("quota.limit_deleted", Outcome::Success)
                .org(org)
                .actor(actor.clone())
                .target(row.subject.as_str())
                .details(serde_json::json!({
                    "reason": "plan_changed",
                    "plan": plan.name,
                    "limit": row.limit,
                    "period_ms": row.period_ms,
                    "set_by": row.updated_by,
                }))
                .record_at(&txn, now)
                .await
                .map_err(QuotaError::from)?;
            if let Ok(subject) = Subject::parse(&row.subject) {
                removed.push(subject);
            }
        }
        let stored = quota_org_plan::Entity::find_by_id(org)
            .one(&txn)
            .await
            .map_err(QuotaError::from)?
            .ok_or_else(|| QuotaError::Vanished(format!("org:{org}")))?;
        txn.commit().await.map_err(QuotaError::from)?;
        self.cache.invalidate(&org);
        self.fanout.announce(&PlanChanged(org)).await;
        Ok((
            Assignment {
                org_id: org,
                plan,
                stored: Some(stored),
            },
            removed,
        ))
    }

    /// Stored plan names the configuration does not name, with how many
    /// organisations are on each (those count as on the default plan).
    pub async fn unknown_assignments(&self) -> Result<Vec<(String, u64)>, QuotaError> {
        let counts: Vec<(String, i64)> = quota_org_plan::Entity::find()
            .select_only()
            .column(quota_org_plan::Column::Plan)
            .column_as(quota_org_plan::Column::OrgId.count(), "organisations")
            .group_by(quota_org_plan::Column::Plan)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(QuotaError::from)?;
        Ok(counts
            .into_iter()
            .filter(|(name, _)| !self.plans.contains_key(name))
            .map(|(name, n)| (name, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Applies changes announced by any replica; runs until the fan-out
    /// closes.
    pub async fn listen_for_changes(self: Arc<Self>) {
        let mut heard = self.fanout.listen::<PlanChanged>();
        while let Some(heard) = heard.recv().await {
            match heard {
                Heard::Announced(PlanChanged(org)) => self.cache.invalidate(&org),
                Heard::Resync => self.cache.invalidate_all(),
            }
        }
    }
}

/// The [`PlanLookup`] port of the service in this process.
pub struct LocalPlans(pub Arc<OrgPlans>);

impl PlanLookup for LocalPlans {
    fn plan_of(&self, org_id: Uuid) -> BoxFuture<'_, Result<OrgPlan, ApiError>> {
        Box::pin(async move {
            let plan = self.0.plan_of(org_id).await.map_err(ApiError::from)?;
            Ok(plan.as_org_plan())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_plan_round_trips() {
        let a = PlanChanged(Uuid::now_v7());
        assert!(twig_fanout::round_trips(&a));
        assert_eq!(PlanChanged::decode("quota.plans", "not a uuid"), None);
        assert_eq!(PlanChanged::decode("quota.limits", &a.payload()), None);
    }

    #[test]
    fn every_built_in_plan_limit_is_a_valid_rule() {
        for (name, plan) in &PlansConfig::default().plans {
            let limit = plan_limit(&plan.default_limit).unwrap();
            assert_eq!(limit.buckets(), 60, "{name}");
            if let Some(max) = &plan.max_custom_limit {
                plan_limit(max).unwrap();
            }
        }
        let day = PlanLimit {
            requests: 5,
            period: Duration::from_secs(86_400),
        };
        assert_eq!(plan_limit(&day).unwrap().buckets(), 600);
    }
}
