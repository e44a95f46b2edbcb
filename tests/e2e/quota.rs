//! Quota: the default limit, cost, separate subjects, bad input.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;
use twig_proto::quota::v1 as pb;
use twig_tests::{Backend, TestApp};

async fn check(
    app: &TestApp,
    subject: &str,
    cost: u64,
) -> Result<pb::CheckResponse, tonic::Status> {
    app.quota()
        .check(app.internal(pb::CheckRequest {
            subject: subject.into(),
            cost,
        }))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_101st_request_of_a_minute_is_refused_per_subject() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for i in 0..100u64 {
        let d = check(&app, "key:alpha", 1).await.unwrap();
        assert!(d.allowed, "request {i}");
        assert_eq!(d.limit, 100);
        assert_eq!(d.remaining, 99 - i);
    }
    let refused = check(&app, "key:alpha", 1).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    let wait = refused.retry_after.unwrap();
    assert!((59..=61).contains(&wait.seconds), "{wait:?}");
    assert_eq!(refused.period.unwrap().seconds, 60);
    // Another subject has its own bucket.
    assert!(check(&app, "key:beta", 1).await.unwrap().allowed);
    // Across the minute boundary there is no fresh burst…
    app.clock.advance(Duration::from_secs(30));
    assert!(!check(&app, "key:alpha", 1).await.unwrap().allowed);
    // …and after the wait, requests pass again.
    app.clock.advance(Duration::from_secs(31));
    assert!(check(&app, "key:alpha", 1).await.unwrap().allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_weigh_and_bad_input_is_refused_clearly() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let d = check(&app, "org:acme", 60).await.unwrap();
    assert!(d.allowed && d.remaining == 40);
    let d = check(&app, "org:acme", 41).await.unwrap();
    assert!(!d.allowed && d.remaining == 40);
    // Zero counts as one.
    assert_eq!(check(&app, "org:acme", 0).await.unwrap().remaining, 39);
    // More than the limit itself can never pass: no retry time.
    let d = check(&app, "user:u1", 101).await.unwrap();
    assert!(!d.allowed && d.retry_after.is_none());

    for (subject, cost, field) in [
        ("", 1, "subject"),
        ("nokind", 1, "subject"),
        ("planet:earth", 1, "subject"),
        ("key:has space", 1, "subject"),
        ("key:ok", u64::MAX, "cost"),
    ] {
        let err = check(&app, subject, cost).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{subject}");
        assert_eq!(
            err.get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    let long = format!("key:{}", "x".repeat(300));
    assert_eq!(
        check(&app, &long, 1).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Check is internal.
    let outside = app
        .quota()
        .check(pb::CheckRequest {
            subject: "key:x".into(),
            cost: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied);
}
