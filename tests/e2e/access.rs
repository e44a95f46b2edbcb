//! Each RPC's declared caller (`option (twig.auth.v1.access)`) is enforced
//! in front of the services: refusals come before any service code, with
//! the status and message of the missing piece.

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use twig_proto::apikeys::v1 as pb;
use twig_proto::auth::v1 as apb;
use twig_proto::sessions::v1 as spb;
use twig_tests::{Backend, TestApp, bearer, email};

async fn declared_callers_are_enforced(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("access");
    app.sign_up(&ada).await;
    let owner = app.login(&ada).await.access_token;
    let reader = app
        .api_keys()
        .create_api_key(bearer(
            &owner,
            pb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "reader".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let create = |token: Option<&str>| {
        let message = pb::CreateApiKeyRequest {
            service_account_id: String::new(),
            name: "more".into(),
            scopes: vec![apb::Scope::Read as i32],
            expires_at: None,
        };
        let request = match token {
            Some(t) => bearer(t, message),
            None => tonic::Request::new(message),
        };
        let mut client = app.api_keys();
        async move { client.create_api_key(request).await }
    };

    // CreateApiKey declares CALLER_PRINCIPAL with the write scope.
    let anonymous = create(None).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(
        anonymous.message().contains("authorization: Bearer"),
        "{anonymous:?}"
    );
    let read_only = create(Some(&reader)).await.unwrap_err();
    assert_eq!(read_only.code(), Code::PermissionDenied);
    assert!(read_only.message().contains("write scope"), "{read_only:?}");
    // Nothing was written by the refused calls.
    let keys = app
        .api_keys()
        .list_api_keys(bearer(&owner, pb::ListApiKeysRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    // The owner's session meets the same requirement.
    assert!(create(Some(&owner)).await.is_ok());

    // ChangePassword declares CALLER_SESSION: an API key is refused.
    let by_key = app
        .sessions()
        .change_password(bearer(
            &reader,
            spb::ChangePasswordRequest {
                current_password: "whatever".into(),
                new_password: "whatever-else-entirely".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(by_key.code(), Code::PermissionDenied);
    assert!(by_key.message().contains("session token"), "{by_key:?}");

    // VerifyApiKey declares CALLER_INTERNAL: a session is not enough.
    let not_internal = app
        .api_keys()
        .verify_api_key(bearer(
            &owner,
            pb::VerifyApiKeyRequest {
                key: reader.clone(),
                required_scope: apb::Scope::Read as i32,
                client_ip: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(not_internal.code(), Code::PermissionDenied);
    assert!(not_internal.message().contains("x-twig-internal-token"));

    // Login is public; so is the health check, which is not a twig RPC.
    let login = app
        .sessions()
        .login(spb::LoginRequest {
            email: ada.clone(),
            password: twig_tests::PASSWORD.into(),
            organization_id: String::new(),
        })
        .await;
    assert!(login.is_ok(), "{login:?}");
    let health = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await;
    assert!(health.is_ok(), "{health:?}");
    app.stop().await;
}

/// Principal metadata a client sends is stripped: it neither signs anyone
/// in nor changes who a signed-in caller is, on gRPC or HTTP/JSON.
async fn forged_principal_metadata_is_ignored(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = app.sign_up(&email("ada")).await;
    let ada_id = ada.user.unwrap().id;
    let ada_org = ada.organization.unwrap().id;
    let bob_email = email("bob");
    app.sign_up(&bob_email).await;
    let bob = app.login(&bob_email).await.access_token;
    let forge = |request: &mut tonic::Request<spb::GetCurrentUserRequest>| {
        for (name, value) in [
            ("x-twig-principal-user-id", ada_id.as_str()),
            ("x-twig-principal-org-id", ada_org.as_str()),
            ("x-twig-principal-scopes", "admin"),
            ("x-twig-principal", "user:ada"),
        ] {
            request.metadata_mut().insert(name, value.parse().unwrap());
        }
    };

    let mut anonymous = tonic::Request::new(spb::GetCurrentUserRequest {});
    forge(&mut anonymous);
    let refused = app
        .sessions()
        .get_current_user(anonymous)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut as_bob = bearer(&bob, spb::GetCurrentUserRequest {});
    forge(&mut as_bob);
    let me = app
        .sessions()
        .get_current_user(as_bob)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().email, bob_email);
    assert_ne!(me.organization_id, ada_org);

    // The same over HTTP/JSON.
    let head = format!(
        "GET /v1/me HTTP/1.1\r\nX-Twig-Principal-User-Id: {ada_id}\r\nX-Twig-Principal-Org-Id: {ada_org}"
    );
    let (status, _, _) = twig_tests::http1(app.addr, &head, b"").await;
    assert!(status.contains(" 401"), "{status}");
    let head = format!("{head}\r\nAuthorization: Bearer {bob}");
    let (status, _, body) = twig_tests::http1(app.addr, &head, b"").await;
    assert!(status.contains(" 200"), "{status}");
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains(&bob_email) && !body.contains(&ada_id),
        "{body}"
    );
    app.stop().await;
}

on_both_backends!(
    declared_callers_are_enforced,
    forged_principal_metadata_is_ignored
);
