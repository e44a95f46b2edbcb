//! An organisation's connections: made, changed, staged, removed, each
//! change audited; read for sign-in and for home-realm discovery.
//!
//! The rules, each once:
//! - a connection serves only domains its organisation has proved, and a
//!   domain is served by one connection at most (`sso_domains`
//!   `.connection_id`);
//! - its client secret is sealed by the vault for the organisation and
//!   the connection (a sealed value copied to another row does not open)
//!   and never returned;
//! - its provider's discovery document is fetched (under the outbound
//!   rules) before it is saved, so a connection that cannot work is
//!   refused with the reason rather than failing at sign-in;
//! - pilot needs someone to pilot (a group or emails); pilot and enforced
//!   need at least one domain.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use twig_audit::{AuditEvent, Outcome};
use twig_auth::Principal;
use twig_clock::Clock;
use twig_config::Secret;
use twig_email::EmailDomain;
use twig_errors::ApiError;
use twig_module::{Needed, Plans, SealContext, Sealer};
use uuid::Uuid;

use crate::connection::{Mapping, Pilot, PresetEndpoints, Protocol, Stage};
use crate::entity::{connection, domain};
use crate::oidc::OidcProviders;

/// What the vault binds a client secret to.
pub const SECRET_PURPOSE: &str = "sso-client-secret";

fn db(err: DbErr) -> ApiError {
    twig_db::api_error(&err)
}

/// A connection, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Its id.
    pub id: Uuid,
    /// Its organisation.
    pub org_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its stage.
    pub stage: Stage,
    /// Its protocol's settings.
    pub protocol: Protocol,
    /// Its mapping.
    pub mapping: Mapping,
    /// Its pilot.
    pub pilot: Pilot,
    /// The proved domains it serves, by name.
    pub domains: Vec<String>,
    /// Whether a client secret is stored.
    pub has_secret: bool,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a connection is made or replaced with.
#[derive(Debug)]
pub struct ConnectionSpec {
    /// Its name (unique in the organisation).
    pub name: String,
    /// Its protocol's settings.
    pub protocol: Protocol,
    /// The client secret: required when made; `None` keeps the stored one.
    pub client_secret: Option<Secret>,
    /// Its mapping.
    pub mapping: Mapping,
    /// Its pilot.
    pub pilot: Pilot,
    /// The proved domains it serves.
    pub domains: Vec<EmailDomain>,
}

fn corrupt(what: &str, id: Uuid, e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&std::io::Error::other(format!(
        "connection {id}: the stored {what} is not readable: {e}"
    )))
}

fn read(row: &connection::Model, domains: Vec<String>) -> Result<Connection, ApiError> {
    Ok(Connection {
        id: row.id,
        org_id: row.org_id,
        name: row.name.clone(),
        stage: Stage::parse(&row.stage).ok_or_else(|| corrupt("stage", row.id, &row.stage))?,
        protocol: serde_json::from_str(&row.protocol)
            .map_err(|e| corrupt("protocol", row.id, e))?,
        mapping: serde_json::from_str(&row.mapping).map_err(|e| corrupt("mapping", row.id, e))?,
        pilot: serde_json::from_str(&row.pilot).map_err(|e| corrupt("pilot", row.id, e))?,
        domains,
        has_secret: row.sealed_secret.is_some(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("connection settings serialise")
}

/// Every organisation's connections.
pub struct Connections {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
    sealer: Needed<Sealer>,
    plans: Needed<Plans>,
    providers: Arc<OidcProviders>,
    presets: PresetEndpoints,
    max_per_org: u64,
}

impl Connections {
    /// Over `db`, sealing with the vault, checking providers through
    /// `providers`.
    pub fn new(
        db: DatabaseConnection,
        clock: Arc<dyn Clock>,
        sealer: Needed<Sealer>,
        plans: Needed<Plans>,
        providers: Arc<OidcProviders>,
        presets: PresetEndpoints,
        max_per_org: u32,
    ) -> Self {
        Self {
            db,
            clock,
            sealer,
            plans,
            providers,
            presets,
            max_per_org: u64::from(max_per_org),
        }
    }

    /// Where the presets' providers are.
    pub fn presets(&self) -> &PresetEndpoints {
        &self.presets
    }

    fn sealer(&self) -> Result<&Sealer, ApiError> {
        self.sealer.get().ok_or_else(|| {
            ApiError::unavailable(
                "client secrets are sealed by the secrets vault, which neither runs in this \
                 process nor has a remote.secrets_vault address",
            )
        })
    }

    fn seal_context(org: Uuid, id: Uuid) -> SealContext {
        SealContext {
            org,
            purpose: SECRET_PURPOSE.into(),
            record: id.to_string(),
        }
    }

    /// The client secret of `connection`, unsealed.
    pub async fn client_secret(&self, connection: &Connection) -> Result<Secret, ApiError> {
        let row = connection::Entity::find_by_id(connection.id)
            .one(&self.db)
            .await
            .map_err(db)?
            .ok_or_else(not_found)?;
        let sealed = row.sealed_secret.ok_or_else(|| {
            ApiError::failed_precondition("the connection has no client secret; set one")
        })?;
        let Sealer(sealer) = self.sealer()?;
        let plain = sealer
            .unseal(&Self::seal_context(row.org_id, row.id), &sealed)
            .await?;
        let text = String::from_utf8(plain.to_vec())
            .map_err(|_| corrupt("client secret", row.id, "not UTF-8"))?;
        Ok(Secret::new(text))
    }

    /// Refuses a provider whose discovery document cannot be used (an
    /// address the outbound rules refuse, a redirect, another issuer, …),
    /// with an audit event naming why.
    async fn check_provider(
        &self,
        principal: &Principal,
        target: &str,
        protocol: &Protocol,
    ) -> Result<(), ApiError> {
        let Protocol::Oidc(oidc) = protocol;
        let issuer = oidc.issuer(&self.presets);
        let Err(e) = self.providers.fetch(&issuer).await else {
            return Ok(());
        };
        let message = format!(
            "the identity provider at {} cannot be used: {e}",
            issuer.as_str()
        );
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        AuditEvent::new("sso.connection_refused", Outcome::Failure)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(target.to_string())
            .details(serde_json::json!({
                "issuer": issuer.as_str(),
                "reason": e.reason(),
                "message": message,
            }))
            .record_at(&txn, self.clock.now())
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Err(ApiError::failed_precondition(message))
    }

    /// Makes a connection (at stage off).
    pub async fn create(
        &self,
        principal: &Principal,
        spec: ConnectionSpec,
    ) -> Result<Connection, ApiError> {
        crate::gate::require_sso(
            &self.plans,
            &self.db,
            &self.clock,
            principal,
            "connection:new",
        )
        .await?;
        let secret = spec.client_secret.as_ref().ok_or_else(|| {
            ApiError::invalid_field("connection.oidc.client_secret", "is required")
        })?;
        self.check_provider(principal, "connection:new", &spec.protocol)
            .await?;
        let org = principal.org_id;
        let id = Uuid::now_v7();
        let Sealer(sealer) = self.sealer()?;
        let sealed = sealer
            .seal(&Self::seal_context(org, id), secret.expose().as_bytes())
            .await?;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        twig_db::lock_key(&txn, "sso.connections", org.as_bytes())
            .await
            .map_err(db)?;
        let held = connection::Entity::find()
            .filter(connection::Column::OrgId.eq(org))
            .count(&txn)
            .await
            .map_err(db)?;
        if held >= self.max_per_org {
            return Err(ApiError::failed_precondition(format!(
                "the organisation already has {held} connections, the most it may hold"
            )));
        }
        self.require_free_name(&txn, org, &spec.name, None).await?;
        let domains = self.assign_domains(&txn, org, id, &spec.domains).await?;
        let row = connection::ActiveModel {
            id: Set(id),
            org_id: Set(org),
            name: Set(spec.name.clone()),
            kind: Set(spec.protocol.kind().to_string()),
            stage: Set(Stage::Off.as_str().to_string()),
            protocol: Set(json(&spec.protocol)),
            sealed_secret: Set(Some(sealed)),
            mapping: Set(json(&spec.mapping)),
            pilot: Set(json(&spec.pilot)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(db)?;
        let made = read(&row, domains)?;
        AuditEvent::new("sso.connection_created", Outcome::Success)
            .org(org)
            .actor(principal.actor())
            .target(format!("connection:{id}"))
            .details(audit_details(&made))
            .record_at(&txn, now)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(made)
    }

    /// Replaces a connection's settings; its stage stays.
    pub async fn update(
        &self,
        principal: &Principal,
        id: Uuid,
        spec: ConnectionSpec,
    ) -> Result<Connection, ApiError> {
        let before = self.get(principal, id).await?;
        crate::gate::require_sso(
            &self.plans,
            &self.db,
            &self.clock,
            principal,
            &format!("connection:{id}"),
        )
        .await?;
        if before.protocol != spec.protocol {
            self.check_provider(principal, &format!("connection:{id}"), &spec.protocol)
                .await?;
        }
        let org = principal.org_id;
        let sealed = match &spec.client_secret {
            Some(secret) => {
                let Sealer(sealer) = self.sealer()?;
                Some(
                    sealer
                        .seal(&Self::seal_context(org, id), secret.expose().as_bytes())
                        .await?,
                )
            }
            None => None,
        };
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        twig_db::lock_key(&txn, "sso.connections", org.as_bytes())
            .await
            .map_err(db)?;
        let row = self.row(&txn, org, id).await?;
        self.require_free_name(&txn, org, &spec.name, Some(id))
            .await?;
        let domains = self.assign_domains(&txn, org, id, &spec.domains).await?;
        let stage = Stage::parse(&row.stage).unwrap_or(Stage::Off);
        check_stage(stage, &spec.pilot, &domains)?;
        let mut changed: connection::ActiveModel = row.into();
        changed.name = Set(spec.name.clone());
        changed.kind = Set(spec.protocol.kind().to_string());
        changed.protocol = Set(json(&spec.protocol));
        changed.mapping = Set(json(&spec.mapping));
        changed.pilot = Set(json(&spec.pilot));
        changed.updated_at = Set(now);
        if let Some(sealed) = sealed {
            changed.sealed_secret = Set(Some(sealed));
        }
        let row = changed.update(&txn).await.map_err(db)?;
        let after = read(&row, domains)?;
        let mut details = audit_details(&after);
        details["secret_replaced"] = serde_json::json!(spec.client_secret.is_some());
        details["before"] = audit_details(&before);
        AuditEvent::new("sso.connection_updated", Outcome::Success)
            .org(org)
            .actor(principal.actor())
            .target(format!("connection:{id}"))
            .details(details)
            .record_at(&txn, now)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(after)
    }

    /// Moves a connection to `stage`.
    pub async fn set_stage(
        &self,
        principal: &Principal,
        id: Uuid,
        stage: Stage,
    ) -> Result<Connection, ApiError> {
        self.get(principal, id).await?;
        if stage != Stage::Off {
            crate::gate::require_sso(
                &self.plans,
                &self.db,
                &self.clock,
                principal,
                &format!("connection:{id}"),
            )
            .await?;
        }
        let org = principal.org_id;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        twig_db::lock_key(&txn, "sso.connections", org.as_bytes())
            .await
            .map_err(db)?;
        let row = self.row(&txn, org, id).await?;
        let domains = served_by(&txn, id).await?;
        let current = read(&row, domains.clone())?;
        check_stage(stage, &current.pilot, &domains)?;
        let from = current.stage;
        let mut changed: connection::ActiveModel = row.into();
        changed.stage = Set(stage.as_str().to_string());
        changed.updated_at = Set(now);
        let row = changed.update(&txn).await.map_err(db)?;
        AuditEvent::new("sso.connection_stage_changed", Outcome::Success)
            .org(org)
            .actor(principal.actor())
            .target(format!("connection:{id}"))
            .details(serde_json::json!({
                "from": from.as_str(),
                "to": stage.as_str(),
                "domains": domains,
            }))
            .record_at(&txn, now)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)?;
        read(&row, domains)
    }

    /// Removes a connection; its domains stay proved, served by none.
    pub async fn delete(&self, principal: &Principal, id: Uuid) -> Result<(), ApiError> {
        let before = self.get(principal, id).await?;
        let org = principal.org_id;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        twig_db::lock_key(&txn, "sso.connections", org.as_bytes())
            .await
            .map_err(db)?;
        domain::Entity::update_many()
            .col_expr(
                domain::Column::ConnectionId,
                sea_orm::sea_query::Expr::value(Option::<Uuid>::None),
            )
            .filter(domain::Column::ConnectionId.eq(id))
            .exec(&txn)
            .await
            .map_err(db)?;
        let gone = connection::Entity::delete_many()
            .filter(connection::Column::Id.eq(id))
            .filter(connection::Column::OrgId.eq(org))
            .exec(&txn)
            .await
            .map_err(db)?;
        if gone.rows_affected == 0 {
            return Err(not_found());
        }
        AuditEvent::new("sso.connection_deleted", Outcome::Success)
            .org(org)
            .actor(principal.actor())
            .target(format!("connection:{id}"))
            .details(audit_details(&before))
            .record_at(&txn, now)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)
    }

    /// The caller's organisation's connection `id` (NOT_FOUND for another
    /// organisation's).
    pub async fn get(&self, principal: &Principal, id: Uuid) -> Result<Connection, ApiError> {
        let row = self.row(&self.db, principal.org_id, id).await?;
        let domains = served_by(&self.db, id).await?;
        read(&row, domains)
    }

    /// The caller's organisation's connections, oldest first.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<Connection>, ApiError> {
        let rows = connection::Entity::find()
            .filter(connection::Column::OrgId.eq(principal.org_id))
            .order_by_asc(connection::Column::CreatedAt)
            .order_by_asc(connection::Column::Id)
            .all(&self.db)
            .await
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(read(row, served_by(&self.db, row.id).await?)?);
        }
        Ok(out)
    }

    /// The connection `id`, whatever its organisation (sign-in).
    pub async fn find(&self, id: Uuid) -> Result<Option<Connection>, ApiError> {
        let Some(row) = connection::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        Ok(Some(read(&row, served_by(&self.db, id).await?)?))
    }

    /// The connection serving the proved `domain`, if any.
    pub async fn serving(&self, domain: &EmailDomain) -> Result<Option<Connection>, ApiError> {
        let Some(claim) = domain::Entity::find()
            .filter(domain::Column::ProvedDomain.eq(domain.as_str()))
            .one(&self.db)
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        match claim.connection_id {
            Some(id) => self.find(id).await,
            None => Ok(None),
        }
    }

    async fn row(
        &self,
        conn: &impl ConnectionTrait,
        org: Uuid,
        id: Uuid,
    ) -> Result<connection::Model, ApiError> {
        connection::Entity::find_by_id(id)
            .filter(connection::Column::OrgId.eq(org))
            .one(conn)
            .await
            .map_err(db)?
            .ok_or_else(not_found)
    }

    async fn require_free_name(
        &self,
        txn: &impl ConnectionTrait,
        org: Uuid,
        name: &str,
        except: Option<Uuid>,
    ) -> Result<(), ApiError> {
        let mut query = connection::Entity::find()
            .filter(connection::Column::OrgId.eq(org))
            .filter(connection::Column::Name.eq(name));
        if let Some(id) = except {
            query = query.filter(connection::Column::Id.ne(id));
        }
        if query.count(txn).await.map_err(db)? > 0 {
            return Err(ApiError::already_exists(format!(
                "the organisation already has a connection named {name:?}"
            )));
        }
        Ok(())
    }

    /// Makes `domains` (proved by `org`, served by no other connection)
    /// the ones connection `id` serves, and returns them by name.
    async fn assign_domains(
        &self,
        txn: &impl ConnectionTrait,
        org: Uuid,
        id: Uuid,
        domains: &[EmailDomain],
    ) -> Result<Vec<String>, ApiError> {
        let mut names = Vec::with_capacity(domains.len());
        for wanted in domains {
            let claim = domain::Entity::find()
                .filter(domain::Column::OrgId.eq(org))
                .filter(domain::Column::ProvedDomain.eq(wanted.as_str()))
                .one(txn)
                .await
                .map_err(db)?
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "connection.domains",
                        format!("{wanted} is not a domain this organisation has proved"),
                    )
                })?;
            if claim.connection_id.is_some_and(|other| other != id) {
                return Err(ApiError::invalid_field(
                    "connection.domains",
                    format!("{wanted} is served by another connection"),
                ));
            }
            names.push(claim.domain);
        }
        domain::Entity::update_many()
            .col_expr(
                domain::Column::ConnectionId,
                sea_orm::sea_query::Expr::value(Option::<Uuid>::None),
            )
            .filter(domain::Column::ConnectionId.eq(id))
            .exec(txn)
            .await
            .map_err(db)?;
        if !names.is_empty() {
            domain::Entity::update_many()
                .col_expr(
                    domain::Column::ConnectionId,
                    sea_orm::sea_query::Expr::value(Some(id)),
                )
                .filter(domain::Column::OrgId.eq(org))
                .filter(domain::Column::Domain.is_in(names.clone()))
                .exec(txn)
                .await
                .map_err(db)?;
        }
        names.sort();
        Ok(names)
    }
}

/// What a stage needs.
fn check_stage(stage: Stage, pilot: &Pilot, domains: &[String]) -> Result<(), ApiError> {
    if stage != Stage::Off && domains.is_empty() {
        return Err(ApiError::failed_precondition(
            "the connection serves no domain: give it one of the organisation's proved domains \
             first",
        ));
    }
    if stage == Stage::Pilot && pilot.is_empty() {
        return Err(ApiError::failed_precondition(
            "a pilot needs a pilot group or listed emails",
        ));
    }
    Ok(())
}

async fn served_by(conn: &impl ConnectionTrait, id: Uuid) -> Result<Vec<String>, ApiError> {
    Ok(domain::Entity::find()
        .filter(domain::Column::ConnectionId.eq(id))
        .order_by_asc(domain::Column::Domain)
        .all(conn)
        .await
        .map_err(db)?
        .into_iter()
        .map(|d| d.domain)
        .collect())
}

/// What an audit event says about a connection (never its secret).
fn audit_details(c: &Connection) -> serde_json::Value {
    serde_json::json!({
        "name": c.name,
        "stage": c.stage.as_str(),
        "protocol": c.protocol,
        "mapping": c.mapping,
        "pilot": c.pilot,
        "domains": c.domains,
    })
}

fn not_found() -> ApiError {
    ApiError::not_found("no such connection in this organisation")
}
