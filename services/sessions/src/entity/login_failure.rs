//! `login_failures`: recent failed logins per email, known or not, for the
//! growing per-account delay. Keyed by the SHA-256 of the normalised email
//! so unknown and known addresses are treated alike.

use sea_orm::entity::prelude::*;

/// Failures for one email.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_failures")]
pub struct Model {
    /// SHA-256 of the normalised email.
    #[sea_orm(primary_key, auto_increment = false)]
    pub email_hash: Vec<u8>,
    /// Failures since the window last reset.
    pub failures: i32,
    /// The latest failure.
    pub last_failure_at: DateTimeUtc,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
