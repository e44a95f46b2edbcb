//! `refresh_tokens`: every refresh token a session was given. All but the
//! newest are used; presenting a used one is reuse.

use sea_orm::entity::prelude::*;

/// A refresh token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    /// SHA-256 of the token.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_hash: Vec<u8>,
    /// The session (the token family).
    pub session_id: Uuid,
    /// When it was issued.
    pub issued_at: DateTimeUtc,
    /// When it stops working if unused.
    pub expires_at: DateTimeUtc,
    /// When it was traded in.
    pub used_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
