//! The identity store: users, organisations and memberships — creating
//! them, looking them up by id and by normalised email, the memberships of
//! a user, just-in-time provisioning, and the organisation management the
//! API offers. It knows nothing of sessions; the session side
//! ([`crate::sessions::Sessions`]) asks it rather than reading its tables.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use twig_audit::{AuditEvent, Outcome};
use twig_auth::{Principal, Role};
use twig_clock::Clock;
use twig_crypto::{PasswordHasher, Token, TokenKind};
use twig_errors::ApiError;
use twig_module::{DirectoryUser, ProvisionedUser, UserDirectory};
use uuid::Uuid;

use crate::entity::{membership, organization, user};
use crate::error::SessionError;
use crate::members::{MembershipState, MembershipStatus};
use twig_email::Email;

type Result<T> = std::result::Result<T, SessionError>;

/// The longest display or organisation name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The stored password hash of a user who has none (provisioned by SSO or
/// OAuth): no password ever matches it.
pub const NO_PASSWORD: &str = "";

/// A display or organisation name by the shared rule
/// ([`twig_errors::fields::optional_name`]); empty means `fallback`, cut
/// to the same length.
pub(crate) fn clean_name(field: &'static str, raw: &str, fallback: String) -> Result<String> {
    Ok(
        match twig_errors::fields::optional_name(field, raw, MAX_NAME_CHARS)? {
            Some(name) => name,
            None => fallback.chars().take(MAX_NAME_CHARS).collect(),
        },
    )
}

/// The user's password hash, when they have a password.
pub fn password_hash(user: &user::Model) -> Option<&str> {
    (user.password_hash != NO_PASSWORD).then_some(user.password_hash.as_str())
}

fn parse_email(raw: &str) -> Result<Email> {
    Email::parse(raw).map_err(|r| SessionError::field("email", r))
}

/// Users, organisations and memberships.
pub struct IdentityStore {
    db: DatabaseConnection,
    hasher: PasswordHasher,
    clock: Arc<dyn Clock>,
}

impl IdentityStore {
    /// The store over `db`.
    pub fn new(db: DatabaseConnection, hasher: PasswordHasher, clock: Arc<dyn Clock>) -> Self {
        Self { db, hasher, clock }
    }

    // ----- look-ups ------------------------------------------------------

    /// The user with this id.
    pub async fn user(&self, id: Uuid) -> Result<Option<user::Model>> {
        self.user_in(&self.db, id).await
    }

    /// The user with this id, read through `conn` (a transaction).
    pub async fn user_in(
        &self,
        conn: &impl ConnectionTrait,
        id: Uuid,
    ) -> Result<Option<user::Model>> {
        Ok(user::Entity::find_by_id(id).one(conn).await?)
    }

    /// The user with this (normalised) email.
    pub async fn user_by_email(&self, email: &Email) -> Result<Option<user::Model>> {
        self.user_by_email_in(&self.db, email).await
    }

    /// The user with this (normalised) email, read through `conn`.
    pub(crate) async fn user_by_email_in(
        &self,
        conn: &impl ConnectionTrait,
        email: &Email,
    ) -> Result<Option<user::Model>> {
        Ok(user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .one(conn)
            .await?)
    }

    /// Whether the account with this email (if any) is a member of the
    /// organisation, active or suspended — in one query, the same whether
    /// or not an account has the email, so the answer's timing does not
    /// tell.
    pub(crate) async fn is_member_by_email_in(
        &self,
        conn: &impl ConnectionTrait,
        org_id: Uuid,
        email: &Email,
    ) -> Result<bool> {
        let account = sea_orm::sea_query::Query::select()
            .column(user::Column::Id)
            .from(user::Entity)
            .and_where(user::Column::Email.eq(email.as_str()))
            .to_owned();
        Ok(membership::Entity::find()
            .filter(membership::Column::OrgId.eq(org_id))
            .filter(membership::Column::UserId.in_subquery(account))
            .filter(membership::Column::Status.ne(MembershipStatus::Removed.as_str()))
            .count(conn)
            .await?
            > 0)
    }

    /// Whether an account has this email.
    pub async fn email_taken(&self, email: &Email) -> Result<bool> {
        Ok(user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .count(&self.db)
            .await?
            > 0)
    }

    /// The organisation with this id, read through `conn`.
    pub async fn organization_in(
        &self,
        conn: &impl ConnectionTrait,
        id: Uuid,
    ) -> Result<Option<organization::Model>> {
        Ok(organization::Entity::find_by_id(id).one(conn).await?)
    }

    /// The user's role in the organisation, if they are an active member
    /// (through `conn`): a suspended or removed member has none, so no
    /// session of theirs is issued or verified there.
    pub async fn role_in(
        &self,
        conn: &impl ConnectionTrait,
        org_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<Role>> {
        Ok(membership::Entity::find_by_id((org_id, user_id))
            .one(conn)
            .await?
            .as_ref()
            .and_then(MembershipState::of)
            .filter(|m| m.status == MembershipStatus::Active)
            .map(|m| m.role))
    }

    /// The user's role in the organisation, if they are an active member.
    pub async fn role(&self, org_id: Uuid, user_id: Uuid) -> Result<Option<Role>> {
        self.role_in(&self.db, org_id, user_id).await
    }

    /// The user's active memberships, oldest first.
    pub async fn memberships_of(&self, user_id: Uuid) -> Result<Vec<membership::Model>> {
        Ok(membership::Entity::find()
            .filter(membership::Column::UserId.eq(user_id))
            .filter(membership::Column::Status.eq(MembershipStatus::Active.as_str()))
            .order_by_asc(membership::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// The organisations the account belongs to — active or suspended,
    /// not removed — for the events each should see (failed logins, the
    /// operator disabling the account).
    pub async fn organizations_of_in(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<Vec<Uuid>> {
        Ok(membership::Entity::find()
            .filter(membership::Column::UserId.eq(user_id))
            .filter(membership::Column::Status.ne(MembershipStatus::Removed.as_str()))
            .order_by_asc(membership::Column::CreatedAt)
            .all(conn)
            .await?
            .into_iter()
            .map(|m| m.org_id)
            .collect())
    }

    /// The logs an event about the account goes to: each organisation it
    /// belongs to ([`IdentityStore::organizations_of_in`]), or the
    /// platform's log (`None`) when it belongs to none.
    pub async fn organizations_or_none(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<Vec<Option<Uuid>>> {
        let orgs = self.organizations_of_in(conn, user_id).await?;
        Ok(if orgs.is_empty() {
            vec![None]
        } else {
            orgs.into_iter().map(Some).collect()
        })
    }

    // ----- changes inside a caller's transaction ---------------------------

    /// Creates a user (with a password hash and a proved email: a sign-up
    /// link was followed, or the operator bootstraps) who owns a new
    /// organisation.
    pub async fn create_user_with_org(
        &self,
        txn: &impl ConnectionTrait,
        email: &Email,
        display_name: &str,
        password_hash: &str,
        org_name: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<(user::Model, organization::Model), sea_orm::DbErr> {
        let user = insert_user(txn, email, display_name, password_hash, Some(now), now).await?;
        let org = organization::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(org_name.to_string()),
            created_at: Set(now),
        }
        .insert(txn)
        .await?;
        insert_membership(txn, org.id, user.id, Role::Owner, now).await?;
        Ok((user, org))
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        hash: String,
    ) -> Result<()> {
        user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(hash))
            .filter(user::Column::Id.eq(user_id))
            .exec(conn)
            .await?;
        Ok(())
    }

    /// Changes what the account says about itself: its display name, and
    /// whether new sign-ins are mailed to it.
    pub async fn update_user(
        &self,
        user_id: Uuid,
        display_name: Option<&str>,
        notify_sign_in: Option<bool>,
    ) -> Result<user::Model> {
        let mut update = user::Entity::update_many().filter(user::Column::Id.eq(user_id));
        if let Some(raw) = display_name {
            let name = twig_errors::fields::name("display_name", raw, MAX_NAME_CHARS)?;
            update = update.col_expr(user::Column::DisplayName, Expr::value(name));
        }
        if let Some(notify) = notify_sign_in {
            update = update.col_expr(user::Column::NotifySignIn, Expr::value(notify));
        }
        if display_name.is_some() || notify_sign_in.is_some() {
            update.exec(&self.db).await?;
        }
        self.user(user_id).await?.ok_or(SessionError::InvalidToken)
    }

    /// Marks the account's email verified from `at`.
    pub async fn set_email_verified(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<()> {
        user::Entity::update_many()
            .col_expr(user::Column::EmailVerifiedAt, Expr::value(at))
            .filter(user::Column::Id.eq(user_id))
            .exec(conn)
            .await?;
        Ok(())
    }

    /// Disables the user from `at`, or enables them (`None`).
    pub async fn set_disabled(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        user::Entity::update_many()
            .col_expr(user::Column::DisabledAt, Expr::value(at))
            .filter(user::Column::Id.eq(user_id))
            .exec(conn)
            .await?;
        Ok(())
    }

    // ----- federated accounts --------------------------------------------

    /// An account for `email` (seen verified by the caller's provider),
    /// without a password, owning a new organisation; audited as
    /// `user.signed_up` with the method.
    pub async fn create_federated_account(
        &self,
        email: &str,
        display_name: &str,
        method: &str,
    ) -> Result<(user::Model, organization::Model)> {
        let email = parse_email(email)?;
        let display_name =
            clean_name("display_name", display_name, email.local_part().to_string())?;
        let org_name = format!("{display_name}'s organisation")
            .chars()
            .take(MAX_NAME_CHARS)
            .collect::<String>();
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        if self.user_by_email_in(&txn, &email).await?.is_some() {
            return Err(SessionError::EmailTaken);
        }
        let (user, org) = self
            .create_user_with_org(&txn, &email, &display_name, NO_PASSWORD, &org_name, now)
            .await
            .map_err(|e| {
                if twig_db::is_unique_violation(&e) {
                    SessionError::EmailTaken
                } else {
                    e.into()
                }
            })?;
        AuditEvent::new("user.signed_up", Outcome::Success)
            .org(org.id)
            .actor(format!("user:{}", user.id))
            .target(format!("user:{}", user.id))
            .details(serde_json::json!({"method": method}))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        Ok((user, org))
    }

    /// Whether `user_id` has a password, and their oldest active
    /// membership's organisation.
    pub async fn sign_in_facts(&self, user_id: Uuid) -> Result<twig_module::SignInFacts> {
        let user = self
            .user(user_id)
            .await?
            .ok_or(SessionError::NotFound("user"))?;
        let home = self
            .memberships_of(user_id)
            .await?
            .first()
            .map(|m| m.org_id);
        Ok(twig_module::SignInFacts {
            has_password: password_hash(&user).is_some(),
            home_org: home,
        })
    }

    // ----- provisioning ----------------------------------------------------

    /// Makes the user with `email` a member of `org_id` with `role`,
    /// creating them without a password when absent. An existing member
    /// keeps their role. Owners are not provisioned.
    pub async fn provision(
        &self,
        email: &str,
        display_name: &str,
        org_id: Uuid,
        role: Role,
    ) -> Result<(user::Model, Role, bool, bool)> {
        let email = parse_email(email)?;
        if role == Role::Owner {
            return Err(SessionError::Forbidden(
                "provisioning does not make owners; an owner adds owners",
            ));
        }
        let display_name =
            clean_name("display_name", display_name, email.local_part().to_string())?;
        // A concurrent provisioning of the same email or membership loses
        // on a unique key; the second attempt finds what the winner wrote.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .try_provision(&email, &display_name, org_id, role)
                .await
            {
                Err(SessionError::Db(e)) if attempt < 3 && twig_db::is_unique_violation(&e) => {
                    continue;
                }
                other => return other,
            }
        }
    }

    async fn try_provision(
        &self,
        email: &Email,
        display_name: &str,
        org_id: Uuid,
        role: Role,
    ) -> Result<(user::Model, Role, bool, bool)> {
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        if self.organization_in(&txn, org_id).await?.is_none() {
            return Err(SessionError::NotFound("organisation"));
        }
        let (user, created_user) = match self.user_by_email_in(&txn, email).await? {
            Some(user) => (user, false),
            None => (
                insert_user(&txn, email, display_name, NO_PASSWORD, None, now).await?,
                true,
            ),
        };
        // Any membership, suspended or removed too, stays as it is: a login
        // elsewhere never undoes what the organisation decided.
        let existing = membership::Entity::find_by_id((org_id, user.id))
            .one(&txn)
            .await?
            .as_ref()
            .and_then(MembershipState::of);
        let (role, joined) = match existing {
            Some(existing) => (existing.role, false),
            None => {
                insert_membership(&txn, org_id, user.id, role, now).await?;
                (role, true)
            }
        };
        if created_user || joined {
            AuditEvent::new("user.provisioned", Outcome::Success)
                .org(org_id)
                .actor("system:provisioning")
                .target(format!("user:{}", user.id))
                .details(serde_json::json!({
                    "created_user": created_user,
                    "joined": joined,
                    "role": role.as_str(),
                }))
                .record_at(&txn, now)
                .await?;
        }
        txn.commit().await?;
        Ok((user, role, created_user, joined))
    }

    // ----- the API's organisation management ---------------------------------

    /// The caller's user and memberships.
    pub async fn current_user(
        &self,
        principal: &Principal,
    ) -> Result<(user::Model, Vec<(organization::Model, Role)>)> {
        let user = self
            .user(principal.user_id)
            .await?
            .ok_or(SessionError::InvalidToken)?;
        let memberships = self.memberships_of(user.id).await?;
        let mut out = Vec::with_capacity(memberships.len());
        for m in memberships {
            if let (Some(org), Some(role)) = (
                self.organization_in(&self.db, m.org_id).await?,
                Role::parse(&m.role),
            ) {
                out.push((org, role));
            }
        }
        Ok((user, out))
    }

    /// Refuses unless the caller manages `org_id` (another organisation is
    /// NOT_FOUND: not revealed to exist).
    pub(crate) fn require_manager(principal: &Principal, org_id: Uuid) -> Result<()> {
        if principal.org_id != org_id {
            return Err(SessionError::NotFound("organisation"));
        }
        if !principal.can_manage_org() {
            return Err(SessionError::Forbidden(
                "only owners and admins of the organisation may do this",
            ));
        }
        Ok(())
    }

    /// Up to `limit` organisations, oldest first, each with its number of
    /// active members (the operator's `org list`).
    pub async fn organizations(&self, limit: u64) -> Result<Vec<(organization::Model, u64)>> {
        let orgs = organization::Entity::find()
            .order_by_asc(organization::Column::CreatedAt)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(orgs.len());
        for org in orgs {
            let members = membership::Entity::find()
                .filter(membership::Column::OrgId.eq(org.id))
                .filter(membership::Column::Status.eq(MembershipStatus::Active.as_str()))
                .count(&self.db)
                .await?;
            out.push((org, members));
        }
        Ok(out)
    }

    /// Members of the caller's organisation, active and suspended.
    pub async fn list_members(
        &self,
        principal: &Principal,
        org_id: Uuid,
    ) -> Result<Vec<(user::Model, MembershipState)>> {
        if principal.org_id != org_id {
            return Err(SessionError::NotFound("organisation"));
        }
        let memberships = membership::Entity::find()
            .filter(membership::Column::OrgId.eq(org_id))
            .filter(membership::Column::Status.ne(MembershipStatus::Removed.as_str()))
            .order_by_asc(membership::Column::CreatedAt)
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(memberships.len());
        for m in memberships {
            if let (Some(user), Some(state)) =
                (self.user(m.user_id).await?, MembershipState::of(&m))
            {
                out.push((user, state));
            }
        }
        Ok(out)
    }

    /// Creates the first organisation and its owner, with a generated
    /// password returned once. Refuses when any organisation exists.
    pub async fn bootstrap(
        &self,
        org_name: &str,
        email: &str,
    ) -> Result<(user::Model, organization::Model, String)> {
        let email = parse_email(email)?;
        let org_name = clean_name("organization_name", org_name, "Default organisation".into())?;
        if organization::Entity::find().count(&self.db).await? > 0 {
            return Err(SessionError::Forbidden(
                "bootstrap has run already: an organisation exists",
            ));
        }
        let password = Token::generate(TokenKind::SessionRefresh).expose()[8..40].to_string();
        let hash = self
            .hasher
            .hash(&password)
            .await
            .map_err(|e| SessionError::password("password", e))?;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        let (user, org) = self
            .create_user_with_org(&txn, &email, "Administrator", &hash, &org_name, now)
            .await?;
        AuditEvent::new("system.bootstrapped", Outcome::Success)
            .org(org.id)
            .actor("system:bootstrap")
            .target(format!("user:{}", user.id))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        Ok((user, org, password))
    }
}

/// Inserts an account; `verified_at` when its email is proved.
pub(crate) async fn insert_user(
    txn: &impl ConnectionTrait,
    email: &Email,
    display_name: &str,
    password_hash: &str,
    verified_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> std::result::Result<user::Model, sea_orm::DbErr> {
    user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email.as_str().to_string()),
        display_name: Set(display_name.to_string()),
        password_hash: Set(password_hash.to_string()),
        created_at: Set(now),
        disabled_at: Set(None),
        email_verified_at: Set(verified_at),
        notify_sign_in: Set(false),
    }
    .insert(txn)
    .await
}

/// Inserts an active membership.
pub(crate) async fn insert_membership(
    txn: &impl ConnectionTrait,
    org_id: Uuid,
    user_id: Uuid,
    role: Role,
    now: DateTime<Utc>,
) -> std::result::Result<membership::Model, sea_orm::DbErr> {
    membership::ActiveModel {
        org_id: Set(org_id),
        user_id: Set(user_id),
        role: Set(role.as_str().to_string()),
        created_at: Set(now),
        status: Set(MembershipStatus::Active.as_str().to_string()),
    }
    .insert(txn)
    .await
}

/// A user as other services see them.
pub fn directory_user(user: &user::Model) -> DirectoryUser {
    DirectoryUser {
        id: user.id,
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        disabled: user.disabled_at.is_some(),
    }
}

/// The in-process [`UserDirectory`] port.
impl UserDirectory for IdentityStore {
    fn find_user_by_email<'a>(
        &'a self,
        email: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<DirectoryUser>, ApiError>> {
        Box::pin(async move {
            let email = parse_email(email)?;
            Ok(self
                .user_by_email(&email)
                .await?
                .as_ref()
                .map(directory_user))
        })
    }

    fn find_user<'a>(
        &'a self,
        user_id: Uuid,
    ) -> BoxFuture<'a, std::result::Result<Option<DirectoryUser>, ApiError>> {
        Box::pin(async move { Ok(self.user(user_id).await?.as_ref().map(directory_user)) })
    }

    fn provision_user<'a>(
        &'a self,
        email: &'a str,
        display_name: &'a str,
        org_id: Uuid,
        role: Role,
    ) -> BoxFuture<'a, std::result::Result<ProvisionedUser, ApiError>> {
        Box::pin(async move {
            let (user, role, created_user, joined) =
                self.provision(email, display_name, org_id, role).await?;
            Ok(ProvisionedUser {
                user: directory_user(&user),
                role,
                created_user,
                joined,
            })
        })
    }

    fn create_federated_account<'a>(
        &'a self,
        email: &'a str,
        display_name: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(DirectoryUser, Uuid), ApiError>> {
        Box::pin(async move {
            let (user, org) = self
                .create_federated_account(email, display_name, "federated")
                .await?;
            Ok((directory_user(&user), org.id))
        })
    }

    fn sign_in_facts<'a>(
        &'a self,
        user_id: Uuid,
    ) -> BoxFuture<'a, std::result::Result<twig_module::SignInFacts, ApiError>> {
        Box::pin(async move { Ok(self.sign_in_facts(user_id).await?) })
    }
}
