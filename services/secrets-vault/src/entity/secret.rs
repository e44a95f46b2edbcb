//! `vault_secrets`: an organisation's external provider keys, sealed.

use sea_orm::entity::prelude::*;

/// One stored provider key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vault_secrets")]
pub struct Model {
    /// The record; bound into the ciphertext.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The organisation; bound into the ciphertext.
    pub org_id: Uuid,
    /// `openai`, `anthropic`, `pinecone` or `custom:<name>`.
    pub provider: String,
    /// The organisation's name for it (unique per provider).
    pub name: String,
    /// What listings show, e.g. `sk-…a1B2`.
    pub masked: String,
    /// `twig:k<version>:…`.
    pub sealed: String,
    /// The master key version wrapping its data key (for re-wrapping).
    pub key_version: i32,
    /// Who stored it (`user:…` or `key:…`).
    pub created_by: String,
    /// When it was stored.
    pub created_at: DateTimeUtc,
    /// When its value last changed.
    pub updated_at: DateTimeUtc,
    /// When it was last revealed.
    pub last_used_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
