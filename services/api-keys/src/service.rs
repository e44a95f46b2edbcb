//! The api-keys service's logic, independent of the wire.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::remote::KeysChanged;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use twig_audit::{AuditEvent, Outcome};
use twig_auth::{Credential, Principal, Scope};
use twig_clock::Clock;
use twig_config::Feature;
use twig_crypto::{Token, TokenFormatError, TokenHash, TokenKind};
use twig_db::batch::{BatchedWriter, Max, Select, Sum, Upsert};
use twig_fanout::{Fanout, Heard};
use twig_module::{MemberKeysChange, Needed, Plans};
use uuid::Uuid;

use crate::cache::{Cached, KeyCache, Verified};
use crate::cidrs;
use crate::entity::{api_key, api_key_secret, api_key_usage, org_ip_allowlist};
use crate::error::KeyError;
use crate::scopes;
use twig_audit::refusals::{Refusals, Source, Summary};

type Result<T> = std::result::Result<T, KeyError>;

pub use crate::config::ApiKeysConfig;

/// The longest rotation overlap.
pub const MAX_OVERLAP: Duration = Duration::from_secs(7 * 24 * 3600);

/// A key with its one-time secret.
#[derive(Debug)]
pub struct MintedKey {
    /// The stored key.
    pub key: api_key::Model,
    /// The secret, shown once.
    pub secret: Token,
}

/// The api-keys service.
pub struct ApiKeys {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
    cache: KeyCache,
    /// Successful verifications per (key, minute), not yet written; a
    /// minute is written once it has ended (or at shutdown).
    usage: BatchedWriter<(Uuid, i64), Sum, WriteUsage>,
    /// Each key's latest successful verification, not yet written.
    last_used: BatchedWriter<Uuid, Max<DateTime<Utc>>, WriteLastUsed>,
    /// Refusals of unknown keys, counted per client address and period.
    unknown: Refusals<Client>,
    /// Refusals of real keys (revoked, expired, address not allowed),
    /// counted per key, address and period.
    denied: Refusals<KeyRefusal>,
    fanout: Fanout,
    /// Organisations' plans (the quota service's): IP allowlists are a
    /// feature of some plans only.
    plans: Needed<Plans>,
}

/// The most (key, minute) pairs with pending usage, and the most keys
/// with a pending last-used time: a use beyond them is not counted (and
/// counted in `twig_batch_dropped_total`). About 100 bytes each.
pub const MAX_PENDING: usize = 1_000_000;

/// Adds requests to `api_key_usage`, per key and minute.
struct WriteUsage;

impl Upsert<(Uuid, i64), Sum> for WriteUsage {
    async fn upsert(
        &self,
        txn: &DatabaseTransaction,
        batch: &[((Uuid, i64), Sum)],
    ) -> std::result::Result<(), DbErr> {
        // Many rows per statement (three parameters a row): one flush is
        // one transaction, which holds SQLite's write lock until it commits.
        for chunk in batch.chunks(1000) {
            api_key_usage::Entity::insert_many(chunk.iter().map(
                |((key_id, minute), Sum(count))| api_key_usage::ActiveModel {
                    key_id: Set(*key_id),
                    minute: Set(*minute),
                    requests: Set(i64::try_from(*count).unwrap_or(i64::MAX)),
                },
            ))
            .on_conflict(
                OnConflict::columns([api_key_usage::Column::KeyId, api_key_usage::Column::Minute])
                    .value(
                        api_key_usage::Column::Requests,
                        // stored + the row this statement tried to insert
                        sea_orm::sea_query::ExprTrait::add(
                            Expr::col((api_key_usage::Entity, api_key_usage::Column::Requests)),
                            Expr::col((
                                sea_orm::sea_query::Alias::new("excluded"),
                                api_key_usage::Column::Requests,
                            )),
                        ),
                    )
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
        }
        Ok(())
    }
}

/// Moves keys' `last_used_at` forward, never back.
struct WriteLastUsed;

impl Upsert<Uuid, Max<DateTime<Utc>>> for WriteLastUsed {
    async fn upsert(
        &self,
        txn: &DatabaseTransaction,
        batch: &[(Uuid, Max<DateTime<Utc>>)],
    ) -> std::result::Result<(), DbErr> {
        for (key_id, Max(last)) in batch {
            api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsedAt, Expr::value(*last))
                .filter(api_key::Column::Id.eq(*key_id))
                .filter(
                    Condition::any()
                        .add(api_key::Column::LastUsedAt.is_null())
                        .add(api_key::Column::LastUsedAt.lt(*last)),
                )
                .exec(txn)
                .await?;
        }
        Ok(())
    }
}

/// Who presented an unknown key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    /// A client address (none when the caller did not know it).
    Address(Option<IpAddr>),
    /// Every address beyond the period's cap.
    Others,
}

impl Source for Client {
    fn overflow(&self) -> Self {
        Client::Others
    }
}

/// A refused use of a real key: its organisation's admins see these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KeyRefusal {
    /// `apikey.verify_failed` or `apikey.ip_denied`.
    action: &'static str,
    org: Uuid,
    key: Uuid,
    prefix: String,
    /// `revoked` or `expired`; for address denials `org` or `key`, the
    /// list that refused.
    reason: &'static str,
    ip: Option<IpAddr>,
    /// Counted for every address beyond the period's cap.
    other_addresses: bool,
}

impl Source for KeyRefusal {
    fn overflow(&self) -> Self {
        Self {
            ip: None,
            other_addresses: true,
            ..self.clone()
        }
    }
}

/// Why a presented key was refused before its allowlists were looked at.
#[derive(Debug)]
enum Refused {
    /// Not the shape of an API key (wrong prefix, length or characters).
    Malformed,
    /// The shape of an API key, but a checksum that does not match.
    BadChecksum,
    /// Well formed, but no such secret.
    Unknown,
    /// A real key, revoked.
    Revoked(KeyRefusal),
    /// A real key whose owner's membership is suspended.
    Stopped(KeyRefusal),
    /// A real key or secret, expired.
    Expired(KeyRefusal),
}

/// Counts a refusal in `twig_apikey_refusals_total`, by a reason from a
/// fixed set.
fn count_refusal(reason: &'static str) {
    metrics::counter!("twig_apikey_refusals_total", "reason" => reason).increment(1);
}

/// The longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// A key name by the shared rule ([`twig_errors::fields::name`]).
fn clean_name(raw: &str) -> Result<String> {
    Ok(twig_errors::fields::name("name", raw, MAX_NAME_CHARS)?)
}

impl ApiKeys {
    /// Now, by the service's clock.
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Builds the service.
    pub fn new(
        db: DatabaseConnection,
        config: ApiKeysConfig,
        clock: Arc<dyn Clock>,
        fanout: Fanout,
    ) -> Self {
        Self {
            cache: KeyCache::new(
                config.verify_cache_ttl,
                config.negative_cache_ttl,
                fanout.freshness(),
            ),
            fanout,
            usage: BatchedWriter::new("api-key usage", db.clone(), WriteUsage, MAX_PENDING)
                .with_periods(|(_, minute)| *minute),
            last_used: BatchedWriter::new(
                "api-key last-used times",
                db.clone(),
                WriteLastUsed,
                MAX_PENDING,
            ),
            db,
            clock,
            unknown: Refusals::new(
                config.refusal_audit_period,
                config.refusal_audit_max_sources,
            ),
            denied: Refusals::new(
                config.refusal_audit_period,
                config.refusal_audit_max_sources,
            ),
            plans: Needed::ready(None),
        }
    }

    /// Asks `plans` whether an organisation may set IP allowlists; without
    /// it, setting one is UNAVAILABLE (clearing one always works).
    pub fn with_plans(mut self, plans: Needed<Plans>) -> Self {
        self.plans = plans;
        self
    }

    /// Refuses a non-empty allowlist (for `target`: `org:<id>` or
    /// `key:<id>`) when the organisation's plan lacks IP allowlists, with an
    /// audit event. Clearing a list is allowed on any plan, and lists set
    /// before a move to a smaller plan stay enforced: a downgrade never
    /// silently opens a fence.
    async fn require_allowlists(
        &self,
        principal: &Principal,
        target: String,
        stored: &str,
    ) -> Result<()> {
        if stored.is_empty() {
            return Ok(());
        }
        let plan = Plans::of(&self.plans, principal.org_id).await?;
        if plan.has(Feature::IpAllowlists) {
            return Ok(());
        }
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        AuditEvent::new("plan.feature_refused", Outcome::Failure)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(target)
            .details(serde_json::json!({
                "feature": Feature::IpAllowlists.as_str(),
                "plan": plan.name,
                "cidrs": stored,
            }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        Err(KeyError::Refused(plan.refusal(Feature::IpAllowlists)))
    }

    /// Drops cached answers about keys changed on any replica. Runs for
    /// the life of the service.
    pub async fn listen_for_changes(self: Arc<Self>) {
        let mut heard = self.fanout.listen::<KeysChanged>();
        while let Some(heard) = heard.recv().await {
            match heard {
                Heard::Announced(KeysChanged::Key(id)) => self.cache.forget_key(id),
                Heard::Announced(KeysChanged::Org(id)) => self.cache.forget_org(id),
                Heard::Resync => self.cache.clear(),
            }
        }
    }

    /// The database.
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Forgets every cached answer about `org_id`'s keys here and on every
    /// other replica.
    pub(crate) async fn forget_org(&self, org_id: Uuid) {
        self.cache.forget_org(org_id);
        self.fanout.announce(&KeysChanged::Org(org_id)).await;
    }

    /// Forgets `key_id` here at once, and on every other replica through
    /// the fan-out.
    async fn announce_change(&self, key_id: Uuid) {
        self.cache.forget_key(key_id);
        self.fanout.announce(&KeysChanged::Key(key_id)).await;
    }

    /// May `principal` manage keys at all? Signed-in members may manage
    /// their own keys; API keys need the admin scope.
    fn require_key_manager(principal: &Principal) -> Result<()> {
        match principal.credential {
            Credential::Session { .. } => Ok(()),
            Credential::ApiKey { .. } if principal.has_scope(Scope::Admin) => Ok(()),
            Credential::ApiKey { .. } => Err(KeyError::MissingScope("admin")),
        }
    }

    /// Loads a key of the caller's organisation; another org's key is
    /// NOT_FOUND, so its existence is not revealed.
    async fn load(&self, principal: &Principal, key_id: Uuid) -> Result<api_key::Model> {
        api_key::Entity::find_by_id(key_id)
            .filter(api_key::Column::OrgId.eq(principal.org_id))
            .one(&self.db)
            .await?
            .ok_or(KeyError::NotFound)
    }

    /// Members change their own keys; admins (role or scope) any key.
    /// A service account's keys: admins only.
    fn require_may_change(principal: &Principal, key: &api_key::Model) -> Result<()> {
        Self::require_key_manager(principal)?;
        if principal.has_scope(Scope::Admin)
            || (key.service_account_id.is_none() && key.created_by == principal.user_id)
        {
            Ok(())
        } else {
            Err(KeyError::Forbidden(
                "only admins may change other members' keys",
            ))
        }
    }

    /// Creates a key with `scopes` (never beyond the caller's own).
    pub async fn create(
        &self,
        principal: &Principal,
        name: &str,
        wanted: &[Scope],
        expires_at: Option<DateTime<Utc>>,
        service_account: Option<Uuid>,
    ) -> Result<MintedKey> {
        Self::require_key_manager(principal)?;
        let name = clean_name(name)?;
        if let Some(id) = service_account {
            self.live_service_account(principal, id).await?;
        }
        if wanted.is_empty() {
            return Err(KeyError::field("scopes", "at least one scope is required"));
        }
        if !scopes::may_grant(&principal.scopes, wanted) {
            return Err(KeyError::Forbidden(
                "a key cannot have scopes beyond its creator's own",
            ));
        }
        let now = self.clock.now();
        if let Some(at) = expires_at {
            twig_errors::fields::expiry("expires_at", at, now)?;
        }
        let secret = Token::generate(TokenKind::ApiKey);
        let prefix = Token::public_prefix(secret.expose());
        let id = Uuid::now_v7();
        let txn = twig_db::begin_write(&self.db).await?;
        let key = api_key::ActiveModel {
            id: Set(id),
            org_id: Set(principal.org_id),
            name: Set(name),
            scopes: Set(scopes::to_stored(wanted)),
            prefix: Set(prefix.clone()),
            created_by: Set(principal.user_id),
            created_at: Set(now),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
            last_used_at: Set(None),
            allowed_cidrs: Set(String::new()),
            stopped_at: Set(None),
            service_account_id: Set(service_account),
        }
        .insert(&txn)
        .await?;
        api_key_secret::ActiveModel {
            secret_hash: Set(secret.hash().as_bytes().to_vec()),
            key_id: Set(id),
            prefix: Set(prefix.clone()),
            created_at: Set(now),
            expires_at: Set(None),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("apikey.created", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("key:{id}"))
            .details(serde_json::json!({
                "prefix": prefix,
                "scopes": key.scopes,
                "service_account": service_account.map(|id| id.to_string()),
            }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        Ok(MintedKey { key, secret })
    }

    /// The organisation's keys, newest first, after `after` (a key id).
    pub async fn list(
        &self,
        principal: &Principal,
        page_size: u64,
        after: Option<Uuid>,
    ) -> Result<Vec<api_key::Model>> {
        if !principal.has_scope(Scope::Read) {
            return Err(KeyError::MissingScope("read"));
        }
        let mut query = api_key::Entity::find()
            .filter(api_key::Column::OrgId.eq(principal.org_id))
            .order_by_desc(api_key::Column::Id)
            .limit(page_size);
        if let Some(after) = after {
            query = query.filter(api_key::Column::Id.lt(after));
        }
        let mut keys = query.all(&self.db).await?;
        for key in &mut keys {
            self.merge_last_used(key);
        }
        Ok(keys)
    }

    /// One key of the caller's organisation.
    pub async fn get(&self, principal: &Principal, key_id: Uuid) -> Result<api_key::Model> {
        if !principal.has_scope(Scope::Read) {
            return Err(KeyError::MissingScope("read"));
        }
        let mut key = self.load(principal, key_id).await?;
        self.merge_last_used(&mut key);
        Ok(key)
    }

    fn merge_last_used(&self, key: &mut api_key::Model) {
        if let Some(Max(t)) = self.last_used.get(&key.id) {
            key.last_used_at = Some(key.last_used_at.map_or(t, |s| s.max(t)));
        }
    }

    /// Renames a key, narrows its scopes and/or replaces its allowlist.
    pub async fn update(
        &self,
        principal: &Principal,
        key_id: Uuid,
        name: Option<&str>,
        narrow_to: &[Scope],
        allowed_cidrs: Option<&[String]>,
    ) -> Result<api_key::Model> {
        let key = self.load(principal, key_id).await?;
        Self::require_may_change(principal, &key)?;
        if key.revoked_at.is_some() {
            return Err(KeyError::Revoked);
        }
        let mut model: api_key::ActiveModel = key.clone().into();
        if let Some(name) = name {
            model.name = Set(clean_name(name)?);
        }
        if !narrow_to.is_empty() {
            let current = scopes::from_stored(&key.scopes);
            if !narrow_to.iter().all(|s| current.contains(s)) {
                return Err(KeyError::field(
                    "scopes",
                    "can only be narrowed: every scope must be one the key has",
                ));
            }
            model.scopes = Set(scopes::to_stored(narrow_to));
        }
        if let Some(list) = allowed_cidrs {
            let nets = cidrs::parse(list).map_err(|e| KeyError::field("allowed_cidrs", e))?;
            let stored = cidrs::to_stored(&nets);
            self.require_allowlists(principal, format!("key:{key_id}"), &stored)
                .await?;
            model.allowed_cidrs = Set(stored);
        }
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        let updated = model.update(&txn).await?;
        AuditEvent::new("apikey.updated", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("key:{key_id}"))
            .details(serde_json::json!({
                "name": updated.name,
                "scopes": updated.scopes,
                "allowed_cidrs": updated.allowed_cidrs,
            }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.announce_change(key_id).await;
        Ok(updated)
    }

    /// Revokes a key: all its secrets stop working at once.
    pub async fn revoke(&self, principal: &Principal, key_id: Uuid) -> Result<()> {
        let key = self.load(principal, key_id).await?;
        Self::require_may_change(principal, &key)?;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now))
            .filter(api_key::Column::Id.eq(key_id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        AuditEvent::new("apikey.revoked", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("key:{key_id}"))
            .details(serde_json::json!({ "prefix": key.prefix }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.announce_change(key_id).await;
        Ok(())
    }

    /// Stops, resumes or revokes every key `user_id` created in `org_id`
    /// (their membership was suspended, reinstated, or ended), for the
    /// sessions service. Idempotent; returns how many keys changed. One
    /// transaction with its audit event; every replica forgets the
    /// organisation's cached answers.
    pub async fn change_member_keys(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        change: MemberKeysChange,
    ) -> Result<u64> {
        let now = self.clock.now();
        let mine = Condition::all()
            .add(api_key::Column::OrgId.eq(org_id))
            .add(api_key::Column::CreatedBy.eq(user_id))
            .add(api_key::Column::ServiceAccountId.is_null())
            .add(api_key::Column::RevokedAt.is_null());
        let (update, action) = match change {
            MemberKeysChange::Stop => (
                api_key::Entity::update_many()
                    .col_expr(api_key::Column::StoppedAt, Expr::value(now))
                    .filter(mine)
                    .filter(api_key::Column::StoppedAt.is_null()),
                "apikey.member_keys_stopped",
            ),
            MemberKeysChange::Resume => (
                api_key::Entity::update_many()
                    .col_expr(
                        api_key::Column::StoppedAt,
                        Expr::value(Option::<DateTime<Utc>>::None),
                    )
                    .filter(mine)
                    .filter(api_key::Column::StoppedAt.is_not_null()),
                "apikey.member_keys_resumed",
            ),
            MemberKeysChange::Revoke => (
                api_key::Entity::update_many()
                    .col_expr(api_key::Column::RevokedAt, Expr::value(now))
                    .filter(mine),
                "apikey.member_keys_revoked",
            ),
            MemberKeysChange::LimitScopes(allowed) => {
                return self
                    .limit_member_keys(org_id, user_id, mine, &allowed)
                    .await;
            }
        };
        let txn = twig_db::begin_write(&self.db).await?;
        let changed = update.exec(&txn).await?.rows_affected;
        if changed > 0 {
            AuditEvent::new(action, Outcome::Success)
                .org(org_id)
                .actor("system:memberships")
                .target(format!("user:{user_id}"))
                .details(serde_json::json!({ "keys": changed }))
                .record_at(&txn, now)
                .await?;
        }
        txn.commit().await?;
        if changed > 0 {
            self.forget_org(org_id).await;
        }
        Ok(changed)
    }

    /// Cuts the scopes of a member's keys to `allowed` (their role
    /// changed); a key left with none is revoked. One transaction.
    async fn limit_member_keys(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        mine: Condition,
        allowed: &[Scope],
    ) -> Result<u64> {
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        let keys = api_key::Entity::find().filter(mine).all(&txn).await?;
        let mut changed = Vec::new();
        for key in keys {
            let had = scopes::from_stored(&key.scopes);
            let kept: Vec<Scope> = had
                .iter()
                .copied()
                .filter(|s| allowed.contains(s))
                .collect();
            if kept.len() == had.len() {
                continue;
            }
            let mut update = api_key::Entity::update_many()
                .col_expr(
                    api_key::Column::Scopes,
                    Expr::value(scopes::to_stored(&kept)),
                )
                .filter(api_key::Column::Id.eq(key.id));
            if kept.is_empty() {
                update = update.col_expr(api_key::Column::RevokedAt, Expr::value(now));
            }
            update.exec(&txn).await?;
            changed.push(key.id);
        }
        if !changed.is_empty() {
            AuditEvent::new("apikey.member_keys_narrowed", Outcome::Success)
                .org(org_id)
                .actor("system:memberships")
                .target(format!("user:{user_id}"))
                .details(serde_json::json!({
                    "keys": changed.iter().map(Uuid::to_string).collect::<Vec<_>>(),
                    "allowed": scopes::to_stored(allowed),
                }))
                .record_at(&txn, now)
                .await?;
        }
        txn.commit().await?;
        if !changed.is_empty() {
            self.forget_org(org_id).await;
        }
        Ok(changed.len() as u64)
    }

    /// A key by id, whatever its organisation (for "who am I").
    pub async fn describe(&self, key_id: Uuid) -> Result<api_key::Model> {
        api_key::Entity::find_by_id(key_id)
            .one(&self.db)
            .await?
            .ok_or(KeyError::NotFound)
    }

    /// Issues a new secret; the current ones stop working after `overlap`.
    /// One transaction: a crash leaves either the old state (old secret
    /// working) or the new one (both working for the overlap).
    pub async fn rotate(
        &self,
        principal: &Principal,
        key_id: Uuid,
        overlap: Duration,
    ) -> Result<(MintedKey, DateTime<Utc>)> {
        if overlap > MAX_OVERLAP {
            return Err(KeyError::field("overlap_seconds", "must be at most 7 days"));
        }
        let key = self.load(principal, key_id).await?;
        Self::require_may_change(principal, &key)?;
        if key.revoked_at.is_some() {
            return Err(KeyError::Revoked);
        }
        let now = self.clock.now();
        let old_until = now + twig_clock::span(overlap);
        let secret = Token::generate(TokenKind::ApiKey);
        let prefix = Token::public_prefix(secret.expose());
        let txn = twig_db::begin_write(&self.db).await?;
        // Old secrets: end at the overlap's end (never extend an earlier end).
        api_key_secret::Entity::update_many()
            .col_expr(api_key_secret::Column::ExpiresAt, Expr::value(old_until))
            .filter(api_key_secret::Column::KeyId.eq(key_id))
            .filter(
                Condition::any()
                    .add(api_key_secret::Column::ExpiresAt.is_null())
                    .add(api_key_secret::Column::ExpiresAt.gt(old_until)),
            )
            .exec(&txn)
            .await?;
        api_key_secret::ActiveModel {
            secret_hash: Set(secret.hash().as_bytes().to_vec()),
            key_id: Set(key_id),
            prefix: Set(prefix.clone()),
            created_at: Set(now),
            expires_at: Set(None),
        }
        .insert(&txn)
        .await?;
        twig_db::failpoint("apikeys.rotate.secret_written");
        let mut model: api_key::ActiveModel = key.clone().into();
        model.prefix = Set(prefix.clone());
        let key = model.update(&txn).await?;
        twig_db::failpoint("apikeys.rotate.before_commit");
        AuditEvent::new("apikey.rotated", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("key:{key_id}"))
            .details(serde_json::json!({
                "new_prefix": prefix,
                "overlap_seconds": overlap.as_secs(),
            }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.announce_change(key_id).await;
        Ok((MintedKey { key, secret }, old_until))
    }

    /// Key text → principal. Malformed, unknown, expired and revoked keys
    /// are all [`KeyError::InvalidKey`]; a client address outside the
    /// organisation's or the key's allowlist is
    /// [`KeyError::AddressNotAllowed`]; a valid key without `required` is
    /// [`KeyError::MissingScope`]. Database trouble is an error, never a
    /// success.
    pub async fn verify(
        &self,
        text: &str,
        required: Option<Scope>,
        client_ip: Option<IpAddr>,
    ) -> Result<Principal> {
        let client_ip = client_ip.map(|ip| ip.to_canonical());
        let verified = match self.verify_key(text, client_ip).await? {
            Ok(v) => v,
            Err(refused) => {
                self.refuse(refused, text, client_ip);
                return Err(KeyError::InvalidKey);
            }
        };
        for (policy, list) in [("org", &verified.org_cidrs), ("key", &verified.key_cidrs)] {
            if !cidrs::allows(list, client_ip) {
                count_refusal("ip_denied");
                let key = match verified.principal.credential {
                    Credential::ApiKey { key_id } => key_id,
                    Credential::Session { .. } => Uuid::nil(),
                };
                self.denied.record(
                    self.clock.now(),
                    KeyRefusal {
                        action: "apikey.ip_denied",
                        org: verified.principal.org_id,
                        key,
                        prefix: verified.prefix.clone(),
                        reason: policy,
                        ip: client_ip,
                        other_addresses: false,
                    },
                    "",
                );
                return Err(KeyError::AddressNotAllowed);
            }
        }
        if let Some(scope) = required
            && !verified.principal.has_scope(scope)
        {
            return Err(KeyError::MissingScope(scope.as_str()));
        }
        if let Credential::ApiKey { key_id } = verified.principal.credential {
            let now = self.clock.now();
            self.usage
                .record((key_id, now.timestamp().div_euclid(60)), Sum(1));
            self.last_used.record(key_id, Max(now));
        }
        Ok(verified.principal.clone())
    }

    /// The key `text` names, or why it is refused; `Err` only for
    /// database trouble.
    async fn verify_key(
        &self,
        text: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<std::result::Result<Arc<Verified>, Refused>> {
        match Token::check_format(TokenKind::ApiKey, text) {
            Ok(()) => {}
            Err(TokenFormatError::BadChecksum) => return Ok(Err(Refused::BadChecksum)),
            Err(_) => return Ok(Err(Refused::Malformed)),
        }
        let hash = TokenHash::of(text);
        let now = self.clock.now();
        match self.cache.get(&hash) {
            Cached::Valid(v) if v.principal.expires_at.is_none_or(|t| t > now) => {
                return Ok(Ok(v));
            }
            Cached::Unknown => return Ok(Err(Refused::Unknown)),
            Cached::Valid(_) | Cached::Miss => {}
        }
        let fetched = self.cache.generation();
        // One query for the secret, its key and the organisation's allowlist.
        let Some((secret, key, org_allowlist)) =
            api_key_secret::Entity::find_by_id(hash.as_bytes().to_vec())
                .find_also_related(api_key::Entity)
                .find_also(api_key::Entity, org_ip_allowlist::Entity)
                .one(&self.db)
                .await?
        else {
            self.cache.put_unknown(fetched, hash);
            return Ok(Err(Refused::Unknown));
        };
        let Some(key) = key else {
            return Ok(Err(Refused::Unknown));
        };
        let refusal = |reason| KeyRefusal {
            action: "apikey.verify_failed",
            org: key.org_id,
            key: key.id,
            prefix: secret.prefix.clone(),
            reason,
            ip: client_ip,
            other_addresses: false,
        };
        if key.revoked_at.is_some() {
            return Ok(Err(Refused::Revoked(refusal("revoked"))));
        }
        if key.stopped_at.is_some() {
            return Ok(Err(Refused::Stopped(refusal("owner_suspended"))));
        }
        if secret.expires_at.is_some_and(|t| t <= now) || key.expires_at.is_some_and(|t| t <= now) {
            return Ok(Err(Refused::Expired(refusal("expired"))));
        }
        let org_cidrs = org_allowlist
            .map(|row| cidrs::from_stored(&row.cidrs))
            .unwrap_or_default();
        let expires_at = match (key.expires_at, secret.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let verified = Arc::new(Verified {
            principal: Principal {
                // A service account's key acts as the service account.
                user_id: key.service_account_id.unwrap_or(key.created_by),
                org_id: key.org_id,
                roles: Vec::new(),
                scopes: scopes::from_stored(&key.scopes),
                credential: Credential::ApiKey { key_id: key.id },
                expires_at,
            },
            prefix: secret.prefix,
            key_cidrs: cidrs::from_stored(&key.allowed_cidrs),
            org_cidrs,
        });
        let valid_for =
            expires_at.map_or(Duration::MAX, |t| (t - now).to_std().unwrap_or_default());
        self.cache
            .put_valid(fetched, hash, verified.clone(), valid_for);
        Ok(Ok(verified))
    }

    /// Requests per minute (`bucket_minutes` = 1) or per day (1440) of a
    /// key of the caller's organisation, between two minutes (epoch
    /// minutes, `until` excluded), counting what is not yet flushed.
    pub async fn usage(
        &self,
        principal: &Principal,
        key_id: Uuid,
        bucket_minutes: i64,
        since: i64,
        until: i64,
    ) -> Result<Vec<(i64, u64)>> {
        if !principal.has_scope(Scope::Read) {
            return Err(KeyError::MissingScope("read"));
        }
        self.load(principal, key_id).await?;
        if until <= since || until - since > 400 * 1440 {
            return Err(KeyError::field(
                "since",
                "the range must be positive and at most 400 days",
            ));
        }
        let rows = api_key_usage::Entity::find()
            .filter(api_key_usage::Column::KeyId.eq(key_id))
            .filter(api_key_usage::Column::Minute.gte(since))
            .filter(api_key_usage::Column::Minute.lt(until))
            .all(&self.db)
            .await?;
        let mut buckets = std::collections::BTreeMap::<i64, u64>::new();
        for row in rows {
            *buckets
                .entry(row.minute.div_euclid(bucket_minutes))
                .or_insert(0) += u64::try_from(row.requests).unwrap_or(0);
        }
        self.usage.for_each(|&(id, minute), &Sum(count)| {
            if id == key_id && (since..until).contains(&minute) {
                *buckets
                    .entry(minute.div_euclid(bucket_minutes))
                    .or_insert(0) += count;
            }
        });
        Ok(buckets
            .into_iter()
            .map(|(bucket, n)| (bucket * bucket_minutes, n))
            .collect())
    }

    /// The organisation's allowlist.
    pub async fn org_allowlist(&self, principal: &Principal) -> Result<Vec<String>> {
        if !principal.has_scope(Scope::Read) {
            return Err(KeyError::MissingScope("read"));
        }
        Ok(org_ip_allowlist::Entity::find_by_id(principal.org_id)
            .one(&self.db)
            .await?
            .map(|row| row.cidrs.split_whitespace().map(String::from).collect())
            .unwrap_or_default())
    }

    /// Replaces the organisation's allowlist (admins only); empty = any
    /// address.
    pub async fn set_org_allowlist(
        &self,
        principal: &Principal,
        entries: &[String],
    ) -> Result<Vec<String>> {
        if !principal.has_scope(Scope::Admin) {
            return Err(KeyError::MissingScope("admin"));
        }
        let nets = cidrs::parse(entries).map_err(|e| KeyError::field("cidrs", e))?;
        let stored = cidrs::to_stored(&nets);
        self.require_allowlists(principal, format!("org:{}", principal.org_id), &stored)
            .await?;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        // One statement whether or not a list exists, so concurrent
        // replacements never collide on the organisation's row.
        org_ip_allowlist::Entity::insert(org_ip_allowlist::ActiveModel {
            org_id: Set(principal.org_id),
            cidrs: Set(stored.clone()),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(org_ip_allowlist::Column::OrgId)
                .update_columns([
                    org_ip_allowlist::Column::Cidrs,
                    org_ip_allowlist::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        AuditEvent::new("org.ip_allowlist_changed", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .details(serde_json::json!({ "cidrs": stored }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.cache.forget_org(principal.org_id);
        self.fanout
            .announce(&KeysChanged::Org(principal.org_id))
            .await;
        Ok(nets.iter().map(|n| n.to_string()).collect())
    }

    /// Counts a refused key: in the metrics, and for the audit log under
    /// its client address (unknown keys, with the presented prefix as a
    /// sample) or its key (real keys).
    fn refuse(&self, refused: Refused, text: &str, client_ip: Option<IpAddr>) {
        let now = self.clock.now();
        let unknown = |reason| {
            count_refusal(reason);
            self.unknown
                .record(now, Client::Address(client_ip), &Token::public_prefix(text));
        };
        match refused {
            Refused::Malformed => unknown("malformed"),
            Refused::BadChecksum => unknown("bad_checksum"),
            Refused::Unknown => unknown("unknown"),
            Refused::Revoked(refusal) => {
                count_refusal("revoked");
                self.denied.record(now, refusal, "");
            }
            Refused::Expired(refusal) => {
                count_refusal("expired");
                self.denied.record(now, refusal, "");
            }
            Refused::Stopped(refusal) => {
                count_refusal("owner_suspended");
                self.denied.record(now, refusal, "");
            }
        }
    }

    /// Writes all batched work: usage counts of every minute, the current
    /// one too, last-used times, and the refusal summaries of every
    /// period (at shutdown, and for tests).
    pub async fn flush(&self) -> Result<()> {
        self.flush_usage(Select::All).await?;
        self.write_refusals(self.unknown.take_all(), self.denied.take_all())
            .await
    }

    /// The periodic flush: usage counts of the minutes that have ended
    /// (each (key, minute) row is written once, not every few seconds),
    /// last-used times, and the refusal summaries of the periods that
    /// have ended (one audit row per source and period).
    pub async fn flush_ended(&self) -> Result<()> {
        let now = self.clock.now();
        self.flush_usage(Select::Ended {
            current: now.timestamp().div_euclid(60),
        })
        .await?;
        self.write_refusals(self.unknown.take_ended(now), self.denied.take_ended(now))
            .await
    }

    /// Both writers, each in its own transaction; both are tried, the
    /// first failure is returned (what failed is kept for the next flush).
    async fn flush_usage(&self, usage: Select) -> Result<()> {
        let counted = self.usage.flush(usage).await;
        let last_used = self.last_used.flush(Select::All).await;
        counted?;
        last_used?;
        Ok(())
    }

    /// Pauses the next usage flush inside its transaction, for tests that
    /// stop the server in the middle of one.
    #[cfg(feature = "test-hooks")]
    pub fn pause_next_usage_flush(&self) -> twig_db::batch::hooks::Pause {
        self.usage.pause_next_flush()
    }

    /// One audit event per summary: per client address and period for
    /// unknown keys (with a few presented prefixes), per key, address and
    /// period for real keys (in the key's organisation). What cannot be
    /// written is kept for the next flush. One warning per flush, however
    /// many refusals.
    async fn write_refusals(
        &self,
        mut unknown: Vec<Summary<Client>>,
        mut denied: Vec<Summary<KeyRefusal>>,
    ) -> Result<()> {
        let period_seconds = self.unknown.period().as_secs();
        let now = self.clock.now();
        let refused: u64 = unknown.iter().map(|s| s.count).sum();
        if refused > 0 {
            let overflow: u64 = unknown
                .iter()
                .filter(|s| s.source == Client::Others)
                .map(|s| s.count)
                .sum();
            tracing::warn!(
                refused,
                sources = unknown.len(),
                beyond_the_address_cap = overflow,
                "unknown API keys refused"
            );
        }
        while let Some(s) = unknown.pop() {
            let (actor, ip) = match s.source {
                Client::Address(Some(ip)) => (format!("ip:{ip}"), Some(ip.to_string())),
                Client::Address(None) => ("unknown".to_string(), None),
                Client::Others => ("others".to_string(), None),
            };
            let written = AuditEvent::new("apikey.verify_failed", Outcome::Failure)
                .actor(actor)
                .ip(ip)
                .details(serde_json::json!({
                    "count": s.count,
                    "prefixes": s.samples,
                    "other_addresses": s.source == Client::Others,
                    "period_start": s.period_start.to_rfc3339(),
                    "period_seconds": period_seconds,
                }))
                .record_at(&self.db, now)
                .await;
            if let Err(e) = written {
                unknown.push(s);
                self.unknown.restore(unknown);
                self.denied.restore(denied);
                return Err(e.into());
            }
        }
        while let Some(s) = denied.pop() {
            let r = &s.source;
            let (actor, ip) = match (r.ip, r.other_addresses) {
                (Some(ip), _) => (format!("ip:{ip}"), Some(ip.to_string())),
                (None, false) => ("unknown".to_string(), None),
                (None, true) => ("others".to_string(), None),
            };
            let mut details = serde_json::json!({
                "prefix": r.prefix,
                "count": s.count,
                "other_addresses": r.other_addresses,
                "period_start": s.period_start.to_rfc3339(),
                "period_seconds": period_seconds,
            });
            let field = if r.action == "apikey.ip_denied" {
                "policy"
            } else {
                "reason"
            };
            details[field] = serde_json::Value::from(r.reason);
            let written = AuditEvent::new(r.action, Outcome::Failure)
                .org(r.org)
                .actor(actor)
                .target(format!("key:{}", r.key))
                .ip(ip)
                .details(details)
                .record_at(&self.db, now)
                .await;
            if let Err(e) = written {
                denied.push(s);
                self.denied.restore(denied);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
