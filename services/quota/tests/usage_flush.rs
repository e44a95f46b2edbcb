//! Usage tallies are written once, however many flushes run at once (the
//! background one and a caller's): each count reaches the table exactly
//! once, on both backends.

use twig_quota::Subject;
use twig_quota::Tally;
use twig_quota::Usage;
use twig_testkit::{Backend, TestDatabase};

async fn concurrent_flushes_write_each_count_once(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = twig_db::connect(&database.url, 8).await.expect("connect");
    twig_db::migrate::<twig_quota::Migrator>(&db)
        .await
        .expect("migrate");
    let usage = std::sync::Arc::new(Usage::new(db));
    let subject = Subject::parse("key:flush-race").expect("a subject");
    let minute = 29_000_000;
    let mut recorded = 0u64;
    for round in 0..20 {
        for _ in 0..(10 + round) {
            usage.record(&subject, minute, Tally::Allowed);
            recorded += 1;
        }
        let flushes: Vec<_> = (0..4)
            .map(|_| {
                let usage = usage.clone();
                tokio::spawn(async move { usage.flush().await })
            })
            .collect();
        for flush in flushes {
            flush.await.expect("joined").expect("flushed");
        }
    }
    let minutes = usage
        .minutes(&subject, minute, minute)
        .await
        .expect("read back");
    assert_eq!(minutes.len(), 1);
    assert_eq!(minutes[0].1.allowed, recorded, "each count written once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_flushes_write_each_count_once() {
    concurrent_flushes_write_each_count_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_flushes_write_each_count_once() {
    concurrent_flushes_write_each_count_once(Backend::Postgres).await;
}
