//! Email domains an organisation claims and proves it owns.
//!
//! The rules, each once:
//! - a claim is a domain in [`EmailDomain`]'s form (so it compares equal
//!   to the part after @ of any email the suite stores) with a random
//!   token; claiming it again returns the same claim;
//! - it is proved when a TXT record at [`TXT_PREFIX`]`.<domain>` holds
//!   `twig-domain-verification=<token>` at the moment of the check;
//! - a domain is proved by one organisation at most (a unique column
//!   holding the domain once proved), so a claim of a domain proved
//!   elsewhere is refused, and of two racing proofs one wins;
//! - only organisations whose plan has the `sso` feature claim or prove;
//!   reading, and giving a domain up, work on any plan;
//! - every change, and every failed proof, is an audit event.

use std::sync::Arc;

use base64::Engine as _;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Set,
};
use twig_audit::{AuditEvent, Outcome};
use twig_auth::Principal;
use twig_clock::Clock;
use twig_email::EmailDomain;
use twig_errors::ApiError;
use twig_module::{Needed, Plans};
use uuid::Uuid;

use crate::dns::{DnsError, TxtLookup};
use crate::entity::domain;

/// The label in front of a domain where its TXT proof lives.
pub const TXT_PREFIX: &str = "_twig-verification";
/// What the TXT record's value starts with, before the token.
pub const TXT_VALUE_PREFIX: &str = "twig-domain-verification=";

/// Where the proof of `domain` is published (ASCII form, as DNS is asked).
pub fn txt_record_name(domain: &EmailDomain) -> String {
    format!("{TXT_PREFIX}.{}", domain.to_ascii())
}

/// The value the proof of a claim with `token` holds.
pub fn txt_record_value(token: &str) -> String {
    format!("{TXT_VALUE_PREFIX}{token}")
}

fn db(err: DbErr) -> ApiError {
    twig_db::api_error(&err)
}

/// The domains of every organisation.
pub struct Domains {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
    dns: Arc<dyn TxtLookup>,
    plans: Needed<Plans>,
    max_per_org: u64,
}

impl Domains {
    /// Over `db`, asking `dns`, gated by the organisations' `plans`.
    pub fn new(
        db: DatabaseConnection,
        clock: Arc<dyn Clock>,
        dns: Arc<dyn TxtLookup>,
        plans: Needed<Plans>,
        max_per_org: u32,
    ) -> Self {
        Self {
            db,
            clock,
            dns,
            plans,
            max_per_org: u64::from(max_per_org),
        }
    }

    async fn require_sso_plan(&self, principal: &Principal, target: &str) -> Result<(), ApiError> {
        crate::gate::require_sso(&self.plans, &self.db, &self.clock, principal, target).await
    }

    /// Claims `raw` for the caller's organisation (or returns its claim).
    pub async fn claim(&self, principal: &Principal, raw: &str) -> Result<domain::Model, ApiError> {
        let name = EmailDomain::parse(raw).map_err(|why| ApiError::invalid_field("domain", why))?;
        self.require_sso_plan(principal, &format!("domain:{name}"))
            .await?;
        let org = principal.org_id;
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        // Claims of one organisation are counted and made one at a time.
        twig_db::lock_key(&txn, "sso.domains", org.as_bytes())
            .await
            .map_err(db)?;
        if let Some(existing) = domain::Entity::find()
            .filter(domain::Column::OrgId.eq(org))
            .filter(domain::Column::Domain.eq(name.as_str()))
            .one(&txn)
            .await
            .map_err(db)?
        {
            return Ok(existing);
        }
        if proved_elsewhere(&txn, &name, org).await? {
            return Err(ApiError::already_exists(format!(
                "{name} is proved by another organisation; a domain belongs to one organisation"
            )));
        }
        let held = domain::Entity::find()
            .filter(domain::Column::OrgId.eq(org))
            .count(&txn)
            .await
            .map_err(db)?;
        if held >= self.max_per_org {
            return Err(ApiError::failed_precondition(format!(
                "the organisation already has {held} domains, the most it may hold; give one up \
                 first"
            )));
        }
        let now = self.clock.now();
        let claimed = domain::ActiveModel {
            id: Set(Uuid::now_v7()),
            org_id: Set(org),
            domain: Set(name.as_str().to_string()),
            token: Set(new_token()),
            proved_domain: Set(None),
            created_at: Set(now),
            verified_at: Set(None),
            last_checked_at: Set(None),
            connection_id: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(db)?;
        AuditEvent::new("sso.domain_claimed", Outcome::Success)
            .org(org)
            .actor(principal.actor())
            .target(format!("domain:{}", claimed.id))
            .details(serde_json::json!({"domain": claimed.domain}))
            .record_at(&txn, now)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(claimed)
    }

    /// Checks the claim `id`'s TXT record and marks it proved when it
    /// holds the claim's value.
    pub async fn verify(&self, principal: &Principal, id: Uuid) -> Result<domain::Model, ApiError> {
        let claim = self.own(principal, id).await?;
        if claim.proved_domain.is_some() {
            return Ok(claim);
        }
        self.require_sso_plan(principal, &format!("domain:{id}"))
            .await?;
        let name = EmailDomain::parse(&claim.domain).map_err(|why| {
            ApiError::internal(&std::io::Error::other(format!(
                "stored domain {:?} no longer valid: {why}",
                claim.domain
            )))
        })?;
        let record = txt_record_name(&name);
        let expected = txt_record_value(&claim.token);
        let answer = self.dns.txt(&record).await;
        let now = self.clock.now();
        let found = match &answer {
            Ok(values) => values.iter().any(|v| v.trim() == expected),
            Err(_) => false,
        };
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        let refusal = if found {
            let mut proved: domain::ActiveModel = claim.clone().into();
            proved.proved_domain = Set(Some(claim.domain.clone()));
            proved.verified_at = Set(Some(now));
            proved.last_checked_at = Set(Some(now));
            match proved.update(&txn).await {
                Ok(proved) => {
                    AuditEvent::new("sso.domain_verified", Outcome::Success)
                        .org(principal.org_id)
                        .actor(principal.actor())
                        .target(format!("domain:{id}"))
                        .details(serde_json::json!({"domain": claim.domain}))
                        .record_at(&txn, now)
                        .await
                        .map_err(db)?;
                    txn.commit().await.map_err(db)?;
                    tracing::info!(domain = %claim.domain, org = %principal.org_id, "domain proved");
                    return Ok(proved);
                }
                Err(e) if twig_db::is_unique_violation(&e) => {
                    // The failed statement ends the transaction on
                    // PostgreSQL: the refusal is recorded in a new one.
                    drop(txn);
                    let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
                    return self
                        .refuse(
                            txn,
                            principal,
                            &claim,
                            now,
                            "proved by another organisation",
                            ApiError::already_exists(format!(
                                "{} is proved by another organisation; a domain belongs to one \
                                 organisation",
                                claim.domain
                            )),
                        )
                        .await;
                }
                Err(e) => return Err(db(e)),
            }
        } else {
            match &answer {
                Err(DnsError::Unavailable { reason, .. }) => (
                    "dns unavailable",
                    ApiError::unavailable(format!(
                        "DNS did not answer for {record} ({reason}); try again later"
                    )),
                ),
                Err(DnsError::NotFound(_)) => (
                    "no record",
                    ApiError::failed_precondition(format!(
                        "no TXT record at {record}; publish one with the value {expected} and try \
                         again (DNS changes can take a while to show)"
                    )),
                ),
                Ok(values) => (
                    "wrong value",
                    ApiError::failed_precondition(format!(
                        "the TXT records at {record} ({} found) do not hold {expected}; publish \
                         it and try again",
                        values.len()
                    )),
                ),
            }
        };
        let mut checked: domain::ActiveModel = claim.clone().into();
        checked.last_checked_at = Set(Some(now));
        let claim = checked.update(&txn).await.map_err(db)?;
        self.refuse(txn, principal, &claim, now, refusal.0, refusal.1)
            .await
    }

    /// Records a failed proof and returns `error`.
    async fn refuse(
        &self,
        txn: sea_orm::DatabaseTransaction,
        principal: &Principal,
        claim: &domain::Model,
        now: chrono::DateTime<chrono::Utc>,
        reason: &str,
        error: ApiError,
    ) -> Result<domain::Model, ApiError> {
        AuditEvent::new("sso.domain_verified", Outcome::Failure)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("domain:{}", claim.id))
            .details(serde_json::json!({"domain": claim.domain, "reason": reason}))
            .record_at(&txn, now)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Err(error)
    }

    /// The caller's organisation's domains, by name.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<domain::Model>, ApiError> {
        domain::Entity::find()
            .filter(domain::Column::OrgId.eq(principal.org_id))
            .order_by_asc(domain::Column::Domain)
            .all(&self.db)
            .await
            .map_err(db)
    }

    /// Gives the claim `id` up.
    pub async fn delete(&self, principal: &Principal, id: Uuid) -> Result<(), ApiError> {
        let claim = self.own(principal, id).await?;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        let gone = domain::Entity::delete_many()
            .filter(domain::Column::Id.eq(id))
            .filter(domain::Column::OrgId.eq(principal.org_id))
            .exec(&txn)
            .await
            .map_err(db)?;
        if gone.rows_affected == 0 {
            return Err(not_found());
        }
        AuditEvent::new("sso.domain_deleted", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("domain:{id}"))
            .details(serde_json::json!({
                "domain": claim.domain,
                "was_proved": claim.proved_domain.is_some(),
            }))
            .record_at(&txn, now)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)
    }

    /// The organisation that proved `domain`, if one did.
    pub async fn proved_by(&self, domain: &EmailDomain) -> Result<Option<domain::Model>, ApiError> {
        domain::Entity::find()
            .filter(domain::Column::ProvedDomain.eq(domain.as_str()))
            .one(&self.db)
            .await
            .map_err(db)
    }

    /// The claim `id` of the caller's organisation (NOT_FOUND for another
    /// organisation's).
    async fn own(&self, principal: &Principal, id: Uuid) -> Result<domain::Model, ApiError> {
        domain::Entity::find_by_id(id)
            .filter(domain::Column::OrgId.eq(principal.org_id))
            .one(&self.db)
            .await
            .map_err(db)?
            .ok_or_else(not_found)
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("no such domain in this organisation")
}

async fn proved_elsewhere(
    txn: &impl sea_orm::ConnectionTrait,
    name: &EmailDomain,
    org: Uuid,
) -> Result<bool, ApiError> {
    Ok(domain::Entity::find()
        .filter(domain::Column::ProvedDomain.eq(name.as_str()))
        .filter(domain::Column::OrgId.ne(org))
        .count(txn)
        .await
        .map_err(db)?
        > 0)
}

/// 256 random bits, URL-safe base64 without padding (43 characters).
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
