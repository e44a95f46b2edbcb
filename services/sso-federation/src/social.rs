//! "Sign in with Google / Microsoft / …" for individual accounts.
//!
//! The rules, each once:
//! - an identity at a provider (its issuer and `sub`) is linked to one
//!   account at most (`sso_identities`, unique on issuer and subject);
//! - a linked identity signs its account in;
//! - an identity not yet linked, whose email the provider says is
//!   verified, makes a new account (without a password, owning a new
//!   organisation) when no account has that email — and when one has, it
//!   is linked only after the person proves that account's password
//!   (`POST /sso/social/link`), never silently;
//! - an email the provider does not say is verified neither makes nor
//!   finds an account;
//! - a person sees their sign-in methods and removes linked ones, keeping
//!   at least one (a password, or another linked identity).

use std::collections::BTreeMap;
use std::sync::Arc;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Set,
};
use twig_audit::{AuditEvent, Outcome};
use twig_clock::Clock;
use twig_config::Secret;
use twig_email::Email;
use twig_errors::ApiError;
use uuid::Uuid;

use crate::SsoConfig;
use crate::connection::IssuerUrl;
use crate::entity::identity;

fn db(err: DbErr) -> ApiError {
    twig_db::api_error(&err)
}

/// One configured provider.
#[derive(Debug, Clone)]
pub struct SocialProvider {
    /// Its name (`google`): the session method `oauth:<name>`.
    pub name: String,
    /// What the sign-in button says.
    pub display_name: String,
    /// Its issuer.
    pub issuer: IssuerUrl,
    /// Our client id there.
    pub client_id: String,
    /// Our client secret there.
    pub client_secret: Secret,
    /// Scopes besides `openid`.
    pub scopes: Vec<String>,
}

/// The configured providers, by name.
#[derive(Debug, Clone, Default)]
pub struct SocialProviders(BTreeMap<String, SocialProvider>);

impl SocialProviders {
    /// From `sso_federation.social_providers` (already checked).
    pub fn from_config(config: &SsoConfig) -> Result<Self, String> {
        let mut providers = BTreeMap::new();
        for (name, p) in &config.social_providers {
            let mut scopes = vec!["email".to_string(), "profile".to_string()];
            scopes.extend(p.extra_scopes.iter().cloned());
            providers.insert(
                name.clone(),
                SocialProvider {
                    name: name.clone(),
                    display_name: if p.display_name.is_empty() {
                        name.clone()
                    } else {
                        p.display_name.clone()
                    },
                    issuer: config.social_issuer(name, p)?,
                    client_id: p.client_id.trim().to_string(),
                    client_secret: p.client_secret.clone().unwrap_or_else(|| Secret::new("")),
                    scopes,
                },
            );
        }
        Ok(Self(providers))
    }

    /// The provider `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&SocialProvider> {
        self.0.get(name)
    }

    /// Every provider, by name.
    pub fn all(&self) -> impl Iterator<Item = &SocialProvider> {
        self.0.values()
    }
}

/// Where a browser starts signing in with `provider`.
pub fn start_path(provider: &str) -> String {
    format!("{}start?provider={provider}", crate::browser::PREFIX)
}

/// The email a provider's claims give, when it says the email is
/// verified (`email_verified` true, or the string `"true"`).
pub fn verified_email(claims: &serde_json::Map<String, serde_json::Value>) -> Option<Email> {
    let verified = match claims.get("email_verified") {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    };
    if !verified {
        return None;
    }
    Email::parse(claims.get("email")?.as_str()?).ok()
}

/// Linked identities.
pub struct Identities {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl Identities {
    /// Over `db`.
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// The identity `subject` at `issuer`, if linked.
    pub async fn find(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<identity::Model>, ApiError> {
        identity::Entity::find()
            .filter(identity::Column::Issuer.eq(issuer))
            .filter(identity::Column::Subject.eq(subject))
            .one(&self.db)
            .await
            .map_err(db)
    }

    /// Notes that `linked` has just signed its account in.
    pub async fn used(&self, linked: &identity::Model) -> Result<(), ApiError> {
        let mut used: identity::ActiveModel = linked.clone().into();
        used.last_used_at = Set(Some(self.clock.now()));
        used.update(&self.db).await.map_err(db)?;
        Ok(())
    }

    /// Links `subject` at `provider` to `user_id`, audited in `org` (the
    /// user's home organisation, where their events go).
    /// ALREADY_EXISTS when the identity is linked to an account already.
    pub async fn link(
        &self,
        user_id: Uuid,
        org: Option<Uuid>,
        provider: &SocialProvider,
        subject: &str,
        email: &Email,
        how: &'static str,
    ) -> Result<identity::Model, ApiError> {
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        let linked = identity::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user_id),
            provider: Set(provider.name.clone()),
            issuer: Set(provider.issuer.as_str().to_string()),
            subject: Set(subject.to_string()),
            email: Set(email.as_str().to_string()),
            created_at: Set(now),
            last_used_at: Set(Some(now)),
        }
        .insert(&txn)
        .await
        .map_err(|e| {
            if twig_db::is_unique_violation(&e) {
                ApiError::already_exists(format!(
                    "this {} account is linked to another account already",
                    provider.display_name
                ))
            } else {
                db(e)
            }
        })?;
        let mut event = AuditEvent::new("sso.method_linked", Outcome::Success)
            .actor(format!("user:{user_id}"))
            .target(format!("identity:{}", linked.id))
            .details(serde_json::json!({"provider": provider.name, "how": how}));
        if let Some(org) = org {
            event = event.org(org);
        }
        event.record_at(&txn, now).await.map_err(db)?;
        txn.commit().await.map_err(db)?;
        Ok(linked)
    }

    /// The identities linked to `user_id`, oldest first.
    pub async fn of(&self, user_id: Uuid) -> Result<Vec<identity::Model>, ApiError> {
        identity::Entity::find()
            .filter(identity::Column::UserId.eq(user_id))
            .order_by_asc(identity::Column::CreatedAt)
            .order_by_asc(identity::Column::Id)
            .all(&self.db)
            .await
            .map_err(db)
    }

    /// Unlinks `id` from `user_id`, unless it is their last way to sign
    /// in (`has_password` false and no other identity).
    pub async fn remove(
        &self,
        user_id: Uuid,
        org: Uuid,
        id: Uuid,
        has_password: bool,
    ) -> Result<(), ApiError> {
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await.map_err(db)?;
        // Removals of one account's methods, one at a time: two at once
        // must not remove the last two.
        twig_db::lock_key(&txn, "sso.identities", user_id.as_bytes())
            .await
            .map_err(db)?;
        let found = identity::Entity::find_by_id(id)
            .filter(identity::Column::UserId.eq(user_id))
            .one(&txn)
            .await
            .map_err(db)?
            .ok_or_else(|| ApiError::not_found("no such sign-in method on this account"))?;
        let held = identity::Entity::find()
            .filter(identity::Column::UserId.eq(user_id))
            .count(&txn)
            .await
            .map_err(db)?;
        if !has_password && held <= 1 {
            return Err(ApiError::failed_precondition(
                "this is the account's only way to sign in; link another one (or set a password) \
                 first",
            ));
        }
        identity::Entity::delete_by_id(id)
            .exec(&txn)
            .await
            .map_err(db)?;
        AuditEvent::new("sso.method_unlinked", Outcome::Success)
            .org(org)
            .actor(format!("user:{user_id}"))
            .target(format!("identity:{id}"))
            .details(serde_json::json!({"provider": found.provider}))
            .record_at(&txn, now)
            .await
            .map_err(db)?;
        txn.commit().await.map_err(db)
    }
}
