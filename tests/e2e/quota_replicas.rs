//! Quota across processes: a limit changed on one replica applies on the
//! other within a second, and Redis stopped under a running server fails
//! open — visibly, in metrics and logs.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::twig_binary;
use tonic::transport::Channel;
use twig_proto::apikeys::v1 as kpb;
use twig_proto::auth::v1 as apb;
use twig_proto::quota::v1 as pb;
use twig_tests::{Backend, TestDatabase, bearer, sign_up_on, spawn_serve};

const INTERNAL: &str = "quota-replicas-internal-token-0123456789";

/// A server process, killed when dropped (also when an assertion fails).
struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(db_url: &str, redis_url: &str, redis_prefix: &str) -> Command {
    let mut cmd = Command::new(twig_binary());
    cmd.env("DATABASE_URL", db_url)
        .env("REDIS_URL", redis_url)
        .env("TWIG__REDIS__KEY_PREFIX", redis_prefix)
        .env("TWIG__QUOTA__STORE", "redis")
        // Limits of their own are for plans with custom limits.
        .env("TWIG__PLANS__DEFAULT_PLAN", "enterprise")
        .env("TWIG__AUTH__INTERNAL_TOKEN", INTERNAL)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn check(channel: &Channel, subject: &str, org: &str) -> pb::CheckResponse {
    let mut request = tonic::Request::new(pb::CheckRequest {
        subject: subject.into(),
        cost: 1,
        org_id: org.into(),
    });
    request
        .metadata_mut()
        .insert("x-twig-internal-token", INTERNAL.parse().unwrap());
    pb::quota_service_client::QuotaServiceClient::new(channel.clone())
        .check(request)
        .await
        .expect("check")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_changes_reach_every_replica_within_a_second() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = twig_testkit::redis_prefix();
    let redis = twig_testkit::redis_url();
    // One after the other: the first one runs the migrations.
    let (a, chan_a) = spawn_serve(server(&db.url, &redis, &prefix)).await;
    let _a = Replica(a);
    let (b, chan_b) = spawn_serve(server(&db.url, &redis, &prefix)).await;
    let _b = Replica(b);

    let token = sign_up_on(&chan_a, "quota-replicas@example.com").await;
    let key = kpb::api_key_service_client::ApiKeyServiceClient::new(chan_a.clone())
        .create_api_key(bearer(
            &token,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "limited".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let key_subject = format!("key:{}", key.id);
    let org = key.organization_id.clone();

    // B has looked the key's limit up (and cached "the default").
    let before = check(&chan_b, &key_subject, &org).await;
    assert_eq!(
        (before.limit, before.counted_subject.as_str()),
        (100, key_subject.as_str())
    );

    pb::quota_service_client::QuotaServiceClient::new(chan_a.clone())
        .set_limit(bearer(
            &token,
            pb::SetLimitRequest {
                limit: Some(pb::Limit {
                    subject: format!("org:{org}"),
                    limit: 7,
                    period: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    buckets: 0,
                    shadow: false,
                    updated_at: None,
                    updated_by: String::new(),
                }),
            },
        ))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let d = check(&chan_b, &key_subject, &org).await;
        if d.limit == 7 {
            assert_eq!(d.counted_subject, format!("org:{org}"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "B still applied the old limit after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "limit change applied on the other replica after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_under_a_running_server_fails_open_visibly() {
    let mut redis = twig_testkit::PrivateRedis::start();
    let db = TestDatabase::new(Backend::Sqlite).await;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = server(&db.url, &redis.url(), "q:");
    cmd.env("TWIG__SERVER__ADMIN_LISTEN", admin.to_string())
        .env("TWIG__QUOTA__ON_STORE_ERROR", "open")
        .stdout(Stdio::from(logs.reopen().unwrap()));
    let (child, channel) = spawn_serve(cmd).await;
    let mut replica = Replica(child);

    let counted = check(&channel, "key:k", "").await;
    assert!(counted.allowed && !counted.fail_open && counted.remaining == 99);

    redis.stop();
    let open = check(&channel, "key:k", "").await;
    assert!(open.allowed && open.fail_open, "{open:?}");
    let metrics = tokio::task::spawn_blocking(move || twig_tests::scrape_metrics(admin))
        .await
        .unwrap();
    let has = |needle: &str| metrics.lines().any(|l| l.starts_with(needle));
    assert!(
        has(r#"twig_quota_checks_total{decision="fail_open"}"#),
        "{metrics}"
    );
    assert!(has("twig_quota_store_up 0"), "{metrics}");

    redis.restart();
    let started = Instant::now();
    loop {
        let d = check(&channel, "key:k", "").await;
        if !d.fail_open {
            // The restarted Redis is empty: counting starts afresh.
            assert_eq!(d.remaining, 99);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still failing open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = tokio::task::spawn_blocking(move || twig_tests::scrape_metrics(admin))
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "twig_quota_store_up 1"),
        "{metrics}"
    );

    let _ = replica.0.kill();
    let _ = replica.0.wait();
    let mut written = String::new();
    std::fs::File::open(logs.path())
        .unwrap()
        .read_to_string(&mut written)
        .unwrap();
    assert!(written.contains("quota store unreachable"), "{written}");
    assert!(written.contains("open: admitting uncounted"), "{written}");
}
