//! The verify cache as the service uses it.

use crate::config::ApiKeysConfig;
use sea_orm::ConnectionTrait;
use twig_testkit::{Backend, TestDatabase};

use super::*;

const TTL: Duration = Duration::from_secs(60);

/// A service on a fresh SQLite database, keeping positive and negative
/// answers for a minute in a cache of `cap` answers.
async fn api_keys(cap: u64) -> (TestDatabase, ApiKeys) {
    let test_db = TestDatabase::new(Backend::Sqlite).await;
    let db = twig_db::connect(&test_db.url, 4).await.unwrap();
    twig_db::migrate::<twig_audit::Migrator>(&db).await.unwrap();
    twig_db::migrate::<crate::Migrator>(&db).await.unwrap();
    let config = ApiKeysConfig {
        verify_cache_ttl: TTL,
        negative_cache_ttl: TTL,
        ..ApiKeysConfig::default()
    };
    let mut keys = ApiKeys::new(
        db,
        config,
        Arc::new(twig_clock::SystemClock),
        Fanout::local(),
    );
    keys.cache = KeyCache::with_capacity(TTL, TTL, keys.fanout.freshness(), cap);
    (test_db, keys)
}

/// Unknown keys are kept too (negative answers), so a flood of distinct
/// unknown keys, ten times the cache's size, fills it: a valid key in use
/// meanwhile is still answered from memory afterwards, even after a
/// stretch of the flood longer than the cache with no use between (the
/// cache that started afresh when full lost it there). Its secret is
/// gone from the database by then, so only the cache can say yes.
#[tokio::test]
async fn a_flood_of_unknown_keys_keeps_a_valid_one_cached() {
    const CAP: u64 = 50;
    let (_db, keys) = api_keys(CAP).await;
    let owner = Principal {
        user_id: Uuid::new_v4(),
        org_id: Uuid::new_v4(),
        roles: Vec::new(),
        scopes: vec![Scope::Read],
        credential: Credential::Session {
            session_id: Uuid::new_v4(),
        },
        expires_at: None,
    };
    let minted = keys
        .create(&owner, "in use", &[Scope::Read], None, None)
        .await
        .unwrap();
    let valid = minted.secret.expose().to_string();
    keys.verify(&valid, Some(Scope::Read), None).await.unwrap();

    for n in 0..10 * CAP {
        let unknown = Token::generate(TokenKind::ApiKey);
        assert!(matches!(
            keys.verify(unknown.expose(), Some(Scope::Read), None).await,
            Err(KeyError::InvalidKey)
        ));
        if n < 5 * CAP && n % 10 == 0 {
            keys.verify(&valid, Some(Scope::Read), None).await.unwrap();
        }
    }

    // Behind the service's back: no announcement.
    keys.db
        .execute_unprepared("DELETE FROM api_key_secrets")
        .await
        .unwrap();
    let hit = keys
        .verify(&valid, Some(Scope::Read), None)
        .await
        .expect("still a cache hit");
    assert_eq!(
        hit.credential,
        Credential::ApiKey {
            key_id: minted.key.id
        }
    );

    keys.cache.clear();
    assert!(
        keys.verify(&valid, Some(Scope::Read), None).await.is_err(),
        "from the database, the key is refused"
    );
}

/// A revocation while a verification reads the database: the answer it
/// read is not kept.
#[test]
fn an_answer_read_across_a_change_is_not_kept() {
    let cache = KeyCache::new(TTL, TTL, twig_fanout::Freshness::always());
    let fetched = cache.generation();
    cache.forget_key(Uuid::new_v4());
    cache.put_unknown(fetched, TokenHash::of("t"));
    assert!(matches!(cache.get(&TokenHash::of("t")), Cached::Miss));
    cache.put_unknown(cache.generation(), TokenHash::of("t"));
    assert!(matches!(cache.get(&TokenHash::of("t")), Cached::Unknown));
}
