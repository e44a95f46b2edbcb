//! `api_keys`: one row per key (its name, scopes and lifetime).

use sea_orm::entity::prelude::*;

/// A key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// Id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The organisation.
    pub org_id: Uuid,
    /// Display name.
    pub name: String,
    /// Scopes, sorted names joined by spaces.
    pub scopes: String,
    /// Public start of the current secret.
    pub prefix: String,
    /// The member who created it (and owns it: the key lives and dies with
    /// that membership).
    pub created_by: Uuid,
    /// Creation time.
    pub created_at: DateTimeUtc,
    /// Expiry, if any.
    pub expires_at: Option<DateTimeUtc>,
    /// Set when revoked.
    pub revoked_at: Option<DateTimeUtc>,
    /// Last successful verification (flushed in batches).
    pub last_used_at: Option<DateTimeUtc>,
    /// Allowed client networks, space-separated; empty = any address.
    pub allowed_cidrs: String,
    /// Set while the creator's membership is suspended: refused until
    /// cleared.
    pub stopped_at: Option<DateTimeUtc>,
    /// The service account that owns the key; unset: the membership of
    /// `created_by` owns it.
    pub service_account_id: Option<Uuid>,
}

/// The organisation's allowlist, joined on a cache miss (no foreign key:
/// most organisations have no row).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The allowlist of the key's organisation.
    #[sea_orm(
        belongs_to = "super::org_ip_allowlist::Entity",
        from = "Column::OrgId",
        to = "super::org_ip_allowlist::Column::OrgId"
    )]
    OrgAllowlist,
}

impl Related<super::org_ip_allowlist::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::OrgAllowlist.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
