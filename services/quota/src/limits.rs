//! Which limit applies to a subject: a limit of its own set for a key or
//! an organisation, else the default limit of the organisation's plan,
//! else (for subjects of no organisation) the configured default.
//!
//! Limits of their own live in `quota_limits`; every replica caches what
//! it has looked up (including "none") and forgets a subject when the
//! fan-out says it changed, so a change reaches every replica within the
//! fan-out's delay (milliseconds over Redis pub/sub).

use chrono::{DateTime, Utc};
use sea_orm::ColumnTrait;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use twig_audit::{AuditEvent, Outcome};
use twig_cache::BoundedCache;
use twig_fanout::{Announcement, Fanout, Heard};
use uuid::Uuid;

use crate::entity::quota_limit;
use crate::error::QuotaError;
use crate::plans::{OrgPlans, Plan};
use crate::subject::Subject;
use crate::window::Limit;

/// The fan-out announcement of a changed limit: every replica forgets
/// what it cached for the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitChanged(pub Subject);

/// The topic (the payload is the subject), as older replicas send it.
const TOPIC: &str = "quota.limits";

impl Announcement for LimitChanged {
    fn topic(&self) -> &'static str {
        TOPIC
    }

    fn payload(&self) -> String {
        self.0.as_str().to_string()
    }

    fn decode(topic: &str, payload: &str) -> Option<Self> {
        if topic != TOPIC {
            return None;
        }
        Subject::parse(payload).ok().map(Self)
    }
}

/// Cached lookups at most; beyond, the least useful are evicted (a flood
/// of subjects seen once does not push out those in use).
const MAX_CACHED: u64 = 100_000;

/// A limit and whether it is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The limit.
    pub limit: Limit,
    /// Computed, counted and logged, never enforced.
    pub shadow: bool,
}

/// Who changes a limit, and when.
#[derive(Debug, Clone)]
pub struct Change {
    /// The actor of the audit event (`user:…`, `key:…`, `operator:…`).
    pub actor: String,
    /// When.
    pub now: DateTime<Utc>,
}

/// Whether a limit may be set on the organisation's plan, as decided by
/// whoever sets it against the plan read inside the write.
pub enum Admission {
    /// Set it; `beyond_plan`: above what the plan lets admins set (only
    /// the operator's may be).
    Admit {
        /// Above what the plan lets admins set.
        beyond_plan: bool,
    },
    /// Refuse it with this error; the short reason goes to the audit log.
    Refuse(QuotaError, &'static str),
}

/// Where a rule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The configured default.
    Default,
    /// The subject's own limit.
    Own,
    /// The organisation's own limit, shared by its keys.
    Org,
    /// The default limit of the organisation's plan.
    Plan,
}

/// The limits of every subject.
pub struct Limits {
    default: Rule,
    plans: std::sync::Arc<OrgPlans>,
    db: DatabaseConnection,
    fanout: Fanout,
    /// Every subject's own rule (or none) as last read; a lookup racing a
    /// change does not keep what it read before the change.
    cache: BoundedCache<String, Option<Rule>>,
    /// How long a lookup is believed without an announcement
    /// ([`crate::plans::cache_lifetime`]).
    cached_for: std::time::Duration,
}

impl Limits {
    /// Limits with the default of each organisation's plan in `plans`,
    /// and `default` for subjects of no organisation.
    pub fn new(
        default: Rule,
        plans: std::sync::Arc<OrgPlans>,
        db: DatabaseConnection,
        fanout: Fanout,
    ) -> Self {
        Self {
            default,
            plans,
            cached_for: crate::plans::cache_lifetime(&fanout),
            db,
            fanout,
            cache: BoundedCache::new(MAX_CACHED),
        }
    }

    /// The configured default.
    pub fn default_rule(&self) -> Rule {
        self.default
    }

    /// The plans and who is on which.
    pub fn plans(&self) -> &std::sync::Arc<OrgPlans> {
        &self.plans
    }

    /// The rule a check of `subject` counts under, and the subject it
    /// counts: a key's own limit; else, when `org` is given, the
    /// organisation's own limit (counted for the organisation, shared by
    /// its keys); else the subject's own limit; else, for a subject of an
    /// organisation (`org` given, or the subject `org:<id>` itself), the
    /// default limit of its plan, counted for the subject; else the
    /// configured default.
    pub async fn resolve(
        &self,
        subject: Subject,
        org: Option<Uuid>,
    ) -> Result<(Subject, Rule, Source), QuotaError> {
        if let Some(rule) = self.own_rule(&subject).await? {
            return Ok((subject, rule, Source::Own));
        }
        if let Some(org) = org {
            let org_subject = Subject::org(org);
            if org_subject != subject
                && let Some(rule) = self.own_rule(&org_subject).await?
            {
                return Ok((org_subject, rule, Source::Org));
            }
        }
        let org = org.or_else(|| {
            (subject.kind() == "org")
                .then(|| Uuid::parse_str(subject.value()).ok())
                .flatten()
        });
        if let Some(org) = org {
            let plan = self.plans.plan_of(org).await?;
            return Ok((subject, plan.default_rule, Source::Plan));
        }
        Ok((subject, self.default, Source::Default))
    }

    /// The subject's own limit, if any (only organisations and keys have
    /// one).
    pub async fn own_rule(&self, subject: &Subject) -> Result<Option<Rule>, QuotaError> {
        if !matches!(subject.kind(), "org" | "key") {
            return Ok(None);
        }
        let key = subject.as_str().to_string();
        if let Some(cached) = self.cache.get(&key) {
            return Ok(cached);
        }
        let generation = self.cache.generation();
        let row = quota_limit::Entity::find_by_id(subject.as_str())
            .one(&self.db)
            .await
            .map_err(QuotaError::from)?;
        let rule = row.as_ref().map(rule_of).transpose()?;
        self.cache
            .insert_if_current(generation, key, rule, self.cached_for);
        Ok(rule)
    }

    /// Stores `rule` as the subject's own limit in `org`, with an audit
    /// event in the same transaction, and tells every replica — when
    /// `admit` admits it on the organisation's plan, read in that
    /// transaction under the plan lock (so a concurrent move to a smaller
    /// plan either sees this limit, and removes it, or comes first and is
    /// seen here). A refusal is audited and returned.
    pub async fn set(
        &self,
        org: Uuid,
        subject: &Subject,
        rule: Rule,
        change: Change,
        admit: impl FnOnce(&Plan) -> Admission,
    ) -> Result<quota_limit::Model, QuotaError> {
        let Change { actor, now } = change;
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(QuotaError::from)?;
        let plan = self.plans.lock_in(&txn, org).await?;
        let beyond_plan = match admit(&plan) {
            Admission::Admit { beyond_plan } => beyond_plan,
            Admission::Refuse(refusal, reason) => {
                drop(txn);
                self.record_refusal(org, subject, rule, &actor, now, &plan.name, reason)
                    .await?;
                return Err(refusal);
            }
        };
        let plan = plan.name.clone();
        let model = quota_limit::ActiveModel {
            subject: Set(subject.as_str().to_string()),
            org_id: Set(org),
            limit: Set(i64::try_from(rule.limit.limit()).unwrap_or(i64::MAX)),
            period_ms: Set(i64::try_from(rule.limit.period_ms()).unwrap_or(i64::MAX)),
            buckets: Set(i32::try_from(rule.limit.buckets()).unwrap_or(i32::MAX)),
            shadow: Set(rule.shadow),
            updated_at: Set(now),
            updated_by: Set(actor.clone()),
        };
        quota_limit::Entity::insert(model)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(quota_limit::Column::Subject)
                    .update_columns([
                        quota_limit::Column::Limit,
                        quota_limit::Column::PeriodMs,
                        quota_limit::Column::Buckets,
                        quota_limit::Column::Shadow,
                        quota_limit::Column::UpdatedAt,
                        quota_limit::Column::UpdatedBy,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await
            .map_err(QuotaError::from)?;
        AuditEvent::new("quota.limit_set", Outcome::Success)
            .org(org)
            .actor(actor)
            .target(subject.as_str())
            .details(serde_json::json!({
                "limit": rule.limit.limit(),
                "period_ms": rule.limit.period_ms(),
                "buckets": rule.limit.buckets(),
                "shadow": rule.shadow,
                "plan": plan,
                "beyond_plan": beyond_plan,
            }))
            .record_at(&txn, now)
            .await
            .map_err(QuotaError::from)?;
        let stored = quota_limit::Entity::find_by_id(subject.as_str())
            .one(&txn)
            .await
            .map_err(QuotaError::from)?
            .ok_or_else(|| QuotaError::Vanished(subject.as_str().to_string()))?;
        txn.commit().await.map_err(QuotaError::from)?;
        self.announce(subject).await;
        Ok(stored)
    }

    /// Records a refused attempt to set the subject's own limit beyond
    /// the plan (its own transaction: nothing else is written).
    #[allow(clippy::too_many_arguments)]
    async fn record_refusal(
        &self,
        org: Uuid,
        subject: &Subject,
        rule: Rule,
        actor: &str,
        now: DateTime<Utc>,
        plan: &str,
        reason: &str,
    ) -> Result<(), QuotaError> {
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(QuotaError::from)?;
        AuditEvent::new("quota.limit_refused", Outcome::Failure)
            .org(org)
            .actor(actor)
            .target(subject.as_str())
            .details(serde_json::json!({
                "limit": rule.limit.limit(),
                "period_ms": rule.limit.period_ms(),
                "shadow": rule.shadow,
                "plan": plan,
                "reason": reason,
            }))
            .record_at(&txn, now)
            .await
            .map_err(QuotaError::from)?;
        txn.commit().await.map_err(QuotaError::from)
    }

    /// Removes the subject's own limit (the default applies again).
    /// NOT_FOUND when it had none.
    pub async fn delete(
        &self,
        org: Uuid,
        subject: &Subject,
        actor: String,
        now: DateTime<Utc>,
    ) -> Result<(), QuotaError> {
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(QuotaError::from)?;
        let deleted = quota_limit::Entity::delete_many()
            .filter(quota_limit::Column::Subject.eq(subject.as_str()))
            .filter(quota_limit::Column::OrgId.eq(org))
            .exec(&txn)
            .await
            .map_err(QuotaError::from)?;
        if deleted.rows_affected == 0 {
            return Err(QuotaError::not_found(format!(
                "{} has no limit of its own",
                subject.as_str()
            )));
        }
        AuditEvent::new("quota.limit_deleted", Outcome::Success)
            .org(org)
            .actor(actor)
            .target(subject.as_str())
            .record_at(&txn, now)
            .await
            .map_err(QuotaError::from)?;
        txn.commit().await.map_err(QuotaError::from)?;
        self.announce(subject).await;
        Ok(())
    }

    /// The organisation's own limits (its own and its keys').
    pub async fn list(&self, org: Uuid) -> Result<Vec<quota_limit::Model>, QuotaError> {
        quota_limit::Entity::find()
            .filter(quota_limit::Column::OrgId.eq(org))
            .order_by_asc(quota_limit::Column::Subject)
            .all(&self.db)
            .await
            .map_err(QuotaError::from)
    }

    /// The stored row of a subject's own limit.
    pub async fn stored(
        &self,
        subject: &Subject,
    ) -> Result<Option<quota_limit::Model>, QuotaError> {
        quota_limit::Entity::find_by_id(subject.as_str())
            .one(&self.db)
            .await
            .map_err(QuotaError::from)
    }

    /// Forgets `subject` here and tells every replica it changed.
    pub(crate) async fn announce(&self, subject: &Subject) {
        self.forget(subject.as_str());
        self.fanout.announce(&LimitChanged(subject.clone())).await;
    }

    fn forget(&self, subject: &str) {
        self.cache.invalidate(&subject.to_string());
    }

    /// Applies changes announced by any replica; runs until the fan-out
    /// closes.
    pub async fn listen_for_changes(self: std::sync::Arc<Self>) {
        let mut heard = self.fanout.listen::<LimitChanged>();
        while let Some(heard) = heard.recv().await {
            match heard {
                Heard::Announced(LimitChanged(subject)) => self.forget(subject.as_str()),
                Heard::Resync => self.cache.invalidate_all(),
            }
        }
    }
}

/// The rule of a stored row.
pub fn rule_of(m: &quota_limit::Model) -> Result<Rule, QuotaError> {
    let limit = Limit::new(
        u64::try_from(m.limit).unwrap_or(0),
        std::time::Duration::from_millis(u64::try_from(m.period_ms).unwrap_or(0)),
        u32::try_from(m.buckets).unwrap_or(0),
    )
    .map_err(|source| QuotaError::StoredLimit {
        subject: m.subject.clone(),
        source,
    })?;
    Ok(Rule {
        limit,
        shadow: m.shadow,
    })
}

#[cfg(test)]
mod announcement_tests {
    use super::*;

    #[test]
    fn a_changed_limit_round_trips_in_the_wire_format_of_older_replicas() {
        let a = LimitChanged(Subject::parse("org:0190").unwrap());
        assert!(twig_fanout::round_trips(&a));
        assert_eq!(
            (a.topic(), a.payload().as_str()),
            ("quota.limits", "org:0190")
        );
        assert_eq!(LimitChanged::decode("quota.limits", "no kind"), None);
        assert_eq!(LimitChanged::decode("sessions.ended", "org:0190"), None);
    }
}
