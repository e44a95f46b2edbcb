//! `email_links`: the tokens of links sent by email — finishing a
//! sign-up, verifying an address, resetting a password. Stored as SHA-256;
//! each works once, expires, and a newer one of the same purpose and
//! address voids the older ([`crate::links`]).

use sea_orm::entity::prelude::*;

/// A link's token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_links")]
pub struct Model {
    /// SHA-256 of the token.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_hash: Vec<u8>,
    /// `sign_up`, `verify_email` or `password_reset`.
    pub purpose: String,
    /// The normalised address the link went to.
    pub email: String,
    /// The account, for links about one (none for a sign-up).
    pub user_id: Option<Uuid>,
    /// JSON the purpose needs (a sign-up's password hash and names).
    pub details: String,
    /// When it was sent.
    pub created_at: DateTimeUtc,
    /// When it stops working.
    pub expires_at: DateTimeUtc,
    /// When it was used, or voided by a newer link.
    pub used_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
