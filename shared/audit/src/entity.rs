//! The `audit_events` table.

use sea_orm::entity::prelude::*;

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// UUIDv7: ordered by time.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// When it happened.
    pub occurred_at: DateTimeUtc,
    /// The organisation, when there is one.
    pub org_id: Option<Uuid>,
    /// Who acted (`user:<id>`, `ip:<addr>`…).
    pub actor: Option<String>,
    /// What happened, dotted (`session.login`).
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// What it happened to.
    pub target: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// JSON object with extra facts.
    pub details: String,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
