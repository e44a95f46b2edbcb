//! Two server processes on one PostgreSQL database and one Redis: a change
//! made on one replica reaches the other's cache within a second.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::twig_binary;
use tonic::Code;
use tonic::transport::Channel;
use twig_proto::apikeys::v1 as pb;
use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
use twig_proto::auth::v1 as apb;
use twig_proto::sessions::v1 as spb;
use twig_tests::{Backend, TestDatabase, bearer, sign_up_on, spawn_serve};

const INTERNAL: &str = "replicas-internal-token-0123456789abcdef";

fn replica(db_url: &str, redis_prefix: &str) -> Command {
    let mut cmd = Command::new(twig_binary());
    cmd.env("DATABASE_URL", db_url)
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("TWIG__REDIS__KEY_PREFIX", redis_prefix)
        // Long enough that only the fan-out can explain a sub-second change.
        .env("TWIG__API_KEYS__VERIFY_CACHE_TTL", "30s")
        .env("TWIG__SESSIONS__VERIFY_CACHE_TTL", "30s")
        .env("TWIG__AUTH__INTERNAL_TOKEN", INTERNAL)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn verify(channel: &Channel, key: &str) -> Result<pb::VerifyApiKeyResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::VerifyApiKeyRequest {
        key: key.into(),
        required_scope: apb::Scope::Read as i32,
        client_ip: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-twig-internal-token", INTERNAL.parse().unwrap());
    ApiKeyServiceClient::new(channel.clone())
        .verify_api_key(request)
        .await
        .map(|r| r.into_inner())
}

/// Polls `key` on `channel` until it is refused; returns how long it took.
async fn time_until_refused(channel: &Channel, key: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        match verify(channel, key).await {
            Err(e) if e.code() == Code::Unauthenticated => return start.elapsed(),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("the key still verified {limit:?} after the change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_rotation_reach_the_other_replica_within_a_second() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = twig_testkit::redis_prefix();
    // One after the other: the first one runs the migrations.
    let (mut a, chan_a) = spawn_serve(replica(&db.url, &prefix)).await;
    let (mut b, chan_b) = spawn_serve(replica(&db.url, &prefix)).await;

    let result = async {
        let token = sign_up_on(&chan_a, "replicas@example.com").await;
        let mut keys_a = ApiKeyServiceClient::new(chan_a.clone());
        let created = keys_a
            .create_api_key(bearer(
                &token,
                pb::CreateApiKeyRequest {
                    service_account_id: String::new(),
                    name: "replicated".into(),
                    scopes: vec![apb::Scope::Read as i32],
                    expires_at: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let key_id = created.key.unwrap().id;
        let old = created.secret;

        // B verifies (and caches for 30 s).
        verify(&chan_b, &old).await.unwrap();
        verify(&chan_b, &old).await.unwrap();

        // Rotation with no overlap on A: B refuses the old secret within 1 s.
        let rotated = keys_a
            .rotate_api_key(bearer(
                &token,
                pb::RotateApiKeyRequest {
                    key_id: key_id.clone(),
                    overlap_seconds: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let took = time_until_refused(&chan_b, &old, Duration::from_secs(3)).await;
        assert!(
            took < Duration::from_secs(1),
            "rotation reached B after {took:?}"
        );
        let new = rotated.secret;
        verify(&chan_b, &new).await.unwrap();
        verify(&chan_b, &new).await.unwrap();

        // Revocation on A: B refuses within 1 s.
        keys_a
            .revoke_api_key(bearer(&token, pb::RevokeApiKeyRequest { key_id }))
            .await
            .unwrap();
        let took = time_until_refused(&chan_b, &new, Duration::from_secs(3)).await;
        assert!(
            took < Duration::from_secs(1),
            "revocation reached B after {took:?}"
        );
        took
    }
    .await;
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("revocation visible on the other replica after {result:?}");
}

async fn verify_session(channel: &Channel, token: &str) -> Result<(), Code> {
    let mut request = tonic::Request::new(spb::VerifySessionRequest {
        access_token: token.into(),
    });
    request
        .metadata_mut()
        .insert("x-twig-internal-token", INTERNAL.parse().unwrap());
    spb::session_service_client::SessionServiceClient::new(channel.clone())
        .verify_session(request)
        .await
        .map(|_| ())
        .map_err(|e| e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_reaches_the_other_replica_within_a_second() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = twig_testkit::redis_prefix();
    let (mut a, chan_a) = spawn_serve(replica(&db.url, &prefix)).await;
    let (mut b, chan_b) = spawn_serve(replica(&db.url, &prefix)).await;
    let outcome = async {
        let mut sessions_a = spb::session_service_client::SessionServiceClient::new(chan_a.clone());
        let token = sign_up_on(&chan_a, "logout@example.com").await;
        // B verifies and caches the token for 30 s.
        verify_session(&chan_b, &token).await.unwrap();
        verify_session(&chan_b, &token).await.unwrap();
        sessions_a
            .logout(bearer(&token, spb::LogoutRequest {}))
            .await
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if verify_session(&chan_b, &token).await == Err(Code::Unauthenticated) {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the session still verified on B 3 s after logout on A");
    }
    .await;
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        outcome < Duration::from_secs(1),
        "logout reached B after {outcome:?}"
    );
}

/// Polls `refused` until it says true; returns how long that took.
async fn time_until(limit: Duration, mut refused: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if refused().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still accepted {limit:?} after the change");
}

/// With Redis gone, announcements are lost: a replica's cached answers
/// fall back to the one-second bound, however long they may be kept while
/// Redis is up, and its metrics say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_bounds_cached_answers_to_a_second() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let mut redis = twig_testkit::PrivateRedis::start();
    let prefix = twig_testkit::redis_prefix();
    let with_private_redis = || {
        let mut cmd = replica(&db.url, &prefix);
        cmd.env("REDIS_URL", redis.url())
            .env("TWIG__API_KEYS__VERIFY_CACHE_TTL", "60s");
        cmd
    };
    let (mut a, chan_a) = spawn_serve(with_private_redis()).await;
    let admin_b = twig_tests::free_addr();
    let mut cmd_b = with_private_redis();
    cmd_b.env("TWIG__SERVER__ADMIN_LISTEN", admin_b.to_string());
    let (mut b, chan_b, _) = twig_tests::spawn_serve_at(cmd_b, None).await;

    let outcome = async {
        let token = sign_up_on(&chan_a, "outage@example.com").await;
        let mut keys_a = ApiKeyServiceClient::new(chan_a.clone());
        let created = keys_a
            .create_api_key(bearer(
                &token,
                pb::CreateApiKeyRequest {
                    service_account_id: String::new(),
                    name: "outage".into(),
                    scopes: vec![apb::Scope::Read as i32],
                    expires_at: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let key_id = created.key.unwrap().id;
        let key = created.secret;
        // B verifies both and keeps the answers (60 s and 30 s).
        verify(&chan_b, &key).await.unwrap();
        verify_session(&chan_b, &token).await.unwrap();
        let before = twig_tests::scrape_metrics(admin_b);
        assert!(before.contains("twig_fanout_connected 1"), "{before}");

        // Redis goes away; A revokes the key and ends the session, and
        // cannot announce either.
        redis.stop();
        keys_a
            .revoke_api_key(bearer(&token, pb::RevokeApiKeyRequest { key_id }))
            .await
            .unwrap();
        spb::session_service_client::SessionServiceClient::new(chan_a.clone())
            .logout(bearer(&token, spb::LogoutRequest {}))
            .await
            .unwrap();
        let key_took = time_until(Duration::from_secs(10), async || {
            matches!(verify(&chan_b, &key).await, Err(e) if e.code() == Code::Unauthenticated)
        })
        .await;
        let session_took = time_until(Duration::from_secs(10), async || {
            verify_session(&chan_b, &token).await == Err(Code::Unauthenticated)
        })
        .await;
        let during = twig_tests::scrape_metrics(admin_b);
        (key_took, session_took, during)
    }
    .await;
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (key_took, session_took, during) = outcome;
    println!("during the outage: key refused after {key_took:?}, session after {session_took:?}");
    // The answers were stored before the outage: at most the one-second
    // bound (plus polling) once the subscription is seen down.
    assert!(key_took < Duration::from_millis(1500), "key: {key_took:?}");
    assert!(
        session_took < Duration::from_millis(1500),
        "session: {session_took:?}"
    );
    assert!(during.contains("twig_fanout_connected 0"), "{during}");
    for cache in ["apikeys", "sessions"] {
        assert!(
            during.contains(&format!(
                "twig_cache_outage_dropped_total{{cache=\"{cache}\"}}"
            )),
            "{cache}: {during}"
        );
    }
}
