//! Accounts by email, end to end over gRPC and HTTP/JSON, with the mail
//! read back from a real SMTP server (maildev): sign-up finished through
//! an emailed link, the answer for an address that has an account,
//! password reset, email verification. Every emailed token works once,
//! expires, is voided by a newer one, and is stored only as a hash; every
//! public answer is the same whether or not the email has an account.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use twig_crypto::{Token, TokenHash, TokenKind};
use twig_proto::sessions::v1 as pb;
use twig_tests::{
    Backend, Maildev, PASSWORD, ReceivedMail, TestApp, bearer, email, token_from_link,
};

/// A password other than [`PASSWORD`].
const NEW_PASSWORD: &str = "a brand new password for the tests";

// ----- helpers shared with `invitations.rs` ------------------------------------

/// An app whose mail goes to maildev, with cheap password hashing.
pub(crate) async fn app_with_mail(backend: Backend) -> TestApp {
    TestApp::builder(backend)
        .weak_hashing()
        .with_smtp()
        .spawn()
        .await
}

/// One plain HTTP/1.1 answer.
pub(crate) struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The status line as sent.
    pub status_line: String,
    /// Every header, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The headers that do not change from one answer to the next
    /// (everything but `date`), sorted.
    pub fn stable_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(k, _)| k != "date")
            .cloned()
            .collect();
        headers.sort();
        headers
    }
}

/// `method path` on the app's one port, with a bearer and a JSON body when
/// given: the edge's HTTP/JSON routes.
pub(crate) async fn http(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> HttpAnswer {
    let mut head = format!("{method} {path} HTTP/1.1");
    if let Some(token) = token {
        head.push_str(&format!("\r\nAuthorization: Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            head.push_str("\r\nContent-Type: application/json");
            json.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    let (status_line, headers, body) = twig_tests::http1(app.addr, &head, &body).await;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status_line}"));
    HttpAnswer {
        status,
        status_line,
        headers,
        body,
    }
}

/// The field an INVALID_ARGUMENT names (its first field violation).
pub(crate) fn field_of(status: &Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

/// Asserts `result` is the one answer to a link token that does not work
/// (INVALID_ARGUMENT naming `token`); returns its message.
#[track_caller]
pub(crate) fn refused_token<T: std::fmt::Debug>(what: &str, result: Result<T, Status>) -> String {
    let status = match result {
        Ok(answer) => panic!("{what}: accepted ({answer:?})"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert_eq!(field_of(&status), "token", "{what}: {status:?}");
    status.message().to_string()
}

/// Asserts an HTTP answer is a refused link token (400 naming `token`).
#[track_caller]
pub(crate) fn refused_token_over_http(what: &str, answer: &HttpAnswer) {
    assert_eq!(answer.status, 400, "{what}: {}", answer.text());
    let json = answer.json();
    assert_eq!(json["code"], "INVALID_ARGUMENT", "{what}: {json}");
    assert_eq!(
        json["fieldViolations"][0]["field"], "token",
        "{what}: {json}"
    );
}

/// The token of the link in `mail`, checking the link goes to `path` on
/// the configured base and the text and HTML parts carry the same one.
#[track_caller]
pub(crate) fn link_token_of(mail: &ReceivedMail, path: &str) -> String {
    assert!(
        mail.header("content-type")
            .is_some_and(|t| t.starts_with("multipart/alternative")),
        "{:?}",
        mail.headers
    );
    assert!(
        !mail.text.trim().is_empty() && !mail.html.trim().is_empty(),
        "{mail:#?}"
    );
    let links: Vec<&String> = mail.links.iter().filter(|l| l.contains("token=")).collect();
    assert_eq!(links.len(), 1, "one link with a token: {:?}", mail.links);
    let link = links[0];
    assert!(
        link.starts_with(&format!("{}{path}?token=", twig_tests::TEST_LINK_BASE)),
        "{link}"
    );
    assert!(mail.text.contains(link.as_str()), "{}", mail.text);
    assert!(
        mail.html.contains(&format!("href=\"{link}\"")),
        "{}",
        mail.html
    );
    token_from_link(link).expect("a token in the link")
}

/// The token of a link in a mail to `address` about `subject` that is not
/// one of `known`, checked as [`link_token_of`] does; waits for it (at most
/// 10 s). (maildev's order of messages sent within one clock tick is not
/// theirs, so the newest is told apart by what was seen before.)
pub(crate) async fn fresh_token(
    app: &TestApp,
    address: &str,
    subject: &str,
    path: &str,
    known: &[&str],
) -> String {
    for _ in 0..100 {
        for mail in app.mail_to(address).await {
            if mail.subject.contains(subject) {
                let token = link_token_of(&mail, path);
                if !known.contains(&token.as_str()) {
                    return token;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no new mail to {address} about {subject:?}");
}

/// The messages to `address` whose subject contains `subject`, waiting
/// until there are `count` of them (at most 10 s).
pub(crate) async fn mails_about(
    app: &TestApp,
    address: &str,
    subject: &str,
    count: usize,
) -> Vec<ReceivedMail> {
    for _ in 0..100 {
        let found: Vec<ReceivedMail> = app
            .mail_to(address)
            .await
            .into_iter()
            .filter(|m| m.subject.contains(subject))
            .collect();
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {count} mails to {address} about {subject:?}");
}

/// Everything maildev holds for `address` after the background work of
/// the requests before has had time to run and the mailer is empty.
pub(crate) async fn mail_settled(app: &TestApp, address: &str) -> Vec<ReceivedMail> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.mailer.flush().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Maildev::from_env().received(address).await
}

/// `FindUser` by email, as an internal caller.
pub(crate) async fn find_user(app: &TestApp, address: &str) -> Option<pb::User> {
    app.sessions()
        .find_user(app.internal(pb::FindUserRequest {
            by: Some(pb::find_user_request::By::Email(address.into())),
        }))
        .await
        .expect("FindUser")
        .into_inner()
        .user
}

/// Logs `address` in with `password` to `org` (or their oldest
/// membership).
pub(crate) async fn login_with(
    app: &TestApp,
    address: &str,
    password: &str,
    org: &str,
) -> Result<pb::SessionTokens, Status> {
    app.sessions()
        .login(pb::LoginRequest {
            email: address.into(),
            password: password.into(),
            organization_id: org.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

/// `GetCurrentUser` with an access token.
pub(crate) async fn me(app: &TestApp, access: &str) -> Result<pb::GetCurrentUserResponse, Status> {
    app.sessions()
        .get_current_user(bearer(access, pb::GetCurrentUserRequest {}))
        .await
        .map(|r| r.into_inner())
}

/// The organisations of a `GetCurrentUser` answer with their roles.
pub(crate) fn memberships(me: &pb::GetCurrentUserResponse) -> Vec<(String, pb::Role)> {
    let mut out: Vec<_> = me
        .memberships
        .iter()
        .map(|m| {
            (
                m.organization.as_ref().expect("an organisation").id.clone(),
                pb::Role::try_from(m.role).expect("a role"),
            )
        })
        .collect();
    out.sort();
    out
}

/// The number of rows `sql` counts (`SELECT COUNT(*) AS n …`).
pub(crate) async fn count(app: &TestApp, sql: &str) -> i64 {
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .unwrap()
        .expect("a row");
    row.try_get::<i64>("", "n").unwrap()
}

async fn sign_up(
    app: &TestApp,
    address: &str,
    password: &str,
) -> Result<pb::SignUpResponse, Status> {
    app.sessions()
        .sign_up(pb::SignUpRequest {
            email: address.into(),
            password: password.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Follows a link given [`PASSWORD`] (what a sign-up link needs).
pub(crate) async fn verify_email(
    app: &TestApp,
    token: &str,
) -> Result<pb::VerifyEmailResponse, Status> {
    verify_email_with(app, token, PASSWORD).await
}

async fn verify_email_with(
    app: &TestApp,
    token: &str,
    password: &str,
) -> Result<pb::VerifyEmailResponse, Status> {
    app.sessions()
        .verify_email(pb::VerifyEmailRequest {
            token: token.into(),
            password: password.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn request_reset(app: &TestApp, address: &str) -> Result<(), Status> {
    app.sessions()
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: address.into(),
        })
        .await
        .map(|r| assert_eq!(r.into_inner(), pb::RequestPasswordResetResponse {}))
}

async fn reset_password(
    app: &TestApp,
    token: &str,
    new_password: &str,
) -> Result<pb::ResetPasswordResponse, Status> {
    app.sessions()
        .reset_password(pb::ResetPasswordRequest {
            token: token.into(),
            new_password: new_password.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Result<pb::SessionTokens, Status> {
    app.sessions()
        .refresh(pb::RefreshRequest {
            refresh_token: refresh_token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

/// Provisions a password-less, unverified account for `address` into
/// `org` (the internal `ProvisionUser`, as SSO does) and gives it a
/// session there (`IssueSession`): an account whose email is not proved.
pub(crate) async fn unverified_account(
    app: &TestApp,
    address: &str,
    org: &str,
) -> (pb::User, pb::SessionTokens) {
    let provisioned = app
        .sessions()
        .provision_user(app.internal(pb::ProvisionUserRequest {
            email: address.into(),
            display_name: String::new(),
            organization_id: org.into(),
            role: pb::Role::Member as i32,
        }))
        .await
        .expect("ProvisionUser")
        .into_inner();
    assert!(provisioned.created_user && provisioned.joined);
    let user = provisioned.user.expect("a user");
    assert!(!user.email_verified, "{user:?}");
    let tokens = app
        .sessions()
        .issue_session(app.internal(pb::IssueSessionRequest {
            user_id: user.id.clone(),
            organization_id: org.into(),
            method: format!("sso:{}", uuid::Uuid::new_v4()),
            ip: String::new(),
            user_agent: String::new(),
        }))
        .await
        .expect("IssueSession")
        .into_inner()
        .tokens
        .expect("tokens");
    (user, tokens)
}

/// One audit event as the tests look at it.
pub(crate) struct Event {
    /// The organisation it is logged in.
    pub org: Option<String>,
    /// Who acted.
    pub actor: Option<String>,
    /// What it happened to.
    pub target: Option<String>,
    /// Its details.
    pub details: serde_json::Value,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "org {:?} actor {:?} target {:?} {}",
            self.org, self.actor, self.target, self.details
        )
    }
}

/// The audit events with `action`, oldest first.
pub(crate) async fn events(app: &TestApp, action: &str) -> Vec<Event> {
    twig_audit::events_with_action(&app.db, action)
        .await
        .unwrap()
        .into_iter()
        .map(|e| Event {
            org: e.org_id.map(|o| o.to_string()),
            actor: e.actor,
            target: e.target,
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::Null),
        })
        .collect()
}

/// The organisations of `events`, sorted.
pub(crate) fn orgs_of(events: &[Event]) -> Vec<String> {
    let mut orgs: Vec<String> = events.iter().filter_map(|e| e.org.clone()).collect();
    orgs.sort();
    orgs
}

// ----- sign-up -------------------------------------------------------------------

async fn sign_up_by_mail_makes_the_account_when_the_link_is_followed(backend: Backend) {
    let app = app_with_mail(backend).await;
    let ada = email("signup");
    let answer = app
        .sessions()
        .sign_up(pb::SignUpRequest {
            email: ada.clone(),
            password: PASSWORD.into(),
            display_name: "Ada Lovelace".into(),
            organization_name: "Analytical Engines".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer, pb::SignUpResponse {});

    // One mail, both parts, one link; no account until it is followed.
    let mail = mails_about(&app, &ada, "Verify your email", 1).await;
    assert_eq!(mail.len(), 1, "{mail:#?}");
    assert_eq!(mail[0].subject, "Verify your email for twig");
    let token = link_token_of(&mail[0], "/verify-email");
    assert!(token.starts_with("twig_ev_"), "{token}");
    assert!(find_user(&app, &ada).await.is_none(), "no account yet");
    assert_eq!(
        login_with(&app, &ada, PASSWORD, "")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let done = verify_email(&app, &token).await.unwrap();
    let user = done.user.expect("the new account");
    let org = done.organization.expect("the organisation it owns");
    let tokens = done.tokens.expect("its first session");
    assert_eq!(user.email, ada);
    assert_eq!(user.display_name, "Ada Lovelace");
    assert!(user.email_verified && !user.disabled, "{user:?}");
    assert_eq!(org.name, "Analytical Engines");

    // The session works: who am I, refresh, and the password logs in.
    let who = me(&app, &tokens.access_token).await.unwrap();
    assert_eq!(who.user.as_ref().unwrap().id, user.id);
    assert!(who.user.as_ref().unwrap().email_verified);
    assert_eq!(who.organization_id, org.id);
    assert_eq!(memberships(&who), [(org.id.clone(), pb::Role::Owner)]);
    let principal = app.verify(&tokens.access_token).await.unwrap();
    assert_eq!(principal.roles, ["owner"]);
    let refreshed = refresh(&app, &tokens.refresh_token).await.unwrap();
    me(&app, &refreshed.access_token).await.unwrap();
    let login = login_with(&app, &ada, PASSWORD, "").await.unwrap();
    me(&app, &login.access_token).await.unwrap();

    let started = events(&app, "user.sign_up_started").await;
    assert_eq!(started.len(), 1, "{started:?}");
    let signed_up = events(&app, "user.signed_up").await;
    assert_eq!(signed_up.len(), 1, "{signed_up:?}");
    assert_eq!(signed_up[0].org.as_deref(), Some(org.id.as_str()));

    // The same link again, and links that never were: one answer.
    let replayed = refused_token("the link again", verify_email(&app, &token).await);
    let never_issued = Token::generate(TokenKind::EmailVerification);
    let reset_kind = Token::generate(TokenKind::PasswordReset);
    let changed = format!("{}x", &token[..token.len() - 1]);
    for (what, presented) in [
        ("empty", ""),
        ("a guess", "twig_ev_guess"),
        ("well formed, never issued", never_issued.expose()),
        ("a reset token's form", reset_kind.expose()),
        ("one character changed", changed.as_str()),
    ] {
        let message = refused_token(what, verify_email(&app, presented).await);
        assert_eq!(message, replayed, "{what}: the same answer as a replay");
    }
    let again = find_user(&app, &ada).await.expect("the account");
    assert_eq!(again.id, user.id, "still the one account");
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM organizations").await,
        1
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM memberships").await,
        1
    );
    app.stop().await;
}

async fn an_expired_sign_up_link_makes_nothing(backend: Backend) {
    let app = app_with_mail(backend).await;
    let ada = email("signup-expired");
    sign_up(&app, &ada, PASSWORD).await.unwrap();
    let token = fresh_token(&app, &ada, "Verify your email", "/verify-email", &[]).await;
    // The default lifetime is 24 hours.
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    refused_token("an expired sign-up link", verify_email(&app, &token).await);
    assert!(find_user(&app, &ada).await.is_none(), "no account");
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM organizations").await,
        0
    );

    // A new sign-up sends a new link, which works.
    sign_up(&app, &ada, PASSWORD).await.unwrap();
    let fresh = fresh_token(
        &app,
        &ada,
        "Verify your email",
        "/verify-email",
        &[token.as_str()],
    )
    .await;
    assert_ne!(fresh, token);
    verify_email(&app, &fresh).await.unwrap();
    refused_token(
        "the expired link after all",
        verify_email(&app, &token).await,
    );
    app.stop().await;
}

/// Someone signs up an address that is not theirs, with a password of
/// theirs; then the address's owner signs up. Each link finishes only its
/// own sign-up, and only with the password chosen for it: the intruder's
/// link, followed by the owner (who does not know that password), makes
/// nothing; the owner's link makes the account and voids the intruder's.
async fn each_sign_up_link_finishes_only_its_own_sign_up(backend: Backend) {
    let app = app_with_mail(backend).await;
    let ada = email("signup-twice");
    let intruder_password = "the intruder's own password";
    sign_up(&app, &ada, intruder_password).await.unwrap();
    let intruders = fresh_token(&app, &ada, "Verify your email", "/verify-email", &[]).await;
    sign_up(&app, &ada, PASSWORD).await.unwrap();
    let owners = fresh_token(
        &app,
        &ada,
        "Verify your email",
        "/verify-email",
        &[intruders.as_str()],
    )
    .await;
    assert_ne!(intruders, owners);

    for (what, password) in [
        ("no password", ""),
        ("the owner's password", PASSWORD),
        ("a password too long to hash", &"x".repeat(5000)),
    ] {
        let refused = verify_email_with(&app, &intruders, password)
            .await
            .expect_err(what);
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}: {refused:?}");
        assert_eq!(field_of(&refused), "password", "{what}: {refused:?}");
    }
    assert!(find_user(&app, &ada).await.is_none(), "no account");
    let refusals = events(&app, "user.sign_up_refused").await;
    assert_eq!(refusals.len(), 1, "the wrong password: {refusals:?}");
    assert_eq!(refusals[0].details["reason"], "wrong_password");

    let done = verify_email(&app, &owners).await.unwrap();
    assert_eq!(done.user.unwrap().email, ada);
    login_with(&app, &ada, PASSWORD, "").await.unwrap();
    assert_eq!(
        login_with(&app, &ada, intruder_password, "")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    // The intruder's link is void now, even with the intruder's password.
    refused_token(
        "the other sign-up link after the account was made",
        verify_email_with(&app, &intruders, intruder_password).await,
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM organizations").await,
        1
    );
    app.stop().await;
}

async fn sign_up_for_an_existing_email_answers_alike_and_mails_a_note(backend: Backend) {
    let app = app_with_mail(backend).await;
    let existing = email("signup-existing");
    let unknown = email("signup-unknown");
    let account = app.sign_up(&existing).await;
    let user = account.user.unwrap();
    let org = account.organization.unwrap();
    let other_password = "someone else's password here";
    let users_before = count(&app, "SELECT COUNT(*) AS n FROM users").await;
    let orgs_before = count(&app, "SELECT COUNT(*) AS n FROM organizations").await;

    // gRPC: the same message and the same metadata.
    let ask = |address: &str| pb::SignUpRequest {
        email: address.into(),
        password: other_password.into(),
        display_name: "Mallory".into(),
        organization_name: "Takeover Ltd".into(),
    };
    let for_existing = app.sessions().sign_up(ask(&existing)).await.unwrap();
    let for_unknown = app.sessions().sign_up(ask(&unknown)).await.unwrap();
    assert_eq!(for_existing.get_ref(), for_unknown.get_ref());
    assert_eq!(
        prost::Message::encode_to_vec(for_existing.get_ref()),
        prost::Message::encode_to_vec(for_unknown.get_ref())
    );
    let metadata = |r: &tonic::Response<pb::SignUpResponse>| {
        let mut m: Vec<(String, String)> = r
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .filter(|(k, _)| k.as_str() != "date")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
            .collect();
        m.sort();
        m
    };
    assert_eq!(metadata(&for_existing), metadata(&for_unknown));

    // HTTP/JSON: the same bytes.
    let body = |address: &str| {
        serde_json::json!({
            "email": address,
            "password": other_password,
            "displayName": "Mallory",
            "organizationName": "Takeover Ltd",
        })
    };
    let h_existing = http(&app, "POST", "/v1/sign-up", None, Some(body(&existing))).await;
    let h_unknown = http(&app, "POST", "/v1/sign-up", None, Some(body(&unknown))).await;
    assert_eq!(h_existing.status, 200, "{}", h_existing.text());
    assert_eq!(h_existing.status_line, h_unknown.status_line);
    assert_eq!(h_existing.stable_headers(), h_unknown.stable_headers());
    assert_eq!(
        h_existing.body,
        h_unknown.body,
        "{} vs {}",
        h_existing.text(),
        h_unknown.text()
    );

    // The address with an account gets a note (twice), never a link.
    let notes = mails_about(&app, &existing, "You already have a twig account", 2).await;
    for note in &notes {
        assert!(!note.text.trim().is_empty() && !note.html.trim().is_empty());
        assert!(
            note.links
                .iter()
                .any(|l| l == &format!("{}/sign-in", twig_tests::TEST_LINK_BASE)),
            "{:?}",
            note.links
        );
        assert!(
            note.links.iter().all(|l| !l.contains("token=")),
            "no token in the note: {:?}",
            note.links
        );
    }
    let links = mails_about(&app, &unknown, "Verify your email", 2).await;
    assert_eq!(links.len(), 2);
    let settled = mail_settled(&app, &existing).await;
    assert_eq!(settled.len(), 2, "only the two notes: {settled:#?}");
    assert!(
        settled.iter().all(|m| !m.subject.contains("Verify")),
        "{settled:#?}"
    );

    // The account is untouched: no second account or organisation, the
    // same password, no link for its address.
    assert_eq!(find_user(&app, &existing).await.unwrap().id, user.id);
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM users").await,
        users_before
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM organizations").await,
        orgs_before
    );
    assert_eq!(
        count(
            &app,
            &format!("SELECT COUNT(*) AS n FROM email_links WHERE email = '{existing}'")
        )
        .await,
        0
    );
    let login = login_with(&app, &existing, PASSWORD, "").await.unwrap();
    assert_eq!(
        memberships(&me(&app, &login.access_token).await.unwrap()),
        [(org.id.clone(), pb::Role::Owner)]
    );
    assert_eq!(
        login_with(&app, &existing, other_password, "")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    app.stop().await;
}

// ----- password reset -------------------------------------------------------------

async fn password_reset_ends_every_session_and_mails_a_note(backend: Backend) {
    let app = app_with_mail(backend).await;
    let ada = email("reset");
    let bob = email("reset-bob");
    let signed_up = app.sign_up(&ada).await;
    let ada_user = signed_up.user.unwrap();
    let ada_org = signed_up.organization.unwrap().id;
    let first = signed_up.tokens.unwrap();
    // Ada is also a member of Bob's organisation, with a session there
    // (add_member signs her in once more).
    let bob_up = app.sign_up(&bob).await;
    let bob_org = bob_up.organization.unwrap().id;
    app.add_member(
        &bob_up.tokens.unwrap().access_token,
        &bob_org,
        &ada,
        pb::Role::Member,
    )
    .await;
    let second = login_with(&app, &ada, PASSWORD, "").await.unwrap();
    let in_bobs = login_with(&app, &ada, PASSWORD, &bob_org).await.unwrap();
    let sessions: Vec<pb::SessionTokens> = vec![first, second, in_bobs];
    for s in &sessions {
        me(&app, &s.access_token).await.unwrap();
    }

    request_reset(&app, &ada).await.unwrap();
    let mail = mails_about(&app, &ada, "Reset your twig password", 1).await;
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].text.contains("within 30 minutes"),
        "{}",
        mail[0].text
    );
    let token = link_token_of(&mail[0], "/reset-password");
    assert!(token.starts_with("twig_pr_"), "{token}");

    let done = reset_password(&app, &token, NEW_PASSWORD).await.unwrap();
    assert_eq!(
        done.sessions_ended, 4,
        "every session of the account ends (three here, one from add_member)"
    );
    for (i, s) in sessions.iter().enumerate() {
        assert_eq!(
            me(&app, &s.access_token).await.unwrap_err().code(),
            Code::Unauthenticated,
            "session {i}'s access token"
        );
        assert_eq!(
            app.verify(&s.access_token).await.unwrap_err().code(),
            Code::Unauthenticated,
            "session {i} verified"
        );
        assert_eq!(
            refresh(&app, &s.refresh_token).await.unwrap_err().code(),
            Code::Unauthenticated,
            "session {i}'s refresh token"
        );
    }
    let fresh = login_with(&app, &ada, NEW_PASSWORD, "").await.unwrap();
    let who = me(&app, &fresh.access_token).await.unwrap();
    assert!(who.user.unwrap().email_verified);
    assert_eq!(
        login_with(&app, &ada, PASSWORD, "")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let changed = mails_about(&app, &ada, "Your twig password was changed", 1).await;
    assert_eq!(changed.len(), 1);
    assert!(
        changed[0].links.iter().all(|l| !l.contains("token=")),
        "{:?}",
        changed[0].links
    );

    // Logged in each organisation of the account.
    let target = format!("user:{}", ada_user.id);
    let mut both = vec![ada_org.clone(), bob_org.clone()];
    both.sort();
    let requested = events(&app, "user.password_reset_requested").await;
    assert_eq!(orgs_of(&requested), both, "{requested:?}");
    let reset = events(&app, "user.password_reset").await;
    assert_eq!(orgs_of(&reset), both, "{reset:?}");
    for e in requested.iter().chain(&reset) {
        assert_eq!(e.target.as_deref(), Some(target.as_str()), "{e:?}");
    }
    assert!(
        reset.iter().all(|e| e.details["sessions_ended"] == 4),
        "{reset:?}"
    );

    // The token again: refused, audited, nothing changes.
    refused_token(
        "a used reset token",
        reset_password(&app, &token, "the attacker's own password").await,
    );
    assert_eq!(
        login_with(&app, &ada, "the attacker's own password", "")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    me(&app, &fresh.access_token)
        .await
        .expect("the new session lives");
    let refused = events(&app, "link.refused").await;
    assert_eq!(orgs_of(&refused), both, "{refused:?}");
    for e in &refused {
        assert_eq!(e.details["flow"], "password_reset", "{e:?}");
        assert_eq!(e.details["reason"], "used", "{e:?}");
        assert_eq!(e.target.as_deref(), Some(target.as_str()), "{e:?}");
    }
    app.stop().await;
}

async fn reset_tokens_that_do_not_work_change_nothing(backend: Backend) {
    let app = app_with_mail(backend).await;
    let ada = email("reset-refused");
    let signed_up = app.sign_up(&ada).await;
    let ada_org = signed_up.organization.unwrap().id;
    let session = signed_up.tokens.unwrap();

    // Guesses and tokens of another kind: refused, audited nowhere (they
    // name no account).
    let never_issued = Token::generate(TokenKind::PasswordReset);
    let other_kind = Token::generate(TokenKind::EmailVerification);
    let mut messages = Vec::new();
    for (what, presented) in [
        ("empty", ""),
        ("a guess", "twig_pr_guess"),
        ("well formed, never issued", never_issued.expose()),
        ("a verification token's form", other_kind.expose()),
    ] {
        messages.push(refused_token(
            what,
            reset_password(&app, presented, NEW_PASSWORD).await,
        ));
    }
    assert!(events(&app, "link.refused").await.is_empty());

    // A token after a newer one was issued.
    request_reset(&app, &ada).await.unwrap();
    let older = fresh_token(&app, &ada, "Reset your", "/reset-password", &[]).await;
    request_reset(&app, &ada).await.unwrap();
    let newer = fresh_token(
        &app,
        &ada,
        "Reset your",
        "/reset-password",
        &[older.as_str()],
    )
    .await;
    assert_ne!(older, newer);
    messages.push(refused_token(
        "a superseded reset token",
        reset_password(&app, &older, NEW_PASSWORD).await,
    ));
    let refused = events(&app, "link.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].org.as_deref(), Some(ada_org.as_str()));
    assert_eq!(refused[0].details["reason"], "used");
    // Nothing changed: the old password and the session still work.
    me(&app, &session.access_token).await.unwrap();
    login_with(&app, &ada, PASSWORD, "").await.unwrap();

    // An expired token (30 minutes by default).
    request_reset(&app, &ada).await.unwrap();
    let expiring = fresh_token(
        &app,
        &ada,
        "Reset your",
        "/reset-password",
        &[older.as_str(), newer.as_str()],
    )
    .await;
    app.clock.advance(Duration::from_secs(30 * 60 + 1));
    messages.push(refused_token(
        "an expired reset token",
        reset_password(&app, &expiring, NEW_PASSWORD).await,
    ));
    let refused = events(&app, "link.refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[1].details["reason"], "expired");
    assert_eq!(refused[1].details["flow"], "password_reset");
    login_with(&app, &ada, PASSWORD, "").await.unwrap();
    assert!(events(&app, "user.password_reset").await.is_empty());

    // Every refusal says the same.
    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "one answer for every refused token: {messages:#?}"
    );
    app.stop().await;
}

async fn reset_for_an_unknown_email_answers_the_same_and_sends_nothing(backend: Backend) {
    let app = app_with_mail(backend).await;
    let existing = email("reset-existing");
    let unknown = email("reset-unknown");
    app.sign_up(&existing).await;

    let ask = |address: &str| pb::RequestPasswordResetRequest {
        email: address.into(),
    };
    let for_unknown = app
        .sessions()
        .request_password_reset(ask(&unknown))
        .await
        .unwrap();
    let for_existing = app
        .sessions()
        .request_password_reset(ask(&existing))
        .await
        .unwrap();
    assert_eq!(for_existing.get_ref(), for_unknown.get_ref());
    assert_eq!(
        prost::Message::encode_to_vec(for_existing.get_ref()),
        prost::Message::encode_to_vec(for_unknown.get_ref())
    );
    let h_unknown = http(
        &app,
        "POST",
        "/v1/password-reset",
        None,
        Some(serde_json::json!({ "email": unknown })),
    )
    .await;
    let h_existing = http(
        &app,
        "POST",
        "/v1/password-reset",
        None,
        Some(serde_json::json!({ "email": existing })),
    )
    .await;
    assert_eq!(h_existing.status, 200, "{}", h_existing.text());
    assert_eq!(h_existing.status_line, h_unknown.status_line);
    assert_eq!(h_existing.stable_headers(), h_unknown.stable_headers());
    assert_eq!(h_existing.body, h_unknown.body);
    // A malformed address is refused for its form, whoever asks.
    let bad = app
        .sessions()
        .request_password_reset(ask("not an email"))
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), field_of(&bad).as_str()),
        (Code::InvalidArgument, "email")
    );

    assert_eq!(
        mails_about(&app, &existing, "Reset your twig password", 2)
            .await
            .len(),
        2
    );
    let to_unknown = mail_settled(&app, &unknown).await;
    assert!(
        to_unknown.is_empty(),
        "nothing for an unknown address: {to_unknown:#?}"
    );
    assert_eq!(
        count(
            &app,
            &format!("SELECT COUNT(*) AS n FROM email_links WHERE email = '{unknown}'")
        )
        .await,
        0
    );
    let requested = events(&app, "user.password_reset_requested").await;
    assert_eq!(
        requested.len(),
        2,
        "the account's two requests only: {requested:?}"
    );
    app.stop().await;
}

// ----- HTTP/JSON ------------------------------------------------------------------

async fn sign_up_and_reset_over_http_json(backend: Backend) {
    let app = app_with_mail(backend).await;
    let ada = email("http-signup");
    let started = http(
        &app,
        "POST",
        "/v1/sign-up",
        None,
        Some(serde_json::json!({
            "email": ada,
            "password": PASSWORD,
            "organizationName": "Curl Works",
        })),
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text());
    assert_eq!(started.json(), serde_json::json!({}));
    let token = fresh_token(&app, &ada, "Verify your email", "/verify-email", &[]).await;
    // The link alone makes nothing: it needs the password chosen at
    // sign-up (400, naming the field), and still works afterwards.
    let without = http(
        &app,
        "POST",
        "/v1/sign-up:verify",
        None,
        Some(serde_json::json!({ "token": token })),
    )
    .await;
    assert_eq!(without.status, 400, "{}", without.text());
    assert_eq!(without.json()["fieldViolations"][0]["field"], "password");
    let verified = http(
        &app,
        "POST",
        "/v1/sign-up:verify",
        None,
        Some(serde_json::json!({ "token": token, "password": PASSWORD })),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.text());
    let json = verified.json();
    assert_eq!(json["user"]["email"], ada.as_str());
    assert_eq!(json["user"]["emailVerified"], true);
    assert_eq!(json["organization"]["name"], "Curl Works");
    let org = json["organization"]["id"].as_str().unwrap().to_string();
    let access = json["tokens"]["accessToken"].as_str().unwrap().to_string();
    let who = http(&app, "GET", "/v1/me", Some(&access), None).await;
    assert_eq!(who.status, 200, "{}", who.text());
    let who = who.json();
    assert_eq!(who["user"]["emailVerified"], true, "{who}");
    assert_eq!(who["memberships"][0]["organization"]["id"], org.as_str());
    assert_eq!(who["memberships"][0]["role"], "ROLE_OWNER");
    let again = http(
        &app,
        "POST",
        "/v1/sign-up:verify",
        None,
        Some(serde_json::json!({ "token": token, "password": PASSWORD })),
    )
    .await;
    refused_token_over_http("the sign-up link again", &again);
    assert!(!again.text().contains(&token[8..]), "{}", again.text());

    // Password reset.
    let asked = http(
        &app,
        "POST",
        "/v1/password-reset",
        None,
        Some(serde_json::json!({ "email": ada })),
    )
    .await;
    assert_eq!(asked.status, 200, "{}", asked.text());
    assert_eq!(asked.json(), serde_json::json!({}));
    let reset_token = fresh_token(&app, &ada, "Reset your", "/reset-password", &[]).await;
    let complete = |token: &str| serde_json::json!({ "token": token, "newPassword": NEW_PASSWORD });
    let done = http(
        &app,
        "POST",
        "/v1/password-reset:complete",
        None,
        Some(complete(&reset_token)),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["sessionsEnded"], 1, "{}", done.text());
    let dead = http(&app, "GET", "/v1/me", Some(&access), None).await;
    assert_eq!(dead.status, 401, "{}", dead.text());
    let login = |password: &str| serde_json::json!({ "email": ada, "password": password });
    let new_login = http(
        &app,
        "POST",
        "/v1/sessions:login",
        None,
        Some(login(NEW_PASSWORD)),
    )
    .await;
    assert_eq!(new_login.status, 200, "{}", new_login.text());
    let old_login = http(
        &app,
        "POST",
        "/v1/sessions:login",
        None,
        Some(login(PASSWORD)),
    )
    .await;
    assert_eq!(old_login.status, 401, "{}", old_login.text());
    let replay = http(
        &app,
        "POST",
        "/v1/password-reset:complete",
        None,
        Some(complete(&reset_token)),
    )
    .await;
    refused_token_over_http("the reset link again", &replay);
    assert!(
        !replay.text().contains(&reset_token[8..]),
        "{}",
        replay.text()
    );
    mails_about(&app, &ada, "Your twig password was changed", 1).await;

    // An expired sign-up link, over HTTP too.
    let bea = email("http-signup-expired");
    let started = http(
        &app,
        "POST",
        "/v1/sign-up",
        None,
        Some(serde_json::json!({ "email": bea, "password": PASSWORD })),
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.text());
    let expiring = fresh_token(&app, &bea, "Verify your email", "/verify-email", &[]).await;
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let late = http(
        &app,
        "POST",
        "/v1/sign-up:verify",
        None,
        Some(serde_json::json!({ "token": expiring })),
    )
    .await;
    refused_token_over_http("an expired sign-up link", &late);
    app.stop().await;
}

// ----- email verification -----------------------------------------------------------

async fn get_current_user_shows_email_verified(backend: Backend) {
    let app = app_with_mail(backend).await;
    // The operator's account: the operator proved the address.
    let owner = app.sign_up(&email("verified-owner")).await;
    let org = owner.organization.unwrap().id;
    let owner_tokens = owner.tokens.unwrap();
    let who = me(&app, &owner_tokens.access_token).await.unwrap();
    assert!(who.user.unwrap().email_verified);
    let over_http = http(
        &app,
        "GET",
        "/v1/me",
        Some(&owner_tokens.access_token),
        None,
    )
    .await;
    assert_eq!(
        over_http.json()["user"]["emailVerified"],
        true,
        "{}",
        over_http.text()
    );

    // A provisioned account has not proved its address.
    let sam = email("unverified");
    let (_, sam_tokens) = unverified_account(&app, &sam, &org).await;
    let who = me(&app, &sam_tokens.access_token).await.unwrap();
    assert!(!who.user.unwrap().email_verified);
    let over_http = http(&app, "GET", "/v1/me", Some(&sam_tokens.access_token), None).await;
    assert_eq!(over_http.status, 200, "{}", over_http.text());
    let json = over_http.json();
    assert_eq!(json["user"]["email"], sam.as_str(), "{json}");
    assert!(
        json["user"]["emailVerified"].is_null() || json["user"]["emailVerified"] == false,
        "{json}"
    );

    // It asks for a link and follows it.
    app.sessions()
        .request_email_verification(bearer(
            &sam_tokens.access_token,
            pb::RequestEmailVerificationRequest {},
        ))
        .await
        .unwrap();
    let mail = mails_about(&app, &sam, "Verify your email", 1).await;
    let token = link_token_of(&mail[0], "/verify-email");
    let done = verify_email(&app, &token).await.unwrap();
    assert!(done.user.as_ref().unwrap().email_verified, "{done:?}");
    assert!(
        done.organization.is_none() && done.tokens.is_none(),
        "a verification link signs nobody up: {done:?}"
    );
    let who = me(&app, &sam_tokens.access_token).await.unwrap();
    assert!(who.user.unwrap().email_verified);
    let over_http = http(&app, "GET", "/v1/me", Some(&sam_tokens.access_token), None).await;
    assert_eq!(over_http.json()["user"]["emailVerified"], true);
    refused_token("a used verification link", verify_email(&app, &token).await);
    let verified = events(&app, "user.email_verified").await;
    assert_eq!(verified.len(), 1, "{verified:?}");

    // A verified account asks again: nothing is sent.
    app.sessions()
        .request_email_verification(bearer(
            &sam_tokens.access_token,
            pb::RequestEmailVerificationRequest {},
        ))
        .await
        .unwrap();
    assert_eq!(mail_settled(&app, &sam).await.len(), 1);
    app.stop().await;
}

// ----- storage ----------------------------------------------------------------------

async fn emailed_tokens_are_stored_only_as_hashes(backend: Backend) {
    let app = app_with_mail(backend).await;
    let sign_up_password = "sign-up password never stored";
    let ada = email("hashes");
    sign_up(&app, &ada, sign_up_password).await.unwrap();
    let sign_up_token = fresh_token(&app, &ada, "Verify your email", "/verify-email", &[]).await;
    // While the sign-up is pending, too.
    let (_, pending) = app.stored_text(&["email_links"]).await;
    assert!(pending.contains(&ada), "{pending}");
    assert!(!pending.contains(&sign_up_token[8..]), "{pending}");
    assert!(!pending.contains(sign_up_password), "{pending}");
    let done = verify_email_with(&app, &sign_up_token, sign_up_password)
        .await
        .unwrap();
    let org = done.organization.unwrap().id;

    request_reset(&app, &ada).await.unwrap();
    let reset_token = fresh_token(&app, &ada, "Reset your", "/reset-password", &[]).await;
    let reset_password_text = "reset password never stored";
    reset_password(&app, &reset_token, reset_password_text)
        .await
        .unwrap();
    let owner = login_with(&app, &ada, reset_password_text, "")
        .await
        .unwrap()
        .access_token;

    let sam = email("hashes-unverified");
    let (_, sam_tokens) = unverified_account(&app, &sam, &org).await;
    app.sessions()
        .request_email_verification(bearer(
            &sam_tokens.access_token,
            pb::RequestEmailVerificationRequest {},
        ))
        .await
        .unwrap();
    let verify_token = fresh_token(&app, &sam, "Verify your email", "/verify-email", &[]).await;

    let bea = email("hashes-invitee");
    let invitation = app
        .invite(&owner, &org, &bea, pb::Role::Member)
        .await
        .unwrap();
    let first_invite = fresh_token(&app, &bea, "You are invited", "/accept-invitation", &[]).await;
    app.sessions()
        .resend_invitation(bearer(
            &owner,
            pb::ResendInvitationRequest {
                organization_id: org.clone(),
                invitation_id: invitation.id.clone(),
            },
        ))
        .await
        .unwrap();
    let second_invite = fresh_token(
        &app,
        &bea,
        "You are invited",
        "/accept-invitation",
        &[first_invite.as_str()],
    )
    .await;
    let invitee_password = "invitee password never stored";
    let invited_sign_up = || pb::SignUpWithInvitationRequest {
        token: second_invite.clone(),
        password: invitee_password.into(),
        display_name: String::new(),
    };
    app.sessions()
        .sign_up_with_invitation(invited_sign_up())
        .await
        .unwrap();
    // Refusals are audited: their rows must not hold the token either.
    refused_token(
        "a used reset token",
        reset_password(&app, &reset_token, "x password for the replay").await,
    );
    refused_token(
        "a used invitation",
        app.sessions()
            .sign_up_with_invitation(invited_sign_up())
            .await,
    );
    assert!(!events(&app, "link.refused").await.is_empty());
    assert!(!events(&app, "invitation.refused").await.is_empty());

    let tables = [
        "email_links",
        "invitations",
        "audit_events",
        "users",
        "sessions",
    ];
    let (rows, stored) = app.stored_text(&tables).await;
    assert!(rows > 10, "{rows} rows");
    // The dump reads values: it holds the addresses.
    for address in [&ada, &sam, &bea] {
        assert!(
            stored.contains(address.as_str()),
            "{address} not in the dump"
        );
    }
    for token in [
        &sign_up_token,
        &reset_token,
        &verify_token,
        &first_invite,
        &second_invite,
    ] {
        let body = &token[8..];
        assert!(body.len() >= 40, "{token}");
        assert!(
            !stored.contains(body),
            "a token is stored as it was mailed: {token}"
        );
    }
    for password in [sign_up_password, reset_password_text, invitee_password] {
        assert!(
            !stored.contains(password),
            "a password is stored: {password}"
        );
    }
    // What is stored is the SHA-256 of each token.
    let hex = |t: &str| -> String {
        TokenHash::of(t)
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    for token in [&sign_up_token, &reset_token, &verify_token] {
        let found = stored
            .lines()
            .filter(|l| l.starts_with("email_links.token_hash="))
            .any(|l| l.ends_with(&hex(token)));
        assert!(found, "the hash of {token} is not in email_links");
    }
    let invitation_hashes: Vec<&str> = stored
        .lines()
        .filter(|l| l.starts_with("invitations.token_hash="))
        .collect();
    assert!(
        invitation_hashes
            .iter()
            .any(|l| l.ends_with(&hex(&second_invite))),
        "{invitation_hashes:?}"
    );
    assert!(
        !stored.contains(&hex(&first_invite)),
        "a resend replaces the stored hash"
    );
    app.stop().await;
}

on_both_backends!(
    sign_up_by_mail_makes_the_account_when_the_link_is_followed,
    an_expired_sign_up_link_makes_nothing,
    each_sign_up_link_finishes_only_its_own_sign_up,
    sign_up_for_an_existing_email_answers_alike_and_mails_a_note,
    password_reset_ends_every_session_and_mails_a_note,
    reset_tokens_that_do_not_work_change_nothing,
    reset_for_an_unknown_email_answers_the_same_and_sends_nothing,
    sign_up_and_reset_over_http_json,
    get_current_user_shows_email_verified,
    emailed_tokens_are_stored_only_as_hashes,
);
