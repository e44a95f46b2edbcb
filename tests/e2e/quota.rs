//! Quota: the default limit, limits of their own, shadow mode, usage,
//! enforcement on API-key requests, Redis shared by replicas and Redis
//! stopped mid-test.

use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use tonic::Code;
use tonic_types::StatusExt;
use twig_proto::apikeys::v1 as kpb;
use twig_proto::auth::v1 as apb;
use twig_proto::quota::v1 as pb;
use twig_quota::{OnStoreError, QuotaStore};
use twig_tests::{Backend, TestApp, bearer, email};

/// Where the app under test keeps its counts.
#[derive(Debug, Clone, Copy)]
enum Counts {
    Memory,
    Redis,
}

async fn app(backend: Backend, counts: Counts) -> TestApp {
    TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            if let Counts::Redis = counts {
                c.redis.url = Some(twig_config::Secret::new(twig_testkit::redis_url()));
                c.redis.key_prefix = twig_testkit::redis_prefix();
                c.edit::<twig_quota::QuotaConfig>(|s| s.store = QuotaStore::Redis);
            }
        })
        .spawn()
        .await
}

async fn check_in(
    app: &TestApp,
    subject: &str,
    org: &str,
    cost: u64,
) -> Result<pb::CheckResponse, tonic::Status> {
    app.quota()
        .check(app.internal(pb::CheckRequest {
            subject: subject.into(),
            cost,
            org_id: org.into(),
        }))
        .await
        .map(|r| r.into_inner())
}

async fn check(
    app: &TestApp,
    subject: &str,
    cost: u64,
) -> Result<pb::CheckResponse, tonic::Status> {
    check_in(app, subject, "", cost).await
}

/// An owner's access token, and an API key of theirs with `scopes`.
async fn owner_with_key(app: &TestApp, scopes: &[apb::Scope]) -> (String, kpb::ApiKey, String) {
    let who = email("owner");
    app.sign_up(&who).await;
    let token = app.login(&who).await.access_token;
    let created = app
        .api_keys()
        .create_api_key(bearer(
            &token,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "quota".into(),
                scopes: scopes.iter().map(|s| *s as i32).collect(),
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    (token, created.key.unwrap(), created.secret)
}

fn limit(subject: &str, n: u64, period_s: i64, shadow: bool) -> pb::Limit {
    pb::Limit {
        subject: subject.into(),
        limit: n,
        period: Some(prost_types::Duration {
            seconds: period_s,
            nanos: 0,
        }),
        buckets: 0,
        shadow,
        updated_at: None,
        updated_by: String::new(),
    }
}

async fn set_limit(
    app: &TestApp,
    token: &str,
    limit: pb::Limit,
) -> Result<pb::Limit, tonic::Status> {
    app.quota()
        .set_limit(bearer(token, pb::SetLimitRequest { limit: Some(limit) }))
        .await
        .map(|r| r.into_inner().limit.unwrap())
}

async fn get_limit(app: &TestApp, token: &str, subject: &str) -> pb::GetLimitResponse {
    app.quota()
        .get_limit(bearer(
            token,
            pb::GetLimitRequest {
                subject: subject.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

fn violation(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations[0].field.clone())
        .unwrap_or_default()
}

async fn default_limit_per_subject(backend: Backend) {
    for counts in [Counts::Memory, Counts::Redis] {
        let app = app(backend, counts).await;
        for i in 0..100u64 {
            let d = check(&app, "key:alpha", 1).await.unwrap();
            assert!(d.allowed, "{counts:?}: request {i}");
            assert_eq!(d.limit, 100);
            assert_eq!(d.remaining, 99 - i);
            assert_eq!(d.counted_subject, "key:alpha");
        }
        let refused = check(&app, "key:alpha", 1).await.unwrap();
        assert!(!refused.allowed, "{counts:?}");
        assert_eq!(refused.remaining, 0);
        let wait = refused.retry_after.unwrap();
        assert!((59..=61).contains(&wait.seconds), "{counts:?}: {wait:?}");
        assert_eq!(refused.period.unwrap().seconds, 60);
        // Another subject has its own bucket.
        assert!(check(&app, "key:beta", 1).await.unwrap().allowed);
        // Across the minute boundary there is no fresh burst…
        app.clock.advance(Duration::from_secs(30));
        assert!(!check(&app, "key:alpha", 1).await.unwrap().allowed);
        // …and after the wait, requests pass again.
        app.clock.advance(Duration::from_secs(31));
        assert!(
            check(&app, "key:alpha", 1).await.unwrap().allowed,
            "{counts:?}"
        );
    }
}

async fn costs_weigh_and_bad_input_is_refused_clearly(backend: Backend) {
    let app = app(backend, Counts::Memory).await;
    let d = check(&app, "org:acme", 60).await.unwrap();
    assert!(d.allowed && d.remaining == 40);
    let d = check(&app, "org:acme", 41).await.unwrap();
    assert!(!d.allowed && d.remaining == 40);
    // Zero counts as one.
    assert_eq!(check(&app, "org:acme", 0).await.unwrap().remaining, 39);
    // More than the limit itself can never pass: no retry time.
    let d = check(&app, "user:u1", 101).await.unwrap();
    assert!(!d.allowed && d.retry_after.is_none());

    let long = format!("key:{}", "x".repeat(300));
    for (subject, org, cost, field) in [
        ("", "", 1, "subject"),
        ("nokind", "", 1, "subject"),
        ("planet:earth", "", 1, "subject"),
        ("key:has space", "", 1, "subject"),
        (long.as_str(), "", 1, "subject"),
        ("key:ok", "", u64::MAX, "cost"),
        ("key:ok", "", 1_000_000_000_001, "cost"),
        ("key:ok", "not-a-uuid", 1, "org_id"),
    ] {
        let err = check_in(&app, subject, org, cost).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{subject}");
        assert_eq!(violation(&err), field, "{subject}");
    }

    // Check is internal.
    let outside = app
        .quota()
        .check(pb::CheckRequest {
            subject: "key:x".into(),
            cost: 1,
            org_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied);
}

async fn limits_of_their_own(backend: Backend) {
    let app = app(backend, Counts::Memory).await;
    let (token, key, _) = owner_with_key(&app, &[apb::Scope::Read]).await;
    let org = key.organization_id.clone();
    let key_subject = format!("key:{}", key.id);
    let org_subject = format!("org:{org}");

    let stored = set_limit(&app, &token, limit(&key_subject, 3, 60, false))
        .await
        .unwrap();
    assert_eq!((stored.limit, stored.buckets), (3, 60));
    assert!(stored.updated_by.starts_with("user:") && stored.updated_at.is_some());
    for _ in 0..3 {
        let d = check_in(&app, &key_subject, &org, 1).await.unwrap();
        assert!(d.allowed && d.limit == 3 && d.counted_subject == key_subject);
    }
    assert!(!check_in(&app, &key_subject, &org, 1).await.unwrap().allowed);

    // The organisation's limit is shared by keys without their own.
    set_limit(&app, &token, limit(&org_subject, 5, 3600, false))
        .await
        .unwrap();
    let other_key = format!("key:{}", uuid::Uuid::now_v7());
    let d = check_in(&app, &other_key, &org, 2).await.unwrap();
    assert_eq!((d.limit, d.remaining), (5, 3));
    assert_eq!(d.counted_subject, org_subject);
    assert_eq!(d.period.unwrap().seconds, 3600);

    let got = get_limit(&app, &token, &key_subject).await;
    assert_eq!(got.source(), pb::LimitSource::Own);
    assert_eq!(got.limit.unwrap().limit, 3);
    let listed = app
        .quota()
        .list_limits(bearer(&token, pb::ListLimitsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .limits;
    let mut subjects: Vec<_> = listed.iter().map(|l| l.subject.clone()).collect();
    subjects.sort();
    let mut expected = vec![key_subject.clone(), org_subject.clone()];
    expected.sort();
    assert_eq!(subjects, expected);

    // Without its own limit the key counts under the organisation's.
    app.quota()
        .delete_limit(bearer(
            &token,
            pb::DeleteLimitRequest {
                subject: key_subject.clone(),
            },
        ))
        .await
        .unwrap();
    let d = check_in(&app, &key_subject, &org, 1).await.unwrap();
    assert_eq!((d.limit, d.remaining), (5, 2));
    let got = get_limit(&app, &token, &key_subject).await;
    assert_eq!(got.source(), pb::LimitSource::Organisation);
    let again = app
        .quota()
        .delete_limit(bearer(
            &token,
            pb::DeleteLimitRequest {
                subject: key_subject.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    // Each change is an audit event.
    let events = twig_audit::all_events(&app.db).await.unwrap();
    let count = |action: &str| events.iter().filter(|e| e.action == action).count();
    assert_eq!(count("quota.limit_set"), 2);
    assert_eq!(count("quota.limit_deleted"), 1);
}

async fn who_may_change_limits(backend: Backend) {
    let app = app(backend, Counts::Memory).await;
    let (token, key, _) = owner_with_key(&app, &[apb::Scope::Read]).await;
    let (_, _, read_only_secret) = owner_with_key(&app, &[apb::Scope::Read]).await;
    let (stranger, stranger_key, _) = owner_with_key(&app, &[apb::Scope::Read]).await;
    let key_subject = format!("key:{}", key.id);
    let org_subject = format!("org:{}", key.organization_id);

    // Another organisation's owner sees neither the key nor the org.
    for subject in [&key_subject, &org_subject] {
        let err = set_limit(&app, &stranger, limit(subject, 1_000, 60, false))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{subject}");
    }
    // A key without admin may not change limits.
    let err = set_limit(
        &app,
        &read_only_secret,
        limit(
            &format!("org:{}", stranger_key.organization_id),
            9,
            60,
            false,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Without credentials: UNAUTHENTICATED.
    let err = app
        .quota()
        .set_limit(pb::SetLimitRequest {
            limit: Some(limit(&org_subject, 5, 60, false)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Absurd limits: a clear field error, nothing stored.
    for (l, field) in [
        (limit(&org_subject, 0, 60, false), "limit.limit"),
        (
            limit(&org_subject, 1_000_000_000_001, 60, false),
            "limit.limit",
        ),
        (limit(&org_subject, 10, 0, false), "limit.period"),
        (limit(&org_subject, 10, 86_401, false), "limit.period"),
        (
            pb::Limit {
                buckets: 601,
                ..limit(&org_subject, 10, 60, false)
            },
            "limit.buckets",
        ),
        (limit("user:someone", 10, 60, false), "subject"),
        (limit("key:not-a-uuid", 10, 60, false), "subject"),
    ] {
        let err = set_limit(&app, &token, l).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violation(&err), field);
    }
    let listed = app
        .quota()
        .list_limits(bearer(&token, pb::ListLimitsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.limits.is_empty());
}

async fn api_key_requests_are_refused_past_the_limit(backend: Backend) {
    let app = app(backend, Counts::Memory).await;
    let (_, key, secret) = owner_with_key(&app, &[apb::Scope::Admin]).await;
    let (_, _, other_secret) = owner_with_key(&app, &[apb::Scope::Read]).await;
    let get = |secret: String| {
        let app = &app;
        let id = key.id.clone();
        async move {
            app.api_keys()
                .get_api_key(bearer(&secret, kpb::GetApiKeyRequest { key_id: id }))
                .await
        }
    };
    for i in 0..100 {
        get(secret.clone())
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e:?}"));
    }
    let refused = get(secret.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let delay = refused
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        delay > Duration::from_secs(58) && delay <= Duration::from_secs(61),
        "{delay:?}"
    );
    assert!(
        refused.message().contains("100 requests per 60 s"),
        "{}",
        refused.message()
    );
    // Another key has its own bucket (its request is NOT_FOUND, not 429).
    assert_eq!(get(other_secret).await.unwrap_err().code(), Code::NotFound);
    // After the wait the key works again.
    app.clock.advance(delay);
    get(secret).await.unwrap();
}

async fn shadow_limits_count_but_never_refuse(backend: Backend) {
    let app = app(backend, Counts::Memory).await;
    let (token, key, _) = owner_with_key(&app, &[apb::Scope::Read]).await;
    let key_subject = format!("key:{}", key.id);
    // Never enforced, so the operator's to set, not an admin's.
    let err = set_limit(&app, &token, limit(&key_subject, 2, 60, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    app.quota()
        .set_organization_limit(app.operator(pb::SetOrganizationLimitRequest {
            organization_id: key.organization_id.clone(),
            limit: Some(limit(&key_subject, 2, 60, true)),
        }))
        .await
        .unwrap();
    for i in 0..4 {
        let d = check(&app, &key_subject, 1).await.unwrap();
        assert!(d.allowed && d.shadow, "check {i}");
        assert_eq!(d.shadow_denied, i >= 2, "check {i}");
    }
    // An enforced limit next to it, refusing.
    for _ in 0..101 {
        check(&app, "custom:batch", 1).await.unwrap();
    }

    let usage = |token: Option<&str>, subject: &str, minutes_back: i64| {
        let now = app.clock_now();
        let message = pb::GetUsageRequest {
            subject: subject.into(),
            from: Some(prost_types::Timestamp {
                seconds: now - 60 * minutes_back,
                nanos: 0,
            }),
            to: Some(prost_types::Timestamp {
                seconds: now,
                nanos: 0,
            }),
        };
        let request = match token {
            Some(t) => bearer(t, message),
            None => app.internal(message),
        };
        let mut client = app.quota();
        async move { client.get_usage(request).await.map(|r| r.into_inner()) }
    };
    let expect = |u: pb::GetUsageResponse, allowed: u64, denied: u64, shadow: u64| {
        assert_eq!(u.minutes.len(), 1, "{u:?}");
        let m = &u.minutes[0];
        assert_eq!(
            (m.allowed, m.denied, m.shadow_denied),
            (allowed, denied, shadow)
        );
    };
    // Before and after the tallies reach the database.
    expect(usage(Some(&token), &key_subject, 5).await.unwrap(), 4, 0, 2);
    app.quota_service.flush().await.unwrap();
    expect(usage(Some(&token), &key_subject, 5).await.unwrap(), 4, 0, 2);
    expect(usage(None, "custom:batch", 5).await.unwrap(), 100, 1, 0);
    check(&app, &key_subject, 1).await.unwrap();
    expect(usage(Some(&token), &key_subject, 5).await.unwrap(), 5, 0, 3);

    // Only the organisation's own subjects; at most one day at a time.
    let (stranger, _, _) = owner_with_key(&app, &[apb::Scope::Read]).await;
    assert_eq!(
        usage(Some(&stranger), &key_subject, 5)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        usage(Some(&token), "custom:batch", 5)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let err = usage(None, "custom:batch", 24 * 60 + 1).await.unwrap_err();
    assert_eq!(
        (err.code(), violation(&err)),
        (Code::InvalidArgument, "to".into())
    );
}

/// The server stops while quota usage is being written (every 5 s): each
/// check is counted exactly once — the write in progress finishes, what is
/// still held is written last, nothing is cut or written twice.
async fn usage_is_counted_exactly_once_across_a_stop(backend: Backend) {
    let app = TestApp::builder(backend).spawn().await;
    let db = app.db.clone();
    // Many subjects, so that one write of them all takes a while.
    let subjects: Vec<String> = (0..1500).map(|i| format!("custom:stop-{i}")).collect();
    let started = Instant::now();
    let mut answered = 0u64;
    // Checks until just past the first periodic write has begun, then stop.
    'checking: loop {
        for chunk in subjects.chunks(50) {
            if started.elapsed() > Duration::from_millis(5_100) {
                break 'checking;
            }
            let calls = chunk.iter().map(|s| check(&app, s, 1));
            for result in futures::future::join_all(calls).await {
                result.expect("a check");
                answered += 1;
            }
        }
    }
    let _database = app.stop_keeping_database().await;
    let rows = twig_quota::entity::quota_usage::Entity::find()
        .filter(twig_quota::entity::quota_usage::Column::Subject.starts_with("custom:stop-"))
        .all(&db)
        .await
        .unwrap();
    let counted: i64 = rows
        .iter()
        .map(|r| r.allowed + r.denied + r.shadow_denied)
        .sum();
    assert_eq!(
        u64::try_from(counted).unwrap(),
        answered,
        "checks answered vs counted in quota_usage after the stop"
    );
}

on_both_backends!(
    default_limit_per_subject,
    usage_is_counted_exactly_once_across_a_stop,
    costs_weigh_and_bad_input_is_refused_clearly,
    limits_of_their_own,
    who_may_change_limits,
    api_key_requests_are_refused_past_the_limit,
    shadow_limits_count_but_never_refuse,
);

/// A replica counting in the shared Redis under `prefix` (replicas given
/// the same prefix share counts).
async fn redis_replica(prefix: &str) -> TestApp {
    TestApp::builder(Backend::Sqlite)
        .config(|c| {
            c.redis.url = Some(twig_config::Secret::new(twig_testkit::redis_url()));
            c.redis.key_prefix = prefix.to_string();
            c.edit::<twig_quota::QuotaConfig>(|s| s.store = QuotaStore::Redis);
            // These tests are about sharing one limit, not about a slow
            // store: with the whole suite running at once a Redis answer
            // can take longer than the default 100 ms, and a check that
            // times out is admitted (fail open).
            c.edit::<twig_quota::QuotaConfig>(|s| s.redis_timeout = Duration::from_secs(5));
        })
        .spawn()
        .await
}

/// Three replicas (each its own process state) on one Redis, driven at
/// once: together they admit the limit, not three times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_hold_one_limit() {
    let prefix = twig_testkit::redis_prefix();
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(redis_replica(&prefix).await);
    }
    let apps = std::sync::Arc::new(apps);
    let mut tasks = Vec::new();
    for worker in 0..12 {
        let apps = apps.clone();
        tasks.push(tokio::spawn(async move {
            let app = &apps[worker % 3];
            let (mut admitted, mut failed_open) = (0u64, 0u64);
            for _ in 0..30 {
                let decision = check(app, "key:shared", 1).await.unwrap();
                admitted += u64::from(decision.allowed);
                failed_open += u64::from(decision.fail_open);
            }
            (admitted, failed_open)
        }));
    }
    let (mut total, mut failed_open) = (0, 0);
    for t in tasks {
        let (admitted, open) = t.await.unwrap();
        total += admitted;
        failed_open += open;
    }
    assert_eq!(
        failed_open, 0,
        "checks admitted because Redis did not answer"
    );
    assert_eq!(
        total, 100,
        "360 checks on three replicas against 100 per minute"
    );
}

/// Two replicas whose clocks stand seconds apart — as replicas' batches
/// reach Redis out of order around every slice boundary, only more — on
/// one key: the later clock counts first, the earlier one next. The
/// window's bookkeeping must not go backwards (its newest slice before its
/// oldest), or every refusal after the limit fails in the script and is
/// admitted uncounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_clocks_apart_hold_one_limit() {
    let prefix = twig_testkit::redis_prefix();
    let mut apps = Vec::new();
    for _ in 0..2 {
        apps.push(redis_replica(&prefix).await);
    }
    apps[0].clock.advance(Duration::from_secs(3));
    let (mut admitted, mut failed_open) = (0, 0);
    for round in 0..150 {
        // The later clock first, then the earlier one.
        let decision = check(&apps[round % 2], "key:skewed", 1).await.unwrap();
        admitted += u64::from(decision.allowed);
        failed_open += u64::from(decision.fail_open);
    }
    assert_eq!(failed_open, 0, "refusals the script failed on, admitted");
    assert_eq!(admitted, 100, "150 checks against 100 per minute");
}

/// Redis stopped mid-test with `quota.on_store_error = closed`: checks
/// fail with UNAVAILABLE until Redis is back, then count again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_when_configured() {
    let mut redis = twig_testkit::PrivateRedis::start();
    let url = redis.url();
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| {
            c.redis.url = Some(twig_config::Secret::new(url));
            c.edit::<twig_quota::QuotaConfig>(|s| s.store = QuotaStore::Redis);
            c.edit::<twig_quota::QuotaConfig>(|s| s.on_store_error = OnStoreError::Closed);
        })
        .spawn()
        .await;
    assert_eq!(check(&app, "key:k", 1).await.unwrap().remaining, 99);
    redis.stop();
    let err = check(&app, "key:k", 1).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("on_store_error = closed"),
        "{}",
        err.message()
    );
    redis.restart();
    let started = Instant::now();
    let back = loop {
        match check(&app, "key:k", 1).await {
            Ok(d) => break d,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                assert_eq!(e.code(), Code::Unavailable);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("still failing 5 s after Redis came back: {e:?}"),
        }
    };
    // The restarted Redis is empty: counting starts afresh.
    assert!(back.allowed && !back.fail_open && back.remaining == 99);
}
