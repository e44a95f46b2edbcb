//! `org_ip_allowlists`: the networks an organisation's API keys may be
//! used from. No row, or an empty list: any address.

use sea_orm::entity::prelude::*;

/// An organisation's allowlist.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "org_ip_allowlists")]
pub struct Model {
    /// The organisation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub org_id: Uuid,
    /// Allowed networks, space-separated.
    pub cidrs: String,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
