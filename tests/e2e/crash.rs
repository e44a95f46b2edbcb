//! Crashes in the middle of a change: the process is aborted at a named
//! step (`TWIG_FAILPOINT`), restarted on the same database, and nothing is
//! lost or half-written.

use std::process::{Command, Stdio};

use crate::twig_binary;
use tonic::Code;
use twig_proto::apikeys::v1 as pb;
use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
use twig_proto::auth::v1 as apb;
use twig_tests::{Backend, TestDatabase, bearer, sign_up_on, spawn_serve};

const INTERNAL: &str = "crash-test-internal-token-0123456789abcdef";

fn server(db_url: &str, failpoint: Option<&str>) -> Command {
    let mut cmd = Command::new(twig_binary());
    cmd.env("DATABASE_URL", db_url)
        .env("TWIG__AUTH__INTERNAL_TOKEN", INTERNAL)
        .env("RUST_LOG", "warn")
        .env_remove("TWIG_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(step) = failpoint {
        cmd.env("TWIG_FAILPOINT", step);
    }
    cmd
}

async fn verify(channel: &tonic::transport::Channel, key: &str) -> Result<(), Code> {
    let mut request = tonic::Request::new(pb::VerifyApiKeyRequest {
        key: key.into(),
        required_scope: 0,
        client_ip: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-twig-internal-token", INTERNAL.parse().unwrap());
    ApiKeyServiceClient::new(channel.clone())
        .verify_api_key(request)
        .await
        .map(|_| ())
        .map_err(|e| e.code())
}

async fn a_crash_during_rotation_leaves_the_old_key_working(backend: Backend) {
    for step in [
        "apikeys.rotate.secret_written",
        "apikeys.rotate.before_commit",
    ] {
        let db = TestDatabase::new(backend).await;
        let (mut crashing, channel) = spawn_serve(server(&db.url, Some(step))).await;
        let token = sign_up_on(&channel, "crash@example.com").await;
        let created = ApiKeyServiceClient::new(channel.clone())
            .create_api_key(bearer(
                &token,
                pb::CreateApiKeyRequest {
                    service_account_id: String::new(),
                    name: "k".into(),
                    scopes: vec![apb::Scope::Read as i32],
                    expires_at: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let key_id = created.key.unwrap().id;
        // The server dies in the middle of the rotation.
        let rotated = ApiKeyServiceClient::new(channel.clone())
            .rotate_api_key(bearer(
                &token,
                pb::RotateApiKeyRequest {
                    key_id: key_id.clone(),
                    overlap_seconds: 0,
                },
            ))
            .await;
        assert!(
            rotated.is_err(),
            "{step}: the rotation cannot have answered"
        );
        let status = crashing.wait().unwrap();
        assert!(!status.success(), "{step}: the process was aborted");

        // Restarted on the same database: the old key still works, and the
        // key is whole (one secret, its prefix unchanged).
        let (mut restarted, channel) = spawn_serve(server(&db.url, None)).await;
        assert_eq!(verify(&channel, &created.secret).await, Ok(()), "{step}");
        let key = ApiKeyServiceClient::new(channel.clone())
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
        assert!(created.secret.starts_with(&key.prefix), "{step}");
        // And the rotation can simply be done again.
        let again = ApiKeyServiceClient::new(channel.clone())
            .rotate_api_key(bearer(
                &token,
                pb::RotateApiKeyRequest {
                    key_id,
                    overlap_seconds: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(verify(&channel, &again.secret).await, Ok(()));
        assert_eq!(
            verify(&channel, &created.secret).await,
            Err(Code::Unauthenticated)
        );
        let _ = restarted.kill();
        let _ = restarted.wait();
    }
}

on_both_backends!(a_crash_during_rotation_leaves_the_old_key_working);
