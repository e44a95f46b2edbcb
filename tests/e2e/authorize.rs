//! `twig.edge.v1.AuthorizeService/Authorize`: the whole decision for an
//! internal service, in one call.

use tonic::Code;
use twig_proto::apikeys::v1 as kpb;
use twig_proto::auth::v1::Scope;
use twig_proto::edge::v1 as pb;
use twig_proto::edge::v1::authorize_request::Target;
use twig_proto::edge::v1::authorize_service_client::AuthorizeServiceClient;
use twig_tests::{Backend, TestApp, bearer, email};

fn request(credential: &str, target: Target, client_ip: &str, cost: u64) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        credential: credential.into(),
        target: Some(target),
        client_ip: client_ip.into(),
        cost,
    }
}

async fn authorize(
    app: &TestApp,
    message: pb::AuthorizeRequest,
) -> Result<pb::AuthorizeResponse, tonic::Status> {
    AuthorizeServiceClient::new(app.channel.clone())
        .authorize(app.internal(message))
        .await
        .map(|r| r.into_inner())
}

async fn one_call_gives_the_whole_decision(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| c.plans.default_plan_mut().default_limit.requests = 5)
        .spawn()
        .await;
    let ada = email("authorize");
    app.sign_up(&ada).await;
    let session = app.login(&ada).await.access_token;
    let created = app
        .api_keys()
        .create_api_key(bearer(
            &session,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "agent".into(),
                scopes: vec![Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let key = created.secret;
    let key_id = created.key.unwrap().id;
    let list = Target::Method("/twig.apikeys.v1.ApiKeyService/ListApiKeys".into());
    let create = Target::Method("/twig.apikeys.v1.ApiKeyService/CreateApiKey".into());

    // Allowed: the principal and the quota after this request.
    let ok = authorize(&app, request(&key, list.clone(), "203.0.113.9", 2))
        .await
        .unwrap();
    assert!(ok.allowed, "{ok:?}");
    assert_eq!(ok.denial, pb::Denial::Unspecified as i32);
    let principal = ok.principal.unwrap();
    assert_eq!(
        principal.credential,
        Some(twig_proto::auth::v1::principal::Credential::ApiKeyId(
            key_id.clone()
        ))
    );
    assert_eq!(principal.scopes, vec![Scope::Read as i32]);
    let quota = ok.quota.unwrap();
    assert_eq!((quota.limit, quota.remaining), (5, 3), "cost 2 of 5");
    assert!(quota.reset_after.is_some());

    // The method's declared scope: a read key may not create keys.
    let denied = authorize(&app, request(&key, create.clone(), "203.0.113.9", 1))
        .await
        .unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.denial, pb::Denial::PermissionDenied as i32);
    assert!(denied.reason.contains("write scope"), "{denied:?}");
    assert!(denied.principal.is_some(), "the caller is still named");
    // Or a scope the calling service names itself.
    let by_scope = authorize(
        &app,
        request(
            &key,
            Target::RequiredScope(Scope::Execute as i32),
            "203.0.113.9",
            1,
        ),
    )
    .await
    .unwrap();
    assert_eq!(by_scope.denial, pb::Denial::PermissionDenied as i32);

    // Refusals do not spend quota: 3 remain; the third next call is over.
    for remaining in [2, 1, 0] {
        let r = authorize(&app, request(&key, list.clone(), "203.0.113.9", 1))
            .await
            .unwrap();
        assert!(r.allowed);
        assert_eq!(r.quota.unwrap().remaining, remaining);
    }
    let over = authorize(&app, request(&key, list.clone(), "203.0.113.9", 1))
        .await
        .unwrap();
    assert!(!over.allowed);
    assert_eq!(over.denial, pb::Denial::ResourceExhausted as i32);
    let quota = over.quota.unwrap();
    assert!(quota.retry_after.is_some(), "{quota:?}");
    assert!(over.reason.contains("rate limit"), "{over:?}");

    // A session is not rate-limited here, and carries its user's scopes.
    let by_session = authorize(&app, request(&session, create.clone(), "::1", 1))
        .await
        .unwrap();
    assert!(by_session.allowed, "{by_session:?}");
    assert!(by_session.quota.is_none());

    // Unknown or missing credentials are UNAUTHENTICATED answers.
    for bad in ["", "Bearer ", "twig_sk_not-a-real-key", "something-else"] {
        let r = authorize(&app, request(bad, list.clone(), "203.0.113.9", 1))
            .await
            .unwrap();
        assert!(!r.allowed, "{bad:?}");
        assert_eq!(r.denial, pb::Denial::Unauthenticated as i32, "{bad:?}");
        assert!(r.principal.is_none());
    }

    // The key's IP allowlist is part of the decision.
    app.api_keys()
        .update_api_key(bearer(
            &session,
            kpb::UpdateApiKeyRequest {
                key_id: key_id.clone(),
                allowed_cidrs: Some(kpb::CidrList {
                    cidrs: vec!["198.51.100.0/24".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let elsewhere = authorize(
        &app,
        request(
            &key,
            Target::RequiredScope(Scope::Read as i32),
            "203.0.113.9",
            1,
        ),
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.denial, pb::Denial::PermissionDenied as i32);

    // Bad input is an error, not a decision.
    for (bad, field) in [
        (request(&key, list.clone(), "", 1), "client_ip"),
        (request(&key, list.clone(), "not-an-ip", 1), "client_ip"),
        (
            request(&key, Target::Method("/acme.v1.Other/Do".into()), "::1", 1),
            "method",
        ),
        (
            pb::AuthorizeRequest {
                target: None,
                ..request(&key, list.clone(), "::1", 1)
            },
            "target",
        ),
    ] {
        let e = authorize(&app, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert!(format!("{e:?}").contains(field), "{field}: {e:?}");
    }

    // Authorize itself is internal.
    let outside = AuthorizeServiceClient::new(app.channel.clone())
        .authorize(bearer(&session, request(&key, list, "::1", 1)))
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied);
    app.stop().await;
}

/// Per key by default; an organisation with a limit of its own (an
/// enterprise plan) has one count shared by all its keys, at the edge as in
/// `Check`.
async fn an_organisations_limit_is_shared_by_its_keys(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| c.plans.default_plan_mut().default_limit.requests = 100)
        .spawn()
        .await;
    let ada = email("org-limit");
    app.sign_up(&ada).await;
    let session = app.login(&ada).await.access_token;
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        let created = app
            .api_keys()
            .create_api_key(bearer(
                &session,
                kpb::CreateApiKeyRequest {
                    service_account_id: String::new(),
                    name: name.into(),
                    scopes: vec![Scope::Read as i32],
                    expires_at: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        keys.push((created.secret, created.key.unwrap()));
    }
    let list = Target::Method("/twig.apikeys.v1.ApiKeyService/ListApiKeys".into());
    // By default each key has its own 100.
    for (secret, _) in &keys {
        let d = authorize(&app, request(secret, list.clone(), "203.0.113.9", 1))
            .await
            .unwrap();
        assert_eq!(d.quota.unwrap().remaining, 99);
    }
    // The organisation's own limit: 4 a minute for all its keys together.
    let org = keys[0].1.organization_id.clone();
    app.quota()
        .set_limit(bearer(
            &session,
            twig_proto::quota::v1::SetLimitRequest {
                limit: Some(twig_proto::quota::v1::Limit {
                    subject: format!("org:{org}"),
                    limit: 4,
                    period: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let (a, b) = (&keys[0].0, &keys[1].0);
    let d = authorize(&app, request(a, list.clone(), "203.0.113.9", 2))
        .await
        .unwrap();
    assert_eq!(
        (d.quota.as_ref().unwrap().limit, d.quota.unwrap().remaining),
        (4, 2)
    );
    // The other key spends from the same count, over gRPC.
    let listed = app
        .api_keys()
        .list_api_keys(bearer(b, kpb::ListApiKeysRequest::default()))
        .await
        .expect("third unit of four");
    assert_eq!(listed.into_inner().keys.len(), 2);
    let d = authorize(&app, request(b, list.clone(), "203.0.113.9", 1))
        .await
        .unwrap();
    assert!(d.allowed && d.quota.unwrap().remaining == 0);
    for secret in [a, b] {
        let refused = app
            .api_keys()
            .list_api_keys(bearer(secret, kpb::ListApiKeysRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused.message().contains("this organisation"),
            "{refused:?}"
        );
    }
    app.stop().await;
}

on_both_backends!(
    one_call_gives_the_whole_decision,
    an_organisations_limit_is_shared_by_its_keys
);
