//! Sessions: token rotation, reuse, races, lifetimes and storage.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;
use twig_crypto::{Token, TokenHash, TokenKind};
use twig_proto::sessions::v1 as pb;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

async fn refresh(app: &TestApp, token: &str) -> Result<pb::SessionTokens, tonic::Status> {
    app.sessions()
        .refresh(pb::RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.unwrap())
}

async fn reused_refresh_token_revokes_the_whole_family(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let first = app.login(&ada).await;
    let second = refresh(&app, &first.refresh_token).await.unwrap();
    let third = refresh(&app, &second.refresh_token).await.unwrap();
    app.verify(&third.access_token).await.unwrap();

    // An attacker replays the first refresh token long after it was used.
    app.clock.advance(Duration::from_secs(60));
    let replay = refresh(&app, &first.refresh_token).await.unwrap_err();
    assert_eq!(replay.code(), Code::Unauthenticated);
    // The whole family is dead: the newest access and refresh tokens too.
    assert_eq!(
        app.verify(&third.access_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        refresh(&app, &third.refresh_token)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let events = twig_audit::events_with_action(&app.db, "session.refresh_reuse")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].target.as_deref(),
        Some(format!("session:{}", first.session_id).as_str())
    );
}

async fn concurrent_refreshes_leave_exactly_one_family(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let tokens = app.login(&ada).await;
    let attempts =
        futures::future::join_all((0..8).map(|_| refresh(&app, &tokens.refresh_token))).await;
    let winners: Vec<_> = attempts.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{attempts:?}");
    for loser in attempts.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(loser.code(), Code::Unauthenticated, "{loser:?}");
    }
    // The winner's family survives and goes on rotating.
    let winner = winners[0];
    app.verify(&winner.access_token).await.unwrap();
    let next = refresh(&app, &winner.refresh_token).await.unwrap();
    app.verify(&next.access_token).await.unwrap();
    let live: i64 = count(
        &app,
        &format!(
            "SELECT COUNT(*) AS n FROM refresh_tokens WHERE used_at IS NULL AND session_id = {}",
            uuid_literal(&app, &tokens.session_id)
        ),
    )
    .await;
    assert_eq!(live, 1, "one unused refresh token in the family");
}

fn uuid_literal(app: &TestApp, id: &str) -> String {
    let id = uuid::Uuid::parse_str(id).unwrap();
    if app.db.get_database_backend() == sea_orm::DbBackend::Postgres {
        format!("'{id}'::uuid")
    } else {
        format!("X'{}'", id.simple())
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn lifetimes_are_enforced_also_through_refresh(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            c.edit::<twig_sessions::SessionsConfig>(|s| s.access_ttl = Duration::from_secs(60));
            c.edit::<twig_sessions::SessionsConfig>(|s| {
                s.refresh_idle_ttl = Duration::from_secs(600)
            });
            c.edit::<twig_sessions::SessionsConfig>(|s| {
                s.refresh_absolute_ttl = Duration::from_secs(1500)
            });
        })
        .spawn()
        .await;
    let ada = email("ada");
    app.sign_up(&ada).await;

    // Access token: dead after its lifetime, even when cached.
    let t = app.login(&ada).await;
    app.verify(&t.access_token).await.unwrap();
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(
        app.verify(&t.access_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Idle timeout: a refresh token unused past the idle lifetime is dead.
    app.clock.advance(Duration::from_secs(540));
    assert_eq!(
        refresh(&app, &t.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Absolute lifetime: refreshing often does not extend past it.
    let mut t = app.login(&ada).await;
    for _ in 0..2 {
        app.clock.advance(Duration::from_secs(500));
        t = refresh(&app, &t.refresh_token).await.unwrap();
    }
    // 1000 s in; tokens are capped at the absolute end (1500 s).
    let end = t.refresh_expires_at.unwrap().seconds - t.access_expires_at.unwrap().seconds;
    assert!(end >= 0);
    app.clock.advance(Duration::from_secs(499));
    let t = refresh(&app, &t.refresh_token).await.unwrap();
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(
        refresh(&app, &t.refresh_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        app.verify(&t.access_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

async fn database_holds_only_token_hashes(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let t = app.login(&ada).await;
    let backend_kind = app.db.get_database_backend();
    let access_hash = TokenHash::of(&t.access_token);
    let stored = app
        .db
        .query_one_raw(Statement::from_string(
            backend_kind,
            format!(
                "SELECT access_token_hash FROM sessions WHERE id = {}",
                uuid_literal(&app, &t.session_id)
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<Vec<u8>>("", "access_token_hash")
        .unwrap();
    assert_eq!(stored, access_hash.as_bytes().to_vec());

    // No text column anywhere holds a token or the password.
    let (rows, dump) = app
        .stored_text(&["users", "sessions", "refresh_tokens", "audit_events"])
        .await;
    assert!(rows > 0 && dump.contains("$argon2id$"), "{dump}");
    for secret in [t.access_token.as_str(), t.refresh_token.as_str(), PASSWORD] {
        assert!(!dump.contains(secret), "a secret is stored in clear");
    }
    let hash: String = app
        .db
        .query_one_raw(Statement::from_string(
            backend_kind,
            "SELECT password_hash FROM users".to_string(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "password_hash")
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
}

async fn a_token_from_before_login_is_never_valid_after(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    // An attacker plants a well-formed token before the victim logs in.
    let planted = Token::generate(TokenKind::SessionAccess);
    let login = app
        .sessions()
        .login(bearer(
            planted.expose(),
            pb::LoginRequest {
                email: ada.clone(),
                password: PASSWORD.into(),
                organization_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(login.access_token, planted.expose());
    assert_eq!(
        app.verify(planted.expose()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // And a token of an earlier session is not the new session's.
    let earlier = app.login(&ada).await;
    let later = app.login(&ada).await;
    assert_ne!(earlier.session_id, later.session_id);
    app.sessions()
        .logout(bearer(&earlier.access_token, pb::LogoutRequest {}))
        .await
        .unwrap();
    assert_eq!(
        app.verify(&earlier.access_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.verify(&later.access_token).await.unwrap();
}

async fn old_hash_parameters_are_upgraded_at_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let weak =
        twig_crypto::PasswordHasher::with_params(twig_crypto::argon2_params(64, 1, 1).unwrap(), 1)
            .hash(PASSWORD)
            .await
            .unwrap();
    let backend_kind = app.db.get_database_backend();
    let placeholder = if backend_kind == sea_orm::DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    app.db
        .execute_raw(Statement::from_sql_and_values(
            backend_kind,
            format!("UPDATE users SET password_hash = {placeholder}"),
            [weak.clone().into()],
        ))
        .await
        .unwrap();
    app.login(&ada).await;
    let now: String = app
        .db
        .query_one_raw(Statement::from_string(
            backend_kind,
            "SELECT password_hash FROM users".to_string(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "password_hash")
        .unwrap();
    assert_ne!(now, weak);
    assert!(now.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{now}");
    app.login(&ada).await;
}

on_both_backends!(
    reused_refresh_token_revokes_the_whole_family,
    concurrent_refreshes_leave_exactly_one_family,
    lifetimes_are_enforced_also_through_refresh,
    database_holds_only_token_hashes,
    a_token_from_before_login_is_never_valid_after,
    old_hash_parameters_are_upgraded_at_login,
);
