//! Batched writers (`twig_db::batch`) stopped in the middle of a flush:
//! the server is asked to stop while its periodic usage flush has written
//! its batch inside the transaction but not committed. Whether that flush
//! then commits or fails, every count is in the table exactly once after
//! the stop — the counts of the interrupted batch, and those recorded
//! while it was paused, which the last flush at shutdown writes.

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use twig_db::batch::hooks::Pause;
use twig_proto::apikeys::v1 as kpb;
use twig_proto::auth::v1 as apb;
use twig_proto::quota::v1 as qpb;
use twig_tests::{Backend, TestApp, bearer, email};

/// How the interrupted flush ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// It commits (after the stop was asked for).
    Commits,
    /// It fails there (its transaction rolls back): merged back.
    Fails,
}

/// Waits for the periodic flush (every 5 s) to reach the pause.
async fn reached(pause: &mut Pause) {
    tokio::time::timeout(Duration::from_secs(30), pause.reached())
        .await
        .expect("the periodic flush reached the pause");
}

/// Stops `app` while the flush is paused, then lets the flush end as
/// `ending`; returns once the server (and its last flush) is done.
async fn stop_during(app: TestApp, pause: Pause, ending: Ending) -> twig_tests::TestDatabase {
    let stopping = tokio::spawn(app.stop_keeping_database());
    // The stop is under way: serving ends, then the workers are stopped,
    // which waits for the run in progress — this one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopping.is_finished(), "the stop waits for the flush");
    match ending {
        Ending::Commits => pause.release(),
        Ending::Fails => pause.fail(),
    }
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("the server stops")
        .expect("joined")
}

async fn check(app: &TestApp, subject: &str) {
    app.quota()
        .check(app.internal(qpb::CheckRequest {
            subject: subject.into(),
            cost: 1,
            org_id: String::new(),
        }))
        .await
        .expect("a check");
}

async fn quota_usage_is_written_once_across_a_stop_mid_flush(backend: Backend, ending: Ending) {
    let app = TestApp::builder(backend).spawn().await;
    let db = app.db.clone();
    let subjects: Vec<String> = (0..300).map(|i| format!("custom:mid-{i}")).collect();
    let mut answered = 0u64;
    let mut pause = app.quota_service.pause_next_usage_flush();
    for subject in &subjects {
        check(&app, subject).await;
        answered += 1;
    }
    reached(&mut pause).await;
    // Recorded while the batch is being written: not in it.
    for subject in subjects.iter().take(100) {
        check(&app, subject).await;
        check(&app, subject).await;
        answered += 2;
    }
    let _database = stop_during(app, pause, ending).await;
    let rows = twig_quota::entity::quota_usage::Entity::find()
        .filter(twig_quota::entity::quota_usage::Column::Subject.starts_with("custom:mid-"))
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
        "checks answered vs counted in quota_usage ({ending:?})"
    );
    assert_eq!(rows.len(), subjects.len(), "one row per subject and minute");
}

async fn api_key_usage_is_written_once_across_a_stop_mid_flush(backend: Backend, ending: Ending) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let db = app.db.clone();
    let owner = email("owner");
    app.sign_up(&owner).await;
    let token = app.login(&owner).await.access_token;
    let mut keys = Vec::new();
    for i in 0..5 {
        let created = app
            .api_keys()
            .create_api_key(bearer(
                &token,
                kpb::CreateApiKeyRequest {
                    service_account_id: String::new(),
                    name: format!("k{i}"),
                    scopes: vec![apb::Scope::Read as i32],
                    expires_at: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        keys.push((
            uuid::Uuid::parse_str(&created.key.unwrap().id).unwrap(),
            created.secret,
        ));
    }
    let verify = |secret: String| {
        let mut client = app.api_keys();
        let request = app.internal(kpb::VerifyApiKeyRequest {
            key: secret,
            required_scope: apb::Scope::Read as i32,
            client_ip: String::new(),
        });
        async move { client.verify_api_key(request).await.expect("verified") }
    };
    let first_minute = app.clock_now().div_euclid(60);
    for (i, (_, secret)) in keys.iter().enumerate() {
        for _ in 0..=i {
            verify(secret.clone()).await;
        }
    }
    let in_first = 1 + 2 + 3 + 4 + 5;
    // The first minute ends: the next periodic flush writes it (and only
    // it; until now each flush found no ended minute to write).
    let mut pause = app.api_keys_service.pause_next_usage_flush();
    app.clock.advance(Duration::from_secs(60));
    reached(&mut pause).await;
    for (_, secret) in &keys {
        verify(secret.clone()).await;
        verify(secret.clone()).await;
    }
    let in_second = 2 * keys.len() as i64;
    let _database = stop_during(app, pause, ending).await;
    let ids: Vec<uuid::Uuid> = keys.iter().map(|(id, _)| *id).collect();
    let rows = twig_api_keys::entity::api_key_usage::Entity::find()
        .filter(twig_api_keys::entity::api_key_usage::Column::KeyId.is_in(ids.clone()))
        .all(&db)
        .await
        .unwrap();
    let per_minute = |minute: i64| -> i64 {
        rows.iter()
            .filter(|r| r.minute == minute)
            .map(|r| r.requests)
            .sum()
    };
    assert_eq!(per_minute(first_minute), in_first, "{ending:?}: {rows:?}");
    assert_eq!(
        per_minute(first_minute + 1),
        in_second,
        "{ending:?}: {rows:?}"
    );
    assert_eq!(rows.len(), 2 * keys.len(), "one row per key and minute");
    let stored = twig_api_keys::entity::api_key::Entity::find()
        .filter(twig_api_keys::entity::api_key::Column::Id.is_in(ids))
        .all(&db)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|k| k
            .last_used_at
            .is_some_and(|t| t.timestamp().div_euclid(60) == first_minute + 1)),
        "last-used times written: {stored:?}"
    );
}

async fn quota_usage_stop_mid_flush_that_commits(backend: Backend) {
    quota_usage_is_written_once_across_a_stop_mid_flush(backend, Ending::Commits).await;
}

async fn quota_usage_stop_mid_flush_that_fails(backend: Backend) {
    quota_usage_is_written_once_across_a_stop_mid_flush(backend, Ending::Fails).await;
}

async fn api_key_usage_stop_mid_flush_that_commits(backend: Backend) {
    api_key_usage_is_written_once_across_a_stop_mid_flush(backend, Ending::Commits).await;
}

async fn api_key_usage_stop_mid_flush_that_fails(backend: Backend) {
    api_key_usage_is_written_once_across_a_stop_mid_flush(backend, Ending::Fails).await;
}

/// Last-seen times still held at a stop are written by the last flush:
/// the stored time is the session's latest use, never an earlier one.
async fn last_seen_times_are_written_at_stop(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let db = app.db.clone();
    let who = email("seen");
    app.sign_up(&who).await;
    let tokens = app.login(&who).await;
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(100));
        app.verify(&tokens.access_token).await.unwrap();
    }
    let _database = app.stop_keeping_database().await;
    let row = twig_sessions::entity::session::Entity::find_by_id(
        uuid::Uuid::parse_str(&tokens.session_id).unwrap(),
    )
    .one(&db)
    .await
    .unwrap()
    .unwrap();
    assert_eq!((row.last_seen_at - row.created_at).num_seconds(), 300);
}

on_both_backends!(
    last_seen_times_are_written_at_stop,
    quota_usage_stop_mid_flush_that_commits,
    quota_usage_stop_mid_flush_that_fails,
    api_key_usage_stop_mid_flush_that_commits,
    api_key_usage_stop_mid_flush_that_fails,
);
