//! API keys: the life of a key, who may mint what, and hostile keys.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;
use twig_crypto::{Token, TokenHash, TokenKind};
use twig_proto::apikeys::v1 as pb;
use twig_proto::audit::v1 as audit_pb;
use twig_proto::auth::v1 as apb;
use twig_proto::sessions::v1 as spb;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

/// An owner's access token in a fresh organisation.
async fn owner(app: &TestApp) -> String {
    let ada = email("owner");
    app.sign_up(&ada).await;
    app.login(&ada).await.access_token
}

async fn create(
    app: &TestApp,
    token: &str,
    scopes: &[apb::Scope],
) -> Result<pb::CreateApiKeyResponse, tonic::Status> {
    app.api_keys()
        .create_api_key(bearer(
            token,
            pb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "ci".into(),
                scopes: scopes.iter().map(|s| *s as i32).collect(),
                expires_at: None,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn verify(
    app: &TestApp,
    key: &str,
    scope: apb::Scope,
) -> Result<pb::VerifyApiKeyResponse, tonic::Status> {
    app.api_keys()
        .verify_api_key(app.internal(pb::VerifyApiKeyRequest {
            key: key.into(),
            required_scope: scope as i32,
            client_ip: String::new(),
        }))
        .await
        .map(|r| r.into_inner())
}

async fn create_verify_rotate_revoke(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let token = owner(&app).await;
    let created = create(&app, &token, &[apb::Scope::Read, apb::Scope::Write])
        .await
        .unwrap();
    let key = created.key.unwrap();
    let secret = created.secret;
    assert!(secret.starts_with("twig_sk_"));
    assert!(secret.starts_with(&key.prefix) && key.prefix.len() == 16);

    let v = verify(&app, &secret, apb::Scope::Write)
        .await
        .unwrap()
        .principal
        .unwrap();
    assert_eq!(
        v.credential,
        Some(apb::principal::Credential::ApiKeyId(key.id.clone()))
    );
    assert_eq!(v.user_id, key.created_by);
    assert!(v.roles.is_empty());
    assert_eq!(v.organization_id, key.organization_id);
    assert_eq!(
        v.scopes,
        vec![apb::Scope::Read as i32, apb::Scope::Write as i32]
    );

    // Get and List never show the secret.
    let got = app
        .api_keys()
        .get_api_key(bearer(
            &token,
            pb::GetApiKeyRequest {
                key_id: key.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{got:?}").contains(&secret[16..]));
    // The key itself (read scope) may list its organisation's keys.
    let listed = app
        .api_keys()
        .list_api_keys(bearer(&secret, pb::ListApiKeysRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert!(!format!("{listed:?}").contains(&secret[16..]));

    // Rotate with a 60 s overlap: both work, then only the new one.
    let rotated = app
        .api_keys()
        .rotate_api_key(bearer(
            &token,
            pb::RotateApiKeyRequest {
                key_id: key.id.clone(),
                overlap_seconds: 60,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let new_secret = rotated.secret;
    assert_ne!(new_secret, secret);
    verify(&app, &new_secret, apb::Scope::Read).await.unwrap();
    verify(&app, &secret, apb::Scope::Read).await.unwrap();
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(
        verify(&app, &secret, apb::Scope::Read)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    verify(&app, &new_secret, apb::Scope::Read).await.unwrap();

    // Rotation with no overlap ends the old secret at once.
    let again = app
        .api_keys()
        .rotate_api_key(bearer(
            &token,
            pb::RotateApiKeyRequest {
                key_id: key.id.clone(),
                overlap_seconds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        verify(&app, &new_secret, apb::Scope::Read)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    verify(&app, &again.secret, apb::Scope::Read).await.unwrap();

    // Revoke: dead at once, even though it was just cached.
    app.api_keys()
        .revoke_api_key(bearer(
            &token,
            pb::RevokeApiKeyRequest {
                key_id: key.id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        verify(&app, &again.secret, apb::Scope::Read)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let audit = twig_audit::all_events(&app.db).await.unwrap();
    for action in ["apikey.created", "apikey.rotated", "apikey.revoked"] {
        assert!(audit.iter().any(|e| e.action == action), "{action}");
    }
}

async fn only_hashes_are_stored(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let token = owner(&app).await;
    let secret = create(&app, &token, &[apb::Scope::Read])
        .await
        .unwrap()
        .secret;
    let b = app.db.get_database_backend();
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            b,
            "SELECT secret_hash, prefix FROM api_key_secrets".to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let hash: Vec<u8> = rows[0].try_get("", "secret_hash").unwrap();
    assert_eq!(hash, TokenHash::of(&secret).as_bytes().to_vec());
    let mut text = String::new();
    for sql in [
        "SELECT name || scopes || prefix AS t FROM api_keys",
        "SELECT prefix AS t FROM api_key_secrets",
        "SELECT details AS t FROM audit_events",
    ] {
        for row in app
            .db
            .query_all_raw(Statement::from_string(b, sql.to_string()))
            .await
            .unwrap()
        {
            text.push_str(&row.try_get::<String>("", "t").unwrap());
        }
    }
    assert!(
        !text.contains(&secret[16..]),
        "the secret's body is stored somewhere"
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn right_prefix_wrong_secret_is_just_garbage(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let token = owner(&app).await;
    let real = create(&app, &token, &[apb::Scope::Read])
        .await
        .unwrap()
        .secret;
    let forged = |i: usize| {
        // The real key's public prefix, then a different body, with a valid checksum.
        let body = format!(
            "{}{}",
            &real[8..16],
            &Token::generate(TokenKind::ApiKey).expose()[16 + i % 2..51 + i % 2]
        );
        Token::with_body(TokenKind::ApiKey, &body[..43]).unwrap()
    };
    let random = || Token::generate(TokenKind::ApiKey).expose().to_string();
    let a = verify(&app, &forged(0), apb::Scope::Read)
        .await
        .unwrap_err();
    let b = verify(&app, &random(), apb::Scope::Read).await.unwrap_err();
    let c = verify(&app, "twig_sk_garbage", apb::Scope::Read)
        .await
        .unwrap_err();
    for e in [&a, &b, &c] {
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(e.message(), a.message());
        assert_eq!(e.details(), a.details());
    }
    // A known prefix buys no time signal: both take one lookup by hash.
    let (mut with_prefix, mut without) = (Vec::new(), Vec::new());
    for i in 0..15 {
        let f = forged(i);
        let r = random();
        let t = Instant::now();
        let _ = verify(&app, &f, apb::Scope::Read).await;
        with_prefix.push(t.elapsed());
        let t = Instant::now();
        let _ = verify(&app, &r, apb::Scope::Read).await;
        without.push(t.elapsed());
    }
    let ratio = median(with_prefix).as_secs_f64() / median(without).as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "ratio {ratio}");
}

async fn nobody_mints_beyond_their_own_scopes(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let owner_email = email("owner");
    let org = app.sign_up(&owner_email).await.organization.unwrap();
    let owner_token = app.login(&owner_email).await.access_token;
    let member_email = email("member");
    app.sign_up(&member_email).await;
    app.add_member(&owner_token, &org.id, &member_email, spb::Role::Member)
        .await;
    let member_token = app
        .sessions()
        .login(spb::LoginRequest {
            email: member_email,
            password: PASSWORD.into(),
            organization_id: org.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;

    // A member may create keys within their scopes, never an admin key.
    create(
        &app,
        &member_token,
        &[apb::Scope::Read, apb::Scope::Execute],
    )
    .await
    .unwrap();
    let denied = create(&app, &member_token, &[apb::Scope::Admin])
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A read key can neither create keys nor revoke them.
    let read = create(&app, &owner_token, &[apb::Scope::Read])
        .await
        .unwrap();
    let denied = create(&app, &read.secret, &[apb::Scope::Read])
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = app
        .api_keys()
        .revoke_api_key(bearer(
            &read.secret,
            pb::RevokeApiKeyRequest {
                key_id: read.key.clone().unwrap().id,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Nor pass a check for a scope it lacks.
    let denied = verify(&app, &read.secret, apb::Scope::Write)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // An admin key may mint any key, an admin one included.
    let admin = create(&app, &owner_token, &[apb::Scope::Admin])
        .await
        .unwrap();
    create(&app, &admin.secret, &[apb::Scope::Admin])
        .await
        .unwrap();

    // Scopes can be narrowed, never widened; the change applies at once.
    let rw = create(&app, &owner_token, &[apb::Scope::Read, apb::Scope::Write])
        .await
        .unwrap();
    verify(&app, &rw.secret, apb::Scope::Write).await.unwrap();
    let update = |scopes: Vec<apb::Scope>| {
        let mut client = app.api_keys();
        let token = owner_token.clone();
        let id = rw.key.clone().unwrap().id;
        async move {
            client
                .update_api_key(bearer(
                    &token,
                    pb::UpdateApiKeyRequest {
                        key_id: id,
                        name: Some("renamed".into()),
                        scopes: scopes.into_iter().map(|s| s as i32).collect(),
                        allowed_cidrs: None,
                    },
                ))
                .await
        }
    };
    assert_eq!(
        update(vec![apb::Scope::Admin]).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let narrowed = update(vec![apb::Scope::Read])
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(narrowed.name, "renamed");
    assert_eq!(
        verify(&app, &rw.secret, apb::Scope::Write)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
}

async fn keys_of_one_org_never_reach_another(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let a = owner(&app).await;
    let b = owner(&app).await;
    let a_key = create(&app, &a, &[apb::Scope::Admin]).await.unwrap();
    let b_key = create(&app, &b, &[apb::Scope::Admin]).await.unwrap();
    let b_id = b_key.key.unwrap().id;
    for credential in [a.as_str(), a_key.secret.as_str()] {
        let hidden = app
            .api_keys()
            .get_api_key(bearer(
                credential,
                pb::GetApiKeyRequest {
                    key_id: b_id.clone(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(hidden.code(), Code::NotFound);
        let hidden = app
            .api_keys()
            .revoke_api_key(bearer(
                credential,
                pb::RevokeApiKeyRequest {
                    key_id: b_id.clone(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(hidden.code(), Code::NotFound);
        let listed = app
            .api_keys()
            .list_api_keys(bearer(credential, pb::ListApiKeysRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .keys;
        assert!(listed.iter().all(|k| k.id != b_id));
    }
    verify(&app, &b_key.secret, apb::Scope::Read).await.unwrap();
}

async fn hostile_keys_are_refused_and_audited_by_prefix(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let long = format!("twig_sk_{}", "A".repeat(10_000));
    for key in ["", "twig_sk_\0\0evil", long.as_str(), "twig_st_notakey"] {
        let err = verify(&app, key, apb::Scope::Read).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    // Non-UTF-8 in the bearer header.
    let mut request = tonic::Request::new(pb::ListApiKeysRequest::default());
    request.metadata_mut().insert(
        "authorization",
        tonic::metadata::MetadataValue::try_from(&b"Bearer twig_sk_\xff\xfe"[..]).unwrap(),
    );
    let err = app.api_keys().list_api_keys(request).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Repeats are counted, not written one row each: one row for this
    // client (no address given) and period, counting the four hostile
    // keys above and the twenty repeats, with their prefixes as samples.
    for _ in 0..20 {
        let _ = verify(&app, "twig_sk_same_bad_key", apb::Scope::Read).await;
    }
    app.api_keys_service.flush().await.unwrap();
    let events = twig_audit::events_with_action(&app.db, "apikey.verify_failed")
        .await
        .unwrap();
    let same: Vec<_> = events
        .iter()
        .filter(|e| e.details.contains("twig_sk_same_ba"))
        .collect();
    assert_eq!(same.len(), 1);
    assert!(
        same[0].details.contains("\"count\":24"),
        "{}",
        same[0].details
    );
    for e in &events {
        assert!(
            !e.details.contains(&"A".repeat(20)),
            "only the prefix is kept"
        );
        assert!(!e.details.contains('\0'));
    }
}

async fn expired_keys_stop_working(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let token = owner(&app).await;
    let now = app.clock_now();
    let created = app
        .api_keys()
        .create_api_key(bearer(
            &token,
            pb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "short".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: Some(prost_types::Timestamp {
                    seconds: now + 60,
                    nanos: 0,
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    verify(&app, &created.secret, apb::Scope::Read)
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(
        verify(&app, &created.secret, apb::Scope::Read)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let past = app
        .api_keys()
        .create_api_key(bearer(
            &token,
            pb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "past".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: Some(prost_types::Timestamp {
                    seconds: now - 10,
                    nanos: 0,
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::InvalidArgument);
}

async fn admins_query_the_audit_log(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let owner_token = owner(&app).await;
    let read = create(&app, &owner_token, &[apb::Scope::Read])
        .await
        .unwrap();
    let mut client = app.audit();
    let all = client
        .list_events(bearer(&owner_token, audit_pb::ListEventsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .events;
    let actions: Vec<_> = all.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"session.login") && actions.contains(&"apikey.created"),
        "{actions:?}"
    );
    // Filtered and paginated.
    let page = client
        .list_events(bearer(
            &owner_token,
            audit_pb::ListEventsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events.len(), 1);
    let next = client
        .list_events(bearer(
            &owner_token,
            audit_pb::ListEventsRequest {
                page_size: 1,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(next.events[0].id, page.events[0].id);
    let only = client
        .list_events(bearer(
            &owner_token,
            audit_pb::ListEventsRequest {
                action: "apikey.created".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(only.iter().all(|e| e.action == "apikey.created") && !only.is_empty());
    // Not for a read key, and not another org's events.
    let denied = client
        .list_events(bearer(&read.secret, audit_pb::ListEventsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let other = owner(&app).await;
    let theirs = client
        .list_events(bearer(&other, audit_pb::ListEventsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .events;
    let org_ids: std::collections::HashSet<_> =
        theirs.iter().map(|e| e.organization_id.clone()).collect();
    assert_eq!(org_ids.len(), 1);
    assert!(!org_ids.contains(&all[0].organization_id));
}

async fn usage_is_counted_per_minute_and_day(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let token = owner(&app).await;
    let created = create(&app, &token, &[apb::Scope::Read]).await.unwrap();
    let key_id = created.key.unwrap().id;
    let t0 = app.clock_now();
    for _ in 0..5 {
        verify(&app, &created.secret, apb::Scope::Read)
            .await
            .unwrap();
    }
    app.clock.advance(Duration::from_secs(120));
    for _ in 0..3 {
        verify(&app, &created.secret, apb::Scope::Read)
            .await
            .unwrap();
    }
    // Failures do not count.
    let _ = verify(&app, &created.secret, apb::Scope::Admin).await;
    app.api_keys_service.flush().await.unwrap();
    // Two more after the flush: counted from memory.
    for _ in 0..2 {
        verify(&app, &created.secret, apb::Scope::Read)
            .await
            .unwrap();
    }
    let usage = |granularity: pb::Granularity| {
        let mut client = app.api_keys();
        let token = token.clone();
        let key_id = key_id.clone();
        async move {
            client
                .get_key_usage(bearer(
                    &token,
                    pb::GetKeyUsageRequest {
                        key_id,
                        granularity: granularity as i32,
                        since: Some(prost_types::Timestamp {
                            seconds: t0 - 60,
                            nanos: 0,
                        }),
                        until: Some(prost_types::Timestamp {
                            seconds: t0 + 300,
                            nanos: 0,
                        }),
                    },
                ))
                .await
        }
    };
    let minutes = usage(pb::Granularity::Minute).await.unwrap().into_inner();
    let counts: Vec<u64> = minutes.points.iter().map(|p| p.requests).collect();
    assert_eq!(counts, vec![5, 5], "{minutes:?}");
    assert_eq!(minutes.total, 10);
    assert_eq!(
        minutes.points[1].start.unwrap().seconds - minutes.points[0].start.unwrap().seconds,
        120
    );
    let days = usage(pb::Granularity::Day).await.unwrap().into_inner();
    assert_eq!(days.total, 10);
    assert!(days.points.len() <= 2 && days.points[0].start.unwrap().seconds % 86_400 == 0);
    // last_used_at is set.
    let got = app
        .api_keys()
        .get_api_key(bearer(
            &token,
            pb::GetApiKeyRequest {
                key_id: key_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert!(got.last_used_at.unwrap().seconds >= t0 + 120);
    // Another organisation cannot read it.
    let other = owner(&app).await;
    let hidden = app
        .api_keys()
        .get_key_usage(bearer(
            &other,
            pb::GetKeyUsageRequest {
                key_id,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
}

on_both_backends!(
    usage_is_counted_per_minute_and_day,
    create_verify_rotate_revoke,
    only_hashes_are_stored,
    right_prefix_wrong_secret_is_just_garbage,
    nobody_mints_beyond_their_own_scopes,
    keys_of_one_org_never_reach_another,
    hostile_keys_are_refused_and_audited_by_prefix,
    expired_keys_stop_working,
    admins_query_the_audit_log,
);
