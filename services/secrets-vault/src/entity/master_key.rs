//! `vault_master_keys`: every master key version the vault has seen, by
//! its check value (never the key).

use sea_orm::entity::prelude::*;

/// One master key version.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vault_master_keys")]
pub struct Model {
    /// The version.
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i32,
    /// Identifies the key without revealing it.
    pub check_value: String,
    /// When it was first seen.
    pub recorded_at: DateTimeUtc,
    /// When it was retired (nothing wraps with it any more).
    pub retired_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
