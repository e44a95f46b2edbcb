//! `invitations`: an organisation's invitations of an email, with the
//! SHA-256 of the link's token ([`crate::invitations`]).

use sea_orm::entity::prelude::*;

/// An invitation.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invitations")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The inviting organisation.
    pub org_id: Uuid,
    /// The normalised address invited.
    pub email: String,
    /// The role the invitee gets.
    pub role: String,
    /// SHA-256 of the current link's token (a resend replaces it).
    #[sea_orm(unique)]
    pub token_hash: Vec<u8>,
    /// The member who invited.
    pub invited_by: Uuid,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// When the current link stops working.
    pub expires_at: DateTimeUtc,
    /// When it was accepted.
    pub accepted_at: Option<DateTimeUtc>,
    /// The account that accepted.
    pub accepted_by: Option<Uuid>,
    /// When it was revoked.
    pub revoked_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
