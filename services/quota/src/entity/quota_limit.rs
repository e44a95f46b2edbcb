//! `quota_limits`: limits of their own for organisations and keys,
//! overriding the configured default.

use sea_orm::entity::prelude::*;

/// One subject's limit.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "quota_limits")]
pub struct Model {
    /// `org:<uuid>` or `key:<uuid>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    /// The organisation the subject belongs to.
    pub org_id: Uuid,
    /// Cost units per period.
    pub limit: i64,
    /// The period, in milliseconds.
    pub period_ms: i64,
    /// Slices the period is counted in.
    pub buckets: i32,
    /// Computed, counted and logged, never enforced.
    pub shadow: bool,
    /// When it was last set.
    pub updated_at: DateTimeUtc,
    /// Who set it (`user:…` or `key:…`).
    pub updated_by: String,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
