//! `memberships`: a user's role in an organisation, and where the
//! membership stands.

use sea_orm::entity::prelude::*;

/// A membership.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "memberships")]
pub struct Model {
    /// The organisation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub org_id: Uuid,
    /// The user.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// `owner`, `admin` or `member`.
    pub role: String,
    /// When the user joined.
    pub created_at: DateTimeUtc,
    /// `active`, `suspended` or `removed`
    /// ([`crate::members::MembershipStatus`]).
    pub status: String,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
