//! Service accounts: machine principals of an organisation that own API
//! keys, so an integration outlives the membership of whoever set it up.
//! Owners and admins (or keys with the admin scope) manage them; a key a
//! service account owns acts as it (the principal's user id is the
//! service account's id), is left alone by membership changes, and is
//! revoked when the service account is deleted.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use twig_audit::{AuditEvent, Outcome};
use twig_auth::{Principal, Scope};
use uuid::Uuid;

use crate::entity::{api_key, service_account};
use crate::error::KeyError;
use crate::service::ApiKeys;

type Result<T> = std::result::Result<T, KeyError>;

/// Refuses unless the caller manages the organisation (admin scope).
fn require_admin(principal: &Principal) -> Result<()> {
    if principal.has_scope(Scope::Admin) {
        Ok(())
    } else {
        Err(KeyError::Forbidden(
            "only owners and admins manage service accounts",
        ))
    }
}

impl ApiKeys {
    /// The caller's organisation's service account `id`, not deleted;
    /// anything else is NOT_FOUND. Admins only.
    pub(crate) async fn live_service_account(
        &self,
        principal: &Principal,
        id: Uuid,
    ) -> Result<service_account::Model> {
        require_admin(principal)?;
        service_account::Entity::find_by_id(id)
            .filter(service_account::Column::OrgId.eq(principal.org_id))
            .filter(service_account::Column::DeletedAt.is_null())
            .one(self.db())
            .await?
            .ok_or(KeyError::NotFound)
    }

    /// Creates a service account in the caller's organisation.
    pub async fn create_service_account(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<service_account::Model> {
        require_admin(principal)?;
        let name = twig_errors::fields::name("name", name, crate::service::MAX_NAME_CHARS)?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        let row = service_account::ActiveModel {
            id: Set(Uuid::now_v7()),
            org_id: Set(principal.org_id),
            name: Set(name),
            created_by: Set(principal.user_id),
            created_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new("service_account.created", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("service_account:{}", row.id))
            .details(serde_json::json!({ "name": row.name }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        Ok(row)
    }

    /// The caller's organisation's service accounts, oldest first.
    pub async fn list_service_accounts(
        &self,
        principal: &Principal,
    ) -> Result<Vec<service_account::Model>> {
        require_admin(principal)?;
        Ok(service_account::Entity::find()
            .filter(service_account::Column::OrgId.eq(principal.org_id))
            .filter(service_account::Column::DeletedAt.is_null())
            .order_by_asc(service_account::Column::CreatedAt)
            .all(self.db())
            .await?)
    }

    /// Deletes a service account and revokes its keys, in one transaction;
    /// every replica forgets the organisation's cached answers.
    pub async fn delete_service_account(&self, principal: &Principal, id: Uuid) -> Result<u64> {
        self.live_service_account(principal, id).await?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        service_account::Entity::update_many()
            .col_expr(service_account::Column::DeletedAt, Expr::value(now))
            .filter(service_account::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        let revoked = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(now))
            .filter(api_key::Column::ServiceAccountId.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        AuditEvent::new("service_account.deleted", Outcome::Success)
            .org(principal.org_id)
            .actor(principal.actor())
            .target(format!("service_account:{id}"))
            .details(serde_json::json!({ "keys_revoked": revoked }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.forget_org(principal.org_id).await;
        Ok(revoked)
    }
}
