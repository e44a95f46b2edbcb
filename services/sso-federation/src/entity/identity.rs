//! `sso_identities`: sign-in methods linked to accounts — an identity at
//! a "Sign in with …" provider (issuer and subject) that signs a user in.

use sea_orm::entity::prelude::*;

/// One linked identity.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sso_identities")]
pub struct Model {
    /// The link.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The account it signs in to.
    pub user_id: Uuid,
    /// The provider's name in `sso_federation.social_providers`.
    pub provider: String,
    /// The provider's issuer.
    pub issuer: String,
    /// The provider's `sub` (unique per issuer).
    pub subject: String,
    /// The email the provider gave when it was linked.
    pub email: String,
    /// When it was linked.
    pub created_at: DateTimeUtc,
    /// When it last signed the user in.
    pub last_used_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
