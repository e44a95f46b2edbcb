//! Single sign-on, domains: an organisation claims an email domain and
//! proves it with a DNS TXT record, asked of a real DNS server (dnsmasq on
//! 127.0.0.1, `sso_federation.dns_servers`). A proved domain belongs to
//! one organisation; every change and every failed proof is audited.

use std::time::Duration;

use tonic::Code;
use twig_proto::sessions::v1 as spb;
use twig_proto::sso::v1 as pb;
use twig_sso_federation::SsoConfig;
use twig_tests::dns::DnsPeer;
use twig_tests::{Backend, TestApp, bearer, email};

async fn app(backend: Backend, dns: &DnsPeer) -> TestApp {
    let server = dns.addr();
    TestApp::builder(backend)
        .weak_hashing()
        .config(move |c| {
            c.edit::<SsoConfig>(|s| {
                s.dns_servers = vec![server];
                s.dns_timeout = Duration::from_secs(2);
            });
        })
        .spawn()
        .await
}

/// An owner of a new organisation: access token and organisation id.
async fn owner(app: &TestApp) -> (String, String) {
    let who = email("sso-owner");
    let signed = app.sign_up(&who).await;
    let token = app.login(&who).await.access_token;
    (token, signed.organization.expect("organisation").id)
}

/// A domain of this test's own under `.test`.
fn domain(name: &str) -> String {
    format!(
        "{name}-{}.test",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

async fn claim(app: &TestApp, token: &str, domain: &str) -> Result<pb::Domain, tonic::Status> {
    app.sso()
        .claim_domain(bearer(
            token,
            pb::ClaimDomainRequest {
                domain: domain.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().domain.expect("a domain"))
}

async fn verify(app: &TestApp, token: &str, id: &str) -> Result<pb::Domain, tonic::Status> {
    app.sso()
        .verify_domain(bearer(
            token,
            pb::VerifyDomainRequest {
                domain_id: id.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().domain.expect("a domain"))
}

async fn events(app: &TestApp, action: &str) -> Vec<twig_audit::StoredEvent> {
    twig_audit::events_with_action(&app.db, action)
        .await
        .unwrap()
}

async fn a_domain_is_proved_by_its_txt_record(backend: Backend) {
    let mut dns = DnsPeer::start().await;
    let app = app(backend, &dns).await;
    let (token, org) = owner(&app).await;
    let name = domain("Acme");

    let claimed = claim(&app, &token, &name.to_uppercase()).await.unwrap();
    assert_eq!(claimed.domain, name.to_lowercase(), "kept in email form");
    assert_eq!(claimed.organization_id, org);
    assert_eq!(claimed.state, pb::DomainState::Pending as i32);
    assert_eq!(
        claimed.txt_record_name,
        format!("_twig-verification.{}", claimed.domain)
    );
    let value = claimed.txt_record_value.clone();
    assert!(
        value.starts_with("twig-domain-verification=") && value.len() > 60,
        "{value}"
    );
    // Claiming again returns the same claim.
    let again = claim(&app, &token, &name).await.unwrap();
    assert_eq!(again.id, claimed.id);
    assert_eq!(again.txt_record_value, value);

    // Nothing published yet.
    let refused = verify(&app, &token, &claimed.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("no TXT record"),
        "{}",
        refused.message()
    );

    // A record with another value (another claim's, or an old one).
    dns.set_txt(&[(
        &claimed.txt_record_name,
        "twig-domain-verification=someone-elses",
    )])
    .await;
    let refused = verify(&app, &token, &claimed.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("do not hold"),
        "{}",
        refused.message()
    );
    // The right value on another name proves nothing.
    dns.set_txt(&[(&format!("_other.{}", claimed.domain), &value)])
        .await;
    assert_eq!(
        verify(&app, &token, &claimed.id).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // Near misses prove nothing: junk before or after the value, the
    // token in another case or alone, the value on the domain itself.
    let bare = value.trim_start_matches("twig-domain-verification=");
    for (name, near) in [
        (claimed.txt_record_name.clone(), format!("x{value}")),
        (claimed.txt_record_name.clone(), format!("{value}x")),
        (
            claimed.txt_record_name.clone(),
            format!("twig-domain-verification={}", bare.to_uppercase()),
        ),
        (claimed.txt_record_name.clone(), bare.to_string()),
        (claimed.domain.clone(), value.clone()),
    ] {
        dns.set_txt(&[(&name, &near)]).await;
        assert_eq!(
            verify(&app, &token, &claimed.id).await.unwrap_err().code(),
            Code::FailedPrecondition,
            "{name} = {near}"
        );
    }

    // Published beside another record, the value split over two
    // character-strings (joined, as RFC 7208 §3.3 joins them): proved.
    let split = format!("twig-domain-verification=,{bare}");
    dns.set_txt(&[
        (&claimed.txt_record_name, "v=spf1 -all"),
        (&claimed.txt_record_name, &split),
    ])
    .await;
    let proved = verify(&app, &token, &claimed.id).await.unwrap();
    assert_eq!(proved.state, pb::DomainState::Verified as i32);
    assert!(proved.verified_at.is_some() && proved.last_checked_at.is_some());
    // Proving again is a no-op, even once the record is gone.
    dns.set_txt(&[]).await;
    assert_eq!(
        verify(&app, &token, &claimed.id).await.unwrap().state,
        pb::DomainState::Verified as i32
    );

    let listed = app
        .sso()
        .list_domains(bearer(&token, pb::ListDomainsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .domains;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, pb::DomainState::Verified as i32);

    let failures: Vec<_> = events(&app, "sso.domain_verified").await;
    let reasons: Vec<_> = failures
        .iter()
        .map(|e| {
            let d: serde_json::Value = serde_json::from_str(&e.details).unwrap();
            (
                e.outcome.clone(),
                d["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("failure".to_string(), "no record".to_string()),
            ("failure".into(), "wrong value".into()),
            ("failure".into(), "no record".into()),
            ("failure".into(), "wrong value".into()),
            ("failure".into(), "wrong value".into()),
            ("failure".into(), "wrong value".into()),
            ("failure".into(), "wrong value".into()),
            ("failure".into(), "no record".into()),
            ("success".into(), String::new()),
        ]
    );
    assert!(
        failures
            .iter()
            .all(|e| e.org_id.map(|o| o.to_string()) == Some(org.clone()))
    );
    assert_eq!(events(&app, "sso.domain_claimed").await.len(), 1);
    app.stop().await;
}

async fn a_proved_domain_belongs_to_one_organisation(backend: Backend) {
    let mut dns = DnsPeer::start().await;
    let app = app(backend, &dns).await;
    let (a, _) = owner(&app).await;
    let (b, _) = owner(&app).await;
    let name = domain("shared");

    // Both claim it; each gets its own token.
    let claim_b = claim(&app, &b, &name).await.unwrap();
    let claim_a = claim(&app, &a, &name).await.unwrap();
    assert_ne!(claim_a.txt_record_value, claim_b.txt_record_value);

    // Both records published; A proves first, B is refused after.
    dns.set_txt(&[
        (&claim_a.txt_record_name, &claim_a.txt_record_value),
        (&claim_b.txt_record_name, &claim_b.txt_record_value),
    ])
    .await;
    verify(&app, &a, &claim_a.id).await.unwrap();
    let refused = verify(&app, &b, &claim_b.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    // A third organisation cannot even claim it.
    let (c, _) = owner(&app).await;
    assert_eq!(
        claim(&app, &c, &name).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // B cannot see, prove or delete A's claim.
    assert_eq!(
        verify(&app, &b, &claim_a.id).await.unwrap_err().code(),
        Code::NotFound
    );
    let denied = app
        .sso()
        .delete_domain(bearer(
            &b,
            pb::DeleteDomainRequest {
                domain_id: claim_a.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::NotFound);

    // Once A gives it up, B's proof goes through.
    app.sso()
        .delete_domain(bearer(
            &a,
            pb::DeleteDomainRequest {
                domain_id: claim_a.id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        verify(&app, &b, &claim_b.id).await.unwrap().state,
        pb::DomainState::Verified as i32
    );
    let deleted = events(&app, "sso.domain_deleted").await;
    assert_eq!(deleted.len(), 1);
    assert!(
        deleted[0].details.contains("\"was_proved\":true"),
        "{}",
        deleted[0].details
    );
    app.stop().await;
}

async fn two_organisations_proving_at_once_leave_one_owner(backend: Backend) {
    let mut dns = DnsPeer::start().await;
    let app = app(backend, &dns).await;
    let name = domain("race");
    let mut owners = Vec::new();
    let mut records = Vec::new();
    for _ in 0..4 {
        let (token, _) = owner(&app).await;
        let claimed = claim(&app, &token, &name).await.unwrap();
        records.push((
            claimed.txt_record_name.clone(),
            claimed.txt_record_value.clone(),
        ));
        owners.push((token, claimed.id));
    }
    let pairs: Vec<(&str, &str)> = records
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    dns.set_txt(&pairs).await;
    let results =
        futures::future::join_all(owners.iter().map(|(token, id)| verify(&app, token, id))).await;
    let proved = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(proved, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.code() == Code::AlreadyExists),
        "{results:?}"
    );
    app.stop().await;
}

async fn bad_claims_are_refused(backend: Backend) {
    let dns = DnsPeer::start().await;
    let app = app(backend, &dns).await;
    let (token, org) = owner(&app).await;
    for bad in [
        "",
        "localhost",
        "127.0.0.1",
        "[::1]",
        "someone@example.com",
        "exa_mple.com",
        "ex\u{430}mple.com",
        "ex\u{200b}ample.com",
        "-example.com",
    ] {
        let refused = claim(&app, &token, bad).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{bad:?}: {refused:?}"
        );
    }
    assert_eq!(
        claim(&app, &token, &"a".repeat(400))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Unicode and Punycode spellings are one claim.
    let unicode = claim(&app, &token, "b\u{fc}cher-twig.test").await.unwrap();
    let puny = claim(&app, &token, "XN--BCHER-TWIG-9DB.test")
        .await
        .unwrap();
    assert_eq!(unicode.id, puny.id);
    assert_eq!(
        unicode.txt_record_name,
        "_twig-verification.xn--bcher-twig-9db.test"
    );

    // A member who is not an admin may list but not claim.
    let member = email("sso-member");
    app.sign_up(&member).await;
    app.add_member(&token, &org, &member, spb::Role::Member)
        .await;
    let member_token = app
        .sessions()
        .login(spb::LoginRequest {
            email: member.clone(),
            password: twig_tests::PASSWORD.into(),
            organization_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    assert_eq!(
        claim(&app, &member_token, &domain("member"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let listed = app
        .sso()
        .list_domains(bearer(&member_token, pb::ListDomainsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .domains;
    assert_eq!(listed.len(), 1);
    // Malformed ids.
    assert_eq!(
        verify(&app, &token, "nope").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        verify(&app, &token, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // Without a session: refused before the service.
    let anonymous = app
        .sso()
        .claim_domain(pb::ClaimDomainRequest {
            domain: domain("anon"),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    app.stop().await;
}

async fn a_plan_without_sso_claims_nothing(backend: Backend) {
    let dns = DnsPeer::start().await;
    let app = app(backend, &dns).await;
    let (token, org) = owner(&app).await;
    app.set_plan(&org, "free").await;
    let refused = claim(&app, &token, &domain("free")).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("sso"), "{}", refused.message());
    let audited = events(&app, "plan.feature_refused").await;
    assert_eq!(audited.len(), 1);
    assert!(audited[0].details.contains("\"sso\""));
    app.stop().await;
}

async fn dns_that_does_not_answer_is_unavailable(backend: Backend) {
    let dns = DnsPeer::start().await;
    // A port where nothing answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(move |c| {
            c.edit::<SsoConfig>(|s| {
                s.dns_servers = vec![silent_addr];
                s.dns_timeout = Duration::from_millis(200);
            });
        })
        .spawn()
        .await;
    drop(dns);
    let (token, _) = owner(&app).await;
    let claimed = claim(&app, &token, &domain("silent")).await.unwrap();
    let started = std::time::Instant::now();
    let refused = verify(&app, &token, &claimed.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let audited = events(&app, "sso.domain_verified").await;
    assert!(
        audited[0].details.contains("dns unavailable"),
        "{}",
        audited[0].details
    );
    drop(silent);
    app.stop().await;
}

on_both_backends!(
    a_domain_is_proved_by_its_txt_record,
    a_proved_domain_belongs_to_one_organisation,
    two_organisations_proving_at_once_leave_one_owner,
    bad_claims_are_refused,
    a_plan_without_sso_claims_nothing,
    dns_that_does_not_answer_is_unavailable,
);
