//! The verify cache as the service uses it.

use std::time::Duration;

use crate::config::SessionsConfig;
use sea_orm::ConnectionTrait;
use twig_crypto::{PasswordHasher, Token, TokenKind};
use twig_testkit::{Backend, TestDatabase};

use super::*;

/// A service on a fresh SQLite database, keeping answers for a minute in
/// a cache of `cap` tokens.
async fn sessions(cap: u64) -> (TestDatabase, Sessions) {
    let test_db = TestDatabase::new(Backend::Sqlite).await;
    let db = twig_db::connect(&test_db.url, 4).await.unwrap();
    twig_db::migrate::<twig_audit::Migrator>(&db).await.unwrap();
    twig_db::migrate::<crate::Migrator>(&db).await.unwrap();
    let config = SessionsConfig {
        verify_cache_ttl: Duration::from_secs(60),
        ..SessionsConfig::default()
    };
    let hasher = PasswordHasher::with_params(twig_crypto::argon2_params(8, 1, 1).unwrap(), 1);
    let mut sessions = Sessions::new(
        db,
        config,
        hasher,
        Arc::new(twig_clock::SystemClock),
        Fanout::local(),
        twig_mail::Mailer::start(
            &twig_config::Config::default(),
            Arc::new(twig_clock::SystemClock),
        )
        .unwrap(),
    );
    sessions.cache =
        VerifyCache::with_capacity(Duration::from_secs(60), sessions.fanout.freshness(), cap);
    (test_db, sessions)
}

/// A flood of distinct unknown tokens, ten times the cache's size, while
/// a valid token is being used: its next verification is still answered
/// from memory (its session row is gone from the database by then, so
/// only the cache can say yes).
#[tokio::test]
async fn a_flood_of_unknown_tokens_keeps_a_valid_one_cached() {
    const CAP: u64 = 50;
    let (_db, sessions) = sessions(CAP).await;
    sessions
        .create_account(
            "test",
            "flood@example.com",
            "a long enough password",
            "",
            "",
        )
        .await
        .unwrap();
    let (_, _, tokens) = sessions
        .login(
            "flood@example.com",
            "a long enough password",
            None,
            &ClientContext::default(),
        )
        .await
        .unwrap();
    let valid = tokens.access.expose().to_string();
    let user = sessions.verify(&valid).await.unwrap().user_id;

    for n in 0..10 * CAP {
        let unknown = Token::generate(TokenKind::SessionAccess);
        assert!(matches!(
            sessions.verify(unknown.expose()).await,
            Err(SessionError::InvalidToken)
        ));
        if n % 10 == 0 {
            sessions.verify(&valid).await.unwrap();
        }
    }

    // Behind the service's back: no announcement, so a database lookup
    // would refuse the token, and only a cache hit accepts it.
    sessions
        .db
        .execute_unprepared("DELETE FROM sessions")
        .await
        .unwrap();
    let hit = sessions.verify(&valid).await.expect("still a cache hit");
    assert_eq!(hit.user_id, user);

    sessions.cache.clear();
    assert!(
        sessions.verify(&valid).await.is_err(),
        "from the database, the token is refused"
    );
}
