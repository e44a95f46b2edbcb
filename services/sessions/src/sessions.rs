//! The session side: sign-up and login, the one way a session is minted
//! ([`Sessions::issue_session`]), refresh, verification, logout. Users,
//! organisations and memberships are the identity store's
//! ([`crate::identity::IdentityStore`]); this side asks it.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::SessionsConfig;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use sha2::{Digest, Sha256};
use twig_audit::{AuditEvent, Outcome};
use twig_auth::{Credential, Principal, Scope};
use twig_crypto::{PasswordHasher, PasswordPolicy, Token, TokenHash, TokenKind, VerifyOutcome};
use uuid::Uuid;

use crate::cache::VerifyCache;
use crate::entity::{login_failure, organization, refresh_token, session, user};
use crate::error::SessionError;
use crate::identity::IdentityStore;
use crate::last_seen::LastSeen;
use crate::remote::SessionsChanged;
use crate::throttle::{IpLimiter, account_delay};
use futures::future::BoxFuture;
use twig_clock::Clock;
use twig_config::Secret;
use twig_email::Email;
use twig_errors::ApiError;
use twig_fanout::{Fanout, Heard};
use twig_mail::{Mail, Mailer, Template};
use twig_module::{
    IssuedSession, KeyDescription, MemberKeys, Needed, PasswordRules, SessionClient,
    SessionIssuing, SessionMethod, Throttles,
};

type Result<T> = std::result::Result<T, SessionError>;

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    /// The peer address.
    pub ip: Option<IpAddr>,
    /// The `user-agent` header, cut to 512 bytes.
    pub user_agent: Option<String>,
}

impl ClientContext {
    /// The address as stored and audited.
    pub fn ip_string(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}

/// The credentials of a session, shown to the client once.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The session.
    pub session_id: Uuid,
    /// The access token.
    pub access: Token,
    /// Its expiry.
    pub access_expires_at: DateTime<Utc>,
    /// The refresh token.
    pub refresh: Token,
    /// Its expiry.
    pub refresh_expires_at: DateTime<Utc>,
}

/// A session as listed to its owner.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// The stored row.
    pub row: session::Model,
    /// Last use, including uses not yet flushed.
    pub last_seen_at: DateTime<Utc>,
}

/// The sessions service.
pub struct Sessions {
    db: DatabaseConnection,
    config: SessionsConfig,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    clock: Arc<dyn Clock>,
    cache: VerifyCache,
    last_seen: LastSeen,
    ip_limiter: IpLimiter,
    fanout: Fanout,
    identity: Arc<IdentityStore>,
    keys: Needed<MemberKeys>,
    throttles: Needed<Throttles>,
    password_rules: Needed<PasswordRules>,
    mailer: Mailer,
    background: Background,
}

/// Bounds on work done after a public request has been answered.
struct Background {
    /// Jobs running at once.
    running: Arc<tokio::sync::Semaphore>,
    /// Jobs admitted and not yet finished (running or waiting).
    queued: Arc<tokio::sync::Semaphore>,
}

fn email_hash(email: &Email) -> Vec<u8> {
    Sha256::digest(email.as_str().as_bytes()).to_vec()
}

impl Sessions {
    /// Builds the service.
    pub fn new(
        db: DatabaseConnection,
        config: SessionsConfig,
        hasher: PasswordHasher,
        clock: Arc<dyn Clock>,
        fanout: Fanout,
        mailer: Mailer,
    ) -> Self {
        Self {
            background: Background {
                running: Arc::new(tokio::sync::Semaphore::new(config.background_jobs)),
                queued: Arc::new(tokio::sync::Semaphore::new(config.background_queue)),
            },
            mailer,
            cache: VerifyCache::new(config.verify_cache_ttl, fanout.freshness()),
            fanout,
            policy: PasswordPolicy {
                min_chars: config.password_min_chars,
                max_bytes: config.password_max_bytes,
            },
            ip_limiter: IpLimiter::new(config.failed_logins_per_ip_per_minute),
            last_seen: LastSeen::new(db.clone()),
            identity: Arc::new(IdentityStore::new(
                db.clone(),
                hasher.clone(),
                clock.clone(),
            )),
            db,
            config,
            hasher,
            clock,
            keys: Needed::ready(None),
            throttles: Needed::ready(None),
            password_rules: Needed::ready(None),
        }
    }

    /// Single sign-on's password rule, when single sign-on runs.
    pub fn with_password_rules(mut self, rules: Needed<PasswordRules>) -> Self {
        self.password_rules = rules;
        self
    }

    /// Single sign-on's password rule.
    pub(crate) fn password_rules(&self) -> &Needed<PasswordRules> {
        &self.password_rules
    }

    /// Counts public requests against the brakes with `throttles` (the
    /// quota service, in this process or another; absent: no brakes).
    pub fn with_throttles(mut self, throttles: Needed<Throttles>) -> Self {
        self.throttles = throttles;
        self
    }

    /// The quota service's brakes, when there is one.
    pub(crate) fn throttles(&self) -> &Needed<Throttles> {
        &self.throttles
    }

    /// Uses `keys` to stop, resume and revoke members' API keys and to
    /// describe a calling key (the api-keys service, in this process or
    /// another; absent when the deployment has none).
    pub fn with_member_keys(mut self, keys: Needed<MemberKeys>) -> Self {
        self.keys = keys;
        self
    }

    /// The api-keys service's side of memberships, when there is one.
    pub(crate) fn keys(&self) -> &Needed<MemberKeys> {
        &self.keys
    }

    /// Now, by the service's clock.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The service's settings.
    pub(crate) fn config(&self) -> &SessionsConfig {
        &self.config
    }

    /// The password rules.
    pub(crate) fn policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    /// The password hasher.
    pub(crate) fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The outbound mail.
    pub(crate) fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    /// Runs `job` in the background: at most `background_jobs` at once,
    /// the others waiting their turn. Past `background_queue` jobs not
    /// yet finished, a new one is shed (logged and counted) — the caller's
    /// answer is the same either way, so neither the answer nor a refusal
    /// can tell whether an email has an account.
    pub(crate) fn in_background(
        &self,
        name: &'static str,
        job: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) {
        let Ok(queued) = self.background.queued.clone().try_acquire_owned() else {
            tracing::warn!(job = name, "background queue full; request shed");
            metrics::counter!("twig_sessions_background_shed_total", "job" => name).increment(1);
            return;
        };
        let running = self.background.running.clone();
        tokio::spawn(async move {
            let Ok(_running) = running.acquire_owned().await else {
                return;
            };
            if let Err(e) = job.await {
                tracing::warn!(job = name, error = %e, "background job failed");
                metrics::counter!("twig_sessions_background_failures_total", "job" => name)
                    .increment(1);
            }
            drop(queued);
        });
    }

    /// Drops cached tokens of sessions ended on any replica. Runs for the
    /// life of the service.
    pub async fn listen_for_ended_sessions(self: Arc<Self>) {
        let mut heard = self.fanout.listen::<SessionsChanged>();
        while let Some(heard) = heard.recv().await {
            match heard {
                Heard::Announced(SessionsChanged::Ended(id)) => self.cache.forget_sessions(&[id]),
                Heard::Announced(SessionsChanged::UserEnded(id)) => self.cache.forget_user(id),
                Heard::Resync => self.cache.clear(),
            }
        }
    }

    /// Forgets a session's cached tokens here and on every replica.
    async fn ended_session(&self, session_id: Uuid) {
        self.cache.forget_sessions(&[session_id]);
        self.fanout
            .announce(&SessionsChanged::Ended(session_id))
            .await;
    }

    /// Forgets a user's cached tokens here and on every replica.
    pub(crate) async fn ended_user(&self, user_id: Uuid) {
        self.cache.forget_user(user_id);
        self.fanout
            .announce(&SessionsChanged::UserEnded(user_id))
            .await;
    }

    /// The identity store this side asks about users and organisations.
    pub fn identity(&self) -> &Arc<IdentityStore> {
        &self.identity
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Writes pending last-seen times.
    pub async fn flush_last_seen(&self) -> Result<usize> {
        Ok(self.last_seen.flush().await?)
    }

    /// A successful action by `principal`, for the audit log.
    pub(crate) fn audit(
        &self,
        action: &'static str,
        principal: &Principal,
        client: &ClientContext,
    ) -> AuditEvent {
        AuditEvent::new(action, Outcome::Success)
            .org(principal.org_id)
            .actor(format!("user:{}", principal.user_id))
            .ip(client.ip_string())
    }

    // ----- sign-up and login -------------------------------------------

    /// Email and password to a new session.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        org_id: Option<Uuid>,
        client: &ClientContext,
    ) -> Result<(user::Model, Uuid, IssuedTokens)> {
        if let Some(ip) = client.ip
            && let Err(retry) = self.ip_limiter.check(ip)
        {
            metrics::counter!("twig_logins_total", "outcome" => "ip_throttled").increment(1);
            return Err(SessionError::TooManyFailures(retry));
        }
        let email = Email::parse(email).map_err(|r| SessionError::field("email", r))?;
        self.policy
            .check_presented(password)
            .map_err(|e| SessionError::password("password", e))?;
        self.require_password_allowed(&email, "login", client)
            .await?;

        let failures = self.recent_failures(&email).await?;
        let delay = account_delay(
            failures,
            self.config.login_delay_after_failures,
            self.config.login_delay_base,
            self.config.login_delay_max,
        );
        if !delay.is_zero() {
            metrics::counter!("twig_login_delays_total").increment(1);
            tokio::time::sleep(delay).await;
        }

        let found = self.identity.user_by_email(&email).await?;
        let outcome = self
            .hasher
            .verify(
                password,
                found.as_ref().and_then(crate::identity::password_hash),
            )
            .await
            .map_err(|e| SessionError::password("password", e))?;

        let user = match (found, &outcome) {
            (Some(user), VerifyOutcome::Match | VerifyOutcome::MatchRehashed(_))
                if user.disabled_at.is_none() =>
            {
                if let VerifyOutcome::MatchRehashed(new_hash) = outcome {
                    self.identity
                        .set_password_hash(&self.db, user.id, new_hash)
                        .await?;
                }
                user
            }
            (found, _) => {
                metrics::counter!("twig_logins_total", "outcome" => "failure").increment(1);
                self.record_failure(&email, found.as_ref(), failures + 1, client)
                    .await?;
                return Err(SessionError::BadCredentials);
            }
        };

        let memberships = self.identity.memberships_of(user.id).await?;
        let org = match org_id {
            Some(wanted) => memberships.iter().find(|m| m.org_id == wanted),
            None => memberships.first(),
        }
        .ok_or(SessionError::NotFound("organisation membership"))?
        .org_id;

        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        login_failure::Entity::delete_by_id(email_hash(&email))
            .exec(&txn)
            .await?;
        let tokens = self
            .issue_in(
                &txn,
                Issue {
                    user_id: user.id,
                    org_id: org,
                    method: &SessionMethod::Password,
                    action: "session.login",
                },
                client,
                now,
            )
            .await?;
        txn.commit().await?;
        metrics::counter!("twig_logins_total", "outcome" => "success").increment(1);
        if user.notify_sign_in {
            self.mailer.send(Mail::new(
                &user.email,
                Template::NewSignIn {
                    at: now,
                    ip: client.ip,
                    user_agent: client.user_agent.clone(),
                },
            ));
        }
        Ok((user, org, tokens))
    }

    async fn recent_failures(&self, email: &Email) -> Result<u32> {
        let cutoff = self.clock.now() - twig_clock::span(self.config.login_failure_window);
        Ok(login_failure::Entity::find_by_id(email_hash(email))
            .one(&self.db)
            .await?
            .filter(|f| f.last_failure_at > cutoff)
            .map_or(0, |f| f.failures.max(0) as u32))
    }

    async fn record_failure(
        &self,
        email: &Email,
        user: Option<&user::Model>,
        failures_now: u32,
        client: &ClientContext,
    ) -> Result<()> {
        if let Some(ip) = client.ip {
            self.ip_limiter.record_failure(ip);
        }
        // Each organisation of the account sees the attempt in its own log
        // (and no other does); an unknown address belongs to none.
        let orgs = match user {
            Some(user) => {
                self.identity
                    .organizations_or_none(&self.db, user.id)
                    .await?
            }
            None => vec![None],
        };
        let now = self.clock.now();
        let cutoff = now - twig_clock::span(self.config.login_failure_window);
        let hash = email_hash(email);
        let txn = twig_db::begin_write(&self.db).await?;
        // Restart the count if the last failure is outside the window,
        // otherwise add one; insert when there is no row yet.
        let restarted = login_failure::Entity::update_many()
            .col_expr(login_failure::Column::Failures, Expr::value(1))
            .col_expr(login_failure::Column::LastFailureAt, Expr::value(now))
            .filter(login_failure::Column::EmailHash.eq(hash.clone()))
            .filter(login_failure::Column::LastFailureAt.lte(cutoff))
            .exec(&txn)
            .await?
            .rows_affected;
        if restarted == 0 {
            login_failure::Entity::insert(login_failure::ActiveModel {
                email_hash: Set(hash.clone()),
                failures: Set(1),
                last_failure_at: Set(now),
            })
            .on_conflict(
                OnConflict::column(login_failure::Column::EmailHash)
                    .value(
                        login_failure::Column::Failures,
                        sea_orm::sea_query::ExprTrait::add(
                            Expr::col((login_failure::Entity, login_failure::Column::Failures)),
                            1,
                        ),
                    )
                    .value(login_failure::Column::LastFailureAt, Expr::value(now))
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        let delay_started = failures_now == self.config.login_delay_after_failures;
        for org in &orgs {
            let mut events = vec![AuditEvent::new("session.login", Outcome::Failure).details(
                serde_json::json!({
                    "reason": "bad_credentials",
                    "recent_failures": failures_now,
                }),
            )];
            if delay_started {
                events.push(
                    AuditEvent::new("session.login_delay_started", Outcome::Failure)
                        .details(serde_json::json!({ "recent_failures": failures_now })),
                );
            }
            for mut event in events {
                event = event.ip(client.ip_string());
                if let Some(user) = user {
                    event = event.target(format!("user:{}", user.id));
                }
                if let Some(org) = org {
                    event = event.org(*org);
                }
                event.record_at(&txn, now).await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Mints a session of `user_id` in `org_id`, authenticated by
    /// `method`: the one way a session is made for a user authenticated
    /// elsewhere (SSO, OAuth). Refuses an unknown organisation or user
    /// (NOT_FOUND), a disabled user (FAILED_PRECONDITION) and a user who is
    /// not a member of the organisation (PERMISSION_DENIED). Recorded as
    /// `session.login` with the method.
    pub async fn issue_session(
        &self,
        user_id: Uuid,
        org_id: Uuid,
        method: &SessionMethod,
        client: &ClientContext,
    ) -> Result<IssuedTokens> {
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        let tokens = self
            .issue_in(
                &txn,
                Issue {
                    user_id,
                    org_id,
                    method,
                    action: "session.login",
                },
                client,
                now,
            )
            .await?;
        txn.commit().await?;
        metrics::counter!("twig_sessions_issued_total", "method" => method_label(method))
            .increment(1);
        Ok(tokens)
    }

    /// Mints a session and its first tokens inside `txn` (every session is
    /// made here: sign-up, login, [`Sessions::issue_session`]), after
    /// checking the user may have one in the organisation, and records
    /// `issue.action` with the method.
    pub(crate) async fn issue_in(
        &self,
        txn: &impl ConnectionTrait,
        issue: Issue<'_>,
        client: &ClientContext,
        now: DateTime<Utc>,
    ) -> Result<IssuedTokens> {
        let Issue {
            user_id,
            org_id,
            method,
            action,
        } = issue;
        if self.identity.organization_in(txn, org_id).await?.is_none() {
            return Err(SessionError::NotFound("organisation"));
        }
        let user = self
            .identity
            .user_in(txn, user_id)
            .await?
            .ok_or(SessionError::NotFound("user"))?;
        if user.disabled_at.is_some() {
            return Err(SessionError::UserDisabled);
        }
        if self.identity.role_in(txn, org_id, user_id).await?.is_none() {
            return Err(SessionError::Forbidden(
                "the user is not a member of this organisation",
            ));
        }
        let absolute = now + twig_clock::span(self.config.refresh_absolute_ttl);
        let access = Token::generate(TokenKind::SessionAccess);
        let refresh = Token::generate(TokenKind::SessionRefresh);
        let access_expires_at = (now + twig_clock::span(self.config.access_ttl)).min(absolute);
        let refresh_expires_at =
            (now + twig_clock::span(self.config.refresh_idle_ttl)).min(absolute);
        let id = Uuid::now_v7();
        session::ActiveModel {
            id: Set(id),
            user_id: Set(user_id),
            org_id: Set(org_id),
            access_token_hash: Set(access.hash().as_bytes().to_vec()),
            access_expires_at: Set(access_expires_at),
            idle_expires_at: Set(refresh_expires_at),
            absolute_expires_at: Set(absolute),
            created_at: Set(now),
            last_seen_at: Set(now),
            ip: Set(client.ip_string()),
            user_agent: Set(client.user_agent.clone()),
            revoked_at: Set(None),
            revoked_reason: Set(None),
            method: Set(method.to_string()),
        }
        .insert(txn)
        .await?;
        refresh_token::ActiveModel {
            token_hash: Set(refresh.hash().as_bytes().to_vec()),
            session_id: Set(id),
            issued_at: Set(now),
            expires_at: Set(refresh_expires_at),
            used_at: Set(None),
        }
        .insert(txn)
        .await?;
        AuditEvent::new(action, Outcome::Success)
            .org(org_id)
            .actor(format!("user:{user_id}"))
            .target(format!("session:{id}"))
            .ip(client.ip_string())
            .details(serde_json::json!({ "method": method.to_string() }))
            .record_at(txn, now)
            .await?;
        Ok(IssuedTokens {
            session_id: id,
            access,
            access_expires_at,
            refresh,
            refresh_expires_at,
        })
    }

    // ----- refresh -----------------------------------------------------

    /// Trades a refresh token for new tokens. The first trade of a token
    /// wins (a conditional UPDATE decides); a later trade within
    /// `refresh_reuse_grace` is refused, after it the session is revoked.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: &ClientContext,
    ) -> Result<IssuedTokens> {
        let brakes = &self.config.brakes;
        self.brake_address(
            "refreshes_per_address",
            brakes.refreshes_per_address,
            client,
        )
        .await?;
        Token::check_format(TokenKind::SessionRefresh, refresh_token)
            .map_err(|_| SessionError::InvalidToken)?;
        let hash = TokenHash::of(refresh_token).as_bytes().to_vec();
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        let won = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::UsedAt, Expr::value(now))
            .filter(refresh_token::Column::TokenHash.eq(hash.clone()))
            .filter(refresh_token::Column::UsedAt.is_null())
            .filter(refresh_token::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        let Some(token) = refresh_token::Entity::find_by_id(hash).one(&txn).await? else {
            return Err(SessionError::InvalidToken);
        };
        let Some(sess) = session::Entity::find_by_id(token.session_id)
            .one(&txn)
            .await?
        else {
            return Err(SessionError::InvalidToken);
        };
        if !won {
            let Some(used_at) = token.used_at else {
                return Err(SessionError::InvalidToken); // expired, never used
            };
            if sess.revoked_at.is_some() {
                return Err(SessionError::InvalidToken);
            }
            if now - used_at <= twig_clock::span(self.config.refresh_reuse_grace) {
                return Err(SessionError::RefreshRace);
            }
            revoke_sessions(
                &txn,
                session::Column::Id.eq(sess.id),
                "refresh_token_reuse",
                now,
            )
            .await?;
            AuditEvent::new("session.refresh_reuse", Outcome::Failure)
                .org(sess.org_id)
                .actor(format!("user:{}", sess.user_id))
                .target(format!("session:{}", sess.id))
                .ip(client.ip_string())
                .details(serde_json::json!({ "action": "session revoked" }))
                .record_at(&txn, now)
                .await?;
            txn.commit().await?;
            self.ended_session(sess.id).await;
            tracing::warn!(session = %sess.id, "refresh token reuse: session revoked");
            metrics::counter!("twig_refresh_reuse_total").increment(1);
            return Err(SessionError::InvalidToken);
        }
        if sess.revoked_at.is_some() || sess.absolute_expires_at <= now {
            return Err(SessionError::InvalidToken);
        }
        let access = Token::generate(TokenKind::SessionAccess);
        let refresh = Token::generate(TokenKind::SessionRefresh);
        let access_expires_at =
            (now + twig_clock::span(self.config.access_ttl)).min(sess.absolute_expires_at);
        let refresh_expires_at =
            (now + twig_clock::span(self.config.refresh_idle_ttl)).min(sess.absolute_expires_at);
        session::Entity::update_many()
            .col_expr(
                session::Column::AccessTokenHash,
                Expr::value(access.hash().as_bytes().to_vec()),
            )
            .col_expr(
                session::Column::AccessExpiresAt,
                Expr::value(access_expires_at),
            )
            .col_expr(
                session::Column::IdleExpiresAt,
                Expr::value(refresh_expires_at),
            )
            .col_expr(session::Column::LastSeenAt, Expr::value(now))
            .filter(session::Column::Id.eq(sess.id))
            .exec(&txn)
            .await?;
        refresh_token::ActiveModel {
            token_hash: Set(refresh.hash().as_bytes().to_vec()),
            session_id: Set(sess.id),
            issued_at: Set(now),
            expires_at: Set(refresh_expires_at),
            used_at: Set(None),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        self.ended_session(sess.id).await;
        Ok(IssuedTokens {
            session_id: sess.id,
            access,
            access_expires_at,
            refresh,
            refresh_expires_at,
        })
    }

    // ----- verification ------------------------------------------------

    /// Access token → principal. Garbage and unknown, expired or revoked
    /// tokens are all [`SessionError::InvalidToken`]; a database outage is
    /// an error, never a success.
    pub async fn verify(&self, access_token: &str) -> Result<Principal> {
        Token::check_format(TokenKind::SessionAccess, access_token)
            .map_err(|_| SessionError::InvalidToken)?;
        let hash = TokenHash::of(access_token);
        let now = self.clock.now();
        if let Some(principal) = self.cache.get(&hash)
            && principal.expires_at.is_some_and(|t| t > now)
        {
            if let Some(session_id) = principal.session_id() {
                self.last_seen.touch(session_id, now);
            }
            return Ok(principal);
        }
        let fetched = self.cache.generation();
        let sess = session::Entity::find()
            .filter(session::Column::AccessTokenHash.eq(hash.as_bytes().to_vec()))
            .one(&self.db)
            .await?
            .ok_or(SessionError::InvalidToken)?;
        if sess.revoked_at.is_some()
            || sess.access_expires_at <= now
            || sess.absolute_expires_at <= now
        {
            return Err(SessionError::InvalidToken);
        }
        let role = self
            .identity
            .role(sess.org_id, sess.user_id)
            .await?
            .ok_or(SessionError::InvalidToken)?;
        let user = self
            .identity
            .user(sess.user_id)
            .await?
            .ok_or(SessionError::InvalidToken)?;
        if user.disabled_at.is_some() {
            return Err(SessionError::InvalidToken);
        }
        let roles = vec![role];
        let principal = Principal {
            user_id: sess.user_id,
            org_id: sess.org_id,
            scopes: roles.iter().flat_map(|r| Scope::of_role(*r)).collect(),
            roles,
            credential: Credential::Session {
                session_id: sess.id,
            },
            expires_at: Some(sess.access_expires_at),
        };
        let valid_for = (sess.access_expires_at - now).to_std().unwrap_or_default();
        self.cache.put(fetched, hash, principal.clone(), valid_for);
        self.last_seen.touch(sess.id, now);
        Ok(principal)
    }

    /// The API key a caller presented, as its holder may see it ("who am
    /// I" for a key): asked of the api-keys service.
    pub async fn calling_key(&self, principal: &Principal, key_id: Uuid) -> Result<KeyDescription> {
        let Some(MemberKeys(keys)) = self.keys.get() else {
            return Err(SessionError::Remote(ApiError::unavailable(
                "no api-keys service is configured to describe this key",
            )));
        };
        keys.describe_key(key_id)
            .await
            .map_err(SessionError::Remote)?
            .filter(|key| key.org_id == principal.org_id)
            .ok_or(SessionError::InvalidToken)
    }

    // ----- ending sessions ---------------------------------------------

    /// Ends the caller's session.
    pub async fn logout(
        &self,
        principal: &Principal,
        session_id: Uuid,
        client: &ClientContext,
    ) -> Result<()> {
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        revoke_sessions(&txn, session::Column::Id.eq(session_id), "logout", now).await?;
        self.audit("session.logout", principal, client)
            .target(format!("session:{session_id}"))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.ended_session(session_id).await;
        Ok(())
    }

    /// Ends the session a browser's refresh token belongs to (whether or
    /// not that token was already traded: an older token of the session
    /// still names it). An unknown token ends nothing.
    pub async fn logout_with_refresh(
        &self,
        refresh_token: &str,
        client: &ClientContext,
    ) -> Result<()> {
        if Token::check_format(TokenKind::SessionRefresh, refresh_token).is_err() {
            return Ok(());
        }
        let hash = TokenHash::of(refresh_token).as_bytes().to_vec();
        let Some(token) = refresh_token::Entity::find_by_id(hash)
            .one(&self.db)
            .await?
        else {
            return Ok(());
        };
        let Some(sess) = session::Entity::find_by_id(token.session_id)
            .one(&self.db)
            .await?
        else {
            return Ok(());
        };
        if sess.revoked_at.is_some() {
            return Ok(());
        }
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        revoke_sessions(&txn, session::Column::Id.eq(sess.id), "logout", now).await?;
        AuditEvent::new("session.logout", Outcome::Success)
            .org(sess.org_id)
            .actor(format!("user:{}", sess.user_id))
            .target(format!("session:{}", sess.id))
            .ip(client.ip_string())
            .details(serde_json::json!({"by": "browser"}))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.ended_session(sess.id).await;
        Ok(())
    }

    /// The user and organisation of session `id`.
    pub async fn owner_of(&self, id: Uuid) -> Result<(Uuid, Uuid)> {
        let sess = session::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(SessionError::InvalidToken)?;
        Ok((sess.user_id, sess.org_id))
    }

    /// Ends every session of the caller.
    pub async fn logout_everywhere(
        &self,
        principal: &Principal,
        client: &ClientContext,
    ) -> Result<u64> {
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        let ended = revoke_sessions(
            &txn,
            session::Column::UserId.eq(principal.user_id),
            "logout_everywhere",
            now,
        )
        .await?;
        self.audit("session.logout_everywhere", principal, client)
            .details(serde_json::json!({ "sessions_ended": ended }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.ended_user(principal.user_id).await;
        Ok(ended)
    }

    /// The caller's live sessions, newest first.
    pub async fn list_sessions(&self, principal: &Principal) -> Result<Vec<SessionSummary>> {
        let now = self.clock.now();
        let rows = session::Entity::find()
            .filter(session::Column::UserId.eq(principal.user_id))
            .filter(session::Column::RevokedAt.is_null())
            .filter(session::Column::IdleExpiresAt.gt(now))
            .filter(session::Column::AbsoluteExpiresAt.gt(now))
            .order_by_desc(session::Column::CreatedAt)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| SessionSummary {
                last_seen_at: self
                    .last_seen
                    .pending(row.id)
                    .map_or(row.last_seen_at, |t| t.max(row.last_seen_at)),
                row,
            })
            .collect())
    }

    /// Ends one of the caller's sessions; someone else's is NOT_FOUND.
    pub async fn revoke_session(
        &self,
        principal: &Principal,
        session_id: Uuid,
        client: &ClientContext,
    ) -> Result<()> {
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        let ended = revoke_sessions(
            &txn,
            sea_orm::sea_query::ExprTrait::and(
                session::Column::Id.eq(session_id),
                session::Column::UserId.eq(principal.user_id),
            ),
            "revoked_by_user",
            now,
        )
        .await?;
        if ended == 0 {
            return Err(SessionError::NotFound("session"));
        }
        self.audit("session.revoked", principal, client)
            .target(format!("session:{session_id}"))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.ended_session(session_id).await;
        Ok(())
    }

    /// Changes the caller's password and ends every other session.
    pub async fn change_password(
        &self,
        principal: &Principal,
        session_id: Uuid,
        current: &str,
        new: &str,
        client: &ClientContext,
    ) -> Result<u64> {
        self.policy
            .check_presented(current)
            .map_err(|e| SessionError::password("current_password", e))?;
        self.policy
            .check_new(new)
            .map_err(|e| SessionError::password("new_password", e))?;
        let user = self
            .identity
            .user(principal.user_id)
            .await?
            .ok_or(SessionError::InvalidToken)?;
        let Some(stored) = crate::identity::password_hash(&user) else {
            // Signed in by SSO or OAuth, with no password to change.
            return Err(SessionError::WrongCurrentPassword);
        };
        match self
            .hasher
            .verify(current, Some(stored))
            .await
            .map_err(|e| SessionError::password("current_password", e))?
        {
            VerifyOutcome::Mismatch => return Err(SessionError::WrongCurrentPassword),
            VerifyOutcome::Match | VerifyOutcome::MatchRehashed(_) => {}
        }
        let new_hash = self
            .hasher
            .hash(new)
            .await
            .map_err(|e| SessionError::password("new_password", e))?;
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        self.identity
            .set_password_hash(&txn, user.id, new_hash)
            .await?;
        let ended = revoke_sessions(
            &txn,
            sea_orm::sea_query::ExprTrait::and(
                session::Column::UserId.eq(user.id),
                session::Column::Id.ne(session_id),
            ),
            "password_changed",
            now,
        )
        .await?;
        self.audit("user.password_changed", principal, client)
            .target(format!("user:{}", user.id))
            .details(serde_json::json!({ "other_sessions_ended": ended }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.ended_user(user.id).await;
        self.mailer.send(Mail::new(
            &user.email,
            Template::PasswordChanged {
                at: now,
                ip: client.ip,
            },
        ));
        Ok(ended)
    }

    // ----- users --------------------------------------------------------

    /// Disables an account everywhere (ending every session) or enables
    /// it again: the platform operator's act (an internal client with
    /// `platform.operator`, or the CLI), never an organisation's. The
    /// event goes to the log of each organisation the account belongs to.
    pub async fn set_user_disabled(
        &self,
        operator: &str,
        user_id: Uuid,
        disabled: bool,
    ) -> Result<u64> {
        if self.identity.user(user_id).await?.is_none() {
            return Err(SessionError::NotFound("user"));
        }
        // Keys stop before the account is disabled, and resume after it is
        // enabled: a failure in between leaves them stopped, and the
        // command is safe to repeat.
        let keys = if disabled {
            self.account_keys(user_id, true).await?
        } else {
            0
        };
        let now = self.clock.now();
        let txn = twig_db::begin_write(&self.db).await?;
        self.identity
            .set_disabled(&txn, user_id, disabled.then_some(now))
            .await?;
        let ended = if disabled {
            revoke_sessions(
                &txn,
                session::Column::UserId.eq(user_id),
                "user_disabled",
                now,
            )
            .await?
        } else {
            0
        };
        let action = if disabled {
            "user.disabled"
        } else {
            "user.enabled"
        };
        for org in self.identity.organizations_or_none(&txn, user_id).await? {
            let mut event = AuditEvent::new(action, Outcome::Success)
                .actor(format!("operator:{operator}"))
                .target(format!("user:{user_id}"))
                .details(serde_json::json!({ "sessions_ended": ended }));
            if let Some(org) = org {
                event = event.org(org);
            }
            event.record_at(&txn, now).await?;
        }
        txn.commit().await?;
        self.ended_user(user_id).await;
        if !disabled {
            self.account_keys(user_id, false).await?;
        }
        tracing::info!(%user_id, disabled, keys, operator, "account disabled state set");
        Ok(ended)
    }

    /// Creates the first organisation and its owner, with a generated
    /// password returned once ([`IdentityStore::bootstrap`]).
    pub async fn bootstrap(
        &self,
        org_name: &str,
        email: &str,
    ) -> Result<(user::Model, organization::Model, String)> {
        self.identity.bootstrap(org_name, email).await
    }
}

/// What [`Sessions::issue_in`] mints, and the audit action recording it.
pub(crate) struct Issue<'a> {
    pub(crate) user_id: Uuid,
    pub(crate) org_id: Uuid,
    pub(crate) method: &'a SessionMethod,
    pub(crate) action: &'static str,
}

/// The method's kind, a bounded metric label.
fn method_label(method: &SessionMethod) -> &'static str {
    match method {
        SessionMethod::Password => "password",
        SessionMethod::Sso(_) => "sso",
        SessionMethod::OAuth(_) => "oauth",
    }
}

/// Marks the live sessions matching `filter` revoked; returns how many.
pub(crate) async fn revoke_sessions(
    txn: &impl ConnectionTrait,
    filter: Expr,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(filter)
        .filter(session::Column::RevokedAt.is_null())
        .exec(txn)
        .await?
        .rows_affected)
}

impl From<&SessionClient> for ClientContext {
    fn from(client: &SessionClient) -> Self {
        Self {
            ip: client.ip.map(|ip| ip.to_canonical()),
            user_agent: client
                .user_agent
                .as_ref()
                .map(|s| s.chars().take(512).collect()),
        }
    }
}

/// A session's credentials as the ports hand them over.
pub fn issued_session(tokens: &IssuedTokens) -> IssuedSession {
    IssuedSession {
        session_id: tokens.session_id,
        access_token: Secret::new(tokens.access.expose()),
        access_expires_at: tokens.access_expires_at,
        refresh_token: Secret::new(tokens.refresh.expose()),
        refresh_expires_at: tokens.refresh_expires_at,
    }
}

/// The in-process [`SessionIssuing`] port.
impl SessionIssuing for Sessions {
    fn issue_session<'a>(
        &'a self,
        user_id: Uuid,
        org_id: Uuid,
        method: &'a SessionMethod,
        client: &'a SessionClient,
    ) -> BoxFuture<'a, std::result::Result<IssuedSession, ApiError>> {
        Box::pin(async move {
            let tokens =
                Sessions::issue_session(self, user_id, org_id, method, &client.into()).await?;
            Ok(issued_session(&tokens))
        })
    }

    fn sign_in_with_password<'a>(
        &'a self,
        email: &'a str,
        password: &'a str,
        client: &'a SessionClient,
    ) -> BoxFuture<'a, std::result::Result<(Uuid, Uuid, IssuedSession), ApiError>> {
        Box::pin(async move {
            let (user, org, tokens) = self.login(email, password, None, &client.into()).await?;
            Ok((user.id, org, issued_session(&tokens)))
        })
    }
}

#[cfg(test)]
mod tests;
