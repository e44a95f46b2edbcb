//! Sessions under attack: enumeration, brute force, hostile input, leaks.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, EntityTrait, Statement};
use tonic::Code;
use tonic_types::StatusExt;
use twig_proto::sessions::v1 as pb;
use twig_tests::{Backend, PASSWORD, TestApp, email};

fn login_req(email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        email: email.into(),
        password: password.into(),
        organization_id: String::new(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn unknown_email_and_wrong_password_look_the_same(backend: Backend) {
    // Real OWASP hashing: the point is that both paths pay for one hash.
    let app = TestApp::spawn(backend).await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let mut client = app.sessions();
    let wrong = client
        .login(login_req(&ada, "wrong password!!"))
        .await
        .unwrap_err();
    let unknown = client
        .login(login_req(&email("nobody"), "wrong password!!"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(wrong.code(), unknown.code());
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(wrong.details(), unknown.details());

    // Timing: the unknown-email path must not skip the hash. Each try uses
    // a fresh email so no per-account delay applies; medians of 9, the two
    // kinds taking turns to go first so that neither always meets a colder
    // or busier machine.
    let mut known_times = Vec::new();
    let mut unknown_times = Vec::new();
    for i in 0..9 {
        let victim = email(&format!("v{i}"));
        app.sign_up(&victim).await;
        let stranger = email(&format!("u{i}"));
        let mut order = [(&victim, &mut known_times), (&stranger, &mut unknown_times)];
        if i % 2 == 1 {
            order.reverse();
        }
        for (who, times) in order {
            let start = Instant::now();
            let _ = client.login(login_req(who, "wrong password!!")).await;
            times.push(start.elapsed());
        }
    }
    let (k, u) = (median(known_times), median(unknown_times));
    let ratio = u.as_secs_f64() / k.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "known {k:?} vs unknown {u:?}");
}

async fn repeated_failures_slow_one_account_without_locking_it(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            c.edit::<twig_sessions::SessionsConfig>(|s| s.login_delay_after_failures = 3);
            c.edit::<twig_sessions::SessionsConfig>(|s| {
                s.login_delay_base = Duration::from_millis(300)
            });
            c.edit::<twig_sessions::SessionsConfig>(|s| {
                s.login_delay_max = Duration::from_millis(1200)
            });
            c.edit::<twig_sessions::SessionsConfig>(|s| s.failed_logins_per_ip_per_minute = 1000);
        })
        .spawn()
        .await;
    let victim = email("victim");
    app.sign_up(&victim).await;
    // The attacker spreads guesses over many addresses; the delay follows
    // the account, not the address.
    let mut attackers = Vec::new();
    for i in 2..7 {
        attackers.push(app.sessions_from(&format!("127.0.0.{i}")).await);
    }
    for attacker in attackers.iter_mut().take(3) {
        let start = Instant::now();
        let err = attacker
            .login(login_req(&victim, "guess guess guess"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(
            start.elapsed() < Duration::from_millis(300),
            "no delay before the threshold"
        );
    }
    // From here every attempt waits, growing: 300 ms, 600 ms, then capped.
    let start = Instant::now();
    let _ = attackers[3]
        .login(login_req(&victim, "guess guess guess"))
        .await;
    assert!(start.elapsed() >= Duration::from_millis(300));
    let start = Instant::now();
    let _ = attackers[4]
        .login(login_req(&victim, "guess guess guess"))
        .await;
    assert!(start.elapsed() >= Duration::from_millis(600));
    let mut client = app.sessions();
    // The owner still gets in (after the delay): no lockout.
    let start = Instant::now();
    client.login(login_req(&victim, PASSWORD)).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1200));
    // Success resets the count.
    let start = Instant::now();
    client.login(login_req(&victim, PASSWORD)).await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(300));
    // Unknown emails are slowed alike, so the delay reveals nothing.
    let ghost = email("ghost");
    for _ in 0..3 {
        let _ = client.login(login_req(&ghost, "guess guess guess")).await;
    }
    let start = Instant::now();
    let _ = client.login(login_req(&ghost, "guess guess guess")).await;
    assert!(start.elapsed() >= Duration::from_millis(300));
    let started = twig_audit::events_with_action(&app.db, "session.login_delay_started")
        .await
        .unwrap();
    assert_eq!(started.len(), 2, "victim and ghost");
    let failures = twig_audit::events_with_action(&app.db, "session.login")
        .await
        .unwrap();
    assert!(failures.iter().filter(|e| e.outcome == "failure").count() >= 9);
}

async fn one_ip_trying_many_accounts_is_throttled(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            c.edit::<twig_sessions::SessionsConfig>(|s| s.failed_logins_per_ip_per_minute = 5)
        })
        .spawn()
        .await;
    let mut client = app.sessions();
    for i in 0..6 {
        let err = client
            .login(login_req(&email(&format!("t{i}")), "guess guess guess"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "attempt {i}");
    }
    let err = client
        .login(login_req(&email("next"), "guess guess guess"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let retry = err
        .get_error_details()
        .retry_info()
        .cloned()
        .expect("RetryInfo");
    assert!(retry.retry_delay.unwrap() > Duration::ZERO);
    // Even the right password is refused from that address for now...
    let ada = email("ada");
    let from_9 = app.channel_from("127.0.0.9").await;
    twig_tests::sign_up_with(&from_9, &ada).await;
    let mut elsewhere = app.sessions_from("127.0.0.9").await;
    let refused = client.login(login_req(&ada, PASSWORD)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // ...while another address is not affected.
    elsewhere.login(login_req(&ada, PASSWORD)).await.unwrap();
}

async fn long_unicode_passwords_work_and_huge_ones_are_refused_unhashed(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let mut client = app.sessions();
    let ada = email("ada");
    let long: String = "pässwörd-🦀-密码-".repeat(20); // 260 chars, ~520 bytes
    // Kept with the sign-up's link until it is followed.
    client
        .sign_up(pb::SignUpRequest {
            email: ada.clone(),
            password: long.clone(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .unwrap();
    let token = app.link_token(&ada, "Verify your email").await;
    client
        .verify_email(pb::VerifyEmailRequest {
            token,
            password: long.clone(),
        })
        .await
        .unwrap();
    client.login(login_req(&ada, &long)).await.unwrap();
    // Not truncated: a prefix of the password is wrong.
    let prefix: String = long.chars().take(200).collect();
    assert_eq!(
        client
            .login(login_req(&ada, &prefix))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let huge = "a".repeat(1 << 20);
    let start = Instant::now();
    let err = client.login(login_req(&ada, &huge)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "password"
    );
    let err = client
        .sign_up(pb::SignUpRequest {
            email: email("big"),
            password: huge,
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(start.elapsed() < Duration::from_secs(5));
}

async fn garbage_tokens_are_unauthenticated_without_harm(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let long = format!("twig_st_{}", "A".repeat(10_000));
    for token in [
        "",
        "twig_st_",
        "twig_st_\0\0\0",
        long.as_str(),
        "twig_rt_abc",
        "ünïcödé",
    ] {
        let err = app.verify(token).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:.20}");
        let err = app
            .sessions()
            .refresh(pb::RefreshRequest {
                refresh_token: token.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    // The server is still fine.
    let ada = email("ada");
    app.sign_up(&ada).await;
    app.login(&ada).await;
}

async fn secrets_never_appear_in_errors_or_audit(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let t = app.login(&ada).await;
    let mut client = app.sessions();
    let wrong = client
        .login(login_req(&ada, "my secret guess!"))
        .await
        .unwrap_err();
    assert!(!wrong.message().contains("my secret guess!"));
    app.sessions()
        .logout(twig_tests::bearer(&t.access_token, pb::LogoutRequest {}))
        .await
        .unwrap();
    let dead = app.verify(&t.access_token).await.unwrap_err();
    assert!(!dead.message().contains(&t.access_token));
    let reused = client
        .refresh(pb::RefreshRequest {
            refresh_token: t.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert!(!reused.message().contains(&t.refresh_token));
    let huge = client
        .login(login_req(&ada, &"p".repeat(5000)))
        .await
        .unwrap_err();
    for status in [&wrong, &dead, &reused, &huge] {
        let details = String::from_utf8_lossy(status.details()).into_owned();
        for secret in [
            t.access_token.as_str(),
            t.refresh_token.as_str(),
            "my secret guess!",
            "ppppp",
        ] {
            assert!(!details.contains(secret) && !status.message().contains(secret));
        }
    }
    for e in twig_audit::all_events(&app.db).await.unwrap() {
        let text = format!("{e:?}");
        for secret in [
            t.access_token.as_str(),
            t.refresh_token.as_str(),
            PASSWORD,
            "my secret guess!",
        ] {
            assert!(
                !text.contains(secret),
                "audit event leaks a secret: {}",
                e.action
            );
        }
    }
}

async fn the_audit_log_is_append_only(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    app.sign_up(&email("ada")).await;
    let b = app.db.get_database_backend();
    for sql in [
        "UPDATE audit_events SET action = 'x'",
        "DELETE FROM audit_events",
    ] {
        let err = app
            .db
            .execute_raw(Statement::from_string(b, sql.to_string()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }
    assert!(!twig_audit::all_events(&app.db).await.unwrap().is_empty());
}

/// One email, one identity: the composed and decomposed forms of an
/// address are one account, and forms that only look like an address
/// (fullwidth letters, another script's look-alike, invisible characters)
/// make no account at all.
async fn look_alike_emails_are_one_account_or_none(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let composed = format!("jos\u{e9}-{suffix}@example.com");
    let decomposed = format!("jose\u{301}-{suffix}@example.com");
    let signed = app.sign_up(&composed).await;
    let user = signed.user.unwrap();
    assert_eq!(user.email, composed);
    let tokens = app.login(&decomposed).await;
    let verified = app.verify(&tokens.access_token).await.unwrap();
    assert_eq!(
        verified.user_id, user.id,
        "the decomposed form signs in to the same account"
    );
    // Signing up with the other form is signing up with the same address:
    // answered like any sign-up, and what reaches the mailbox is the note
    // that it has an account, not a link that would make a second one.
    let twin = app
        .sessions()
        .sign_up(pb::SignUpRequest {
            email: decomposed.clone(),
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(twin, pb::SignUpResponse {});
    let mail = app.mail_to(&composed).await;
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(
        mail[0].subject.contains("You already have"),
        "{}",
        mail[0].subject
    );
    let accounts = twig_sessions::entity::user::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.email.contains(&suffix))
        .count();
    assert_eq!(accounts, 1, "no second account for the same address");
    for look_alike in [
        format!("\u{ff4a}os\u{e9}-{suffix}@example.com"),
        format!("\u{458}os\u{e9}-{suffix}@example.com"),
        format!("jo\u{200b}s\u{e9}-{suffix}@example.com"),
        format!("jo\u{ad}s\u{e9}-{suffix}@example.com"),
        format!("jo\u{34f}s\u{e9}-{suffix}@example.com"),
        format!("jo\u{fe0f}s\u{e9}-{suffix}@example.com"),
        format!("jos\u{e9}\u{e0100}-{suffix}@example.com"),
        format!("\"jos\u{e9}-{suffix}\"@example.com"),
        format!("jos\u{e9}(c)-{suffix}@example.com"),
        format!(".jos\u{e9}-{suffix}@example.com"),
        format!("jos\u{e9}-{suffix}@[127.0.0.1]"),
        // A name longer than 64 characters: no mail reaches it.
        format!("{}-{suffix}@example.com", "j".repeat(40)),
    ] {
        let err = app
            .sessions()
            .sign_up(pb::SignUpRequest {
                email: look_alike.clone(),
                password: PASSWORD.into(),
                display_name: String::new(),
                organization_name: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{look_alike:?}: {err:?}");
        let err = app
            .sessions()
            .login(login_req(&look_alike, PASSWORD))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{look_alike:?}: {err:?}");
    }

    // An internationalised domain written in Punycode is the same domain:
    // the same account signs in, and a sign-up mails the note.
    let unicode = format!("u-{suffix}@b\u{fc}cher.example");
    let punycode = format!("u-{suffix}@xn--bcher-kva.example");
    let made = app.sign_up(&unicode).await.user.unwrap();
    let tokens = app.login(&punycode).await;
    assert_eq!(
        app.verify(&tokens.access_token).await.unwrap().user_id,
        made.id
    );
    app.sessions()
        .sign_up(pb::SignUpRequest {
            email: punycode.to_uppercase(),
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .unwrap();
    let mail = app.mail_to(&unicode).await;
    assert!(
        mail.len() == 1 && mail[0].subject.contains("You already have"),
        "{mail:?}"
    );
    app.stop().await;
}

/// The sign-up probe: `SignUp` used to answer ALREADY_EXISTS for an email
/// with an account, so anyone could test addresses. Now an existing and an
/// unknown address get the same answer — code, body and metadata, over
/// gRPC and HTTP/JSON — as fast (the answer waits for no lookup and no
/// hash); only the mailbox learns which it was, and the account is
/// untouched.
async fn sign_up_tells_nobody_whether_an_email_has_an_account(backend: Backend) {
    // Real OWASP hashing: a sign-up of an unknown address hashes its
    // password, which the answer must not wait for. The probes here are
    // about the answers, not the brakes (tests/e2e/brakes.rs): lifted.
    let app = TestApp::builder(backend)
        .config(|c| {
            c.edit::<twig_sessions::SessionsConfig>(|s| {
                s.brakes.sign_ups_per_address.count = 1_000_000;
                s.brakes.sign_ups_per_email.count = 1_000_000;
            })
        })
        .spawn()
        .await;
    let ada = email("ada");
    let ada_user = app.sign_up(&ada).await.user.unwrap();
    let ada_session = app.login(&ada).await;
    let probe = |who: &str| pb::SignUpRequest {
        email: who.into(),
        password: "the prober's own password".into(),
        display_name: "Prober".into(),
        organization_name: String::new(),
    };
    let comparable = |metadata: &tonic::metadata::MetadataMap| {
        let mut headers: Vec<(String, String)> = metadata
            .clone()
            .into_headers()
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        headers.sort();
        headers
    };

    let unknown = email("nobody");
    for (existing, unknown) in [
        (ada.clone(), unknown.clone()),
        (ada.to_uppercase(), email("nobody")),
    ] {
        let known = app.sessions().sign_up(probe(&existing)).await;
        let fresh = app.sessions().sign_up(probe(&unknown)).await;
        let (known, fresh) = (
            known.expect("an existing email is answered like any other"),
            fresh.expect("an unknown email is accepted"),
        );
        assert_eq!(known.get_ref(), fresh.get_ref());
        assert_eq!(known.get_ref(), &pb::SignUpResponse {});
        assert_eq!(comparable(known.metadata()), comparable(fresh.metadata()));
    }

    // The same over HTTP/JSON: status, headers (but the date) and body.
    let post = |who: String| {
        let addr = app.addr;
        async move {
            let body = serde_json::json!({
                "email": who,
                "password": "the prober's own password",
            })
            .to_string();
            let (status, mut headers, body) = twig_tests::http1(
                addr,
                "POST /v1/sign-up HTTP/1.1\r\nContent-Type: application/json",
                body.as_bytes(),
            )
            .await;
            headers.retain(|(name, _)| name != "date");
            headers.sort();
            (status, headers, body)
        }
    };
    let known = post(ada.clone()).await;
    let fresh = post(email("nobody")).await;
    assert!(known.0.contains(" 200 "), "{known:?}");
    assert_eq!(known, fresh);
    assert_eq!(String::from_utf8_lossy(&known.2), "{}");

    // Only the mailbox tells them apart: the account's gets a note, the
    // unknown address a link that would make an account.
    let notes = app.mail_count_to(&ada, 3).await;
    assert!(
        notes.iter().all(|m| m.subject.contains("You already have")
            && m.links.iter().all(|l| !l.contains("token="))),
        "{notes:?}"
    );
    app.link_token(&unknown, "Verify your email").await;

    // The account is untouched: its password, its session, one account.
    app.login(&ada).await;
    let wrong = app
        .sessions()
        .login(login_req(&ada, "the prober's own password"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    app.verify(&ada_session.access_token).await.unwrap();
    let same_email = twig_sessions::entity::user::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.email == ada)
        .collect::<Vec<_>>();
    assert_eq!(same_email.len(), 1);
    assert_eq!(same_email[0].id.to_string(), ada_user.id);

    // Timing: medians of 9, the two kinds taking turns to go first. The
    // answer waits for no lookup and no hash, so the two differ by far
    // less than one hash costs here (measured: a login of an unknown
    // address, which verifies against a decoy hash).
    let mut hash_times = Vec::new();
    for i in 0..3 {
        let start = Instant::now();
        let _ = app
            .sessions()
            .login(login_req(&email(&format!("decoy{i}")), "wrong password!!"))
            .await;
        hash_times.push(start.elapsed());
    }
    let hash = median(hash_times);
    let mut known_times = Vec::new();
    let mut unknown_times = Vec::new();
    for i in 0..9 {
        let stranger = email(&format!("u{i}"));
        let mut order = [(&ada, &mut known_times), (&stranger, &mut unknown_times)];
        if i % 2 == 1 {
            order.reverse();
        }
        for (who, times) in order {
            let start = Instant::now();
            app.sessions().sign_up(probe(who)).await.unwrap();
            times.push(start.elapsed());
        }
    }
    let (k, u) = (median(known_times), median(unknown_times));
    println!("SignUp answered in {k:?} (an account) and {u:?} (none); one hash: {hash:?}");
    assert!(
        u.abs_diff(k) < hash / 2,
        "known {k:?} vs unknown {u:?}, one hash {hash:?}"
    );
    app.stop().await;
}

/// A failed login is in the log of each organisation the account belongs
/// to, and of no other; one for an unknown address is in none.
async fn failed_logins_are_in_each_organisation_of_the_account(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let (ada, bob, carol) = (email("ada"), email("bob"), email("carol"));
    let ada_org = app.sign_up(&ada).await.organization.unwrap().id;
    let bob_signed = app.sign_up(&bob).await;
    let bob_org = bob_signed.organization.unwrap().id;
    let carol_org = app.sign_up(&carol).await.organization.unwrap().id;
    app.add_member(
        &bob_signed.tokens.unwrap().access_token,
        &bob_org,
        &ada,
        pb::Role::Member,
    )
    .await;
    for who in [&ada, &email("nobody")] {
        let err = app
            .sessions()
            .login(login_req(who, "wrong password!!"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let failures: Vec<_> = twig_audit::events_with_action(&app.db, "session.login")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome == "failure")
        .collect();
    let mut orgs: Vec<Option<String>> = failures
        .iter()
        .map(|e| e.org_id.map(|o| o.to_string()))
        .collect();
    orgs.sort();
    let mut expected = vec![None, Some(ada_org), Some(bob_org)];
    expected.sort();
    assert_eq!(orgs, expected, "{failures:?}");
    assert!(!orgs.contains(&Some(carol_org)));
    app.stop().await;
}

on_both_backends!(
    sign_up_tells_nobody_whether_an_email_has_an_account,
    failed_logins_are_in_each_organisation_of_the_account,
    look_alike_emails_are_one_account_or_none,
    unknown_email_and_wrong_password_look_the_same,
    repeated_failures_slow_one_account_without_locking_it,
    one_ip_trying_many_accounts_is_throttled,
    long_unicode_passwords_work_and_huge_ones_are_refused_unhashed,
    garbage_tokens_are_unauthenticated_without_harm,
    secrets_never_appear_in_errors_or_audit,
    the_audit_log_is_append_only,
);

/// PostgreSQL going away mid-flight: verification answers UNAVAILABLE,
/// never OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_means_unavailable_not_ok() {
    let app = TestApp::builder(Backend::Postgres)
        .weak_hashing()
        .config(|c| {
            c.edit::<twig_sessions::SessionsConfig>(|s| s.verify_cache_ttl = Duration::ZERO)
        })
        .spawn()
        .await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let t = app.login(&ada).await;
    app.verify(&t.access_token).await.unwrap();
    // Cut every connection of this test's database and forbid new ones.
    let name = app
        .config
        .database
        .url
        .expose()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let admin = sea_orm::Database::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    let err = app.verify(&t.access_token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = app
        .sessions()
        .login(login_req(&ada, PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
}
