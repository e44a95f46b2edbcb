//! Accounts by email: sign-up finished through a link, email
//! verification, password reset.
//!
//! Nothing here tells an outsider whether an email has an account: the
//! public requests (sign-up, reset) check only the form of what they are
//! given, answer at once and alike, and do the rest — looking the email
//! up, writing a link, sending mail — in the background. Whoever follows
//! a link has the mailbox, and may learn what the link is about.

use std::sync::Arc;

use twig_audit::{AuditEvent, Outcome};
use twig_auth::Principal;
use twig_crypto::VerifyOutcome;
use twig_mail::{Mail, Template};
use twig_module::SessionMethod;
use uuid::Uuid;

use crate::entity::{email_link, organization, session, user};
use crate::error::SessionError;
use crate::identity::clean_name;
use crate::links::{self, LinkPurpose, LinkRefusal};
use crate::sessions::{ClientContext, Issue, IssuedTokens, Sessions, revoke_sessions};
use twig_email::Email;

type Result<T> = std::result::Result<T, SessionError>;

/// The path of the page that finishes a sign-up or verifies an email.
pub const VERIFY_PATH: &str = "/verify-email";
/// The path of the sign-in page.
pub const SIGN_IN_PATH: &str = "/sign-in";
/// The path of the page that sets a new password.
pub const RESET_PATH: &str = "/reset-password";

/// What following a verification link did.
pub struct Verified {
    /// The account (new for a sign-up link).
    pub user: user::Model,
    /// For a sign-up: the organisation it owns and its first session.
    pub signed_up: Option<(organization::Model, IssuedTokens)>,
}

/// A sign-up's details, kept with its link until it is followed.
#[derive(serde::Serialize, serde::Deserialize)]
struct PendingSignUp {
    password_hash: String,
    display_name: String,
    organization_name: String,
}

/// The sign-up a link was sent for.
fn pending_sign_up(link: &email_link::Model) -> Result<PendingSignUp> {
    serde_json::from_str(&link.details).map_err(|_| SessionError::InvalidLink)
}

fn parse_email(raw: &str) -> Result<Email> {
    Email::parse(raw).map_err(|r| SessionError::field("email", r))
}

impl Sessions {
    /// Deletes email links that expired a day ago or more.
    pub async fn delete_expired_links(&self) -> Result<u64> {
        Ok(links::delete_expired(self.db(), self.now()).await?)
    }

    // ----- sign-up -------------------------------------------------------

    /// Starts a sign-up: checks the form of the request, then — in the
    /// background — sends the address a link that finishes it, or a note
    /// that it has an account already.
    pub async fn sign_up(
        self: &Arc<Self>,
        email: &str,
        password: &str,
        display_name: &str,
        org_name: &str,
        client: &ClientContext,
    ) -> Result<()> {
        let email = parse_email(email)?;
        self.policy()
            .check_new(password)
            .map_err(|e| SessionError::password("password", e))?;
        let display_name =
            clean_name("display_name", display_name, email.local_part().to_string())?;
        let org_name = clean_name(
            "organization_name",
            org_name,
            format!("{display_name}'s organisation"),
        )?;
        let brakes = &self.config().brakes;
        self.brake_address("sign_ups_per_address", brakes.sign_ups_per_address, client)
            .await?;
        self.brake_email("sign_ups_per_email", brakes.sign_ups_per_email, &email)
            .await?;
        self.require_password_allowed(&email, "sign_up", client)
            .await?;
        let password = twig_config::Secret::new(password);
        let this = self.clone();
        let client = client.clone();
        self.in_background("sign_up", async move {
            this.send_sign_up_link(email, password, display_name, org_name, client)
                .await
        });
        Ok(())
    }

    async fn send_sign_up_link(
        &self,
        email: Email,
        password: twig_config::Secret,
        display_name: String,
        organization_name: String,
        client: ClientContext,
    ) -> Result<()> {
        // The hash comes first, whatever the email: every sign-up costs the
        // server the same work, so neither the next answers' times nor how
        // fast the background jobs drain tell which emails have accounts.
        let password_hash = self
            .hasher()
            .hash(password.expose())
            .await
            .map_err(|e| SessionError::password("password", e))?;
        if self.identity().user_by_email(&email).await?.is_some() {
            self.mailer().send(Mail::new(
                email.as_str(),
                Template::AccountExists {
                    sign_in_link: self.mailer().page(SIGN_IN_PATH),
                    reset_link: self.mailer().page(RESET_PATH),
                },
            ));
            return Ok(());
        }
        let details = serde_json::to_value(PendingSignUp {
            password_hash,
            display_name,
            organization_name,
        })
        .map_err(|e| SessionError::Remote(twig_errors::ApiError::internal(&e)))?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        let link = links::issue(
            &txn,
            LinkPurpose::SignUp,
            &email,
            None,
            details,
            now,
            twig_clock::span(self.config().verification_link_ttl),
        )
        .await?;
        AuditEvent::new("user.sign_up_started", Outcome::Success)
            .actor("anonymous")
            .ip(client.ip_string())
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.mailer().send(Mail::new(
            email.as_str(),
            Template::VerifyEmail {
                link: self.mailer().link(VERIFY_PATH, link.token.expose()),
            },
        ));
        Ok(())
    }

    /// The operator creates an account (email proved by the operator)
    /// that owns a new organisation; no session, no link.
    pub async fn create_account(
        &self,
        operator: &str,
        email: &str,
        password: &str,
        display_name: &str,
        org_name: &str,
    ) -> Result<(user::Model, organization::Model)> {
        let email = parse_email(email)?;
        self.policy()
            .check_new(password)
            .map_err(|e| SessionError::password("password", e))?;
        let display_name =
            clean_name("display_name", display_name, email.local_part().to_string())?;
        let org_name = clean_name(
            "organization_name",
            org_name,
            format!("{display_name}'s organisation"),
        )?;
        let password_hash = self
            .hasher()
            .hash(password)
            .await
            .map_err(|e| SessionError::password("password", e))?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        let (user, org) = self
            .identity()
            .create_user_with_org(&txn, &email, &display_name, &password_hash, &org_name, now)
            .await
            .map_err(|e| {
                if twig_db::is_unique_violation(&e) {
                    SessionError::EmailTaken
                } else {
                    e.into()
                }
            })?;
        AuditEvent::new("user.created_by_operator", Outcome::Success)
            .org(org.id)
            .actor(format!("operator:{operator}"))
            .target(format!("user:{}", user.id))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        Ok((user, org))
    }

    // ----- verification ----------------------------------------------------

    /// Follows a verification link: a sign-up's makes the account, the
    /// organisation it owns and its first session — only with the
    /// password chosen for that sign-up, so a link mailed to someone who
    /// did not start the sign-up makes nothing; an account's marks its
    /// email verified (`password` is not needed).
    pub async fn verify_email(
        &self,
        token: &str,
        password: &str,
        client: &ClientContext,
    ) -> Result<Verified> {
        const PURPOSES: [LinkPurpose; 2] = [LinkPurpose::SignUp, LinkPurpose::VerifyEmail];
        self.brake_link_attempt(client).await?;
        let link = match links::peek(self.db(), &PURPOSES, token, self.now()).await? {
            Ok(link) => link,
            Err((reason, _)) => {
                return Err(self
                    .refused_link("email_verification", reason, None, client)
                    .await);
            }
        };
        if link.purpose == LinkPurpose::SignUp.as_str() {
            // Single sign-on enforced since the sign-up started: the
            // account is not made with a password.
            self.require_password_allowed(&parse_email(&link.email)?, "sign_up", client)
                .await?;
            self.check_sign_up_password(&link, password, client).await?;
        }
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        if link.purpose == LinkPurpose::SignUp.as_str() {
            // Sign-ups of one address finish one at a time: each voids
            // the others' links, which two at once would lock in crossing
            // orders.
            twig_db::lock_key(&txn, "sessions.sign_up", link.email.as_bytes()).await?;
        }
        let link = match links::consume(&txn, &PURPOSES, token, now).await? {
            Ok(link) => link,
            Err((reason, _)) => {
                drop(txn);
                return Err(self
                    .refused_link("email_verification", reason, None, client)
                    .await);
            }
        };
        let email = parse_email(&link.email)?;
        if link.purpose == LinkPurpose::VerifyEmail.as_str() {
            let user = match link.user_id {
                Some(id) => self.identity().user_in(&txn, id).await?,
                None => None,
            }
            .filter(|u| u.email == link.email)
            .ok_or(SessionError::InvalidLink)?;
            self.identity()
                .set_email_verified(&txn, user.id, now)
                .await?;
            AuditEvent::new("user.email_verified", Outcome::Success)
                .actor(format!("user:{}", user.id))
                .target(format!("user:{}", user.id))
                .ip(client.ip_string())
                .record_at(&txn, now)
                .await?;
            txn.commit().await?;
            let user = self
                .identity()
                .user(user.id)
                .await?
                .ok_or(SessionError::InvalidLink)?;
            return Ok(Verified {
                user,
                signed_up: None,
            });
        }
        let pending = pending_sign_up(&link)?;
        // The first sign-up link followed makes the account; the others
        // of the address are void.
        links::void_others(&txn, LinkPurpose::SignUp, &email, now).await?;
        let (user, org) = self
            .identity()
            .create_user_with_org(
                &txn,
                &email,
                &pending.display_name,
                &pending.password_hash,
                &pending.organization_name,
                now,
            )
            .await
            .map_err(|e| {
                if twig_db::is_unique_violation(&e) {
                    SessionError::EmailTaken
                } else {
                    e.into()
                }
            })?;
        let tokens = self
            .issue_in(
                &txn,
                Issue {
                    user_id: user.id,
                    org_id: org.id,
                    method: &SessionMethod::Password,
                    action: "user.signed_up",
                },
                client,
                now,
            )
            .await?;
        txn.commit().await?;
        Ok(Verified {
            user,
            signed_up: Some((org, tokens)),
        })
    }

    /// Is `password` the one chosen when the sign-up of `link` was
    /// started? A wrong one is audited and refused; the link still works
    /// with the right one.
    async fn check_sign_up_password(
        &self,
        link: &email_link::Model,
        password: &str,
        client: &ClientContext,
    ) -> Result<()> {
        if password.is_empty() {
            return Err(SessionError::field(
                "password",
                "enter the password you chose when you signed up",
            ));
        }
        self.policy()
            .check_presented(password)
            .map_err(|e| SessionError::password("password", e))?;
        let pending = pending_sign_up(link)?;
        let outcome = self
            .hasher()
            .verify(password, Some(&pending.password_hash))
            .await
            .map_err(|e| SessionError::password("password", e))?;
        if outcome != VerifyOutcome::Mismatch {
            return Ok(());
        }
        AuditEvent::new("user.sign_up_refused", Outcome::Failure)
            .actor("anonymous")
            .ip(client.ip_string())
            .details(serde_json::json!({ "reason": "wrong_password" }))
            .record_at(self.db(), self.now())
            .await?;
        Err(SessionError::field(
            "password",
            "is not the password chosen for this sign-up; if you did not start it, \
             ignore its link",
        ))
    }

    /// Sends the caller a link that verifies their email; nothing when it
    /// is verified already.
    pub async fn request_email_verification(&self, principal: &Principal) -> Result<()> {
        let user = self
            .identity()
            .user(principal.user_id)
            .await?
            .ok_or(SessionError::InvalidToken)?;
        if user.email_verified_at.is_some() {
            return Ok(());
        }
        let email = parse_email(&user.email)?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        let link = links::issue(
            &txn,
            LinkPurpose::VerifyEmail,
            &email,
            Some(user.id),
            serde_json::Value::Null,
            now,
            twig_clock::span(self.config().verification_link_ttl),
        )
        .await?;
        txn.commit().await?;
        self.mailer().send(Mail::new(
            email.as_str(),
            Template::VerifyEmail {
                link: self.mailer().link(VERIFY_PATH, link.token.expose()),
            },
        ));
        Ok(())
    }

    // ----- password reset --------------------------------------------------

    /// Asks for a password reset: checks the form of the email, then — in
    /// the background — sends a reset link when it has an enabled account.
    pub async fn request_password_reset(
        self: &Arc<Self>,
        email: &str,
        client: &ClientContext,
    ) -> Result<()> {
        let email = parse_email(email)?;
        let brakes = &self.config().brakes;
        self.brake_address("resets_per_address", brakes.resets_per_address, client)
            .await?;
        self.brake_email("resets_per_email", brakes.resets_per_email, &email)
            .await?;
        self.require_password_allowed(&email, "password_reset", client)
            .await?;
        let this = self.clone();
        let client = client.clone();
        self.in_background("password_reset", async move {
            this.send_reset_link(email, client).await
        });
        Ok(())
    }

    async fn send_reset_link(&self, email: Email, client: ClientContext) -> Result<()> {
        let Some(user) = self.identity().user_by_email(&email).await? else {
            return Ok(());
        };
        if user.disabled_at.is_some() {
            return Ok(());
        }
        let now = self.now();
        let ttl = self.config().reset_link_ttl;
        let txn = twig_db::begin_write(self.db()).await?;
        let link = links::issue(
            &txn,
            LinkPurpose::PasswordReset,
            &email,
            Some(user.id),
            serde_json::Value::Null,
            now,
            twig_clock::span(ttl),
        )
        .await?;
        for org in self.identity().organizations_or_none(&txn, user.id).await? {
            let mut event = AuditEvent::new("user.password_reset_requested", Outcome::Success)
                .actor("anonymous")
                .target(format!("user:{}", user.id))
                .ip(client.ip_string());
            if let Some(org) = org {
                event = event.org(org);
            }
            event.record_at(&txn, now).await?;
        }
        txn.commit().await?;
        self.mailer().send(Mail::new(
            email.as_str(),
            Template::ResetPassword {
                link: self.mailer().link(RESET_PATH, link.token.expose()),
                expires_in_minutes: u32::try_from(ttl.as_secs() / 60).unwrap_or(u32::MAX),
            },
        ));
        Ok(())
    }

    /// Sets a new password with a reset link's token. Every session of the
    /// account ends; the account's email counts as verified (the link
    /// proved it); a note goes to the address.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        client: &ClientContext,
    ) -> Result<u64> {
        self.brake_link_attempt(client).await?;
        // Single sign-on enforced since the link was sent: no password is
        // set, and the link stays as it was.
        if let Ok(link) =
            links::peek(self.db(), &[LinkPurpose::PasswordReset], token, self.now()).await?
        {
            self.require_password_allowed(&parse_email(&link.email)?, "password_reset", client)
                .await?;
        }
        self.policy()
            .check_new(new_password)
            .map_err(|e| SessionError::password("new_password", e))?;
        let new_hash = self
            .hasher()
            .hash(new_password)
            .await
            .map_err(|e| SessionError::password("new_password", e))?;
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        let link = match links::consume(&txn, &[LinkPurpose::PasswordReset], token, now).await? {
            Ok(link) => link,
            Err((reason, row)) => {
                drop(txn);
                let user = row.and_then(|r| r.user_id);
                return Err(self
                    .refused_link("password_reset", reason, user, client)
                    .await);
            }
        };
        // The account must still have the address the link went to.
        let user = match link.user_id {
            Some(id) => self.identity().user_in(&txn, id).await?,
            None => None,
        }
        .filter(|u| u.email == link.email && u.disabled_at.is_none())
        .ok_or(SessionError::InvalidLink)?;
        self.identity()
            .set_password_hash(&txn, user.id, new_hash)
            .await?;
        if user.email_verified_at.is_none() {
            self.identity()
                .set_email_verified(&txn, user.id, now)
                .await?;
        }
        let ended = revoke_sessions(
            &txn,
            sea_orm::ColumnTrait::eq(&session::Column::UserId, user.id),
            "password_reset",
            now,
        )
        .await?;
        for org in self.identity().organizations_or_none(&txn, user.id).await? {
            let mut event = AuditEvent::new("user.password_reset", Outcome::Success)
                .actor(format!("user:{}", user.id))
                .target(format!("user:{}", user.id))
                .ip(client.ip_string())
                .details(serde_json::json!({ "sessions_ended": ended }));
            if let Some(org) = org {
                event = event.org(org);
            }
            event.record_at(&txn, now).await?;
        }
        txn.commit().await?;
        self.ended_user(user.id).await;
        self.mailer().send(Mail::new(
            &user.email,
            Template::PasswordChanged {
                at: now,
                ip: client.ip,
            },
        ));
        Ok(ended)
    }

    /// Counts one followed link against the client address's brake (token
    /// guessing).
    pub(crate) async fn brake_link_attempt(&self, client: &ClientContext) -> Result<()> {
        let rule = self.config().brakes.link_attempts_per_address;
        self.brake_address("link_attempts_per_address", rule, client)
            .await
    }

    /// A refused link: counted, audited in the account's organisations
    /// when the token was a real one (replayed, expired or voided), and
    /// answered alike whatever the reason.
    pub(crate) async fn refused_link(
        &self,
        flow: &'static str,
        reason: LinkRefusal,
        user_id: Option<Uuid>,
        client: &ClientContext,
    ) -> SessionError {
        metrics::counter!("twig_link_refusals_total", "flow" => flow, "reason" => reason.as_str())
            .increment(1);
        if let Some(user_id) = user_id
            && let Err(e) = self.audit_refused_link(flow, reason, user_id, client).await
        {
            return e;
        }
        SessionError::InvalidLink
    }

    async fn audit_refused_link(
        &self,
        flow: &'static str,
        reason: LinkRefusal,
        user_id: Uuid,
        client: &ClientContext,
    ) -> Result<()> {
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        for org in self.identity().organizations_or_none(&txn, user_id).await? {
            let mut event = AuditEvent::new("link.refused", Outcome::Failure)
                .actor("anonymous")
                .target(format!("user:{user_id}"))
                .ip(client.ip_string())
                .details(serde_json::json!({ "flow": flow, "reason": reason.as_str() }));
            if let Some(org) = org {
                event = event.org(org);
            }
            event.record_at(&txn, now).await?;
        }
        txn.commit().await?;
        Ok(())
    }
}
