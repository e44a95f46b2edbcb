//! The quota service: which limit applies, the decision, what is counted,
//! and who may change limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use twig_auth::{Principal, Scope};
use twig_clock::Clock;
use twig_errors::ApiError;
use twig_module::{KeyOwners, MemberKeys, Needed};

use crate::error::QuotaError;
use uuid::Uuid;

use crate::entity::quota_limit;
use crate::limits::{Admission, Change, Limits, Rule, Source};
use crate::plans::{Assignment, Plan};
use crate::store::Store;
use crate::subject::Subject;
use crate::usage::{Counts, MAX_MINUTES, Tally, Usage};
use crate::window::{Decision, Limit};

/// The largest cost one check may carry.
pub const MAX_COST: u64 = 1_000_000_000_000;

/// What a check does when the store (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorePolicy {
    /// Admit, uncounted.
    Open,
    /// Refuse with UNAVAILABLE.
    Closed,
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision under the rule.
    pub decision: Decision,
    /// The subject counted (an organisation's when its limit is shared by
    /// its keys).
    pub subject: Subject,
    /// The rule is in shadow mode: its refusals are not enforced.
    pub shadow: bool,
    /// The store could not be reached and the policy admitted the check.
    pub fail_open: bool,
}

impl Outcome {
    /// Whether the caller should go ahead.
    pub fn admitted(&self) -> bool {
        self.decision.allowed || self.shadow || self.fail_open
    }

    /// A shadow rule would have refused.
    pub fn shadow_denied(&self) -> bool {
        self.shadow && !self.decision.allowed && !self.fail_open
    }
}

/// A limit as the API shows it.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The subject asked about.
    pub subject: Subject,
    /// The rule.
    pub rule: Rule,
    /// Whether it is the subject's own, the organisation's or the default.
    pub source: Source,
    /// The stored row, for a limit of the subject's own.
    pub stored: Option<quota_limit::Model>,
}

/// Decision counters, registered once (a lookup per check would cost).
struct Decisions {
    allowed: metrics::Counter,
    denied: metrics::Counter,
    shadow_denied: metrics::Counter,
    fail_open: metrics::Counter,
    fail_closed: metrics::Counter,
}

impl Decisions {
    fn register() -> Self {
        let counter =
            |d: &'static str| metrics::counter!("twig_quota_checks_total", "decision" => d);
        Self {
            allowed: counter("allowed"),
            denied: counter("denied"),
            shadow_denied: counter("shadow_denied"),
            fail_open: counter("fail_open"),
            fail_closed: counter("fail_closed"),
        }
    }
}

/// Lets a log line through at most once a second.
#[derive(Default)]
struct OncePerSecond(AtomicU64);

impl OncePerSecond {
    fn ready(&self, now_ms: u64) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= 1_000
            && self
                .0
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The quota service.
pub struct Quota {
    decisions: Decisions,
    store: Store,
    limits: Arc<Limits>,
    usage: Usage,
    policy: StorePolicy,
    clock: Arc<dyn Clock>,
    keys: Needed<KeyOwners>,
    member_keys: Needed<MemberKeys>,
    store_down_log: OncePerSecond,
    shadow_log: OncePerSecond,
}

impl Quota {
    /// A service counting in `store` under `limits`.
    pub fn new(
        store: Store,
        limits: Arc<Limits>,
        usage: Usage,
        policy: StorePolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            decisions: Decisions::register(),
            store,
            limits,
            usage,
            policy,
            clock,
            keys: Needed::ready(None),
            member_keys: Needed::ready(None),
            store_down_log: OncePerSecond::default(),
            shadow_log: OncePerSecond::default(),
        }
    }

    /// Lets admins manage their keys' limits (the api-keys service says
    /// whose a key is); without it only organisations' limits can be
    /// managed here.
    pub fn with_key_ownership(mut self, keys: Needed<KeyOwners>) -> Self {
        self.keys = keys;
        self
    }

    /// Lets the operator set limits of keys (the api-keys service says
    /// which organisation a key is of).
    pub fn with_member_keys(mut self, keys: Needed<MemberKeys>) -> Self {
        self.member_keys = keys;
        self
    }

    /// The limits, for the fan-out listener.
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.clone()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0)
    }

    /// Checks `cost` for `subject` (as given on the wire), counted under
    /// the organisation's shared limit when `org` is given and has one.
    pub async fn check(&self, subject: &str, org: &str, cost: u64) -> Result<Outcome, QuotaError> {
        let subject = Subject::parse(subject)
            .map_err(|reason| QuotaError::invalid_field("subject", reason))?;
        let org = if org.is_empty() {
            None
        } else {
            Some(
                Uuid::parse_str(org)
                    .map_err(|_| QuotaError::invalid_field("org_id", "must be a UUID or empty"))?,
            )
        };
        self.check_subject(subject, org, units(cost)?).await
    }

    /// `cost` units of an API key's request, counted for the key (or its
    /// organisation's shared limit); `None` for other credentials, which
    /// are not limited here.
    pub async fn count_request(
        &self,
        principal: &Principal,
        cost: u64,
    ) -> Result<Option<Outcome>, QuotaError> {
        let Some((subject, org)) = crate::requests::request_subject(principal) else {
            return Ok(None);
        };
        self.check_subject(subject, Some(org), units(cost)?)
            .await
            .map(Some)
    }

    /// RESOURCE_EXHAUSTED for a refused request, with the retry delay and
    /// the limit.
    pub fn refusal(outcome: &Outcome) -> ApiError {
        let d = &outcome.decision;
        ApiError::resource_exhausted(
            format!(
                "rate limit exceeded: {} requests per {} s for {}; retry later",
                d.limit,
                d.period.as_secs(),
                if outcome.subject.kind() == "org" {
                    "this organisation"
                } else {
                    "this API key"
                },
            ),
            d.retry_after.unwrap_or(d.period),
        )
        .with_rate_limit(twig_errors::RateLimit {
            limit: d.limit,
            remaining: d.remaining,
            reset: d.retry_after.unwrap_or(d.period),
        })
    }

    async fn check_subject(
        &self,
        subject: Subject,
        org: Option<Uuid>,
        cost: u64,
    ) -> Result<Outcome, QuotaError> {
        let (subject, rule, _) = self.limits.resolve(subject, org).await?;
        let now_ms = self.now_ms();
        let minute = i64::try_from(now_ms / 60_000).unwrap_or(0);
        let outcome = match self.store.check(&subject, &rule.limit, now_ms, cost).await {
            Ok(decision) => Outcome {
                decision,
                subject,
                shadow: rule.shadow,
                fail_open: false,
            },
            Err(e) => {
                self.warn_store_down(&e);
                match self.policy {
                    StorePolicy::Closed => {
                        self.decisions.fail_closed.increment(1);
                        return Err(QuotaError::StoreClosed);
                    }
                    StorePolicy::Open => Outcome {
                        decision: unknown(&rule.limit),
                        subject,
                        shadow: rule.shadow,
                        fail_open: true,
                    },
                }
            }
        };
        let (counter, tally) = if outcome.fail_open {
            (&self.decisions.fail_open, Tally::Allowed)
        } else if outcome.decision.allowed {
            (&self.decisions.allowed, Tally::Allowed)
        } else if outcome.shadow {
            (&self.decisions.shadow_denied, Tally::ShadowDenied)
        } else {
            (&self.decisions.denied, Tally::Denied)
        };
        if outcome.shadow_denied() && self.shadow_log.ready(now_ms) {
            tracing::info!(
                subject = outcome.subject.as_str(),
                limit = rule.limit.limit(),
                period_s = rule.limit.period().as_secs(),
                "shadow limit would refuse this check; admitted (logged at most once a second, \
                 every one counted as decision=shadow_denied)"
            );
        }
        counter.increment(1);
        self.usage.record(&outcome.subject, minute, tally);
        Ok(outcome)
    }

    /// Counts one request of `brake` for `key` (`crate::brakes`); over the
    /// brake, RESOURCE_EXHAUSTED with the retry delay. A store that cannot
    /// be reached follows the store policy, as every check does.
    pub async fn count_brake(&self, (subject, limit): (Subject, Limit)) -> Result<(), ApiError> {
        match self.store.check(&subject, &limit, self.now_ms(), 1).await {
            Ok(d) if d.allowed => Ok(()),
            Ok(d) => {
                metrics::counter!("twig_brake_refusals_total").increment(1);
                // One message for every brake: which one held (the
                // address's or the email's) is not the caller's to learn.
                Err(ApiError::resource_exhausted(
                    "too many requests of this kind; retry after the delay given",
                    d.retry_after.unwrap_or(d.period),
                ))
            }
            Err(e) => {
                self.warn_store_down(&e);
                match self.policy {
                    StorePolicy::Closed => Err(QuotaError::StoreClosed.into()),
                    StorePolicy::Open => Ok(()),
                }
            }
        }
    }

    /// One warning per second at most while the store is down.
    fn warn_store_down(&self, e: &crate::store::Unreachable) {
        if self.store_down_log.ready(self.now_ms()) {
            tracing::warn!(
                error = %e,
                store = self.store.name(),
                policy = match self.policy {
                    StorePolicy::Open => "open: admitting uncounted",
                    StorePolicy::Closed => "closed: refusing",
                },
                "quota store unreachable"
            );
        }
    }

    /// Sets the own limit of `subject` (`org:<id>` of the caller's
    /// organisation or `key:<id>` of one of its keys). Needs admin, and
    /// stays within the organisation's plan: a plan without custom limits,
    /// or a limit above its maximum, is FAILED_PRECONDITION; a shadow limit
    /// (never enforced) PERMISSION_DENIED. Refusals are audited.
    pub async fn set_limit(
        &self,
        principal: &Principal,
        subject: &str,
        rule: Rule,
    ) -> Result<quota_limit::Model, QuotaError> {
        let subject = self.own_subject(principal, subject, Scope::Admin).await?;
        let org = principal.org_id;
        let change = Change {
            actor: principal.actor(),
            now: self.clock.now(),
        };
        self.limits
            .set(org, &subject, rule, change, |plan| {
                match self.beyond_plan(plan, &rule) {
                    None => Admission::Admit { beyond_plan: false },
                    Some((refusal, reason)) => {
                        tracing::info!(
                            org_id = %org,
                            subject = subject.as_str(),
                            plan = %plan.name,
                            reason,
                            "a limit beyond the organisation's plan was refused"
                        );
                        Admission::Refuse(refusal, reason)
                    }
                }
            })
            .await
    }

    /// Why an organisation's admin may not set `rule` on `plan`, if they
    /// may not: the refusal and its short reason for the audit log.
    fn beyond_plan(&self, plan: &Plan, rule: &Rule) -> Option<(QuotaError, &'static str)> {
        let ask = "ask the platform operator";
        if rule.shadow {
            return Some((
                QuotaError::Forbidden(
                    "a shadow limit is never enforced, so only the platform operator sets one; \
                     set an enforced limit (shadow = false)"
                        .into(),
                ),
                "shadow",
            ));
        }
        let Some(max) = plan.custom_limit_max() else {
            let offering = self.limits.plans().names_with_custom_limits();
            let offering = if offering.is_empty() {
                String::new()
            } else {
                format!(" ({})", offering.join(", "))
            };
            return Some((
                QuotaError::failed_precondition(format!(
                    "the organisation's plan `{}` has no custom limits: each key gets the plan's \
                     default of {}; {ask} to move the organisation to a plan with custom \
                     limits{offering}",
                    plan.name, plan.config.default_limit
                )),
                "no_custom_limits",
            ));
        };
        if plan.admits(&rule.limit) {
            return None;
        }
        Some((
            QuotaError::failed_precondition(format!(
                "{} requests per {} s is above the organisation's plan `{}`, whose admins may set \
                 limits up to {max} (no higher rate, and no more in one period); set a lower \
                 limit, or {ask} for a higher plan or a limit beyond it",
                rule.limit.limit(),
                rule.limit.period().as_secs_f64(),
                plan.name,
            )),
            "above_plan_maximum",
        ))
    }

    /// The platform operator sets the own limit of `subject` in `org`
    /// (`org:<org>` or `key:<id>` of one of its keys) — above the plan
    /// too, and in shadow mode if asked.
    pub async fn set_limit_as_operator(
        &self,
        operator: &str,
        org: Uuid,
        subject: &str,
        rule: Rule,
    ) -> Result<quota_limit::Model, QuotaError> {
        let subject = self.subject_of_org(org, subject).await?;
        let change = Change {
            actor: format!("operator:{operator}"),
            now: self.clock.now(),
        };
        self.limits
            .set(org, &subject, rule, change, |plan| {
                let beyond_plan = rule.shadow || !plan.admits(&rule.limit);
                tracing::info!(
                    org_id = %org,
                    subject = subject.as_str(),
                    limit = rule.limit.limit(),
                    period_s = rule.limit.period().as_secs(),
                    beyond_plan,
                    operator,
                    "the operator set a limit"
                );
                Admission::Admit { beyond_plan }
            })
            .await
    }

    /// `subject` checked as `org:<org>` or one of the organisation's keys,
    /// for the operator.
    async fn subject_of_org(&self, org: Uuid, subject: &str) -> Result<Subject, QuotaError> {
        let parsed = Subject::parse(subject)
            .map_err(|reason| QuotaError::invalid_field("limit.subject", reason))?;
        let wrong = || {
            QuotaError::invalid_field(
                "limit.subject",
                "must be org:<organization_id> or key:<id> of one of its keys",
            )
        };
        let id = Uuid::parse_str(parsed.value()).map_err(|_| wrong())?;
        match parsed.kind() {
            "org" if id == org => Ok(Subject::org(org)),
            "key" => {
                let Some(MemberKeys(keys)) = self.member_keys.get() else {
                    return Err(QuotaError::failed_precondition(
                        "key limits are managed where the api-keys service runs or is reachable \
                         (remote.api_keys)",
                    ));
                };
                match keys.describe_key(id).await? {
                    Some(key) if key.org_id == org => Ok(Subject::key(id)),
                    _ => Err(QuotaError::not_found(format!(
                        "the organisation {org} has no API key {id}"
                    ))),
                }
            }
            _ => Err(wrong()),
        }
    }

    /// The plan of an organisation: members (read) ask about their own
    /// (`org` empty or theirs), internal callers (`principal` = None) about
    /// any.
    pub async fn organization_plan(
        &self,
        principal: Option<&Principal>,
        org: &str,
    ) -> Result<Assignment, QuotaError> {
        let org = match principal {
            Some(p) => {
                p.require_scope(Scope::Read)?;
                if org.is_empty() {
                    p.org_id
                } else {
                    let asked = parse_org(org)?;
                    if asked != p.org_id {
                        return Err(QuotaError::not_found("no such organisation"));
                    }
                    asked
                }
            }
            None if org.is_empty() => {
                return Err(QuotaError::invalid_field(
                    "organization_id",
                    "is required for internal callers",
                ));
            }
            None => parse_org(org)?,
        };
        self.limits.plans().assignment(org).await
    }

    /// The platform operator puts `org` on the plan named `plan`; limits
    /// its admins set that the new plan does not admit are removed.
    pub async fn set_organization_plan(
        &self,
        operator: &str,
        org: Uuid,
        plan: &str,
    ) -> Result<Assignment, QuotaError> {
        let (assignment, removed) = self
            .limits
            .plans()
            .set(org, plan, format!("operator:{operator}"), self.clock.now())
            .await?;
        for subject in &removed {
            self.limits.announce(subject).await;
        }
        tracing::info!(
            org_id = %org,
            plan,
            operator,
            limits_removed = removed.len(),
            "the operator set an organisation's plan"
        );
        Ok(assignment)
    }

    /// Removes the own limit of `subject`; the default (or the
    /// organisation's) applies again. Needs admin.
    pub async fn delete_limit(
        &self,
        principal: &Principal,
        subject: &str,
    ) -> Result<(), QuotaError> {
        let subject = self.own_subject(principal, subject, Scope::Admin).await?;
        self.limits
            .delete(
                principal.org_id,
                &subject,
                principal.actor(),
                self.clock.now(),
            )
            .await
    }

    /// The limit that applies to `subject` now. Needs read.
    pub async fn get_limit(
        &self,
        principal: &Principal,
        subject: &str,
    ) -> Result<Effective, QuotaError> {
        let subject = self.own_subject(principal, subject, Scope::Read).await?;
        let (_, rule, source) = self
            .limits
            .resolve(subject.clone(), Some(principal.org_id))
            .await?;
        let stored = match source {
            Source::Own => self.limits.stored(&subject).await?,
            Source::Org => self.limits.stored(&Subject::org(principal.org_id)).await?,
            Source::Plan | Source::Default => None,
        };
        Ok(Effective {
            subject,
            rule,
            source,
            stored,
        })
    }

    /// The organisation's own limits. Needs read.
    pub async fn list_limits(
        &self,
        principal: &Principal,
    ) -> Result<Vec<quota_limit::Model>, QuotaError> {
        principal.require_scope(Scope::Read)?;
        self.limits.list(principal.org_id).await
    }

    /// Decisions per minute about `subject` between two times. Internal
    /// callers (`principal` = None) may ask about any subject; others about
    /// their organisation and its keys, with read.
    pub async fn usage(
        &self,
        principal: Option<&Principal>,
        subject: &str,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<(i64, Counts)>, QuotaError> {
        let subject = match principal {
            Some(p) => self.own_subject(p, subject, Scope::Read).await?,
            None => Subject::parse(subject)
                .map_err(|reason| QuotaError::invalid_field("subject", reason))?,
        };
        let from_min = from.timestamp().div_euclid(60);
        let to_min = to.timestamp().div_euclid(60);
        if to_min < from_min {
            return Err(QuotaError::invalid_field("to", "must not be before `from`"));
        }
        if to_min - from_min >= MAX_MINUTES {
            return Err(QuotaError::invalid_field(
                "to",
                "the range may cover at most one day; ask day by day",
            ));
        }
        self.usage
            .minutes(&subject, from_min, to_min)
            .await
            .map_err(QuotaError::from)
    }

    /// Writes the usage tallies.
    pub async fn flush(&self) -> Result<(), sea_orm::DbErr> {
        self.usage.flush().await
    }

    /// Pauses the next usage flush inside its transaction, for tests that
    /// stop the server in the middle of one.
    #[cfg(feature = "test-hooks")]
    pub fn pause_next_usage_flush(&self) -> twig_db::batch::hooks::Pause {
        self.usage.pause_next_flush()
    }

    /// Forgets counts and refusals that can no longer matter.
    pub fn sweep(&self) {
        self.store.sweep(self.now_ms());
    }

    /// `subject` checked as one the principal may see or manage: the
    /// caller's organisation or one of its keys.
    async fn own_subject(
        &self,
        principal: &Principal,
        subject: &str,
        scope: Scope,
    ) -> Result<Subject, QuotaError> {
        principal.require_scope(scope)?;
        let parsed = Subject::parse(subject)
            .map_err(|reason| QuotaError::invalid_field("subject", reason))?;
        let not_uuid = || {
            QuotaError::invalid_field(
                "subject",
                "limits of their own are for org:<uuid> or key:<uuid>",
            )
        };
        match parsed.kind() {
            "org" => {
                let org = Uuid::parse_str(parsed.value()).map_err(|_| not_uuid())?;
                if org != principal.org_id {
                    return Err(QuotaError::not_found("no such organisation"));
                }
                Ok(Subject::org(org))
            }
            "key" => {
                let key = Uuid::parse_str(parsed.value()).map_err(|_| not_uuid())?;
                let Some(KeyOwners(keys)) = self.keys.get() else {
                    return Err(QuotaError::failed_precondition(
                        "key limits are managed where the api-keys service runs; \
                         run quota and api-keys in one process",
                    ));
                };
                if !keys.owns_key(principal, key).await? {
                    return Err(QuotaError::not_found("no such API key"));
                }
                Ok(Subject::key(key))
            }
            _ => Err(not_uuid()),
        }
    }
}

/// An organisation id from the wire.
pub(crate) fn parse_org(raw: &str) -> Result<Uuid, QuotaError> {
    Uuid::parse_str(raw).map_err(|_| QuotaError::invalid_field("organization_id", "must be a UUID"))
}

/// A decision when nothing is known (fail open).
fn unknown(limit: &Limit) -> Decision {
    Decision {
        allowed: true,
        limit: limit.limit(),
        period: limit.period(),
        remaining: limit.limit(),
        reset_after: Duration::ZERO,
        retry_after: Some(Duration::ZERO),
    }
}

/// A request's cost in units: 0 counts as 1; more than [`MAX_COST`] is
/// refused.
fn units(cost: u64) -> Result<u64, QuotaError> {
    match cost {
        0 => Ok(1),
        c if c > MAX_COST => Err(QuotaError::invalid_field("cost", "must be at most 10^12")),
        c => Ok(c),
    }
}
