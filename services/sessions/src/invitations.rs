//! Invitations: the one way into an organisation besides SSO in a proved
//! domain. An owner or admin invites an email; the link goes to that
//! address; the person accepts while signed in with that verified email,
//! or signs up through the link (which proves the address). Tokens follow
//! the link rules of [`crate::links`] (random, stored hashed, single use,
//! expiring; a resend replaces the token). Inviting answers the same
//! whether or not the email has an account.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use twig_audit::{AuditEvent, Outcome};
use twig_auth::{Principal, Role};
use twig_crypto::TokenKind;
use twig_mail::{Mail, Template};
use twig_module::SessionMethod;
use uuid::Uuid;

use crate::entity::{invitation, organization, user};
use crate::error::SessionError;
use crate::identity::{IdentityStore, clean_name, insert_user};
use crate::links::{self, LinkRefusal};
use crate::members::{join, lock_organization};
use crate::sessions::{ClientContext, Issue, IssuedTokens, Sessions};
use twig_email::Email;

type Result<T> = std::result::Result<T, SessionError>;

/// The path of the page that accepts an invitation.
pub const ACCEPT_PATH: &str = "/accept-invitation";

/// The most invitations one page of a list shows.
const LIST_LIMIT: u64 = 500;

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationState {
    /// Its link works.
    Pending,
    /// Someone joined through it.
    Accepted,
    /// An admin revoked it.
    Revoked,
    /// Its link expired (a resend starts it again).
    Expired,
}

/// The state of a stored invitation at `now`.
pub fn state_of(row: &invitation::Model, now: DateTime<Utc>) -> InvitationState {
    if row.accepted_at.is_some() {
        InvitationState::Accepted
    } else if row.revoked_at.is_some() {
        InvitationState::Revoked
    } else if row.expires_at <= now {
        InvitationState::Expired
    } else {
        InvitationState::Pending
    }
}

/// A signed-up account through an invitation.
pub struct InvitedSignUp {
    /// The new account.
    pub user: user::Model,
    /// The organisation it joined.
    pub organization: organization::Model,
    /// Its first session, in that organisation.
    pub tokens: IssuedTokens,
}

fn role_of(row: &invitation::Model) -> Result<Role> {
    Role::parse(&row.role).ok_or(SessionError::InvalidLink)
}

/// An invitation to `role` is the caller's to make, renew or revoke only
/// when they could grant the role: an owner's invitation is an owner's.
fn require_may_handle(principal: &Principal, role: Role) -> Result<()> {
    if role == Role::Owner && !principal.roles.contains(&Role::Owner) {
        return Err(SessionError::Forbidden(
            "only an owner may invite an owner, or renew or revoke such an invitation",
        ));
    }
    Ok(())
}

impl Sessions {
    /// Invites `email` to the caller's organisation with `role`.
    pub async fn create_invitation(
        &self,
        principal: &Principal,
        org_id: Uuid,
        email: &str,
        role: Role,
        client: &ClientContext,
    ) -> Result<invitation::Model> {
        IdentityStore::require_manager(principal, org_id)?;
        require_may_handle(principal, role)?;
        let email = Email::parse(email).map_err(|r| SessionError::field("email", r))?;
        let brakes = &self.config().brakes;
        self.brake_address(
            "invitations_per_address",
            brakes.invitations_per_address,
            client,
        )
        .await?;
        self.brake_email(
            "invitations_per_email",
            brakes.invitations_per_email,
            &email,
        )
        .await?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        // Invitations of one organisation are made one after another: on
        // PostgreSQL two at once would otherwise both find no pending
        // invitation of the email (and both fit under the cap) and both
        // insert.
        lock_organization(&txn, org_id).await?;
        let org = self
            .identity()
            .organization_in(&txn, org_id)
            .await?
            .ok_or(SessionError::NotFound("organisation"))?;
        // The organisation's own members are its to see (ListMembers); an
        // account elsewhere is not revealed.
        if self
            .identity()
            .is_member_by_email_in(&txn, org_id, &email)
            .await?
        {
            return Err(SessionError::AlreadyMember);
        }
        let pending = invitation::Entity::find()
            .filter(invitation::Column::OrgId.eq(org_id))
            .filter(invitation::Column::AcceptedAt.is_null())
            .filter(invitation::Column::RevokedAt.is_null())
            .filter(invitation::Column::ExpiresAt.gt(now));
        if pending
            .clone()
            .filter(invitation::Column::Email.eq(email.as_str()))
            .count(&txn)
            .await?
            > 0
        {
            return Err(SessionError::AlreadyInvited);
        }
        if pending.count(&txn).await? >= self.config().max_pending_invitations {
            return Err(SessionError::MembershipState(
                "the organisation has as many pending invitations as it may; revoke some first",
            ));
        }
        let token = links::new_token(TokenKind::Invitation);
        let row = invitation::ActiveModel {
            id: Set(Uuid::now_v7()),
            org_id: Set(org_id),
            email: Set(email.as_str().to_string()),
            role: Set(role.as_str().to_string()),
            token_hash: Set(token.hash().as_bytes().to_vec()),
            invited_by: Set(principal.user_id),
            created_at: Set(now),
            expires_at: Set(now + twig_clock::span(self.config().invitation_ttl)),
            accepted_at: Set(None),
            accepted_by: Set(None),
            revoked_at: Set(None),
        }
        .insert(&txn)
        .await?;
        self.audit("invitation.created", principal, client)
            .target(format!("invitation:{}", row.id))
            .details(serde_json::json!({ "email": row.email, "role": row.role }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.send_invitation(&row, &org, principal, token.expose())
            .await?;
        Ok(row)
    }

    async fn send_invitation(
        &self,
        row: &invitation::Model,
        org: &organization::Model,
        inviter: &Principal,
        token: &str,
    ) -> Result<()> {
        let inviter_name = self
            .identity()
            .user(inviter.user_id)
            .await?
            .map(|u| u.display_name)
            .unwrap_or_default();
        self.mailer().send(Mail::new(
            &row.email,
            Template::Invited {
                organization_name: org.name.clone(),
                inviter_name,
                link: self.mailer().link(ACCEPT_PATH, token),
                expires_at: row.expires_at,
            },
        ));
        Ok(())
    }

    /// The organisation's invitations, newest first.
    pub async fn list_invitations(
        &self,
        principal: &Principal,
        org_id: Uuid,
    ) -> Result<Vec<invitation::Model>> {
        IdentityStore::require_manager(principal, org_id)?;
        Ok(invitation::Entity::find()
            .filter(invitation::Column::OrgId.eq(org_id))
            .order_by_desc(invitation::Column::CreatedAt)
            .limit(LIST_LIMIT)
            .all(self.db())
            .await?)
    }

    /// A pending (or, for a resend, expired) invitation of the caller's
    /// organisation; another organisation's is NOT_FOUND.
    async fn own_invitation(
        &self,
        txn: &impl ConnectionTrait,
        principal: &Principal,
        org_id: Uuid,
        id: Uuid,
    ) -> Result<invitation::Model> {
        IdentityStore::require_manager(principal, org_id)?;
        invitation::Entity::find_by_id(id)
            .filter(invitation::Column::OrgId.eq(org_id))
            .one(txn)
            .await?
            .ok_or(SessionError::NotFound("invitation"))
    }

    /// Revokes a pending invitation.
    pub async fn revoke_invitation(
        &self,
        principal: &Principal,
        org_id: Uuid,
        id: Uuid,
        client: &ClientContext,
    ) -> Result<()> {
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        let row = self.own_invitation(&txn, principal, org_id, id).await?;
        require_may_handle(principal, role_of(&row)?)?;
        match state_of(&row, now) {
            InvitationState::Pending | InvitationState::Expired => {}
            InvitationState::Accepted => {
                return Err(SessionError::MembershipState(
                    "the invitation was accepted; remove the member instead",
                ));
            }
            InvitationState::Revoked => return Ok(()),
        }
        invitation::Entity::update_many()
            .col_expr(invitation::Column::RevokedAt, Expr::value(now))
            .filter(invitation::Column::Id.eq(id))
            .filter(invitation::Column::AcceptedAt.is_null())
            .exec(&txn)
            .await?;
        self.audit("invitation.revoked", principal, client)
            .target(format!("invitation:{id}"))
            .details(serde_json::json!({ "email": row.email }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Sends an invitation again with a new link and a new expiry; the
    /// old link dies.
    pub async fn resend_invitation(
        &self,
        principal: &Principal,
        org_id: Uuid,
        id: Uuid,
        client: &ClientContext,
    ) -> Result<invitation::Model> {
        let brakes = &self.config().brakes;
        self.brake_address(
            "invitations_per_address",
            brakes.invitations_per_address,
            client,
        )
        .await?;
        // The brakes first, outside the transaction: they may ask another
        // process, and the organisation's lock is held only for the write.
        let email = self
            .own_invitation(self.db(), principal, org_id, id)
            .await?
            .email;
        let email = Email::parse(&email).map_err(|r| SessionError::field("email", r))?;
        self.brake_email(
            "invitations_per_email",
            brakes.invitations_per_email,
            &email,
        )
        .await?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        lock_organization(&txn, org_id).await?;
        let row = self.own_invitation(&txn, principal, org_id, id).await?;
        // Renewing an invitation grants what making it would.
        require_may_handle(principal, role_of(&row)?)?;
        match state_of(&row, now) {
            InvitationState::Pending => {}
            InvitationState::Expired => {
                // One pending invitation per email: a newer one made
                // after this one expired stays the only one.
                let newer = invitation::Entity::find()
                    .filter(invitation::Column::OrgId.eq(org_id))
                    .filter(invitation::Column::Email.eq(row.email.clone()))
                    .filter(invitation::Column::Id.ne(row.id))
                    .filter(invitation::Column::AcceptedAt.is_null())
                    .filter(invitation::Column::RevokedAt.is_null())
                    .filter(invitation::Column::ExpiresAt.gt(now))
                    .count(&txn)
                    .await?;
                if newer > 0 {
                    return Err(SessionError::AlreadyInvited);
                }
            }
            InvitationState::Accepted | InvitationState::Revoked => {
                return Err(SessionError::MembershipState(
                    "only a pending or expired invitation can be sent again",
                ));
            }
        }
        let token = links::new_token(TokenKind::Invitation);
        let expires_at = now + twig_clock::span(self.config().invitation_ttl);
        invitation::Entity::update_many()
            .col_expr(
                invitation::Column::TokenHash,
                Expr::value(token.hash().as_bytes().to_vec()),
            )
            .col_expr(invitation::Column::ExpiresAt, Expr::value(expires_at))
            .filter(invitation::Column::Id.eq(id))
            .filter(invitation::Column::AcceptedAt.is_null())
            .filter(invitation::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        self.audit("invitation.resent", principal, client)
            .target(format!("invitation:{id}"))
            .details(serde_json::json!({ "email": row.email }))
            .record_at(&txn, now)
            .await?;
        let org = self
            .identity()
            .organization_in(&txn, org_id)
            .await?
            .ok_or(SessionError::NotFound("organisation"))?;
        txn.commit().await?;
        let row = invitation::Model { expires_at, ..row };
        self.send_invitation(&row, &org, principal, token.expose())
            .await?;
        Ok(row)
    }

    /// The pending invitation `token` opens, marked accepted by `user_id`
    /// inside `txn` (the first of two concurrent uses wins), or why not.
    async fn take_invitation(
        &self,
        txn: &impl ConnectionTrait,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<invitation::Model, (LinkRefusal, Option<invitation::Model>)>>
    {
        let Some(hash) = links::token_hash(TokenKind::Invitation, token) else {
            return Ok(Err((LinkRefusal::Unknown, None)));
        };
        let Some(row) = invitation::Entity::find()
            .filter(invitation::Column::TokenHash.eq(hash))
            .one(txn)
            .await?
        else {
            return Ok(Err((LinkRefusal::Unknown, None)));
        };
        match state_of(&row, now) {
            InvitationState::Pending => Ok(Ok(row)),
            InvitationState::Expired => Ok(Err((LinkRefusal::Expired, Some(row)))),
            InvitationState::Accepted => Ok(Err((LinkRefusal::Used, Some(row)))),
            InvitationState::Revoked => Ok(Err((LinkRefusal::Revoked, Some(row)))),
        }
    }

    /// Marks `row` accepted by `user_id`; false when a concurrent use won.
    async fn mark_accepted(
        txn: &impl ConnectionTrait,
        row: &invitation::Model,
        user_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(invitation::Entity::update_many()
            .col_expr(invitation::Column::AcceptedAt, Expr::value(now))
            .col_expr(invitation::Column::AcceptedBy, Expr::value(user_id))
            .filter(invitation::Column::Id.eq(row.id))
            .filter(invitation::Column::TokenHash.eq(row.token_hash.clone()))
            .filter(invitation::Column::AcceptedAt.is_null())
            .filter(invitation::Column::RevokedAt.is_null())
            .exec(txn)
            .await?
            .rows_affected
            == 1)
    }

    /// An invitation refused: audited in the inviting organisation when
    /// the token was a real one, and answered with `error`.
    async fn refuse_invitation(
        &self,
        row: Option<&invitation::Model>,
        reason: &'static str,
        actor: Option<Uuid>,
        client: &ClientContext,
        error: SessionError,
    ) -> SessionError {
        metrics::counter!("twig_invitation_refusals_total", "reason" => reason).increment(1);
        let Some(row) = row else {
            return error;
        };
        let now = self.now();
        let recorded = async {
            let txn = twig_db::begin_write(self.db()).await?;
            AuditEvent::new("invitation.refused", Outcome::Failure)
                .org(row.org_id)
                .actor(actor.map_or("anonymous".to_string(), |id| format!("user:{id}")))
                .target(format!("invitation:{}", row.id))
                .ip(client.ip_string())
                .details(serde_json::json!({ "reason": reason }))
                .record_at(&txn, now)
                .await?;
            txn.commit().await?;
            Ok::<_, SessionError>(())
        };
        match recorded.await {
            Ok(()) => error,
            Err(e) => e,
        }
    }

    /// The signed-in caller accepts an invitation sent to their verified
    /// email and becomes an active member.
    pub async fn accept_invitation(
        &self,
        principal: &Principal,
        token: &str,
        client: &ClientContext,
    ) -> Result<(organization::Model, Role)> {
        self.brake_link_attempt(client).await?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        let row = match self.take_invitation(&txn, token, now).await? {
            Ok(row) => row,
            Err((reason, row)) => {
                drop(txn);
                return Err(self
                    .refuse_invitation(
                        row.as_ref(),
                        reason.as_str(),
                        Some(principal.user_id),
                        client,
                        SessionError::InvalidLink,
                    )
                    .await);
            }
        };
        let user = self
            .identity()
            .user_in(&txn, principal.user_id)
            .await?
            .ok_or(SessionError::InvalidToken)?;
        if user.email != row.email {
            drop(txn);
            return Err(self
                .refuse_invitation(
                    Some(&row),
                    "other_account",
                    Some(user.id),
                    client,
                    SessionError::Forbidden(
                        "this invitation was sent to another email address; sign in with that \
                         address to accept it",
                    ),
                )
                .await);
        }
        if user.email_verified_at.is_none() {
            drop(txn);
            return Err(self
                .refuse_invitation(
                    Some(&row),
                    "email_not_verified",
                    Some(user.id),
                    client,
                    SessionError::MembershipState(
                        "verify your email first (RequestEmailVerification), then accept",
                    ),
                )
                .await);
        }
        let role = role_of(&row)?;
        join(&txn, row.org_id, user.id, role, now).await?;
        if !Self::mark_accepted(&txn, &row, user.id, now).await? {
            return Err(SessionError::InvalidLink);
        }
        AuditEvent::new("invitation.accepted", Outcome::Success)
            .org(row.org_id)
            .actor(format!("user:{}", user.id))
            .target(format!("invitation:{}", row.id))
            .ip(client.ip_string())
            .details(serde_json::json!({ "role": row.role }))
            .record_at(&txn, now)
            .await?;
        let org = self
            .identity()
            .organization_in(&txn, row.org_id)
            .await?
            .ok_or(SessionError::NotFound("organisation"))?;
        txn.commit().await?;
        Ok((org, role))
    }

    /// Signs up through an invitation: the token proves the address, so
    /// the account is made at once (email verified), joins the inviting
    /// organisation, and is signed in there.
    pub async fn sign_up_with_invitation(
        &self,
        token: &str,
        password: &str,
        display_name: &str,
        client: &ClientContext,
    ) -> Result<InvitedSignUp> {
        self.brake_link_attempt(client).await?;
        // An invitation to an address whose organisation enforces single
        // sign-on is accepted by signing in there, not with a password.
        if let Ok(row) = self.take_invitation(self.db(), token, self.now()).await? {
            let email = Email::parse(&row.email).map_err(|r| SessionError::field("email", r))?;
            self.require_password_allowed(&email, "sign_up_with_invitation", client)
                .await?;
        }
        self.policy()
            .check_new(password)
            .map_err(|e| SessionError::password("password", e))?;
        let password_hash = self
            .hasher()
            .hash(password)
            .await
            .map_err(|e| SessionError::password("password", e))?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        let row = match self.take_invitation(&txn, token, now).await? {
            Ok(row) => row,
            Err((reason, row)) => {
                drop(txn);
                return Err(self
                    .refuse_invitation(
                        row.as_ref(),
                        reason.as_str(),
                        None,
                        client,
                        SessionError::InvalidLink,
                    )
                    .await);
            }
        };
        let email = Email::parse(&row.email).map_err(|r| SessionError::field("email", r))?;
        let display_name =
            clean_name("display_name", display_name, email.local_part().to_string())?;
        // Whoever holds the link has the mailbox: telling them the address
        // has an account reveals nothing to an outsider.
        if self
            .identity()
            .user_by_email_in(&txn, &email)
            .await?
            .is_some()
        {
            return Err(SessionError::EmailTaken);
        }
        let user = insert_user(&txn, &email, &display_name, &password_hash, Some(now), now)
            .await
            .map_err(|e| {
                if twig_db::is_unique_violation(&e) {
                    SessionError::EmailTaken
                } else {
                    e.into()
                }
            })?;
        let role = role_of(&row)?;
        join(&txn, row.org_id, user.id, role, now).await?;
        if !Self::mark_accepted(&txn, &row, user.id, now).await? {
            return Err(SessionError::InvalidLink);
        }
        AuditEvent::new("invitation.accepted", Outcome::Success)
            .org(row.org_id)
            .actor(format!("user:{}", user.id))
            .target(format!("invitation:{}", row.id))
            .ip(client.ip_string())
            .details(serde_json::json!({ "role": row.role, "signed_up": true }))
            .record_at(&txn, now)
            .await?;
        let tokens = self
            .issue_in(
                &txn,
                Issue {
                    user_id: user.id,
                    org_id: row.org_id,
                    method: &SessionMethod::Password,
                    action: "user.signed_up",
                },
                client,
                now,
            )
            .await?;
        let organization = self
            .identity()
            .organization_in(&txn, row.org_id)
            .await?
            .ok_or(SessionError::NotFound("organisation"))?;
        txn.commit().await?;
        Ok(InvitedSignUp {
            user,
            organization,
            tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(now: DateTime<Utc>) -> invitation::Model {
        invitation::Model {
            id: Uuid::new_v4(),
            org_id: Uuid::new_v4(),
            email: "a@example.com".into(),
            role: "member".into(),
            token_hash: vec![0; 32],
            invited_by: Uuid::new_v4(),
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        }
    }

    #[test]
    fn states_follow_the_row_and_the_clock() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let pending = row(now);
        assert_eq!(state_of(&pending, now), InvitationState::Pending);
        assert_eq!(
            state_of(&pending, now + chrono::Duration::hours(1)),
            InvitationState::Expired
        );
        let revoked = invitation::Model {
            revoked_at: Some(now),
            ..row(now)
        };
        assert_eq!(state_of(&revoked, now), InvitationState::Revoked);
        let accepted = invitation::Model {
            accepted_at: Some(now),
            revoked_at: Some(now),
            ..row(now)
        };
        assert_eq!(state_of(&accepted, now), InvitationState::Accepted);
    }
}
