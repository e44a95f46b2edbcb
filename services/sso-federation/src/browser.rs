//! The browser side of single sign-on, under `/sso/`:
//!
//! - `GET /sso/start?connection=<id>|email=<email>[&return_to=<url>]`:
//!   sends the browser to the connection's provider (authorization code
//!   flow, PKCE S256, `state`, `nonce`), keeping what the return needs in
//!   a sealed, short-lived cookie scoped to `/sso/` (so the sign-in is
//!   bound to this browser: a code and state from another browser are
//!   refused);
//! - `GET /sso/oidc/callback?code=…&state=…`: checks the state against
//!   the cookie (and that it is used once, across replicas), exchanges
//!   the code, checks the ID token, decides the sign-in (`signin::admit`),
//!   provisions the member just in time, mints the session, and sends the
//!   browser to its return URL with the refresh token in the session
//!   cookie (`twig_web::session`) — never a token in a URL.
//!
//! Every accepted sign-in, and every refusal after the provider
//! authenticated someone, is an audit event with the reason; refusals
//! before that (a return URL outside the allowlist, no or expired cookie,
//! wrong or replayed state, failed exchange or token) are counted per
//! connection, reason and minute (`twig_audit::refusals`), since anyone
//! can cause them at will.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use twig_audit::refusals::{Refusals, Source, Summary};
use twig_audit::{AuditEvent, Outcome};
use twig_clock::Clock;
use twig_email::Email;
use twig_errors::ApiError;
use twig_module::{
    Needed, PasswordPolicy as _, PasswordSignIn, SealContext, Sealer, SessionClient, SessionIssuer,
    SessionMethod, Users,
};
use twig_redis::SeenOnce;
use twig_web::{ClientInfo, Cookie, Csrf, SameSite};
use uuid::Uuid;

use crate::connection::{Protocol, Stage};
use crate::connections::{Connection, Connections};
use crate::oidc::{OidcProviders, authorization_url};
use crate::policy::SignInPolicy;
use crate::return_to::ReturnUrls;
use crate::signin;
use crate::social::{Identities, SocialProvider, SocialProviders, verified_email};

/// The module's browser prefix.
pub const PREFIX: &str = "/sso/";
/// The callback's path (the redirect URI registered at providers is the
/// public URL with this path).
pub const CALLBACK_PATH: &str = "/sso/oidc/callback";
/// What the vault binds a pending sign-in to.
const PENDING_PURPOSE: &str = "sso-pending-sign-in";

/// The cookie of a sign-in in progress: `Lax`, since the provider sends
/// the browser back with a top-level GET from its own site.
fn pending_cookie() -> Cookie {
    Cookie::scoped("twig_sso_pending", PREFIX)
        .expect("a valid cookie")
        .same_site(SameSite::Lax)
}

/// The start path of `connection` for an email (a login hint) or none.
pub fn start_path(connection: Uuid, email: Option<&Email>) -> String {
    match email {
        Some(email) => format!(
            "{PREFIX}start?connection={connection}&login_hint={}",
            url::form_urlencoded::byte_serialize(email.as_str().as_bytes()).collect::<String>()
        ),
        None => format!("{PREFIX}start?connection={connection}"),
    }
}

/// What a sign-in is through: an organisation's connection, or a social
/// provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Target {
    Connection { id: Uuid },
    Social { provider: String },
}

impl Target {
    /// The record the vault binds the pending cookie to.
    fn record(&self) -> String {
        match self {
            Self::Connection { id } => format!("connection-{}", id.simple()),
            Self::Social { provider } => format!("social-{provider}"),
        }
    }
}

/// What the callback needs, sealed into the pending cookie.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    target: Target,
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    /// Unix seconds.
    expires: i64,
}

/// A social identity waiting for its account's password, sealed into
/// the link cookie.
#[derive(Debug, Serialize, Deserialize)]
struct PendingLink {
    user_id: Uuid,
    provider: String,
    subject: String,
    email: String,
    return_to: String,
    /// Unix seconds.
    expires: i64,
}

/// The cookie of a social identity waiting to be linked: `Strict`, read
/// only by the same-site page's `POST /sso/social/link`.
fn link_cookie() -> Cookie {
    Cookie::scoped("twig_sso_link", PREFIX)
        .expect("a valid cookie")
        .same_site(SameSite::Strict)
}

/// What the vault binds a pending link to.
const LINK_PURPOSE: &str = "sso-pending-link";

/// Who a pre-authentication refusal is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Early {
    org: Option<Uuid>,
    connection: Option<Uuid>,
    reason: &'static str,
}

impl Source for Early {
    fn overflow(&self) -> Self {
        Self {
            org: None,
            connection: None,
            reason: "other",
        }
    }
}

/// Everything the sign-in routes use.
pub struct SignIns {
    /// The connections.
    pub connections: Arc<Connections>,
    /// Providers' documents and keys.
    pub providers: Arc<OidcProviders>,
    /// The vault (pending cookies).
    pub sealer: Needed<Sealer>,
    /// Users (just-in-time provisioning).
    pub users: Needed<Users>,
    /// Sessions (minting).
    pub sessions: Needed<SessionIssuer>,
    /// States used once.
    pub seen: SeenOnce,
    /// The database (audit).
    pub db: sea_orm::DatabaseConnection,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The public URL of this service (redirect URIs), if configured.
    pub public_url: Option<String>,
    /// Where browsers may be sent back.
    pub return_urls: ReturnUrls,
    /// How long a sign-in may take.
    pub sign_in_timeout: Duration,
    /// Refusals before authentication, counted.
    early: Refusals<Early>,
    /// "Sign in with …" providers.
    pub socials: SocialProviders,
    /// Linked social identities.
    pub identities: Arc<Identities>,
    /// The CSRF check of the link route.
    pub csrf: Csrf,
    /// Which emails must sign in through their organisation's connection.
    pub policy: SignInPolicy,
}

/// What the start route takes.
#[derive(Debug, Deserialize)]
pub struct StartQuery {
    connection: Option<String>,
    provider: Option<String>,
    email: Option<String>,
    login_hint: Option<String>,
    return_to: Option<String>,
}

/// What the callback takes.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// A refusal shown to the browser.
struct Refused {
    status: StatusCode,
    message: String,
    clear_pending: bool,
}

impl Refused {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            clear_pending: true,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
            ],
            format!("Sign-in refused: {}\n", self.message),
        )
            .into_response();
        if self.clear_pending {
            response
                .headers_mut()
                .append(header::SET_COOKIE, pending_cookie().clear());
        }
        response
    }
}

fn api_status(e: &ApiError) -> StatusCode {
    e.code().http()
}

impl SignIns {
    /// The routes' state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        connections: Arc<Connections>,
        providers: Arc<OidcProviders>,
        sealer: Needed<Sealer>,
        users: Needed<Users>,
        sessions: Needed<SessionIssuer>,
        seen: SeenOnce,
        db: sea_orm::DatabaseConnection,
        clock: Arc<dyn Clock>,
        public_url: Option<String>,
        return_urls: ReturnUrls,
        sign_in_timeout: Duration,
        refusal_period: Duration,
        socials: SocialProviders,
        identities: Arc<Identities>,
        csrf: Csrf,
        policy: SignInPolicy,
    ) -> Self {
        Self {
            policy,
            socials,
            identities,
            csrf,
            connections,
            providers,
            sealer,
            users,
            sessions,
            seen,
            db,
            clock,
            public_url,
            return_urls,
            sign_in_timeout,
            early: Refusals::new(refusal_period, 1000),
        }
    }

    /// The routes, to be mounted under [`PREFIX`].
    pub fn router(self: Arc<Self>) -> axum::Router {
        let link = axum::Router::new()
            .route("/social/link", axum::routing::post(link))
            .route_layer(self.csrf.layer());
        axum::Router::new()
            .route("/start", axum::routing::get(start))
            .route("/oidc/callback", axum::routing::get(callback))
            .merge(link)
            .with_state(self)
    }

    fn redirect_uri(&self) -> Result<String, Refused> {
        self.public_url
            .as_ref()
            .map(|base| format!("{}{CALLBACK_PATH}", base.trim_end_matches('/')))
            .ok_or_else(|| {
                Refused::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "single sign-on needs sso_federation.public_url (or server.public_origins)",
                )
            })
    }

    fn sealer(&self) -> Result<&Sealer, Refused> {
        self.sealer.get().ok_or_else(|| {
            Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the secrets vault is not reachable from this process",
            )
        })
    }

    fn refuse_early(
        &self,
        connection: Option<&Connection>,
        reason: &'static str,
        sample: &str,
        refused: Refused,
    ) -> Refused {
        self.early.record(
            self.clock.now(),
            Early {
                org: connection.map(|c| c.org_id),
                connection: connection.map(|c| c.id),
                reason,
            },
            sample,
        );
        metrics::counter!("twig_sso_sign_ins_total", "outcome" => "refused", "reason" => reason)
            .increment(1);
        tracing::info!(reason, "single sign-on refused before authentication");
        refused
    }

    /// Writes the counted refusals of the periods that ended (`all`: every
    /// period, at shutdown). What cannot be written is kept.
    pub async fn write_refusals(&self, all: bool) -> Result<(), sea_orm::DbErr> {
        let now = self.clock.now();
        let mut summaries: Vec<Summary<Early>> = if all {
            self.early.take_all()
        } else {
            self.early.take_ended(now)
        };
        let period = self.early.period().as_secs();
        while let Some(s) = summaries.pop() {
            let mut event = AuditEvent::new("sso.sign_in", Outcome::Failure)
                .actor("unauthenticated")
                .details(serde_json::json!({
                    "reason": s.source.reason,
                    "count": s.count,
                    "samples": s.samples,
                    "period_start": s.period_start.to_rfc3339(),
                    "period_seconds": period,
                }));
            if let Some(org) = s.source.org {
                event = event.org(org);
            }
            if let Some(connection) = s.source.connection {
                event = event.target(format!("connection:{connection}"));
            }
            if let Err(e) = event.record_at(&self.db, now).await {
                summaries.push(s);
                self.early.restore(summaries);
                return Err(e);
            }
        }
        Ok(())
    }

    async fn begin(&self, query: StartQuery) -> Result<(String, HeaderValue), Refused> {
        let redirect_uri = self.redirect_uri()?;
        let hint = query
            .login_hint
            .as_deref()
            .or(query.email.as_deref())
            .filter(|h| !h.is_empty())
            .map(Email::parse)
            .transpose()
            .map_err(|why| Refused::new(StatusCode::BAD_REQUEST, format!("the email {why}")))?;
        let asked = query.return_to.as_deref().unwrap_or_default();
        let return_to = self.return_urls.check(asked).map_err(|e| {
            let sample: String = asked.chars().take(200).collect();
            self.refuse_early(
                None,
                "bad_return_url",
                &sample,
                Refused::new(StatusCode::BAD_REQUEST, e.to_string()),
            )
        })?;
        let (target, org, issuer, client_id, scopes) = match &query.provider {
            Some(name) => {
                let provider = self.socials.get(name).ok_or_else(|| {
                    Refused::new(StatusCode::NOT_FOUND, "no such sign-in provider")
                })?;
                (
                    Target::Social {
                        provider: provider.name.clone(),
                    },
                    Uuid::nil(),
                    provider.issuer.clone(),
                    provider.client_id.clone(),
                    provider.scopes.clone(),
                )
            }
            None => {
                let connection = self.connection_for(&query, hint.as_ref()).await?;
                let Protocol::Oidc(oidc) = &connection.protocol;
                let mut scopes = vec!["email".to_string(), "profile".to_string()];
                scopes.extend(oidc.extra_scopes.iter().cloned());
                (
                    Target::Connection { id: connection.id },
                    connection.org_id,
                    oidc.issuer(self.connections.presets()),
                    oidc.client_id.clone(),
                    scopes,
                )
            }
        };
        let provider = self.providers.provider(&issuer).await.map_err(|e| {
            tracing::warn!(issuer = issuer.as_str(), error = %e, "identity provider unusable");
            Refused::new(StatusCode::BAD_GATEWAY, e.to_string())
        })?;
        let authorization = authorization_url(
            &provider,
            &client_id,
            &redirect_uri,
            &scopes,
            hint.as_ref().map(Email::as_str),
        )
        .map_err(|e| Refused::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
        let pending = Pending {
            target,
            state: authorization.state,
            nonce: authorization.nonce,
            verifier: authorization.verifier,
            return_to: return_to.to_string(),
            expires: self.expiry(),
        };
        let cookie = self
            .seal_cookie(
                &pending_cookie(),
                PENDING_PURPOSE,
                org,
                &pending.target.record(),
                &pending,
            )
            .await?;
        Ok((authorization.url, cookie))
    }

    /// The connection a start names, by id or by the email's domain; not
    /// off.
    async fn connection_for(
        &self,
        query: &StartQuery,
        hint: Option<&Email>,
    ) -> Result<Connection, Refused> {
        let found = match (&query.connection, hint) {
            (Some(id), _) => {
                let id = Uuid::parse_str(id).map_err(|_| {
                    Refused::new(StatusCode::BAD_REQUEST, "connection must be a UUID")
                })?;
                self.connections.find(id).await
            }
            (None, Some(email)) if query.email.is_some() => {
                self.connections.serving(&email.domain()).await
            }
            _ => {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    "email, connection or provider is required",
                ));
            }
        }
        .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?;
        found.filter(|c| c.stage != Stage::Off).ok_or_else(|| {
            Refused::new(
                StatusCode::NOT_FOUND,
                "no single sign-on connection is available for this sign-in",
            )
        })
    }

    fn expiry(&self) -> i64 {
        (self.clock.now() + chrono::Duration::from_std(self.sign_in_timeout).unwrap_or_default())
            .timestamp()
    }

    /// `value` sealed by the vault for (`org`, `purpose`, `record`), as
    /// `cookie`'s `Set-Cookie`: `<org>.<record>.<sealed>`.
    async fn seal_cookie(
        &self,
        cookie: &Cookie,
        purpose: &str,
        org: Uuid,
        record: &str,
        value: &impl Serialize,
    ) -> Result<HeaderValue, Refused> {
        let Sealer(sealer) = self.sealer()?;
        let sealed = sealer
            .seal(
                &seal_context(org, purpose, record),
                &serde_json::to_vec(value).expect("a sign-in's state serialises"),
            )
            .await
            .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?;
        let value = format!(
            "{}.{record}.{}",
            org.simple(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
        );
        cookie
            .set(&value, self.sign_in_timeout)
            .map_err(|e| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    /// What `cookie` holds, unsealed: its organisation, record and value;
    /// `None` when absent or unreadable (tampered, another purpose's).
    async fn open_cookie<T: serde::de::DeserializeOwned>(
        &self,
        cookie: &Cookie,
        purpose: &str,
        headers: &HeaderMap,
    ) -> Result<Option<(Uuid, String, T)>, Refused> {
        let Ok(Some(value)) = cookie.read(headers) else {
            return Ok(None);
        };
        let mut parts = value.splitn(3, '.');
        let (Some(org), Some(record), Some(sealed)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Ok(org) = Uuid::parse_str(org) else {
            return Ok(None);
        };
        let Some(sealed) = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        else {
            return Ok(None);
        };
        let Sealer(sealer) = self.sealer()?;
        let Ok(opened) = sealer
            .unseal(&seal_context(org, purpose, record), &sealed)
            .await
        else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&opened)
            .ok()
            .map(|v| (org, record.to_string(), v)))
    }

    async fn finish(
        &self,
        query: CallbackQuery,
        headers: &HeaderMap,
        client: &ClientInfo,
    ) -> Result<Response, Refused> {
        let bad = |reason: &'static str, message: &str| {
            self.refuse_early(
                None,
                reason,
                "",
                Refused::new(StatusCode::BAD_REQUEST, message),
            )
        };
        let Some((org, record, pending)) = self
            .open_cookie::<Pending>(&pending_cookie(), PENDING_PURPOSE, headers)
            .await?
        else {
            return Err(match pending_cookie().read(headers) {
                Ok(None) => bad(
                    "no_pending_sign_in",
                    "no sign-in was started in this browser (or it took too long); start again",
                ),
                _ => bad(
                    "bad_cookie",
                    "the sign-in cookie is not readable; start again",
                ),
            });
        };
        if pending.target.record() != record {
            return Err(bad("bad_cookie", "the sign-in cookie is not readable"));
        }
        let connection = match &pending.target {
            Target::Connection { id } => Some(
                self.connections
                    .find(*id)
                    .await
                    .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?
                    .filter(|c| c.org_id == org)
                    .ok_or_else(|| bad("connection_gone", "the connection no longer exists"))?,
            ),
            Target::Social { .. } => None,
        };
        let early = |reason: &'static str, status: StatusCode, message: String| {
            self.refuse_early(
                connection.as_ref(),
                reason,
                &client.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                Refused::new(status, message),
            )
        };
        if pending.expires < self.clock.now().timestamp() {
            return Err(early(
                "sign_in_expired",
                StatusCode::BAD_REQUEST,
                "the sign-in took too long; start again".into(),
            ));
        }
        let state = query.state.unwrap_or_default();
        if state.is_empty() || !bool::from(state.as_bytes().ct_eq(pending.state.as_bytes())) {
            return Err(early(
                "state_mismatch",
                StatusCode::BAD_REQUEST,
                "the sign-in does not match the one started in this browser".into(),
            ));
        }
        let state_id = hex(&sha2::Sha256::digest(state.as_bytes()));
        match self
            .seen
            .first_sight("sso.state", &state_id, self.sign_in_timeout)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(early(
                    "replayed",
                    StatusCode::BAD_REQUEST,
                    "this sign-in was already used; start again".into(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a sign-in's state");
                return Err(Refused::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sign-in is unavailable for a moment; try again",
                ));
            }
        }
        if let Some(error) = query.error {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return Err(early(
                "idp_error",
                StatusCode::FORBIDDEN,
                format!("the identity provider answered {error}"),
            ));
        }
        let code = query.code.filter(|c| !c.is_empty()).ok_or_else(|| {
            early(
                "no_code",
                StatusCode::BAD_REQUEST,
                "the provider sent no code".into(),
            )
        })?;
        let redirect_uri = self.redirect_uri()?;
        let oidc_refusal = |e: crate::oidc::OidcError| {
            tracing::info!(error = %e, "sign-in refused");
            let status = match e {
                crate::oidc::OidcError::Unreachable(_) | crate::oidc::OidcError::BadMetadata(_) => {
                    StatusCode::BAD_GATEWAY
                }
                _ => StatusCode::FORBIDDEN,
            };
            early(e.reason(), status, e.to_string())
        };
        let Some(connection) = connection.as_ref() else {
            let Target::Social { provider } = &pending.target else {
                unreachable!("a pending sign-in without a connection is a social one")
            };
            let provider = self.socials.get(provider).cloned().ok_or_else(|| {
                early(
                    "provider_gone",
                    StatusCode::NOT_FOUND,
                    "the sign-in provider is no longer configured".into(),
                )
            })?;
            let claims = self
                .providers
                .finish(
                    &provider.issuer,
                    &provider.client_id,
                    provider.client_secret.expose(),
                    &redirect_uri,
                    &code,
                    &pending.verifier,
                    &pending.nonce,
                )
                .await
                .map_err(oidc_refusal)?;
            return self
                .finish_social(&provider, &claims, &pending, client, headers, early)
                .await;
        };
        let Protocol::Oidc(oidc) = &connection.protocol;
        let secret = self
            .connections
            .client_secret(connection)
            .await
            .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?;
        let claims = self
            .providers
            .finish(
                &oidc.issuer(self.connections.presets()),
                &oidc.client_id,
                secret.expose(),
                &redirect_uri,
                &code,
                &pending.verifier,
                &pending.nonce,
            )
            .await
            .map_err(oidc_refusal)?;
        let ip = client.ip.map(|ip| ip.to_string());
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let mapped = match signin::admit(connection, &claims) {
            Ok(mapped) => mapped,
            Err(refusal) => {
                self.audit_refused(
                    connection,
                    ip,
                    subject,
                    &claims,
                    refusal.reason(),
                    &refusal.to_string(),
                )
                .await;
                return Err(Refused::new(StatusCode::FORBIDDEN, refusal.to_string()));
            }
        };
        let issued = match self
            .provision_and_issue(connection, &mapped, client, headers)
            .await
        {
            Ok(issued) => issued,
            Err((reason, e)) => {
                self.audit_refused(connection, ip, subject, &claims, reason, e.message())
                    .await;
                return Err(Refused::new(api_status(&e), e.message().to_string()));
            }
        };
        let (user_id, joined, session) = issued;
        let written = AuditEvent::new("sso.sign_in", Outcome::Success)
            .org(connection.org_id)
            .actor(format!("user:{user_id}"))
            .target(format!("connection:{}", connection.id))
            .ip(ip)
            .details(serde_json::json!({
                "connection": connection.id,
                "subject": subject,
                "email": mapped.email.as_str(),
                "role": mapped.role.as_str(),
                "joined": joined,
                "session": session.session_id,
            }))
            .record_at(&self.db, self.clock.now())
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record a single sign-on");
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sign-in is unavailable for a moment; try again",
            ));
        }
        metrics::counter!("twig_sso_sign_ins_total", "outcome" => "accepted", "reason" => "")
            .increment(1);
        self.signed_in(&session, &pending.return_to, &[pending_cookie().clear()])
    }

    /// A 303 to `return_to` with the session cookie (and `also`).
    fn signed_in(
        &self,
        session: &twig_module::IssuedSession,
        return_to: &str,
        also: &[HeaderValue],
    ) -> Result<Response, Refused> {
        let lifetime = (session.refresh_expires_at - self.clock.now())
            .to_std()
            .unwrap_or_default();
        let cookie = twig_web::session::set_refresh(session.refresh_token.expose(), lifetime)
            .map_err(|e| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mut response = see_other(return_to)?;
        response.headers_mut().append(header::SET_COOKIE, cookie);
        for header in also {
            response
                .headers_mut()
                .append(header::SET_COOKIE, header.clone());
        }
        Ok(response)
    }

    /// A social sign-in, its ID token checked: the linked account signed
    /// in; else a new account made for a verified email nobody has; else
    /// (an account has the email) a link waiting for that account's
    /// password, and no session.
    async fn finish_social(
        &self,
        provider: &SocialProvider,
        claims: &serde_json::Map<String, serde_json::Value>,
        pending: &Pending,
        client: &ClientInfo,
        headers: &HeaderMap,
        early: impl Fn(&'static str, StatusCode, String) -> Refused,
    ) -> Result<Response, Refused> {
        let unavailable = |e: ApiError| Refused::new(api_status(&e), e.message().to_string());
        let (Some(Users(users)), Some(SessionIssuer(sessions))) =
            (self.users.get(), self.sessions.get())
        else {
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the sessions service is not reachable from this process",
            ));
        };
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| {
                early(
                    "no_subject",
                    StatusCode::FORBIDDEN,
                    "the provider named no subject".into(),
                )
            })?;
        let method = SessionMethod::oauth(&provider.name)
            .map_err(|e| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let session_client = SessionClient {
            ip: client.ip,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        let ip = client.ip.map(|ip| ip.to_string());
        // Single sign-on enforced for an email's domain is the only way in
        // for it (the rule passwords follow): a social identity neither
        // signs such an account in nor makes one.
        let early = &early;
        let enforced = |email: Email| async move {
            match self.policy.password_sign_in(email.as_str()).await {
                Ok(PasswordSignIn::Allowed) => Ok(()),
                Ok(PasswordSignIn::UseSso { start_path, .. }) => Err(early(
                    "sso_enforced",
                    StatusCode::FORBIDDEN,
                    format!(
                        "this email's organisation signs in through single sign-on; sign in at \
                         {start_path}"
                    ),
                )),
                Err(e) => Err(Refused::new(api_status(&e), e.message().to_string())),
            }
        };
        // A linked identity signs its account in.
        if let Some(linked) = self
            .identities
            .find(provider.issuer.as_str(), subject)
            .await
            .map_err(unavailable)?
        {
            let account = users
                .find_user(linked.user_id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    Refused::new(StatusCode::FORBIDDEN, "the linked account no longer exists")
                })?;
            if let Ok(email) = Email::parse(&account.email) {
                enforced(email).await?;
            }
            let facts = users
                .sign_in_facts(linked.user_id)
                .await
                .map_err(unavailable)?;
            let org = facts.home_org.ok_or_else(|| {
                Refused::new(
                    StatusCode::FORBIDDEN,
                    "the account belongs to no organisation any more",
                )
            })?;
            let session = sessions
                .issue_session(linked.user_id, org, &method, &session_client)
                .await
                .map_err(unavailable)?;
            self.identities.used(&linked).await.map_err(unavailable)?;
            self.audit_social(org, linked.user_id, provider, ip, "linked")
                .await?;
            return self.signed_in(&session, &pending.return_to, &[pending_cookie().clear()]);
        }
        let email = verified_email(claims).ok_or_else(|| {
            early(
                "email_unverified",
                StatusCode::FORBIDDEN,
                format!(
                    "{} did not say the account's email is verified",
                    provider.display_name
                ),
            )
        })?;
        enforced(email.clone()).await?;
        match users
            .find_user_by_email(email.as_str())
            .await
            .map_err(unavailable)?
        {
            None => {
                let name = claims
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(100)
                    .collect::<String>();
                let (user, org) = users
                    .create_federated_account(email.as_str(), &name)
                    .await
                    .map_err(unavailable)?;
                self.identities
                    .link(user.id, Some(org), provider, subject, &email, "sign_up")
                    .await
                    .map_err(unavailable)?;
                let session = sessions
                    .issue_session(user.id, org, &method, &session_client)
                    .await
                    .map_err(unavailable)?;
                self.audit_social(org, user.id, provider, ip, "signed_up")
                    .await?;
                self.signed_in(&session, &pending.return_to, &[pending_cookie().clear()])
            }
            Some(user) => {
                // Never silently: the account's password proves it is
                // the same person.
                let link = PendingLink {
                    user_id: user.id,
                    provider: provider.name.clone(),
                    subject: subject.to_string(),
                    email: email.as_str().to_string(),
                    return_to: pending.return_to.clone(),
                    expires: self.expiry(),
                };
                let cookie = self
                    .seal_cookie(
                        &link_cookie(),
                        LINK_PURPOSE,
                        Uuid::nil(),
                        &format!("link-{}", user.id.simple()),
                        &link,
                    )
                    .await?;
                metrics::counter!("twig_sso_sign_ins_total", "outcome" => "link_required", "reason" => "")
                    .increment(1);
                let mut back = url::Url::parse(&pending.return_to).map_err(|_| {
                    Refused::new(StatusCode::INTERNAL_SERVER_ERROR, "bad return URL")
                })?;
                // The page learns the provider from this one parameter:
                // any it already carried is dropped.
                let kept: Vec<(String, String)> = back
                    .query_pairs()
                    .filter(|(k, _)| k != "twig_link")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                back.query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair("twig_link", &provider.name);
                let mut response = see_other(back.as_str())?;
                response.headers_mut().append(header::SET_COOKIE, cookie);
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, pending_cookie().clear());
                Ok(response)
            }
        }
    }

    /// Records a social sign-in in the account's organisation.
    async fn audit_social(
        &self,
        org: Uuid,
        user: Uuid,
        provider: &SocialProvider,
        ip: Option<String>,
        how: &'static str,
    ) -> Result<(), Refused> {
        AuditEvent::new("sso.social_sign_in", Outcome::Success)
            .org(org)
            .actor(format!("user:{user}"))
            .ip(ip)
            .details(serde_json::json!({"provider": provider.name, "how": how}))
            .record_at(&self.db, self.clock.now())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot record a social sign-in");
                Refused::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sign-in is unavailable for a moment; try again",
                )
            })?;
        metrics::counter!("twig_sso_sign_ins_total", "outcome" => "accepted", "reason" => "")
            .increment(1);
        Ok(())
    }

    /// `POST /sso/social/link`: the password of the account a social
    /// identity waits for; right, the identity is linked and the browser
    /// signed in.
    async fn link(
        &self,
        password: &str,
        headers: &HeaderMap,
        client: &ClientInfo,
    ) -> Result<Response, ApiError> {
        let Some((_, record, pending)) = self
            .open_cookie::<PendingLink>(&link_cookie(), LINK_PURPOSE, headers)
            .await
            .map_err(|r| ApiError::unavailable(r.message))?
        else {
            return Err(ApiError::failed_precondition(
                "no sign-in method is waiting to be linked in this browser; sign in with the \
                 provider again",
            ));
        };
        if record != format!("link-{}", pending.user_id.simple())
            || pending.expires < self.clock.now().timestamp()
        {
            return Err(ApiError::failed_precondition(
                "the link took too long; sign in with the provider again",
            ));
        }
        let provider = self
            .socials
            .get(&pending.provider)
            .cloned()
            .ok_or_else(|| ApiError::failed_precondition("the provider is no longer configured"))?;
        let (Some(Users(users)), Some(SessionIssuer(sessions))) =
            (self.users.get(), self.sessions.get())
        else {
            return Err(ApiError::unavailable(
                "the sessions service is not reachable from this process",
            ));
        };
        let user = users
            .find_user(pending.user_id)
            .await?
            .ok_or_else(|| ApiError::failed_precondition("the account no longer exists"))?;
        let session_client = SessionClient {
            ip: client.ip,
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        // A password sign-in with its brakes, delays and audit: only the
        // account's own password links.
        let (user_id, org, session) = sessions
            .sign_in_with_password(&user.email, password, &session_client)
            .await?;
        if user_id != pending.user_id {
            return Err(ApiError::failed_precondition(
                "the account changed; start again",
            ));
        }
        let email = Email::parse(&pending.email)
            .map_err(|why| ApiError::failed_precondition(format!("the email {why}")))?;
        self.identities
            .link(
                user_id,
                Some(org),
                &provider,
                &pending.subject,
                &email,
                "password_proof",
            )
            .await?;
        let lifetime = (session.refresh_expires_at - self.clock.now())
            .to_std()
            .unwrap_or_default();
        let cookie = twig_web::session::set_refresh(session.refresh_token.expose(), lifetime)
            .map_err(|e| ApiError::internal(&e))?;
        let mut response = (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(serde_json::json!({
                "linked": provider.name,
                "return_to": pending.return_to,
            })),
        )
            .into_response();
        response.headers_mut().append(header::SET_COOKIE, cookie);
        response
            .headers_mut()
            .append(header::SET_COOKIE, link_cookie().clear());
        Ok(response)
    }

    /// Provisions the member (just in time) and mints the session; on
    /// failure the reason and the error.
    async fn provision_and_issue(
        &self,
        connection: &Connection,
        mapped: &signin::Mapped,
        client: &ClientInfo,
        headers: &HeaderMap,
    ) -> Result<(Uuid, bool, twig_module::IssuedSession), (&'static str, ApiError)> {
        let Some(Users(users)) = self.users.get() else {
            return Err((
                "no_user_directory",
                ApiError::unavailable("the sessions service is not reachable from this process"),
            ));
        };
        let Some(SessionIssuer(sessions)) = self.sessions.get() else {
            return Err((
                "no_session_issuer",
                ApiError::unavailable("the sessions service is not reachable from this process"),
            ));
        };
        let provisioned = users
            .provision_user(
                mapped.email.as_str(),
                &mapped.name,
                connection.org_id,
                mapped.role,
            )
            .await
            .map_err(|e| ("provisioning_refused", e))?;
        if provisioned.user.disabled {
            return Err((
                "account_disabled",
                ApiError::failed_precondition("the account is disabled"),
            ));
        }
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let session = sessions
            .issue_session(
                provisioned.user.id,
                connection.org_id,
                &SessionMethod::Sso(connection.id),
                &SessionClient {
                    ip: client.ip,
                    user_agent: agent,
                },
            )
            .await
            .map_err(|e| ("session_refused", e))?;
        Ok((provisioned.user.id, provisioned.joined, session))
    }

    /// One audit event for a sign-in the provider authenticated but we
    /// refused (in the connection's organisation: its own provider's
    /// doing, bounded by its people's sign-ins).
    async fn audit_refused(
        &self,
        connection: &Connection,
        ip: Option<String>,
        subject: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
        reason: &'static str,
        message: &str,
    ) {
        metrics::counter!("twig_sso_sign_ins_total", "outcome" => "refused", "reason" => reason)
            .increment(1);
        let email = claims
            .get(&connection.mapping.email_claim)
            .and_then(|v| v.as_str())
            .map(|e| e.chars().take(254).collect::<String>());
        let written = AuditEvent::new("sso.sign_in", Outcome::Failure)
            .org(connection.org_id)
            .actor(format!(
                "idp-subject:{}",
                subject.chars().take(255).collect::<String>()
            ))
            .target(format!("connection:{}", connection.id))
            .ip(ip)
            .details(serde_json::json!({
                "connection": connection.id,
                "reason": reason,
                "message": message,
                "email": email,
            }))
            .record_at(&self.db, self.clock.now())
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, reason, "cannot record a refused single sign-on");
        }
    }
}

fn seal_context(org: Uuid, purpose: &str, record: &str) -> SealContext {
    SealContext {
        org,
        purpose: purpose.into(),
        record: record.to_string(),
    }
}

/// A 303 to `to`, not kept by caches.
fn see_other(to: &str) -> Result<Response, Refused> {
    let location = HeaderValue::from_str(to)
        .map_err(|_| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, "bad return URL"))?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::LOCATION, location),
        ],
    )
        .into_response())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn start(State(sign_ins): State<Arc<SignIns>>, Query(query): Query<StartQuery>) -> Response {
    match sign_ins.begin(query).await {
        Ok((url, cookie)) => match HeaderValue::from_str(&url) {
            Ok(location) => {
                let mut response = (
                    StatusCode::SEE_OTHER,
                    [
                        (header::LOCATION, location),
                        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    ],
                )
                    .into_response();
                response.headers_mut().append(header::SET_COOKIE, cookie);
                response
            }
            Err(_) => Refused::new(StatusCode::BAD_GATEWAY, "the provider's URL is not valid")
                .into_response(),
        },
        Err(refused) => Refused {
            clear_pending: false,
            ..refused
        }
        .into_response(),
    }
}

/// `POST /sso/social/link`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    password: String,
}

async fn link(
    State(sign_ins): State<Arc<SignIns>>,
    client: ClientInfo,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let answer = match serde_json::from_slice::<LinkBody>(&body) {
        Ok(body) => sign_ins.link(&body.password, &headers, &client).await,
        Err(e) => Err(ApiError::invalid_field(
            "body",
            format!("must be JSON with the password: {e}"),
        )),
    };
    answer.unwrap_or_else(|e| twig_web::json_error(&e))
}

async fn callback(
    State(sign_ins): State<Arc<SignIns>>,
    client: ClientInfo,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    match sign_ins.finish(query, &headers, &client).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    }
}
