//! `users`: one row per person; email unique (stored lower-case).

use sea_orm::entity::prelude::*;

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Normalised email, unique.
    #[sea_orm(unique)]
    pub email: String,
    /// Name shown in the UI.
    pub display_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Creation time.
    pub created_at: DateTimeUtc,
    /// Set while the user is disabled.
    pub disabled_at: Option<DateTimeUtc>,
    /// When the account proved its email; unset: not yet.
    pub email_verified_at: Option<DateTimeUtc>,
    /// Whether each new password sign-in is mailed to the account.
    pub notify_sign_in: bool,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
