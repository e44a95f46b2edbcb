//! `sessions`: one row per login, holding the hash of its current access
//! token. A refresh replaces the hash, so the previous access token dies.

use sea_orm::entity::prelude::*;

/// A session.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// The organisation the session acts in.
    pub org_id: Uuid,
    /// SHA-256 of the current access token.
    #[sea_orm(unique)]
    pub access_token_hash: Vec<u8>,
    /// When the current access token expires.
    pub access_expires_at: DateTimeUtc,
    /// When the session ends unless refreshed.
    pub idle_expires_at: DateTimeUtc,
    /// When the session ends whatever happens.
    pub absolute_expires_at: DateTimeUtc,
    /// Login time.
    pub created_at: DateTimeUtc,
    /// Last time a token of this session was used (flushed in batches).
    pub last_seen_at: DateTimeUtc,
    /// Client address at login.
    pub ip: Option<String>,
    /// Client user agent at login.
    pub user_agent: Option<String>,
    /// Set when the session was ended.
    pub revoked_at: Option<DateTimeUtc>,
    /// Why it was ended (`logout`, `refresh_token_reuse`…).
    pub revoked_reason: Option<String>,
    /// How the session was authenticated: `password`, `sso:<connection
    /// id>`, `oauth:<provider>` ([`twig_module::SessionMethod`]).
    pub method: String,
}

/// No navigable relations are needed.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
