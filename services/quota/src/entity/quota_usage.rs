//! `quota_usage`: decisions per subject per minute (minutes since the Unix
//! epoch), for the dashboard.

use sea_orm::entity::prelude::*;

/// One subject's decisions in one minute.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "quota_usage")]
pub struct Model {
    /// The subject counted.
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    /// Minutes since the Unix epoch.
    #[sea_orm(primary_key, auto_increment = false)]
    pub minute: i64,
    /// Checks admitted.
    pub allowed: i64,
    /// Checks refused.
    pub denied: i64,
    /// Checks a shadow limit would have refused (admitted).
    pub shadow_denied: i64,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
