//! Browser sessions, under `/auth/`: the refresh token lives in the
//! session cookie (`twig_web::session`: `HttpOnly; Secure;
//! SameSite=Strict; Path=/auth/`), the page holds only the short access
//! token, which it gets from `POST /auth/refresh`.
//!
//! - `POST /auth/login` (JSON `email`, `password`, optional
//!   `organization_id`): a password sign-in in cookie mode;
//! - `POST /auth/refresh`: the cookie's refresh token traded for new
//!   tokens — the access token in the answer, the new refresh token in
//!   the cookie;
//! - `POST /auth/logout`: the cookie's session ended, the cookie cleared
//!   (204 whether or not there was one).
//!
//! Every one of them changes state with a cookie, so each passes the
//! CSRF check (`twig_web::Csrf`: an Origin among `server.public_origins`
//! and `x-twig-csrf: 1`). The routes are same-origin: the page is served
//! from one of the public origins (or behind the same front door).
//! Answers are JSON (`access_token`, `access_expires_at`, `session_id`,
//! `user_id`, `organization_id`), errors JSON `{code, message}` with the
//! HTTP status of their gRPC code; a refresh that lost a race with
//! another tab's is 409 `refresh_race` (retry: the other tab's answer has
//! set the newer cookie), never a sign-out.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use twig_errors::ApiError;
use twig_web::{ClientInfo, Csrf};
use uuid::Uuid;

use crate::error::SessionError;
use crate::sessions::{ClientContext, IssuedTokens, Sessions};

/// The prefix (the session cookie's path).
pub const PREFIX: &str = twig_web::session::AUTH_PREFIX;

/// A signed-in browser's answer.
#[derive(Debug, Serialize)]
struct SessionAnswer {
    access_token: String,
    access_expires_at: String,
    session_id: String,
    user_id: String,
    organization_id: String,
}

/// `POST /auth/login`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    #[serde(default)]
    organization_id: String,
}

/// The routes, to be mounted under [`PREFIX`].
pub fn router(sessions: Arc<Sessions>, csrf: &Csrf) -> axum::Router {
    axum::Router::new()
        .route("/login", axum::routing::post(login))
        .route("/refresh", axum::routing::post(refresh))
        .route("/logout", axum::routing::post(logout))
        .route_layer(csrf.layer())
        .with_state(sessions)
}

fn client_of(client: &ClientInfo, headers: &HeaderMap) -> ClientContext {
    ClientContext {
        ip: client.ip,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect()),
    }
}

/// An error as JSON (`twig_web::json_error`); a 401 also clears the
/// cookie.
fn error(e: ApiError) -> Response {
    let mut response = twig_web::json_error(&e);
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().append(
            header::SET_COOKIE,
            twig_web::session::refresh_cookie().clear(),
        );
    }
    response
}

/// A signed-in answer: the access token in the body, the refresh token in
/// the cookie.
fn signed_in(sessions: &Sessions, tokens: &IssuedTokens, user_id: Uuid, org_id: Uuid) -> Response {
    let lifetime = (tokens.refresh_expires_at - sessions.now())
        .to_std()
        .unwrap_or_default();
    let cookie = match twig_web::session::set_refresh(tokens.refresh.expose(), lifetime) {
        Ok(cookie) => cookie,
        Err(e) => return error(ApiError::internal(&e)),
    };
    let body = SessionAnswer {
        access_token: tokens.access.expose().to_string(),
        access_expires_at: tokens
            .access_expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        session_id: tokens.session_id.to_string(),
        user_id: user_id.to_string(),
        organization_id: org_id.to_string(),
    };
    let mut response = (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// The session cookie's refresh token, if the request carries one.
fn presented(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    twig_web::session::refresh_cookie()
        .read(headers)
        .map_err(|e| ApiError::invalid_field("cookie", e.to_string()))
}

async fn login(
    State(sessions): State<Arc<Sessions>>,
    client: ClientInfo,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: LoginBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return error(ApiError::invalid_field(
                "body",
                format!("must be JSON with email and password: {e}"),
            ));
        }
    };
    let org = if body.organization_id.is_empty() {
        None
    } else {
        match Uuid::parse_str(&body.organization_id) {
            Ok(id) => Some(id),
            Err(_) => return error(ApiError::invalid_field("organization_id", "must be a UUID")),
        }
    };
    let context = client_of(&client, &headers);
    match sessions
        .login(&body.email, &body.password, org, &context)
        .await
    {
        Ok((user, org_id, tokens)) => signed_in(&sessions, &tokens, user.id, org_id),
        Err(e) => error(e.into()),
    }
}

async fn refresh(
    State(sessions): State<Arc<Sessions>>,
    client: ClientInfo,
    headers: HeaderMap,
) -> Response {
    let token = match presented(&headers) {
        Ok(Some(token)) => token,
        Ok(None) => return error(ApiError::unauthenticated("not signed in")),
        Err(e) => return error(e),
    };
    let context = client_of(&client, &headers);
    match sessions.refresh(&token, &context).await {
        Ok(tokens) => match sessions.owner_of(tokens.session_id).await {
            Ok((user_id, org_id)) => signed_in(&sessions, &tokens, user_id, org_id),
            Err(e) => error(e.into()),
        },
        Err(SessionError::RefreshRace) => (
            StatusCode::CONFLICT,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(serde_json::json!({
                "code": "refresh_race",
                "message": "another tab refreshed this session a moment ago; retry",
            })),
        )
            .into_response(),
        Err(e) => error(e.into()),
    }
}

async fn logout(
    State(sessions): State<Arc<Sessions>>,
    client: ClientInfo,
    headers: HeaderMap,
) -> Response {
    let token = match presented(&headers) {
        Ok(token) => token,
        Err(e) => return error(e),
    };
    if let Some(token) = token {
        let context = client_of(&client, &headers);
        if let Err(e) = sessions.logout_with_refresh(&token, &context).await {
            return error(e.into());
        }
    }
    (
        StatusCode::NO_CONTENT,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::SET_COOKIE,
                twig_web::session::refresh_cookie().clear(),
            ),
        ],
    )
        .into_response()
}
