//! The two stores apply one rule: Redis (through `check.lua`) answers
//! exactly what memory answers, check by check. Needs Redis at
//! `TWIG_TEST_REDIS_URL` (the test command starts it).

use std::time::Duration;

use twig_quota::Subject;
use twig_quota::Unreachable;
use twig_quota::{Limit, MemoryStore, RedisStore, Store};
use twig_testkit::{PrivateRedis, redis_prefix, redis_url};

async fn redis_store(prefix: &str) -> RedisStore {
    RedisStore::connect(&redis_url(), prefix, Duration::from_secs(2))
        .await
        .expect("Redis is needed")
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_decides_exactly_as_memory() {
    let memory = Store::Memory(MemoryStore::new());
    let redis = Store::Redis(redis_store(&redis_prefix()).await.without_leases());
    let limits = [
        Limit::new(100, Duration::from_secs(60), 60).unwrap(),
        Limit::new(7, Duration::from_secs(10), 3).unwrap(),
        Limit::new(1_000, Duration::from_secs(1), 1).unwrap(),
    ];
    let mut rng = Lcg(42);
    // Far from zero, like real clocks; both stores see the same times.
    let mut now = 1_800_000_000_000u64;
    let mut refused = 0;
    for step in 0..3_000 {
        now += rng.next(700);
        let which = rng.next(3) as usize;
        let limit = &limits[which];
        // One subject keeps one limit, as in the service.
        let subject = Subject::parse(&format!("custom:s{}-{which}", rng.next(4))).unwrap();
        let cost = match rng.next(10) {
            0 => limit.limit() + 1,
            1 => rng.next(limit.limit()) + 1,
            _ => 1,
        };
        let a = memory.check(&subject, limit, now, cost).await.unwrap();
        let b = redis.check(&subject, limit, now, cost).await.unwrap();
        assert_eq!(
            a,
            b,
            "step {step}: {} cost {cost} at {now}",
            subject.as_str()
        );
        refused += usize::from(!a.allowed);
    }
    assert!(
        refused > 300,
        "the sequence exercises refusals too ({refused})"
    );
}

/// Three replicas (three stores, leases on) on one Redis, 24 tasks at
/// once: together they admit the limit exactly, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_leases_admit_exactly_the_limit_together() {
    let prefix = redis_prefix();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(std::sync::Arc::new(Store::Redis(
            redis_store(&prefix).await,
        )));
    }
    let limit = Limit::new(500, Duration::from_secs(60), 60).unwrap();
    let subject = Subject::parse("key:shared").unwrap();
    let mut tasks = Vec::new();
    for task in 0..24 {
        let store = replicas[task % 3].clone();
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0u64;
            for _ in 0..100 {
                if store
                    .check(&subject, &limit, 1_800_000_000_000, 1)
                    .await
                    .unwrap()
                    .allowed
                {
                    admitted += 1;
                }
            }
            admitted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(
        total, 500,
        "2400 checks on three replicas against a limit of 500"
    );
}

/// A lease is usable only in its slice; what is left of it goes back to
/// Redis for the other replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_leases_are_given_back_when_their_slice_ends() {
    let prefix = redis_prefix();
    let a = redis_store(&prefix).await;
    let b = Store::Redis(redis_store(&prefix).await);
    let limit = Limit::new(1_000, Duration::from_secs(60), 60).unwrap();
    let subject = Subject::parse("key:leased").unwrap();
    let a_store = Store::Redis(a);
    let t = 1_800_000_000_000;
    for _ in 0..50 {
        assert!(a_store.check(&subject, &limit, t, 1).await.unwrap().allowed);
    }
    let Store::Redis(a) = &a_store else {
        unreachable!()
    };
    let held = a.leased_units();
    assert!(held > 0, "a busy replica holds a lease");
    // While A holds it, B can admit only what is left beyond it.
    let mut admitted = 0;
    while b.check(&subject, &limit, t, 1).await.unwrap().allowed {
        admitted += 1;
    }
    assert_eq!(admitted, 1_000 - 50 - held);
    // The slice ends: A gives its lease back (without waiting), and B can
    // use it. B asks once per slice after a refusal, so each attempt is a
    // slice later.
    a_store.sweep(t + 1_000);
    assert_eq!(a.leased_units(), 0);
    let mut later = 0;
    let mut now = t;
    for _ in 0..20 {
        now += 1_000;
        while b.check(&subject, &limit, now, 1).await.unwrap().allowed {
            later += 1;
        }
        if later > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(later, held, "the given-back units are admitted elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_reported_and_a_restarted_one_is_used_again() {
    let mut server = PrivateRedis::start();
    let store = Store::Redis(
        RedisStore::connect(&server.url(), "q:", Duration::from_millis(200))
            .await
            .unwrap(),
    );
    let limit = Limit::new(5, Duration::from_secs(60), 60).unwrap();
    let subject = Subject::parse("key:k").unwrap();
    let now = 1_800_000_000_000;
    assert!(store.check(&subject, &limit, now, 1).await.unwrap().allowed);
    server.stop();
    let err: Unreachable = store.check(&subject, &limit, now, 1).await.unwrap_err();
    assert!(err.to_string().contains("cannot be reached"), "{err}");
    server.restart();
    let mut answered = None;
    for _ in 0..50 {
        match store.check(&subject, &limit, now, 1).await {
            Ok(d) => {
                answered = Some(d);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // The restarted server is empty: counting starts afresh.
    let d = answered.expect("the store reconnects after a restart");
    assert!(d.allowed);
    assert_eq!(d.remaining, 4);
}
