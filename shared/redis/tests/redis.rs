//! twig-redis against real Redis: the shared one of the test run (each test
//! under a prefix of its own) or, to stop it, a private one.

use std::time::Duration;

use twig_redis::{Command, Locks, RedisError, RedisHandle, RedisOptions, SeenOnce};
use twig_testkit::{PrivateRedis, redis_prefix, redis_url};

async fn handle(prefix: &str) -> RedisHandle {
    RedisHandle::connect(&redis_url(), prefix, RedisOptions::default())
        .await
        .expect("Redis is needed (TWIG_TEST_REDIS_URL)")
}

/// Two handles on one Redis under one prefix: two replicas.
async fn two_replicas() -> (RedisHandle, RedisHandle, String) {
    let prefix = redis_prefix();
    (handle(&prefix).await, handle(&prefix).await, prefix)
}

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(30);

// ---- the handle -----------------------------------------------------------

#[tokio::test]
async fn every_key_carries_the_prefix() {
    let prefix = redis_prefix();
    let h = handle(&prefix).await;
    let key = h.key("a");
    assert_eq!(key.as_str(), format!("{prefix}a"));
    let _: () = h
        .query(&Command::new("SET").key(&key).arg("1").arg("PX").arg(60_000))
        .await
        .unwrap();
    // Seen from a handle without a prefix, the key is the prefixed one.
    let bare = handle("").await;
    let got: Option<String> = bare
        .query(&Command::new("GET").key(&bare.key(&format!("{prefix}a"))))
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some("1"));
    let none: Option<String> = bare
        .query(&Command::new("GET").key(&bare.key("a")))
        .await
        .unwrap();
    assert_eq!(none, None);
}

#[tokio::test]
async fn an_unreachable_redis_is_a_typed_error_at_connect() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = RedisHandle::connect(
        &format!("redis://127.0.0.1:{port}"),
        "p:",
        RedisOptions {
            command_timeout: SHORT,
            connect_timeout: SHORT,
        },
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = RedisHandle::connect("http://nope", "p:", RedisOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RedisError::Url(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_fails_while_redis_is_down_and_reconnects_by_itself() {
    let mut server = PrivateRedis::start();
    let h = RedisHandle::connect(
        &server.url(),
        "p:",
        RedisOptions {
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
        },
    )
    .await
    .unwrap();
    let ping = Command::new("PING");
    let _: String = h.query(&ping).await.unwrap();
    server.stop();
    for _ in 0..3 {
        let err = h.query::<String>(&ping).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }
    server.restart();
    let mut answered = false;
    for _ in 0..40 {
        if h.query::<String>(&ping).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the handle is used again once Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_times_out() {
    let server = PrivateRedis::start();
    let h = RedisHandle::connect(&server.url(), "p:", RedisOptions::default())
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    server.pause();
    let started = std::time::Instant::now();
    let err = h.query::<String>(&Command::new("PING")).await.unwrap_err();
    assert!(matches!(err, RedisError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The next command tries a new connection, which hangs too: then the
    // attempts pause, and commands fail at once instead of each waiting.
    let err = h.query::<String>(&Command::new("PING")).await.unwrap_err();
    assert!(matches!(err, RedisError::Timeout(_)), "{err:?}");
    let started = std::time::Instant::now();
    let err = h.query::<String>(&Command::new("PING")).await.unwrap_err();
    assert!(matches!(err, RedisError::Reconnecting), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(100));
    server.resume();
    let mut answered = false;
    for _ in 0..40 {
        if h.query::<String>(&Command::new("PING")).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "back once thawed");
}

// ---- locks ----------------------------------------------------------------

#[tokio::test]
async fn of_two_contenders_one_wins() {
    let (a, b, _) = two_replicas().await;
    let (a, b) = (Locks::new(a), Locks::new(b));
    let (ga, gb) = tokio::join!(a.acquire("jwks", LONG), b.acquire("jwks", LONG));
    let (ga, gb) = (ga.unwrap(), gb.unwrap());
    assert!(ga.is_some() ^ gb.is_some(), "exactly one holds the lock");
    let winner = ga.or(gb).unwrap();
    assert!(winner.is_held().await.unwrap());
    assert!(a.acquire("jwks", LONG).await.unwrap().is_none());
    assert!(
        b.acquire("other", LONG).await.unwrap().is_some(),
        "names apart"
    );
    assert!(winner.release().await.unwrap());
    assert!(
        b.acquire("jwks", LONG).await.unwrap().is_some(),
        "free again"
    );
}

#[tokio::test]
async fn many_contenders_one_winner() {
    let prefix = redis_prefix();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let locks = Locks::new(handle(&prefix).await);
        tasks.push(tokio::spawn(async move {
            locks.acquire("refresh", LONG).await.unwrap().map(|g| {
                std::mem::forget(g);
            })
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn expiry_lets_the_next_in_with_a_larger_token() {
    let (a, b, _) = two_replicas().await;
    let (a, b) = (Locks::new(a), Locks::new(b));
    let first = a.acquire("token-refresh", SHORT).await.unwrap().unwrap();
    assert!(b.acquire("token-refresh", SHORT).await.unwrap().is_none());
    tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    let second = b
        .acquire("token-refresh", LONG)
        .await
        .unwrap()
        .expect("expired");
    assert!(
        second.token() > first.token(),
        "{} > {}",
        second.token(),
        first.token()
    );
    // Tokens keep growing across releases too.
    let t2 = second.token();
    assert!(second.release().await.unwrap());
    let third = a.acquire("token-refresh", LONG).await.unwrap().unwrap();
    assert!(third.token() > t2);
    third.release().await.unwrap();
}

#[tokio::test]
async fn a_stale_holder_cannot_release_or_extend_the_new_holders_lock() {
    let (a, b, _) = two_replicas().await;
    let (a, b) = (Locks::new(a), Locks::new(b));
    let stale = a.acquire("jwks", SHORT).await.unwrap().unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    let current = b.acquire("jwks", LONG).await.unwrap().unwrap();

    assert!(!stale.is_held().await.unwrap());
    assert!(!a.is_current("jwks", stale.token()).await.unwrap());
    assert!(b.is_current("jwks", current.token()).await.unwrap());
    assert!(!stale.extend(LONG).await.unwrap(), "cannot extend");
    assert!(!stale.release().await.unwrap(), "cannot release");
    assert!(current.is_held().await.unwrap(), "the new holder keeps it");
    assert!(a.acquire("jwks", LONG).await.unwrap().is_none());

    // The fence of the protected resource takes the newer token and then
    // refuses the older one.
    assert!(b.fence("jwks-cache", current.token()).await.unwrap());
    assert!(
        b.fence("jwks-cache", current.token()).await.unwrap(),
        "again"
    );
    assert!(current.extend(LONG).await.unwrap());
    current.release().await.unwrap();
}

#[tokio::test]
async fn the_fence_refuses_a_token_older_than_one_it_admitted() {
    let (a, b, _) = two_replicas().await;
    let (a, b) = (Locks::new(a), Locks::new(b));
    let old = a.acquire("write", SHORT).await.unwrap().unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    let new = b.acquire("write", LONG).await.unwrap().unwrap();
    assert!(b.fence("resource", new.token()).await.unwrap());
    assert!(
        !a.fence("resource", old.token()).await.unwrap(),
        "the paused old holder's write is refused"
    );
    new.release().await.unwrap();
}

#[tokio::test]
async fn extend_keeps_the_lock_past_its_first_ttl() {
    let (a, b, _) = two_replicas().await;
    let (a, b) = (Locks::new(a), Locks::new(b));
    let g = a.acquire("long-work", SHORT).await.unwrap().unwrap();
    assert!(g.extend(LONG).await.unwrap());
    tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    assert!(g.is_held().await.unwrap());
    assert!(b.acquire("long-work", LONG).await.unwrap().is_none());
    g.release().await.unwrap();
}

#[tokio::test]
async fn a_dropped_guard_releases_its_lock() {
    let (a, b, _) = two_replicas().await;
    let (a, b) = (Locks::new(a), Locks::new(b));
    drop(a.acquire("drop", LONG).await.unwrap().unwrap());
    let mut got = None;
    for _ in 0..50 {
        got = b.acquire("drop", LONG).await.unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(got.is_some(), "released in the background");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_lock_is_an_error_not_a_lock() {
    let mut server = PrivateRedis::start();
    let h = RedisHandle::connect(
        &server.url(),
        "p:",
        RedisOptions {
            command_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_millis(300),
        },
    )
    .await
    .unwrap();
    let locks = Locks::new(h.clone());
    let held = locks.acquire("x", LONG).await.unwrap().unwrap();
    server.stop();
    let err = locks.acquire("x", LONG).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(locks.acquire("y", LONG).await.unwrap_err().is_unavailable());
    assert!(held.extend(LONG).await.unwrap_err().is_unavailable());
    assert!(held.is_held().await.unwrap_err().is_unavailable());
    let seen = SeenOnce::redis(h);
    assert!(
        seen.first_sight("n", "i", LONG)
            .await
            .unwrap_err()
            .is_unavailable()
    );
}

#[tokio::test]
async fn tokens_stay_ahead_after_redis_forgets_everything() {
    let mut server = PrivateRedis::start();
    let locks = Locks::new(
        RedisHandle::connect(&server.url(), "p:", RedisOptions::default())
            .await
            .unwrap(),
    );
    let before = locks.acquire("x", LONG).await.unwrap().unwrap().token();
    // A Redis without persistence comes back empty.
    server.restart();
    let mut after = None;
    for _ in 0..40 {
        if let Ok(Some(g)) = locks.acquire("x", LONG).await {
            after = Some(g.token());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = after.expect("Redis is back");
    assert!(after > before, "{after} > {before}");
}

#[tokio::test]
async fn bad_lock_names_are_refused() {
    let locks = Locks::new(handle(&redis_prefix()).await);
    for name in ["", "a b", "a*", "x\n"] {
        assert!(matches!(
            locks.acquire(name, LONG).await,
            Err(RedisError::InvalidName { .. })
        ));
    }
    assert!(matches!(
        locks.acquire("ok", Duration::ZERO).await,
        Err(RedisError::InvalidTtl(_))
    ));
}

// ---- seen once ------------------------------------------------------------

#[tokio::test]
async fn the_second_sight_is_refused_across_replicas() {
    let (a, b, _) = two_replicas().await;
    let (a, b) = (SeenOnce::redis(a), SeenOnce::redis(b));
    assert!(a.first_sight("saml", "assertion-1", LONG).await.unwrap());
    assert!(!b.first_sight("saml", "assertion-1", LONG).await.unwrap());
    assert!(!a.first_sight("saml", "assertion-1", LONG).await.unwrap());
    assert!(
        b.first_sight("oidc", "assertion-1", LONG).await.unwrap(),
        "namespaces apart"
    );
}

#[tokio::test]
async fn of_concurrent_sightings_one_is_first() {
    let prefix = redis_prefix();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let seen = SeenOnce::redis(handle(&prefix).await);
        tasks.push(tokio::spawn(async move {
            seen.first_sight("code", "c1", LONG).await.unwrap()
        }));
    }
    let mut first = 0;
    for t in tasks {
        first += usize::from(t.await.unwrap());
    }
    assert_eq!(first, 1);
}

#[tokio::test]
async fn a_sighting_expires_in_redis_and_in_memory() {
    let (a, b, _) = two_replicas().await;
    for (one, other) in [(SeenOnce::redis(a), SeenOnce::redis(b)), {
        let m = SeenOnce::memory(100);
        (m.clone(), m)
    }] {
        assert!(one.first_sight("nonce", "n1", SHORT).await.unwrap());
        assert!(!other.first_sight("nonce", "n1", SHORT).await.unwrap());
        tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
        assert!(
            other.first_sight("nonce", "n1", SHORT).await.unwrap(),
            "expired"
        );
        assert!(!one.first_sight("nonce", "n1", SHORT).await.unwrap());
    }
}
