//! Trace-level logs of a server doing everything the vault does hold no
//! plaintext and no key material.

use std::process::{Command, Stdio};

use crate::twig_binary;
use twig_proto::vault::v1 as pb;
use twig_tests::{Backend, TestDatabase, bearer, with_internal_token};

const INTERNAL: &str = "vault-logs-internal-token-0123456789abcd";
const RUNTIME: &str = "vault-logs-runtime-token-0123456789abcdef";
const MASTER: &str = "bG9nLWNhbmFyeS1tYXN0ZXIta2V5LTMyLWJ5dGVzISE=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_values_and_keys_never_reach_the_logs() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let mut command = Command::new(twig_binary());
    command
        .env("DATABASE_URL", &db.url)
        .env("TWIG__AUTH__INTERNAL_TOKEN", INTERNAL)
        .env(
            "TWIG__AUTH__INTERNAL_CLIENTS",
            format!(r#"[{{name="runtime",token="{RUNTIME}",scopes=["vault.reveal"]}}]"#),
        )
        .env("TWIG__SECRETS_VAULT__MASTER_KEYS__1", MASTER)
        .env(
            "RUST_LOG",
            "debug,twig_secrets_vault=trace,twig_auth=trace,twig_server=trace",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (child, channel) = twig_tests::spawn_serve(command).await;
    let signed = twig_tests::sign_up_with(&channel, "vault-logs@example.com").await;
    let token = signed.tokens.unwrap().access_token;
    let org = signed.organization.unwrap().id;
    let mut vault = pb::vault_service_client::VaultServiceClient::new(channel);

    let stored = "sk-ant-api03-logcanaryStoredValue0123456789";
    let refused = "sk-logcanary!bad";
    let transit = "log-canary transit plaintext";
    let key = vault
        .add_provider_key(bearer(
            &token,
            pb::AddProviderKeyRequest {
                provider: "anthropic".into(),
                name: "main".into(),
                value: stored.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let _ = vault
        .add_provider_key(bearer(
            &token,
            pb::AddProviderKeyRequest {
                provider: "openai".into(),
                name: "bad".into(),
                value: refused.into(),
            },
        ))
        .await
        .unwrap_err();
    let revealed = vault
        .reveal_provider_key(with_internal_token(
            RUNTIME,
            pb::RevealProviderKeyRequest {
                organization_id: org.clone(),
                id: key.id,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .value;
    assert_eq!(revealed, stored);
    let context = pb::SealContext {
        organization_id: org.clone(),
        purpose: "connector-token".into(),
        record_id: "c1".into(),
    };
    let sealed = vault
        .seal(with_internal_token(
            INTERNAL,
            pb::SealRequest {
                context: Some(context.clone()),
                plaintext: transit.as_bytes().to_vec().into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    vault
        .unseal(with_internal_token(
            INTERNAL,
            pb::UnsealRequest {
                context: Some(context.clone()),
                ciphertext: sealed.clone(),
            },
        ))
        .await
        .unwrap();
    // A refused unseal (another record) is logged as an error RPC.
    let _ = vault
        .unseal(with_internal_token(
            INTERNAL,
            pb::UnsealRequest {
                context: Some(pb::SealContext {
                    record_id: "c2".into(),
                    ..context
                }),
                ciphertext: sealed,
            },
        ))
        .await
        .unwrap_err();

    let logs = twig_tests::stop_and_collect_logs(child).await;
    assert!(logs.contains("VaultService"), "the logs are being captured");
    for secret in [
        stored,
        refused,
        transit,
        MASTER,
        RUNTIME,
        INTERNAL,
        "logcanary",
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}
