//! `api_key_secrets`: the SHA-256 of each secret of a key. A key has one
//! secret, or two during a rotation's overlap window.

use sea_orm::entity::prelude::*;

/// A secret's hash.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_key_secrets")]
pub struct Model {
    /// SHA-256 of the secret.
    #[sea_orm(primary_key, auto_increment = false)]
    pub secret_hash: Vec<u8>,
    /// The key.
    pub key_id: Uuid,
    /// Public start of the secret.
    pub prefix: String,
    /// When it was issued.
    pub created_at: DateTimeUtc,
    /// When it stops working (set for the old secret of a rotation).
    pub expires_at: Option<DateTimeUtc>,
}

/// A secret belongs to its key.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The key.
    #[sea_orm(
        belongs_to = "super::api_key::Entity",
        from = "Column::KeyId",
        to = "super::api_key::Column::Id"
    )]
    ApiKey,
}

impl Related<super::api_key::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ApiKey.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
