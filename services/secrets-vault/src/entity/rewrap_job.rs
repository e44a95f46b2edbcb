//! `vault_rewrap_jobs`: moving every stored data key to a newer master key.

use sea_orm::entity::prelude::*;

/// One re-wrap job.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vault_rewrap_jobs")]
pub struct Model {
    /// The job.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The version every data key moves to.
    pub target_version: i32,
    /// Data keys moved so far.
    pub rewrapped: i64,
    /// When it started.
    pub started_at: DateTimeUtc,
    /// When nothing was left to move.
    pub finished_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
