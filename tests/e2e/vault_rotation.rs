//! Master-key rotation with real processes: the server dies (an abort at
//! a named step, or `kill -9`) at every step of adding a key, re-wrapping
//! and retiring; after each restart every secret still decrypts and the
//! rotation goes on from where it was.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::twig_binary;
use base64::Engine as _;
use tonic::Code;
use tonic::transport::Channel;
use twig_proto::vault::v1 as pb;
use twig_tests::{Backend, TestDatabase, bearer, spawn_serve, with_internal_token};

const INTERNAL: &str = "vault-rotation-internal-token-0123456789";
const RUNTIME: &str = "vault-rotation-runtime-token-0123456789ab";

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// `serve` with master keys `versions` (version n is 32 bytes of n).
fn server(db_url: &str, versions: &[u8], failpoint: Option<&str>) -> Command {
    let mut cmd = Command::new(twig_binary());
    cmd.env("DATABASE_URL", db_url)
        .env("TWIG__AUTH__INTERNAL_TOKEN", INTERNAL)
        .env(
            "TWIG__AUTH__INTERNAL_CLIENTS",
            format!(r#"[{{name="runtime",token="{RUNTIME}",scopes=["vault.reveal"]}}]"#),
        )
        .env("TWIG__SECRETS_VAULT__REWRAP_BATCH", "10")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for v in versions {
        cmd.env(format!("TWIG__SECRETS_VAULT__MASTER_KEYS__{v}"), key(*v));
    }
    if let Some(step) = failpoint {
        cmd.env("TWIG_FAILPOINT", step);
    }
    cmd
}

/// A running server, killed with SIGKILL when dropped.
struct Running(Child, Channel);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(db_url: &str, versions: &[u8], failpoint: Option<&str>) -> Running {
    let (child, channel) = spawn_serve(server(db_url, versions, failpoint)).await;
    Running(child, channel)
}

/// Waits until the process has died of its failpoint.
fn died_at(child: &mut Child, step: &str) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "exited normally instead of at {step}");
            let mut err = String::new();
            use std::io::Read as _;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert!(err.contains(&format!("failpoint {step}")), "{err}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still alive, expected death at {step}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vault(channel: &Channel) -> pb::vault_service_client::VaultServiceClient<Channel> {
    pb::vault_service_client::VaultServiceClient::new(channel.clone())
}

async fn reveal_all(channel: &Channel, org: &str, ids: &[(String, String)]) {
    for (id, value) in ids {
        let got = vault(channel)
            .reveal_provider_key(with_internal_token(
                RUNTIME,
                pb::RevealProviderKeyRequest {
                    organization_id: org.into(),
                    id: id.clone(),
                },
            ))
            .await
            .unwrap_or_else(|e| panic!("secret {id} does not decrypt: {e:?}"))
            .into_inner()
            .value;
        assert_eq!(&got, value);
    }
}

async fn master_keys(channel: &Channel) -> pb::ListMasterKeysResponse {
    vault(channel)
        .list_master_keys(with_internal_token(INTERNAL, pb::ListMasterKeysRequest {}))
        .await
        .unwrap()
        .into_inner()
}

fn data_keys(list: &pb::ListMasterKeysResponse, version: u32) -> u64 {
    list.keys
        .iter()
        .find(|k| k.version == version)
        .map_or(0, |k| k.data_keys)
}

async fn transit(channel: &Channel, org: &str, ciphertext: &str) -> Result<Vec<u8>, tonic::Status> {
    vault(channel)
        .unseal(with_internal_token(
            INTERNAL,
            pb::UnsealRequest {
                context: Some(pb::SealContext {
                    organization_id: org.into(),
                    purpose: "connector-token".into(),
                    record_id: "c1".into(),
                }),
                ciphertext: ciphertext.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().plaintext.to_vec())
}

/// Signs an owner up and stores `n` provider keys through `channel`;
/// returns the organisation and (id, value) of each.
async fn store_secrets(channel: &Channel, n: usize) -> (String, Vec<(String, String)>) {
    let signed = twig_tests::sign_up_with(channel, &twig_tests::email("rotation")).await;
    let token = signed.tokens.unwrap().access_token;
    let org = signed.organization.unwrap().id;
    let mut ids = Vec::new();
    for i in 0..n {
        let value = format!("provider-value-{i}-{}", uuid::Uuid::new_v4().simple());
        let key = vault(channel)
            .add_provider_key(bearer(
                &token,
                pb::AddProviderKeyRequest {
                    provider: "custom:llm".into(),
                    name: format!("k{i}"),
                    value: value.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        ids.push((key.id, value));
    }
    (org, ids)
}

async fn every_step_of_a_rotation_survives_a_crash(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let url = db.url.clone();

    // Version 1 only: 25 secrets and one transit value.
    let first = start(&url, &[1], None).await;
    let (org, secrets) = store_secrets(&first.1, 25).await;
    let sealed_v1 = vault(&first.1)
        .seal(with_internal_token(
            INTERNAL,
            pb::SealRequest {
                context: Some(pb::SealContext {
                    organization_id: org.clone(),
                    purpose: "connector-token".into(),
                    record_id: "c1".into(),
                }),
                plaintext: b"oauth-refresh".to_vec().into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    drop(first);

    // Without version 1 the server refuses to start: secrets need it.
    let out = server(&url, &[2], None)
        .env("TWIG__SERVER__LISTEN", "127.0.0.1:0")
        .env("TWIG__SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("version 1 (25 secrets)"), "{err}");

    // Step 1: version 2 added; the process dies right after recording it.
    let mut dying = server(&url, &[1, 2], Some("vault.key.recorded"))
        .env("TWIG__SERVER__LISTEN", "127.0.0.1:0")
        .env("TWIG__SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .arg("serve")
        .spawn()
        .unwrap();
    died_at(&mut dying, "vault.key.recorded");
    let running = start(&url, &[1, 2], None).await;
    reveal_all(&running.1, &org, &secrets).await;
    let keys = master_keys(&running.1).await;
    assert_eq!((data_keys(&keys, 1), data_keys(&keys, 2)), (25, 0));
    assert!(keys.keys.iter().any(|k| k.version == 2 && k.active));
    drop(running);

    // Step 2: the re-wrap dies after its first batch of 10.
    let mut dying = start(&url, &[1, 2], Some("vault.rewrap.batch_committed")).await;
    let _ = vault(&dying.1)
        .start_rewrap(with_internal_token(INTERNAL, pb::StartRewrapRequest {}))
        .await;
    died_at(&mut dying.0, "vault.rewrap.batch_committed");
    drop(dying);
    // The restart resumes the job by itself.
    let running = start(&url, &[1, 2], None).await;
    let started = Instant::now();
    let keys = loop {
        let keys = master_keys(&running.1).await;
        if keys
            .rewrap
            .as_ref()
            .is_some_and(|j| j.finished_at.is_some())
        {
            break keys;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let job = keys.rewrap.clone().unwrap();
    assert_eq!(
        (job.rewrapped, job.remaining, job.target_version),
        (25, 0, 2)
    );
    assert_eq!((data_keys(&keys, 1), data_keys(&keys, 2)), (0, 25));
    reveal_all(&running.1, &org, &secrets).await;
    // Transit values are re-wrapped by their owners.
    assert_eq!(
        transit(&running.1, &org, &sealed_v1).await.unwrap(),
        b"oauth-refresh"
    );
    let sealed_v2 = vault(&running.1)
        .rewrap(with_internal_token(
            INTERNAL,
            pb::RewrapRequest {
                context: Some(pb::SealContext {
                    organization_id: org.clone(),
                    purpose: "connector-token".into(),
                    record_id: "c1".into(),
                }),
                ciphertext: sealed_v1.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .ciphertext;
    assert!(sealed_v2.starts_with("twig:k2:"));
    drop(running);

    // Step 3: retirement dies before it commits; nothing is lost.
    let mut dying = start(&url, &[1, 2], Some("vault.retire.before_commit")).await;
    let _ = vault(&dying.1)
        .retire_master_key(with_internal_token(
            INTERNAL,
            pb::RetireMasterKeyRequest { version: 1 },
        ))
        .await;
    died_at(&mut dying.0, "vault.retire.before_commit");
    drop(dying);
    let running = start(&url, &[1, 2], None).await;
    let keys = master_keys(&running.1).await;
    assert!(keys.keys.iter().all(|k| k.retired_at.is_none()), "{keys:?}");
    let newest = vault(&running.1)
        .retire_master_key(with_internal_token(
            INTERNAL,
            pb::RetireMasterKeyRequest { version: 2 },
        ))
        .await
        .unwrap_err();
    assert_eq!(newest.code(), Code::FailedPrecondition);
    let retired = vault(&running.1)
        .retire_master_key(with_internal_token(
            INTERNAL,
            pb::RetireMasterKeyRequest { version: 1 },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert!(retired.retired_at.is_some());
    drop(running);

    // Version 1 can now leave the configuration.
    let running = start(&url, &[2], None).await;
    reveal_all(&running.1, &org, &secrets).await;
    assert_eq!(
        transit(&running.1, &org, &sealed_v2).await.unwrap(),
        b"oauth-refresh"
    );
    let old = transit(&running.1, &org, &sealed_v1).await.unwrap_err();
    assert_eq!(old.code(), Code::FailedPrecondition);
    let events = twig_audit::events_with_action(
        &sea_orm::Database::connect(&url).await.unwrap(),
        "vault.master_key_retired",
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
}

/// `kill -9` while a long re-wrap runs: after the restart it finishes and
/// every secret decrypts.
async fn kill_9_during_a_rewrap(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let url = db.url.clone();
    let first = start(&url, &[1], None).await;
    let (org, secrets) = store_secrets(&first.1, 120).await;
    drop(first);
    let mut running = start(&url, &[1, 2], None).await;
    vault(&running.1)
        .start_rewrap(with_internal_token(INTERNAL, pb::StartRewrapRequest {}))
        .await
        .unwrap();
    // Kill as soon as the job has moved something.
    loop {
        let keys = master_keys(&running.1).await;
        if keys.rewrap.as_ref().is_some_and(|j| j.rewrapped > 0) {
            println!("killed with {:?}", keys.rewrap);
            break;
        }
    }
    running.0.kill().unwrap();
    let _ = running.0.wait();
    drop(running);
    let running = start(&url, &[1, 2], None).await;
    let started = Instant::now();
    loop {
        let keys = master_keys(&running.1).await;
        if keys
            .rewrap
            .as_ref()
            .is_some_and(|j| j.finished_at.is_some())
        {
            assert_eq!(
                (data_keys(&keys, 1), data_keys(&keys, 2)),
                (0, 120),
                "{keys:?}"
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reveal_all(&running.1, &org, &secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_master_keys_stop_the_start_with_a_clear_message() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let refused = |value: String| {
        let out = server(&db.url, &[], None)
            .env("TWIG__SECRETS_VAULT__MASTER_KEYS__1", value)
            .env("TWIG__SERVER__LISTEN", "127.0.0.1:0")
            .env("TWIG__SERVER__ADMIN_LISTEN", "127.0.0.1:0")
            .arg("serve")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    let err = refused(short.clone());
    assert!(err.contains("16 bytes; it must be 32"), "{err}");
    assert!(!err.contains(&short), "the key is echoed: {err}");
    let err = refused("not*base64".into());
    assert!(err.contains("not base64"), "{err}");
    // A different key under a version the database has recorded.
    drop(start(&db.url, &[1], None).await);
    let err = refused(key(9));
    assert!(
        err.contains("is not the key recorded under that version"),
        "{err}"
    );
}

on_both_backends!(
    every_step_of_a_rotation_survives_a_crash,
    kill_9_during_a_rewrap
);
