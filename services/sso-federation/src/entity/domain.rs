//! `sso_domains`: email domains organisations claim, and prove by DNS.

use sea_orm::entity::prelude::*;

/// One organisation's claim of a domain.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sso_domains")]
pub struct Model {
    /// The claim.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The organisation claiming it.
    pub org_id: Uuid,
    /// The domain, in `EmailDomain`'s form (unique per organisation).
    pub domain: String,
    /// The random value the TXT record must hold.
    pub token: String,
    /// The domain again once proved, else empty: unique across every
    /// organisation, so a domain is proved by one organisation at most.
    pub proved_domain: Option<String>,
    /// The connection of the organisation serving it, if any.
    pub connection_id: Option<Uuid>,
    /// When it was claimed.
    pub created_at: DateTimeUtc,
    /// When it was proved.
    pub verified_at: Option<DateTimeUtc>,
    /// When DNS was last asked.
    pub last_checked_at: Option<DateTimeUtc>,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
