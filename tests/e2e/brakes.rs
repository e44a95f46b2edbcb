//! Brakes on public requests: the probe — hundreds of sign-ups in
//! a few seconds — now stops at the brake, per client address and per
//! email, with the same answer for every email; reading the audit log is
//! itself an event.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;
use twig_proto::audit::v1 as audit_pb;
use twig_proto::sessions::v1 as pb;
use twig_sessions::PerPeriod;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

fn per_hour(count: u64) -> PerPeriod {
    PerPeriod {
        count,
        period: Duration::from_secs(3600),
    }
}

async fn sign_up(
    client: &mut pb::session_service_client::SessionServiceClient<tonic::transport::Channel>,
    who: &str,
) -> Result<(), tonic::Status> {
    client
        .sign_up(pb::SignUpRequest {
            email: who.into(),
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .map(|_| ())
}

async fn probing_sign_ups_stop_at_the_brakes(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            c.edit::<twig_sessions::SessionsConfig>(|s| {
                s.brakes.sign_ups_per_address = per_hour(10);
                s.brakes.sign_ups_per_email = per_hour(3);
                s.brakes.resets_per_email = per_hour(2);
            });
        })
        .spawn()
        .await;
    // One email, from several addresses: the per-email brake holds.
    let victim = email("victim");
    app.sign_up(&victim).await;
    for n in 0..3 {
        let mut client = app.sessions_from(&format!("127.0.0.{}", 10 + n)).await;
        sign_up(&mut client, &victim).await.unwrap();
    }
    let mut client = app.sessions_from("127.0.0.20").await;
    let braked = sign_up(&mut client, &victim).await.unwrap_err();
    assert_eq!(braked.code(), Code::ResourceExhausted, "{braked:?}");
    let retry = braked
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    // Within the period and one of the window's ten buckets.
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(3600 + 360),
        "{retry:?}"
    );

    // Many emails from one address: the per-address brake holds, and the
    // answer is the same whether or not the email has an account.
    let mut prober = app.sessions_from("127.0.0.30").await;
    let mut admitted = 0;
    let mut refusals = Vec::new();
    for n in 0..40 {
        let who = if n % 2 == 0 {
            victim.clone()
        } else {
            email(&format!("probe{n}"))
        };
        match sign_up(&mut prober, &who).await {
            Ok(()) => admitted += 1,
            Err(status) => refusals.push((n % 2 == 0, status)),
        }
    }
    assert!(
        admitted <= 10,
        "{admitted} sign-ups passed the per-address brake"
    );
    assert!(refusals.len() >= 30);
    let (known, unknown): (Vec<_>, Vec<_>) = refusals.iter().partition(|(k, _)| *k);
    assert_eq!(known[0].1.code(), unknown[0].1.code());
    assert_eq!(known[0].1.message(), unknown[0].1.message());

    // Reset requests have their own brake, with the same answer.
    let mut client = app.sessions_from("127.0.0.40").await;
    for _ in 0..2 {
        client
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: victim.clone(),
            })
            .await
            .unwrap();
    }
    let braked = client
        .request_password_reset(pb::RequestPasswordResetRequest {
            email: victim.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(braked.code(), Code::ResourceExhausted);

    // Nothing was made for the probes: only the fixture's account exists.
    let users = app
        .sessions()
        .find_user(app.internal(pb::FindUserRequest {
            by: Some(pb::find_user_request::By::Email(email("probe1"))),
        }))
        .await
        .unwrap()
        .into_inner()
        .user;
    assert!(
        users.is_none(),
        "a sign-up without its link makes no account"
    );
}

async fn reading_the_audit_log_is_an_event(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let owner = email("auditor");
    let org = app.sign_up(&owner).await.organization.unwrap().id;
    let token = app.login(&owner).await.access_token;
    let mut audit =
        twig_proto::audit::v1::audit_service_client::AuditServiceClient::new(app.channel.clone());
    audit
        .list_events(bearer(
            &token,
            audit_pb::ListEventsRequest {
                action: "session.login".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let reads = twig_audit::events_with_action(&app.db, "audit.read")
        .await
        .unwrap();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].org_id.map(|o| o.to_string()), Some(org));
    assert!(
        reads[0].details.contains("session.login"),
        "{}",
        reads[0].details
    );
}

on_both_backends!(
    probing_sign_ups_stop_at_the_brakes,
    reading_the_audit_log_is_an_event,
);
