//! The vault in one process: provider keys stored, listed masked,
//! revealed only to an internal client with `vault.reveal`; transit
//! sealing bound to its context; hostile ciphertexts.

use std::collections::HashSet;

use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;
use tonic_types::StatusExt;
use twig_config::{InternalClient, Secret};
use twig_proto::apikeys::v1 as kpb;
use twig_proto::auth::v1 as apb;
use twig_proto::vault::v1 as pb;
use twig_tests::{Backend, TestApp, bearer, email, with_internal_token};

const RUNTIME_TOKEN: &str = "agent-runtime-token-0123456789abcdefghij";
const OPENAI: &str = "sk-proj-abcdefghijklmnopqrstuvwxyzA1b2";

async fn app(backend: Backend) -> TestApp {
    TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            c.auth.internal_clients = vec![InternalClient {
                name: "agent-runtime".into(),
                token: Secret::new(RUNTIME_TOKEN),
                scopes: vec!["vault.reveal".into()],
            }];
        })
        .spawn()
        .await
}

/// An owner's access token and organisation.
async fn owner(app: &TestApp) -> (String, String) {
    let who = email("vault");
    let signed = app.sign_up(&who).await;
    let token = app.login(&who).await.access_token;
    (token, signed.organization.unwrap().id)
}

async fn add(
    app: &TestApp,
    token: &str,
    provider: &str,
    name: &str,
    value: &str,
) -> Result<pb::ProviderKey, tonic::Status> {
    app.vault()
        .add_provider_key(bearer(
            token,
            pb::AddProviderKeyRequest {
                provider: provider.into(),
                name: name.into(),
                value: value.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().key.unwrap())
}

async fn reveal(
    app: &TestApp,
    request: tonic::Request<pb::RevealProviderKeyRequest>,
) -> Result<String, tonic::Status> {
    app.vault()
        .reveal_provider_key(request)
        .await
        .map(|r| r.into_inner().value)
}

fn field(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations[0].field.clone())
        .unwrap_or_default()
}

/// Every value the vault stores, with the audit log, as text.
async fn everything_stored(app: &TestApp) -> String {
    let (rows, text) = app
        .stored_text(&["vault_secrets", "audit_events", "vault_master_keys"])
        .await;
    assert!(rows > 0, "the dump read no rows");
    text
}

async fn provider_keys_stored_masked_and_revealed_only_with_the_scope(backend: Backend) {
    let app = app(backend).await;
    let (token, org) = owner(&app).await;
    let key = add(&app, &token, "openai", "production", OPENAI)
        .await
        .unwrap();
    assert_eq!(key.masked_value, "sk-…A1b2");
    add(
        &app,
        &token,
        "anthropic",
        "claude",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
    )
    .await
    .unwrap();
    let listed = app
        .vault()
        .list_provider_keys(bearer(&token, pb::ListProviderKeysRequest {}))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 2);
    assert!(!format!("{listed:?}").contains("abcdefghij"), "{listed:?}");

    let ask = |t: &str, org: &str| {
        with_internal_token(
            t,
            pb::RevealProviderKeyRequest {
                organization_id: org.into(),
                id: key.id.clone(),
            },
        )
    };
    assert_eq!(
        reveal(&app, ask(RUNTIME_TOKEN, &org)).await.unwrap(),
        OPENAI
    );
    // The plain internal credential lacks the scope; a user's bearer is
    // not internal at all; another organisation does not see the key.
    let plain = reveal(&app, ask(&app.internal_token, &org))
        .await
        .unwrap_err();
    assert_eq!(plain.code(), Code::PermissionDenied);
    assert!(
        plain.message().contains("vault.reveal"),
        "{}",
        plain.message()
    );
    let browser = reveal(
        &app,
        bearer(
            &token,
            pb::RevealProviderKeyRequest {
                organization_id: org.clone(),
                id: key.id.clone(),
            },
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(browser.code(), Code::PermissionDenied);
    let (_, other_org) = owner(&app).await;
    let elsewhere = reveal(&app, ask(RUNTIME_TOKEN, &other_org))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::NotFound);

    // Every reveal is audited, by caller; the value is nowhere in storage.
    let events = twig_audit::events_with_action(&app.db, "vault.secret_revealed")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor.as_deref(), Some("service:agent-runtime"));
    let dump = everything_stored(&app).await;
    // The dump holds what is stored in clear (so it reads real values)...
    assert!(
        dump.contains("claude") && dump.contains("anthropic"),
        "{dump}"
    );
    // ...and no secret value, nor its middle.
    for secret in [OPENAI, "abcdefghijklmnopqrstuvwxyz"] {
        assert!(!dump.contains(secret), "plaintext stored: {dump}");
    }

    // A new value: masked anew, revealed anew.
    let updated = app
        .vault()
        .update_provider_key(bearer(
            &token,
            pb::UpdateProviderKeyRequest {
                id: key.id.clone(),
                value: "sk-proj-zyxwvutsrqponmlkjihgfedcbaZ9y8".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(updated.masked_value, "sk-…Z9y8");
    assert!(
        reveal(&app, ask(RUNTIME_TOKEN, &org))
            .await
            .unwrap()
            .ends_with("Z9y8")
    );
    app.vault()
        .delete_provider_key(bearer(
            &token,
            pb::DeleteProviderKeyRequest { id: key.id.clone() },
        ))
        .await
        .unwrap();
    assert_eq!(
        reveal(&app, ask(RUNTIME_TOKEN, &org))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

async fn bad_provider_keys_are_refused_clearly(backend: Backend) {
    let app = app(backend).await;
    let (token, _) = owner(&app).await;
    for (provider, name, value, expected) in [
        ("openai", "a", "sk-short", "value"),
        (
            "openai",
            "a",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
            "value",
        ),
        ("anthropic", "a", OPENAI, "value"),
        ("pinecone", "a", "nope", "value"),
        ("custom:llm", "a", "", "value"),
        ("custom:llm", "a", &"x".repeat(5_000), "value"),
        ("OpenAI", "a", OPENAI, "provider"),
        ("custom:", "a", "x", "provider"),
        ("openai", "", OPENAI, "name"),
    ] {
        let err = add(&app, &token, provider, name, value).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{provider} {name}");
        assert_eq!(field(&err), expected, "{provider} {name}");
        assert!(!err.message().contains("abcdefghij"), "the value is echoed");
    }
    add(&app, &token, "custom:llm", "a", "anything")
        .await
        .unwrap();
    let taken = add(&app, &token, "custom:llm", "a", "other")
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    // A key without admin may list, not add.
    let reader = app
        .api_keys()
        .create_api_key(bearer(
            &token,
            kpb::CreateApiKeyRequest {
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
    assert_eq!(
        add(&app, &reader, "openai", "b", OPENAI)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let listed = app
        .vault()
        .list_provider_keys(bearer(&reader, pb::ListProviderKeysRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
}

async fn a_stored_ciphertext_moved_to_another_row_does_not_decrypt(backend: Backend) {
    let app = app(backend).await;
    let (token, org) = owner(&app).await;
    let a = add(&app, &token, "custom:x", "a", "value-of-a")
        .await
        .unwrap();
    let b = add(&app, &token, "custom:x", "b", "value-of-b")
        .await
        .unwrap();
    // Copy a's sealed value into b's row.
    let backend_kind = app.db.get_database_backend();
    let sql = match backend_kind {
        sea_orm::DatabaseBackend::Postgres => format!(
            "UPDATE vault_secrets SET sealed = (SELECT sealed FROM vault_secrets WHERE id = '{}') WHERE id = '{}'",
            a.id, b.id
        ),
        _ => format!(
            "UPDATE vault_secrets SET sealed = (SELECT sealed FROM vault_secrets WHERE id = x'{}') WHERE id = x'{}'",
            a.id.replace('-', ""),
            b.id.replace('-', "")
        ),
    };
    let done = app
        .db
        .execute_raw(Statement::from_string(backend_kind, sql))
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
    let moved = reveal(
        &app,
        with_internal_token(
            RUNTIME_TOKEN,
            pb::RevealProviderKeyRequest {
                organization_id: org.clone(),
                id: b.id.clone(),
            },
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(moved.code(), Code::FailedPrecondition);
    assert!(!moved.message().contains("value-of"), "{}", moved.message());
    // a still opens.
    let fine = reveal(
        &app,
        with_internal_token(
            RUNTIME_TOKEN,
            pb::RevealProviderKeyRequest {
                organization_id: org,
                id: a.id,
            },
        ),
    )
    .await
    .unwrap();
    assert_eq!(fine, "value-of-a");
}

async fn transit_binds_ciphertexts_to_their_context(backend: Backend) {
    let app = app(backend).await;
    let org = uuid::Uuid::now_v7().to_string();
    let context = |org: &str, purpose: &str, record: &str| pb::SealContext {
        organization_id: org.into(),
        purpose: purpose.into(),
        record_id: record.into(),
    };
    let seal = |ctx: pb::SealContext, plaintext: Vec<u8>| {
        let request = app.internal(pb::SealRequest {
            context: Some(ctx),
            plaintext: plaintext.into(),
        });
        let mut client = app.vault();
        async move {
            client
                .seal(request)
                .await
                .map(|r| r.into_inner().ciphertext)
        }
    };
    let unseal = |ctx: pb::SealContext, ciphertext: String| {
        let request = app.internal(pb::UnsealRequest {
            context: Some(ctx),
            ciphertext,
        });
        let mut client = app.vault();
        async move {
            client
                .unseal(request)
                .await
                .map(|r| r.into_inner().plaintext.to_vec())
        }
    };
    let here = context(&org, "connector-token", "conn-1");
    let sealed = seal(here.clone(), b"refresh-token-123".to_vec())
        .await
        .unwrap();
    assert!(sealed.starts_with("twig:k1:"), "{sealed}");
    assert_eq!(
        unseal(here.clone(), sealed.clone()).await.unwrap(),
        b"refresh-token-123"
    );

    let other_org = uuid::Uuid::now_v7().to_string();
    for elsewhere in [
        context(&other_org, "connector-token", "conn-1"),
        context(&org, "sso-secret", "conn-1"),
        context(&org, "connector-token", "conn-2"),
    ] {
        let err = unseal(elsewhere, sealed.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(field(&err), "ciphertext");
    }
    // One changed character anywhere in the body: refused, never another
    // plaintext.
    let prefix = "twig:k1:".len();
    for at in [prefix, prefix + 20, prefix + 90, sealed.len() - 1] {
        let mut bytes = sealed.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let err = unseal(here.clone(), tampered).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "at {at}");
    }
    for malformed in ["", "twig:k1", "twig:k9:AAAA", "plain text"] {
        let err = unseal(here.clone(), malformed.into()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{malformed:?}");
    }
    let oversized = seal(here.clone(), vec![0; 64 * 1024 + 1])
        .await
        .unwrap_err();
    assert_eq!(field(&oversized), "plaintext");
    let bad_org = seal(context("nope", "p", "r"), b"x".to_vec())
        .await
        .unwrap_err();
    assert_eq!(field(&bad_org), "context.organization_id");

    // Concurrent seals of one plaintext: all different, all open.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        tasks.push(seal(here.clone(), b"same".to_vec()));
    }
    let all: Vec<String> = futures::future::try_join_all(tasks).await.unwrap();
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 200);
    assert_eq!(
        unseal(here.clone(), all[199].clone()).await.unwrap(),
        b"same"
    );

    // Transit is internal.
    let outside = app
        .vault()
        .seal(pb::SealRequest {
            context: Some(here),
            plaintext: b"x".to_vec().into(),
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied);
}

on_both_backends!(
    provider_keys_stored_masked_and_revealed_only_with_the_scope,
    bad_provider_keys_are_refused_clearly,
    a_stored_ciphertext_moved_to_another_row_does_not_decrypt,
    transit_binds_ciphertexts_to_their_context,
);
