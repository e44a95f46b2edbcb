//! The audit log: one append-only table that every service writes to, in
//! the same transaction as the action it records.
//!
//! Events carry no secrets: no tokens, passwords or keys, only ids,
//! prefixes and addresses. The database refuses UPDATE and DELETE on the
//! table (a trigger on each backend), so a bug cannot rewrite history.

mod entity;
pub mod grpc;
mod migration;
pub mod refusals;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use uuid::Uuid;

pub use entity::Model as StoredEvent;
pub use grpc::AuditGrpc;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.audit.v1.AuditService";
pub use migration::Migrator;

/// Whether the recorded action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was attempted and refused.
    Failure,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// One event, built then recorded with [`AuditEvent::record`].
#[derive(Debug, Clone)]
pub struct AuditEvent {
    action: &'static str,
    outcome: Outcome,
    org_id: Option<Uuid>,
    actor: Option<String>,
    target: Option<String>,
    ip: Option<String>,
    details: serde_json::Value,
}

impl AuditEvent {
    /// An event for `action` (dotted, e.g. `session.login`).
    pub fn new(action: &'static str, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            org_id: None,
            actor: None,
            target: None,
            ip: None,
            details: serde_json::Value::Null,
        }
    }

    /// The organisation the event belongs to.
    pub fn org(mut self, org_id: Uuid) -> Self {
        self.org_id = Some(org_id);
        self
    }

    /// Who acted, e.g. `user:<id>`.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// What was acted on, e.g. `session:<id>`.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// The client address.
    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }

    /// Extra facts (never secrets).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Appends the event through `db` (a transaction, so that it commits or
    /// rolls back with the action), at `at` (the service clock's now).
    pub async fn record_at(
        self,
        db: &impl ConnectionTrait,
        at: DateTime<Utc>,
    ) -> Result<Uuid, DbErr> {
        let id = Uuid::now_v7();
        entity::ActiveModel {
            id: Set(id),
            occurred_at: Set(at),
            org_id: Set(self.org_id),
            actor: Set(self.actor),
            action: Set(self.action.to_string()),
            outcome: Set(self.outcome.as_str().to_string()),
            target: Set(self.target),
            ip: Set(self.ip),
            details: Set(self.details.to_string()),
        }
        .insert(db)
        .await?;
        Ok(id)
    }
}

/// Every event with `action`, oldest first (for tests and tooling; the
/// audit query service comes with its own paginated API).
pub async fn events_with_action(
    db: &impl ConnectionTrait,
    action: &str,
) -> Result<Vec<StoredEvent>, DbErr> {
    entity::Entity::find()
        .filter(entity::Column::Action.eq(action))
        .order_by_asc(entity::Column::Id)
        .all(db)
        .await
}

/// Every event, oldest first.
pub async fn all_events(db: &impl ConnectionTrait) -> Result<Vec<StoredEvent>, DbErr> {
    entity::Entity::find()
        .order_by_asc(entity::Column::Id)
        .all(db)
        .await
}
