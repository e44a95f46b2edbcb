//! `sso_connections`: organisations' identity providers.

use sea_orm::entity::prelude::*;

/// One connection.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sso_connections")]
pub struct Model {
    /// The connection; bound into its sealed client secret.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The organisation.
    pub org_id: Uuid,
    /// Its name in the organisation.
    pub name: String,
    /// `oidc` (the protocol, also inside `protocol`).
    pub kind: String,
    /// `off`, `pilot` or `enforced`.
    pub stage: String,
    /// The protocol's settings, JSON (`connection::Protocol`).
    pub protocol: String,
    /// The client secret, sealed by the vault for this organisation and
    /// connection; none for a protocol without one.
    pub sealed_secret: Option<String>,
    /// JSON (`connection::Mapping`).
    pub mapping: String,
    /// JSON (`connection::Pilot`).
    pub pilot: String,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// When its settings or stage last changed.
    pub updated_at: DateTimeUtc,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
