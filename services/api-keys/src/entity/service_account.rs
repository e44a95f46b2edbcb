//! `service_accounts`: machine principals of an organisation that own API
//! keys ([`crate::service_accounts`]).

use sea_orm::entity::prelude::*;

/// A service account.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_accounts")]
pub struct Model {
    /// Id (a key it owns acts as this id).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The organisation.
    pub org_id: Uuid,
    /// Display name.
    pub name: String,
    /// The member who created it.
    pub created_by: Uuid,
    /// Creation time.
    pub created_at: DateTimeUtc,
    /// Set when deleted (its keys were revoked then).
    pub deleted_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
