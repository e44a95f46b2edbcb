//! IP allowlists of organisations and keys, the client address behind
//! trusted proxies, and the audit of denials.

use std::net::IpAddr;

use tonic::Code;
use tonic_types::StatusExt;
use twig_proto::apikeys::v1 as pb;
use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
use twig_proto::auth::v1 as apb;
use twig_tests::{Backend, TestApp, bearer, email};

async fn setup(app: &TestApp) -> (String, String, String) {
    let ada = email("owner");
    app.sign_up(&ada).await;
    let token = app.login(&ada).await.access_token;
    let created = app
        .api_keys()
        .create_api_key(bearer(
            &token,
            pb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "fenced".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    (token, created.key.unwrap().id, created.secret)
}

async fn verify_from(app: &TestApp, key: &str, ip: &str) -> Result<(), Code> {
    app.api_keys()
        .verify_api_key(app.internal(pb::VerifyApiKeyRequest {
            key: key.into(),
            required_scope: 0,
            client_ip: ip.into(),
        }))
        .await
        .map(|_| ())
        .map_err(|e| e.code())
}

async fn set_org(app: &TestApp, token: &str, cidrs: &[&str]) -> Result<Vec<String>, tonic::Status> {
    app.api_keys()
        .set_org_allowlist(bearer(
            token,
            pb::SetOrgAllowlistRequest {
                allowlist: Some(pb::CidrList {
                    cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
                }),
            },
        ))
        .await
        .map(|r| r.into_inner().allowlist.unwrap().cidrs)
}

async fn set_key(app: &TestApp, token: &str, key_id: &str, cidrs: &[&str]) {
    app.api_keys()
        .update_api_key(bearer(
            token,
            pb::UpdateApiKeyRequest {
                key_id: key_id.into(),
                name: None,
                scopes: vec![],
                allowed_cidrs: Some(pb::CidrList {
                    cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
                }),
            },
        ))
        .await
        .unwrap();
}

async fn org_and_key_lists_must_both_pass(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let (token, key_id, key) = setup(&app).await;
    // Empty lists: any address, even an unknown one.
    verify_from(&app, &key, "203.0.113.1").await.unwrap();
    verify_from(&app, &key, "").await.unwrap();

    let stored = set_org(
        &app,
        &token,
        &["10.1.0.0/16", "2001:db8::/32", "::ffff:192.0.2.0/120"],
    )
    .await
    .unwrap();
    assert_eq!(stored, vec!["10.1.0.0/16", "192.0.2.0/24", "2001:db8::/32"]);
    verify_from(&app, &key, "10.1.0.0").await.unwrap();
    verify_from(&app, &key, "10.1.255.255").await.unwrap();
    assert_eq!(
        verify_from(&app, &key, "10.2.0.0").await,
        Err(Code::PermissionDenied)
    );
    verify_from(&app, &key, "::ffff:10.1.2.3").await.unwrap();
    verify_from(&app, &key, "192.0.2.77").await.unwrap();
    verify_from(&app, &key, "2001:db8:1::5").await.unwrap();
    assert_eq!(
        verify_from(&app, &key, "").await,
        Err(Code::PermissionDenied),
        "unknown address"
    );

    // The key narrows further: both lists must pass.
    set_key(&app, &token, &key_id, &["10.1.0.0/30"]).await;
    verify_from(&app, &key, "10.1.0.3").await.unwrap();
    assert_eq!(
        verify_from(&app, &key, "10.1.0.4").await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        verify_from(&app, &key, "192.0.2.77").await,
        Err(Code::PermissionDenied)
    );
    // Without the org list, the key's own list still holds.
    set_org(&app, &token, &[]).await.unwrap();
    assert_eq!(
        verify_from(&app, &key, "10.9.9.9").await,
        Err(Code::PermissionDenied)
    );
    set_key(&app, &token, &key_id, &[]).await;
    verify_from(&app, &key, "10.9.9.9").await.unwrap();

    // Bad entries are refused with the field named.
    let err = set_org(&app, &token, &["10.0.0.0/33"]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "cidrs"
    );
    // Only admins set the organisation's list.
    let read_key = app
        .api_keys()
        .create_api_key(bearer(
            &token,
            pb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "r".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_eq!(
        set_org(&app, &read_key, &[]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

async fn bearer_calls_use_the_connection_or_trusted_forwarded_address(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| c.server.trusted_proxies = vec!["127.0.0.9/32".parse().unwrap()])
        .spawn()
        .await;
    let (token, key_id, key) = setup(&app).await;
    set_key(&app, &token, &key_id, &["127.0.0.3/32", "198.51.100.0/24"]).await;
    let list_from = |ip: &'static str, xff: Option<&'static str>| {
        let key = key.clone();
        let app = &app;
        async move {
            let channel = app.channel_from(ip).await;
            let mut request = bearer(&key, pb::ListApiKeysRequest::default());
            if let Some(xff) = xff {
                request
                    .metadata_mut()
                    .insert("x-forwarded-for", xff.parse().unwrap());
            }
            ApiKeyServiceClient::new(channel)
                .list_api_keys(request)
                .await
                .map(|_| ())
                .map_err(|e| e.code())
        }
    };
    list_from("127.0.0.3", None).await.unwrap();
    assert_eq!(
        list_from("127.0.0.5", None).await,
        Err(Code::PermissionDenied)
    );
    // A forged header from an untrusted peer changes nothing.
    assert_eq!(
        list_from("127.0.0.5", Some("127.0.0.3")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        list_from("127.0.0.5", Some("198.51.100.1")).await,
        Err(Code::PermissionDenied)
    );
    // Through the trusted proxy, the rightmost untrusted hop is the client.
    list_from("127.0.0.9", Some("198.51.100.1")).await.unwrap();
    list_from("127.0.0.9", Some("6.6.6.6, 198.51.100.1"))
        .await
        .unwrap();
    assert_eq!(
        list_from("127.0.0.9", Some("198.51.100.1, 6.6.6.6")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        list_from("127.0.0.9", None).await,
        Err(Code::PermissionDenied),
        "the proxy itself"
    );
}

async fn repeated_denials_are_one_counted_audit_event(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let (token, key_id, key) = setup(&app).await;
    set_key(&app, &token, &key_id, &["10.0.0.0/8"]).await;
    for _ in 0..25 {
        assert_eq!(
            verify_from(&app, &key, "203.0.113.50").await,
            Err(Code::PermissionDenied)
        );
    }
    assert_eq!(
        verify_from(&app, &key, "203.0.113.51").await,
        Err(Code::PermissionDenied)
    );
    app.api_keys_service.flush().await.unwrap();
    let denied = twig_audit::events_with_action(&app.db, "apikey.ip_denied")
        .await
        .unwrap();
    assert_eq!(denied.len(), 2, "one row per address, not per attempt");
    let first = denied
        .iter()
        .find(|e| e.ip.as_deref() == Some("203.0.113.50"))
        .unwrap();
    assert!(first.details.contains("\"count\":25"), "{}", first.details);
    assert!(
        first.details.contains("\"policy\":\"key\""),
        "{}",
        first.details
    );
    assert!(
        first.details.contains(&key[..16]),
        "the key's prefix is recorded"
    );
    assert!(!first.details.contains(&key[16..]), "never the secret");
    assert!(first.org_id.is_some());
    let _: IpAddr = first.ip.as_deref().unwrap().parse().unwrap();
}

on_both_backends!(
    org_and_key_lists_must_both_pass,
    bearer_calls_use_the_connection_or_trusted_forwarded_address,
    repeated_denials_are_one_counted_audit_event,
);
