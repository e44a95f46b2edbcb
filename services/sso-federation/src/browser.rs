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
//! before that (no or expired cookie, wrong or replayed state, failed
//! exchange or token) are counted per connection, reason and minute
//! (`twig_audit::refusals`), since anyone can cause them at will.

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
    Needed, SealContext, Sealer, SessionClient, SessionIssuer, SessionMethod, Users,
};
use twig_redis::SeenOnce;
use twig_web::{ClientInfo, Cookie, SameSite};
use uuid::Uuid;

use crate::connection::{Protocol, Stage};
use crate::connections::{Connection, Connections};
use crate::oidc::{OidcProviders, authorization_url};
use crate::return_to::ReturnUrls;
use crate::signin;

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

/// What the callback needs, sealed into the pending cookie.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    connection: Uuid,
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    /// Unix seconds.
    expires: i64,
}

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
}

/// What the start route takes.
#[derive(Debug, Deserialize)]
pub struct StartQuery {
    connection: Option<String>,
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
    ) -> Self {
        Self {
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
        axum::Router::new()
            .route("/start", axum::routing::get(start))
            .route("/oidc/callback", axum::routing::get(callback))
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
        let connection = match (&query.connection, &query.email) {
            (Some(id), _) => {
                let id = Uuid::parse_str(id).map_err(|_| {
                    Refused::new(StatusCode::BAD_REQUEST, "connection must be a UUID")
                })?;
                self.connections
                    .find(id)
                    .await
                    .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?
            }
            (None, Some(_)) => {
                let email = hint.as_ref().ok_or_else(|| {
                    Refused::new(StatusCode::BAD_REQUEST, "email or connection is required")
                })?;
                self.connections
                    .serving(&email.domain())
                    .await
                    .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?
            }
            (None, None) => {
                return Err(Refused::new(
                    StatusCode::BAD_REQUEST,
                    "email or connection is required",
                ));
            }
        };
        let connection = connection
            .filter(|c| c.stage != Stage::Off)
            .ok_or_else(|| {
                Refused::new(
                    StatusCode::NOT_FOUND,
                    "no single sign-on connection is available for this sign-in",
                )
            })?;
        let return_to = self
            .return_urls
            .check(query.return_to.as_deref().unwrap_or_default())
            .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let Protocol::Oidc(oidc) = &connection.protocol;
        let issuer = oidc.issuer(self.connections.presets());
        let provider = self.providers.provider(&issuer).await.map_err(|e| {
            tracing::warn!(connection = %connection.id, error = %e, "identity provider unusable");
            Refused::new(StatusCode::BAD_GATEWAY, e.to_string())
        })?;
        let mut scopes = vec!["email".to_string(), "profile".to_string()];
        scopes.extend(oidc.extra_scopes.iter().cloned());
        let authorization = authorization_url(
            &provider,
            &oidc.client_id,
            &redirect_uri,
            &scopes,
            hint.as_ref().map(Email::as_str),
        )
        .map_err(|e| Refused::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
        let pending = Pending {
            connection: connection.id,
            state: authorization.state,
            nonce: authorization.nonce,
            verifier: authorization.verifier,
            return_to: return_to.to_string(),
            expires: (self.clock.now()
                + chrono::Duration::from_std(self.sign_in_timeout).unwrap_or_default())
            .timestamp(),
        };
        let Sealer(sealer) = self.sealer()?;
        let sealed = sealer
            .seal(
                &pending_context(connection.org_id, connection.id),
                &serde_json::to_vec(&pending).expect("pending sign-in serialises"),
            )
            .await
            .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?;
        let value = format!(
            "{}.{}.{}",
            connection.org_id.simple(),
            connection.id.simple(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
        );
        let cookie = pending_cookie()
            .set(&value, self.sign_in_timeout)
            .map_err(|e| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok((authorization.url, cookie))
    }

    /// The pending sign-in this browser's cookie holds, unsealed; the
    /// connection it names.
    async fn pending(&self, headers: &HeaderMap) -> Result<(Connection, Pending), Refused> {
        let bad = |reason: &'static str, message: &str| {
            self.refuse_early(
                None,
                reason,
                "",
                Refused::new(StatusCode::BAD_REQUEST, message),
            )
        };
        let value = pending_cookie()
            .read(headers)
            .map_err(|_| bad("bad_cookie", "the sign-in cookie is not readable"))?
            .ok_or_else(|| {
                bad(
                    "no_pending_sign_in",
                    "no sign-in was started in this browser (or it took too long); start again",
                )
            })?;
        let mut parts = value.splitn(3, '.');
        let (Some(org), Some(id), Some(sealed)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("bad_cookie", "the sign-in cookie is not readable"));
        };
        let (Ok(org), Ok(id)) = (Uuid::parse_str(org), Uuid::parse_str(id)) else {
            return Err(bad("bad_cookie", "the sign-in cookie is not readable"));
        };
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad("bad_cookie", "the sign-in cookie is not readable"))?;
        let Sealer(sealer) = self.sealer()?;
        let opened = sealer
            .unseal(&pending_context(org, id), &sealed)
            .await
            .map_err(|_| bad("bad_cookie", "the sign-in cookie is not readable"))?;
        let pending: Pending = serde_json::from_slice(&opened)
            .map_err(|_| bad("bad_cookie", "the sign-in cookie is not readable"))?;
        let connection = self
            .connections
            .find(id)
            .await
            .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?
            .filter(|c| c.org_id == org && pending.connection == id)
            .ok_or_else(|| bad("connection_gone", "the connection no longer exists"))?;
        if pending.expires < self.clock.now().timestamp() {
            return Err(self.refuse_early(
                Some(&connection),
                "sign_in_expired",
                "",
                Refused::new(
                    StatusCode::BAD_REQUEST,
                    "the sign-in took too long; start again",
                ),
            ));
        }
        Ok((connection, pending))
    }

    async fn finish(
        &self,
        query: CallbackQuery,
        headers: &HeaderMap,
        client: &ClientInfo,
    ) -> Result<Response, Refused> {
        let (connection, pending) = self.pending(headers).await?;
        let early = |reason: &'static str, status: StatusCode, message: String| {
            self.refuse_early(
                Some(&connection),
                reason,
                &client.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                Refused::new(status, message),
            )
        };
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
        let Protocol::Oidc(oidc) = &connection.protocol;
        let secret = self
            .connections
            .client_secret(&connection)
            .await
            .map_err(|e| Refused::new(api_status(&e), e.message().to_string()))?;
        let redirect_uri = self.redirect_uri()?;
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
            .map_err(|e| {
                tracing::info!(connection = %connection.id, error = %e, "sign-in refused");
                let status = match e {
                    crate::oidc::OidcError::Unreachable(_)
                    | crate::oidc::OidcError::BadMetadata(_) => StatusCode::BAD_GATEWAY,
                    _ => StatusCode::FORBIDDEN,
                };
                early(e.reason(), status, e.to_string())
            })?;
        let ip = client.ip.map(|ip| ip.to_string());
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let mapped = match signin::admit(&connection, &claims) {
            Ok(mapped) => mapped,
            Err(refusal) => {
                self.audit_refused(
                    &connection,
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
            .provision_and_issue(&connection, &mapped, client, headers)
            .await
        {
            Ok(issued) => issued,
            Err((reason, e)) => {
                self.audit_refused(&connection, ip, subject, &claims, reason, e.message())
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
        let lifetime = (session.refresh_expires_at - self.clock.now())
            .to_std()
            .unwrap_or_default();
        let cookie = twig_web::session::set_refresh(session.refresh_token.expose(), lifetime)
            .map_err(|e| Refused::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mut response = (
            StatusCode::SEE_OTHER,
            [
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::LOCATION,
                    HeaderValue::from_str(&pending.return_to).map_err(|_| {
                        Refused::new(StatusCode::INTERNAL_SERVER_ERROR, "bad return URL")
                    })?,
                ),
            ],
        )
            .into_response();
        response.headers_mut().append(header::SET_COOKIE, cookie);
        response
            .headers_mut()
            .append(header::SET_COOKIE, pending_cookie().clear());
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

fn pending_context(org: Uuid, connection: Uuid) -> SealContext {
    SealContext {
        org,
        purpose: PENDING_PURPOSE.into(),
        record: connection.to_string(),
    }
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
