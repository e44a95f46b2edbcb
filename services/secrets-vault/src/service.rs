//! The vault: provider keys, transit sealing, master-key rotation.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use twig_audit::{AuditEvent, Outcome};
use twig_auth::{InternalCaller, Principal, Scope};
use twig_clock::Clock;
use twig_errors::fields;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::entity::{master_key, rewrap_job, secret};
use crate::envelope::{self, Binding, MAX_PLAINTEXT, OpenError, Sealed};
use crate::error::VaultError;
use crate::keys::Keyring;
use crate::providers::Provider;

/// The longest provider key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest transit purpose or record id, in characters.
pub const MAX_CONTEXT_CHARS: usize = 200;

/// The purpose bound into stored provider keys.
const PROVIDER_KEY: &str = "provider-key";
/// The field bound into transit values.
const TRANSIT_FIELD: &str = "transit";

/// A transit context, checked.
#[derive(Debug, Clone)]
pub struct Context(Binding);

impl Context {
    /// Checks the organisation (a UUID), purpose and record (1 to
    /// [`MAX_CONTEXT_CHARS`] visible characters each, kept exactly as
    /// sent: they are bound into the ciphertext).
    pub fn new(org: &str, purpose: &str, record: &str) -> Result<Self, VaultError> {
        let org = Uuid::parse_str(org)
            .map_err(|_| VaultError::invalid_field("context.organization_id", "must be a UUID"))?;
        fields::exact_text("context.purpose", purpose, MAX_CONTEXT_CHARS)?;
        fields::exact_text("context.record_id", record, MAX_CONTEXT_CHARS)?;
        Ok(Self(Binding {
            org,
            purpose: purpose.to_string(),
            record: record.to_string(),
            field: TRANSIT_FIELD.to_string(),
        }))
    }
}

/// A master key version as the API shows it.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    /// The stored record.
    pub record: master_key::Model,
    /// Configured in this process.
    pub configured: bool,
    /// New writes use it.
    pub active: bool,
    /// Stored data keys it wraps.
    pub data_keys: u64,
}

/// A re-wrap job and what is left of it.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// The stored job.
    pub job: rewrap_job::Model,
    /// Data keys not on its target version.
    pub remaining: u64,
}

/// The vault.
pub struct Vault {
    db: DatabaseConnection,
    keys: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    rewrap_batch: u64,
    /// Held while a re-wrap runs in this process.
    rewrapping: tokio::sync::Mutex<()>,
}

impl Vault {
    /// Opens the vault: records configured master keys it has not seen,
    /// refuses a key that differs from the one recorded under its version,
    /// and refuses to start when stored data keys need a key that is not
    /// configured.
    pub async fn open(
        db: DatabaseConnection,
        keys: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        rewrap_batch: u32,
    ) -> Result<Self, VaultError> {
        // Refuse before writing anything.
        let in_use: Vec<(i32, i64)> = secret::Entity::find()
            .select_only()
            .column(secret::Column::KeyVersion)
            .column_as(secret::Column::Id.count(), "n")
            .group_by(secret::Column::KeyVersion)
            .into_tuple()
            .all(&db)
            .await?;
        let missing: Vec<String> = in_use
            .iter()
            .filter(|(v, _)| u32::try_from(*v).map_or(true, |v| keys.get(v).is_none()))
            .map(|(v, n)| format!("version {v} ({n} secrets)"))
            .collect();
        if !missing.is_empty() {
            return Err(VaultError::MissingKeys {
                missing: missing.join(", "),
            });
        }
        for key in keys.iter() {
            let version = VaultError::stored_version(key.version())?;
            match master_key::Entity::find_by_id(version).one(&db).await? {
                Some(recorded) if recorded.check_value != key.check_value() => {
                    return Err(VaultError::KeyMismatch {
                        version: key.version(),
                        recorded: recorded.check_value,
                    });
                }
                Some(recorded) if recorded.retired_at.is_some() => {
                    tracing::warn!(
                        version,
                        "vault master key version was retired; it decrypts nothing stored and \
                         may be removed from configuration"
                    );
                }
                Some(_) => {}
                None => {
                    let now = clock.now();
                    let txn = twig_db::begin_write(&db).await?;
                    master_key::ActiveModel {
                        version: Set(version),
                        check_value: Set(key.check_value()),
                        recorded_at: Set(now),
                        retired_at: Set(None),
                    }
                    .insert(&txn)
                    .await?;
                    AuditEvent::new("vault.master_key_recorded", Outcome::Success)
                        .actor("system")
                        .target(format!("master-key:{version}"))
                        .details(serde_json::json!({ "check_value": key.check_value() }))
                        .record_at(&txn, now)
                        .await?;
                    txn.commit().await?;
                    tracing::info!(version, "recorded a new vault master key version");
                    twig_db::failpoint("vault.key.recorded");
                }
            }
        }
        if let Some(retired) =
            master_key::Entity::find_by_id(VaultError::stored_version(keys.active().version())?)
                .one(&db)
                .await?
                .and_then(|k| k.retired_at)
        {
            return Err(VaultError::NewestRetired {
                version: keys.active().version(),
                at: retired,
            });
        }
        Ok(Self {
            db,
            keys,
            clock,
            rewrap_batch: u64::from(rewrap_batch.max(1)),
            rewrapping: tokio::sync::Mutex::new(()),
        })
    }

    fn binding(org: Uuid, id: Uuid) -> Binding {
        Binding {
            org,
            purpose: PROVIDER_KEY.into(),
            record: id.to_string(),
            field: "value".into(),
        }
    }

    fn seal_value(&self, org: Uuid, id: Uuid, value: &str) -> Sealed {
        envelope::seal(&self.keys, &Self::binding(org, id), value.as_bytes())
    }

    /// Stores a provider key of the principal's organisation.
    pub async fn add(
        &self,
        principal: &Principal,
        provider: &str,
        name: &str,
        value: &str,
    ) -> Result<secret::Model, VaultError> {
        principal.require_scope(Scope::Admin)?;
        let provider =
            Provider::parse(provider).map_err(|r| VaultError::invalid_field("provider", r))?;
        let name = fields::name("name", name, MAX_NAME_CHARS)?;
        provider
            .check(value)
            .map_err(|r| VaultError::invalid_field("value", r))?;
        let id = Uuid::now_v7();
        let sealed = self.seal_value(principal.org_id, id, value);
        let now = self.clock.now();
        let taken = || {
            VaultError::already_exists(format!(
                "a {} key named {name:?} exists; update it or pick another name",
                provider.name()
            ))
        };
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(VaultError::from)?;
        let existing = secret::Entity::find()
            .filter(secret::Column::OrgId.eq(principal.org_id))
            .filter(secret::Column::Provider.eq(provider.name()))
            .filter(secret::Column::Name.eq(name.as_str()))
            .count(&txn)
            .await
            .map_err(VaultError::from)?;
        if existing > 0 {
            return Err(taken());
        }
        let model = secret::ActiveModel {
            id: Set(id),
            org_id: Set(principal.org_id),
            provider: Set(provider.name()),
            name: Set(name.clone()),
            masked: Set(provider.mask(value)),
            sealed: Set(sealed.to_text()),
            key_version: Set(i32::try_from(sealed.version).unwrap_or(i32::MAX)),
            created_by: Set(principal.actor()),
            created_at: Set(now),
            updated_at: Set(now),
            last_used_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(|e| {
            // Another request added the same name since the check above
            // (PostgreSQL; SQLite's writers run one at a time).
            if twig_db::is_unique_violation(&e) {
                taken()
            } else {
                VaultError::from(e)
            }
        })?;
        AuditEvent::new("vault.secret_added", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("secret:{id}"))
            .details(serde_json::json!({ "provider": model.provider, "name": model.name }))
            .record_at(&txn, now)
            .await
            .map_err(VaultError::from)?;
        txn.commit().await.map_err(VaultError::from)?;
        Ok(model)
    }

    /// The organisation's provider keys, masked.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<secret::Model>, VaultError> {
        principal.require_scope(Scope::Read)?;
        secret::Entity::find()
            .filter(secret::Column::OrgId.eq(principal.org_id))
            .order_by_asc(secret::Column::Provider)
            .order_by_asc(secret::Column::Name)
            .all(&self.db)
            .await
            .map_err(VaultError::from)
    }

    async fn find(&self, org: Uuid, id: &str) -> Result<secret::Model, VaultError> {
        let id =
            Uuid::parse_str(id).map_err(|_| VaultError::invalid_field("id", "must be a UUID"))?;
        secret::Entity::find_by_id(id)
            .filter(secret::Column::OrgId.eq(org))
            .one(&self.db)
            .await
            .map_err(VaultError::from)?
            .ok_or_else(|| VaultError::not_found("no such provider key"))
    }

    /// Replaces a provider key's value (a new data key, the newest master
    /// key).
    pub async fn update(
        &self,
        principal: &Principal,
        id: &str,
        value: &str,
    ) -> Result<secret::Model, VaultError> {
        principal.require_scope(Scope::Admin)?;
        let found = self.find(principal.org_id, id).await?;
        let provider = Provider::parse(&found.provider).map_err(|reason| VaultError::Corrupt {
            what: "provider",
            source: reason.into(),
        })?;
        provider
            .check(value)
            .map_err(|r| VaultError::invalid_field("value", r))?;
        let sealed = self.seal_value(found.org_id, found.id, value);
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(VaultError::from)?;
        let mut model: secret::ActiveModel = found.into();
        model.sealed = Set(sealed.to_text());
        model.key_version = Set(i32::try_from(sealed.version).unwrap_or(i32::MAX));
        model.masked = Set(provider.mask(value));
        model.updated_at = Set(now);
        let updated = model.update(&txn).await.map_err(VaultError::from)?;
        AuditEvent::new("vault.secret_updated", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("secret:{}", updated.id))
            .record_at(&txn, now)
            .await
            .map_err(VaultError::from)?;
        txn.commit().await.map_err(VaultError::from)?;
        Ok(updated)
    }

    /// Deletes a provider key.
    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<(), VaultError> {
        principal.require_scope(Scope::Admin)?;
        let found = self.find(principal.org_id, id).await?;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(VaultError::from)?;
        secret::Entity::delete_by_id(found.id)
            .exec(&txn)
            .await
            .map_err(VaultError::from)?;
        AuditEvent::new("vault.secret_deleted", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("secret:{}", found.id))
            .details(serde_json::json!({ "provider": found.provider, "name": found.name }))
            .record_at(&txn, now)
            .await
            .map_err(VaultError::from)?;
        txn.commit().await.map_err(VaultError::from)?;
        Ok(())
    }

    /// The plaintext of a provider key, for an internal caller holding
    /// `vault.reveal` (checked by the caller of this function); audited.
    pub async fn reveal(
        &self,
        caller: &InternalCaller,
        org: &str,
        id: &str,
    ) -> Result<(String, Zeroizing<String>), VaultError> {
        let org = Uuid::parse_str(org)
            .map_err(|_| VaultError::invalid_field("organization_id", "must be a UUID"))?;
        let found = self.find(org, id).await?;
        let stored = |e: OpenError| {
            tracing::error!(secret = %found.id, error = %e, "a stored secret does not decrypt");
            VaultError::Undecryptable(e)
        };
        let sealed = Sealed::parse(&found.sealed).map_err(stored)?;
        let plain =
            envelope::open(&self.keys, &Self::binding(org, found.id), &sealed).map_err(stored)?;
        let value = Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(|source| {
            VaultError::Corrupt {
                what: "value",
                source: source.into(),
            }
        })?);
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(VaultError::from)?;
        secret::Entity::update_many()
            .col_expr(secret::Column::LastUsedAt, Expr::value(now))
            .filter(secret::Column::Id.eq(found.id))
            .exec(&txn)
            .await
            .map_err(VaultError::from)?;
        AuditEvent::new("vault.secret_revealed", Outcome::Success)
            .org(org)
            .actor(format!("service:{}", caller.name))
            .target(format!("secret:{}", found.id))
            .details(serde_json::json!({ "provider": found.provider, "name": found.name }))
            .record_at(&txn, now)
            .await
            .map_err(VaultError::from)?;
        txn.commit().await.map_err(VaultError::from)?;
        Ok((found.provider, value))
    }

    /// Seals `plaintext` for `context`.
    pub fn seal(&self, context: &Context, plaintext: &[u8]) -> Result<String, VaultError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(VaultError::invalid_field(
                "plaintext",
                "must be at most 64 KiB",
            ));
        }
        Ok(envelope::seal(&self.keys, &context.0, plaintext).to_text())
    }

    /// Opens what [`Vault::seal`] returned for the same context.
    pub fn unseal(&self, context: &Context, text: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let sealed = Sealed::parse(text).map_err(VaultError::from)?;
        envelope::open(&self.keys, &context.0, &sealed).map_err(VaultError::from)
    }

    /// Moves a sealed value to the newest master key.
    pub fn rewrap_value(&self, context: &Context, text: &str) -> Result<String, VaultError> {
        let sealed = Sealed::parse(text).map_err(VaultError::from)?;
        envelope::rewrap(&self.keys, self.keys.active(), &context.0, &sealed)
            .map(|s| s.to_text())
            .map_err(VaultError::from)
    }

    async fn count_wrapped(&self, version: i32) -> Result<u64, VaultError> {
        secret::Entity::find()
            .filter(secret::Column::KeyVersion.eq(version))
            .count(&self.db)
            .await
            .map_err(VaultError::from)
    }

    /// Every master key version recorded, and the latest re-wrap job.
    pub async fn master_keys(&self) -> Result<(Vec<KeyStatus>, Option<JobStatus>), VaultError> {
        // The job first: once it reads finished, the counts below are final.
        let job = self.latest_job().await?;
        let records = master_key::Entity::find()
            .order_by_asc(master_key::Column::Version)
            .all(&self.db)
            .await
            .map_err(VaultError::from)?;
        let active = self.keys.active().version();
        let mut out = Vec::new();
        for record in records {
            let version = u32::try_from(record.version).unwrap_or(0);
            let data_keys = self.count_wrapped(record.version).await?;
            out.push(KeyStatus {
                configured: self.keys.get(version).is_some(),
                active: version == active,
                data_keys,
                record,
            });
        }
        Ok((out, job))
    }

    async fn latest_job(&self) -> Result<Option<JobStatus>, VaultError> {
        let Some(job) = rewrap_job::Entity::find()
            .order_by_desc(rewrap_job::Column::StartedAt)
            .order_by_desc(rewrap_job::Column::Id)
            .one(&self.db)
            .await
            .map_err(VaultError::from)?
        else {
            return Ok(None);
        };
        let remaining = secret::Entity::find()
            .filter(secret::Column::KeyVersion.ne(job.target_version))
            .count(&self.db)
            .await
            .map_err(VaultError::from)?;
        Ok(Some(JobStatus { job, remaining }))
    }

    /// Starts a re-wrap to the newest master key, or returns the
    /// unfinished one for it; the work runs in the background.
    pub async fn start_rewrap(self: &Arc<Self>) -> Result<JobStatus, VaultError> {
        let target = i32::try_from(self.keys.active().version()).unwrap_or(i32::MAX);
        let unfinished = rewrap_job::Entity::find()
            .filter(rewrap_job::Column::FinishedAt.is_null())
            .filter(rewrap_job::Column::TargetVersion.eq(target))
            .one(&self.db)
            .await
            .map_err(VaultError::from)?;
        if unfinished.is_none() {
            let now = self.clock.now();
            let id = Uuid::now_v7();
            let txn = twig_db::begin_write(&self.db)
                .await
                .map_err(VaultError::from)?;
            // A job for an older target is superseded.
            rewrap_job::Entity::update_many()
                .col_expr(rewrap_job::Column::FinishedAt, Expr::value(now))
                .filter(rewrap_job::Column::FinishedAt.is_null())
                .exec(&txn)
                .await
                .map_err(VaultError::from)?;
            rewrap_job::ActiveModel {
                id: Set(id),
                target_version: Set(target),
                rewrapped: Set(0),
                started_at: Set(now),
                finished_at: Set(None),
            }
            .insert(&txn)
            .await
            .map_err(VaultError::from)?;
            AuditEvent::new("vault.rewrap_started", Outcome::Success)
                .actor("system")
                .target(format!("master-key:{target}"))
                .record_at(&txn, now)
                .await
                .map_err(VaultError::from)?;
            txn.commit().await.map_err(VaultError::from)?;
        }
        let vault = self.clone();
        tokio::spawn(async move {
            if let Err(e) = vault.run_rewrap().await {
                tracing::warn!(error = %e, "vault re-wrap stopped; it resumes on the next start");
            }
        });
        self.latest_job()
            .await?
            .ok_or(VaultError::Vanished("re-wrap job"))
    }

    /// Resumes an unfinished re-wrap job, if any (at start).
    pub async fn resume_rewrap(self: Arc<Self>) {
        match rewrap_job::Entity::find()
            .filter(rewrap_job::Column::FinishedAt.is_null())
            .one(&self.db)
            .await
        {
            Ok(Some(job)) => {
                tracing::info!(
                    target_version = job.target_version,
                    "resuming the vault re-wrap"
                );
                if let Err(e) = self.run_rewrap().await {
                    tracing::warn!(error = %e, "vault re-wrap stopped; it resumes on the next start");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read vault re-wrap jobs"),
        }
    }

    /// Moves data keys batch by batch, each batch one transaction (rows
    /// and progress together), until none is left on another version. One
    /// run at a time in this process: a later call waits, then finishes a
    /// job started while the earlier run was ending.
    pub async fn run_rewrap(&self) -> Result<(), VaultError> {
        let _running = self.rewrapping.lock().await;
        let Some(job) = rewrap_job::Entity::find()
            .filter(rewrap_job::Column::FinishedAt.is_null())
            .one(&self.db)
            .await
            .map_err(VaultError::from)?
        else {
            return Ok(());
        };
        let target_version = u32::try_from(job.target_version).unwrap_or(0);
        let Some(target) = self.keys.get(target_version) else {
            return Err(VaultError::failed_precondition(format!(
                "the re-wrap targets master key version {target_version}, which is not configured"
            )));
        };
        loop {
            let txn = twig_db::begin_write(&self.db)
                .await
                .map_err(VaultError::from)?;
            let rows = secret::Entity::find()
                .filter(secret::Column::KeyVersion.ne(job.target_version))
                .order_by_asc(secret::Column::Id)
                .limit(self.rewrap_batch)
                .all(&txn)
                .await
                .map_err(VaultError::from)?;
            let now = self.clock.now();
            if rows.is_empty() {
                rewrap_job::Entity::update_many()
                    .col_expr(rewrap_job::Column::FinishedAt, Expr::value(now))
                    .filter(rewrap_job::Column::Id.eq(job.id))
                    .exec(&txn)
                    .await
                    .map_err(VaultError::from)?;
                AuditEvent::new("vault.rewrap_finished", Outcome::Success)
                    .actor("system")
                    .target(format!("master-key:{target_version}"))
                    .record_at(&txn, now)
                    .await
                    .map_err(VaultError::from)?;
                txn.commit().await.map_err(VaultError::from)?;
                tracing::info!(target_version, "vault re-wrap finished");
                return Ok(());
            }
            let n = rows.len();
            for row in rows {
                let sealed = Sealed::parse(&row.sealed).map_err(VaultError::Undecryptable)?;
                let moved = envelope::rewrap(
                    &self.keys,
                    target,
                    &Self::binding(row.org_id, row.id),
                    &sealed,
                )
                .map_err(VaultError::Undecryptable)?;
                secret::Entity::update_many()
                    .col_expr(secret::Column::Sealed, Expr::value(moved.to_text()))
                    .col_expr(secret::Column::KeyVersion, Expr::value(job.target_version))
                    .filter(secret::Column::Id.eq(row.id))
                    .filter(secret::Column::Sealed.eq(row.sealed))
                    .exec(&txn)
                    .await
                    .map_err(VaultError::from)?;
            }
            rewrap_job::Entity::update_many()
                .col_expr(
                    rewrap_job::Column::Rewrapped,
                    sea_orm::sea_query::ExprTrait::add(
                        Expr::col(rewrap_job::Column::Rewrapped),
                        i64::try_from(n).unwrap_or(i64::MAX),
                    ),
                )
                .filter(rewrap_job::Column::Id.eq(job.id))
                .exec(&txn)
                .await
                .map_err(VaultError::from)?;
            txn.commit().await.map_err(VaultError::from)?;
            metrics::counter!("twig_vault_rewrapped_total").increment(n as u64);
            twig_db::failpoint("vault.rewrap.batch_committed");
        }
    }

    /// Retires a master key version nothing stored uses any more.
    pub async fn retire(&self, version: u32) -> Result<KeyStatus, VaultError> {
        let v = i32::try_from(version)
            .map_err(|_| VaultError::invalid_field("version", "no such version"))?;
        let record = master_key::Entity::find_by_id(v)
            .one(&self.db)
            .await
            .map_err(VaultError::from)?
            .ok_or_else(|| VaultError::not_found(format!("no master key version {version}")))?;
        if version == self.keys.active().version() {
            return Err(VaultError::failed_precondition(
                "this is the newest master key: add a newer version and re-wrap first",
            ));
        }
        let now: DateTime<Utc> = self.clock.now();
        let txn = twig_db::begin_write(&self.db)
            .await
            .map_err(VaultError::from)?;
        let using = secret::Entity::find()
            .filter(secret::Column::KeyVersion.eq(v))
            .count(&txn)
            .await
            .map_err(VaultError::from)?;
        if using > 0 {
            return Err(VaultError::failed_precondition(format!(
                "{using} stored secrets still use master key version {version}: run StartRewrap \
                 and wait until it finishes"
            )));
        }
        let mut model: master_key::ActiveModel = record.into();
        model.retired_at = Set(Some(now));
        let record = model.update(&txn).await.map_err(VaultError::from)?;
        AuditEvent::new("vault.master_key_retired", Outcome::Success)
            .actor("system")
            .target(format!("master-key:{version}"))
            .record_at(&txn, now)
            .await
            .map_err(VaultError::from)?;
        twig_db::failpoint("vault.retire.before_commit");
        txn.commit().await.map_err(VaultError::from)?;
        Ok(KeyStatus {
            configured: self.keys.get(version).is_some(),
            active: false,
            data_keys: 0,
            record,
        })
    }
}
