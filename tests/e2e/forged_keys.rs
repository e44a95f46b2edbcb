//! Forged API keys: a flood of made-up keys is counted per client address
//! and period, not written to the append-only audit log one row each.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use tonic::Code;
use twig_crypto::{Token, TokenKind};
use twig_proto::apikeys::v1 as pb;
use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
use twig_proto::auth::v1 as apb;
use twig_tests::{Backend, TestApp, bearer, email};

const FORGED: usize = 10_000;
const ADDRESSES: [&str; 2] = ["127.0.0.2", "127.0.0.3"];
/// Connections per address, and calls in flight per connection.
const CONNECTIONS: usize = 2;
const IN_FLIGHT: usize = 4;

/// `n` distinct forged keys: every other one with a valid checksum.
fn forged(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut key = Token::generate(TokenKind::ApiKey).expose().to_string();
            if i % 2 == 1 {
                let last = key.pop().unwrap();
                key.push(if last == 'a' { 'b' } else { 'a' });
            }
            key
        })
        .collect()
}

/// Presents each key as a bearer to `ListApiKeys` (through the auth layer
/// and the real verify path) from `ip`, over a few connections with a few
/// calls in flight each; every one must be refused.
async fn present(app: &TestApp, ip: &str, keys: &[String]) {
    let mut connections = Vec::new();
    for part in keys.chunks(keys.len().div_ceil(CONNECTIONS)) {
        let client = ApiKeyServiceClient::new(app.channel_from(ip).await);
        let part = part.to_vec();
        connections.push(tokio::spawn(async move {
            futures::stream::iter(part)
                .map(|key| {
                    let mut client = client.clone();
                    async move {
                        client
                            .list_api_keys(bearer(&key, pb::ListApiKeysRequest::default()))
                            .await
                            .unwrap_err()
                            .code()
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .for_each(|code| async move { assert_eq!(code, Code::Unauthenticated) })
                .await;
        }));
    }
    for c in connections {
        c.await.unwrap();
    }
}

/// The ids of the audit events written so far.
async fn event_ids(app: &TestApp) -> HashSet<uuid::Uuid> {
    let all = twig_audit::all_events(&app.db).await.unwrap();
    all.into_iter().map(|e| e.id).collect()
}

/// The audit events written since `before` was taken.
async fn events_after(app: &TestApp, before: &HashSet<uuid::Uuid>) -> Vec<twig_audit::StoredEvent> {
    let all = twig_audit::all_events(&app.db).await.unwrap();
    all.into_iter()
        .filter(|e| !before.contains(&e.id))
        .collect()
}

fn details(event: &twig_audit::StoredEvent) -> serde_json::Value {
    serde_json::from_str(&event.details).unwrap()
}

async fn forged_keys_are_counted_per_address_and_period(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let before = event_ids(&app).await;
    let keys = forged(FORGED);
    let (first, second) = keys.split_at(FORGED / 2);
    // Half in one period, half in the next, each half from two addresses.
    for (period, half) in [first, second].into_iter().enumerate() {
        if period > 0 {
            app.clock.advance(
                app.config
                    .section::<twig_api_keys::ApiKeysConfig>()
                    .unwrap()
                    .refusal_audit_period,
            );
        }
        let (a, b) = half.split_at(half.len() / 2);
        tokio::join!(
            present(&app, ADDRESSES[0], a),
            present(&app, ADDRESSES[1], b)
        );
    }
    app.api_keys_service.flush().await.unwrap();

    let written = events_after(&app, &before).await;
    assert_eq!(
        written.len(),
        4,
        "one row per address and period, not per request: {:?}",
        written.iter().map(|e| &e.details).collect::<Vec<_>>()
    );
    let prefixes: HashSet<String> = keys.iter().map(|k| Token::public_prefix(k)).collect();
    let mut per_address = HashMap::<String, u64>::new();
    let mut periods = HashSet::new();
    for event in &written {
        assert_eq!(event.action, "apikey.verify_failed");
        assert_eq!(event.outcome, "failure");
        assert!(event.org_id.is_none(), "unknown keys belong to no one");
        let d = details(event);
        let count = d["count"].as_u64().unwrap();
        *per_address
            .entry(event.ip.clone().expect("the client address"))
            .or_default() += count;
        periods.insert(d["period_start"].as_str().unwrap().to_string());
        let samples = d["prefixes"].as_array().unwrap();
        assert!(
            !samples.is_empty() && samples.len() <= 4,
            "a few samples: {d}"
        );
        for sample in samples {
            let sample = sample.as_str().unwrap();
            assert!(
                sample.starts_with("twig_sk_") && sample.len() <= 16,
                "{sample}"
            );
            assert!(prefixes.contains(sample), "a presented prefix: {sample}");
        }
    }
    assert_eq!(periods.len(), 2);
    assert_eq!(per_address.values().sum::<u64>(), FORGED as u64);
    assert_eq!(per_address.len(), 2);
    for address in ADDRESSES {
        assert_eq!(per_address[address], FORGED as u64 / 2, "{address}");
    }
    // Never a secret: no row holds more than a key's public prefix.
    for event in &written {
        for key in &keys {
            assert!(!event.details.contains(&key[16..]), "a secret was written");
        }
    }
    // Nothing left to write.
    app.api_keys_service.flush().await.unwrap();
    assert_eq!(events_after(&app, &before).await.len(), 4);
}

async fn addresses_beyond_the_cap_share_one_overflow_row(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| c.edit::<twig_api_keys::ApiKeysConfig>(|s| s.refusal_audit_max_sources = 1))
        .spawn()
        .await;
    let before = event_ids(&app).await;
    let keys = forged(40);
    present(&app, "127.0.0.2", &keys[..10]).await;
    for (i, ip) in ["127.0.0.3", "127.0.0.4", "127.0.0.5"].iter().enumerate() {
        present(&app, ip, &keys[10 * (i + 1)..10 * (i + 2)]).await;
    }
    app.api_keys_service.flush().await.unwrap();
    let written = events_after(&app, &before).await;
    assert_eq!(written.len(), 2, "the one tracked address and the overflow");
    let tracked = written
        .iter()
        .find(|e| e.ip.as_deref() == Some("127.0.0.2"))
        .unwrap();
    assert_eq!(details(tracked)["count"], 10);
    let overflow = written.iter().find(|e| e.ip.is_none()).unwrap();
    let d = details(overflow);
    assert_eq!(d["count"], 30);
    assert_eq!(d["other_addresses"], true);
    assert_eq!(overflow.actor.as_deref(), Some("others"));
    assert!(d["prefixes"].as_array().unwrap().len() <= 4);
}

async fn refusals_of_a_real_key_stay_with_its_organisation(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("owner");
    app.sign_up(&ada).await;
    let token = app.login(&ada).await.access_token;
    let created = app
        .api_keys()
        .create_api_key(bearer(
            &token,
            pb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "leaked".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    app.api_keys()
        .revoke_api_key(bearer(
            &token,
            pb::RevokeApiKeyRequest {
                key_id: key.id.clone(),
            },
        ))
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(1));
    let before = event_ids(&app).await;
    let tries = vec![created.secret.clone(); 200];
    tokio::join!(
        present(&app, ADDRESSES[0], &tries[..100]),
        present(&app, ADDRESSES[1], &tries[100..])
    );
    app.api_keys_service.flush().await.unwrap();
    let written = events_after(&app, &before).await;
    assert_eq!(written.len(), 2, "one row per address, not per attempt");
    for event in &written {
        assert_eq!(event.action, "apikey.verify_failed");
        assert_eq!(
            event.org_id.map(|o| o.to_string()),
            Some(key.organization_id.clone())
        );
        assert_eq!(
            event.target.as_deref(),
            Some(format!("key:{}", key.id).as_str())
        );
        let d = details(event);
        assert_eq!(d["count"], 100);
        assert_eq!(d["reason"], "revoked");
        assert_eq!(d["prefix"], key.prefix);
        assert!(
            !event.details.contains(&created.secret[16..]),
            "never the secret"
        );
    }
}

on_both_backends!(
    forged_keys_are_counted_per_address_and_period,
    addresses_beyond_the_cap_share_one_overflow_row,
    refusals_of_a_real_key_stay_with_its_organisation,
);
