//! `quota_org_plans`: the plan the platform operator put each organisation
//! on. An organisation without a row is on `plans.default_plan`.

use sea_orm::entity::prelude::*;

/// One organisation's plan.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "quota_org_plans")]
pub struct Model {
    /// The organisation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub org_id: Uuid,
    /// The plan's name in `[plans]`.
    pub plan: String,
    /// When it was set.
    pub updated_at: DateTimeUtc,
    /// Who set it (`operator:<internal client>`, `operator:cli`).
    pub updated_by: String,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
