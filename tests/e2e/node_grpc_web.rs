//! A real gRPC-web client: Connect's web transport (the one the browser
//! front end uses), run by Node against the server on port 0: it starts a
//! sign-up, logs in to an account the operator made, creates and lists an
//! API key. The key then works over native gRPC.

use std::path::PathBuf;
use std::process::Command;

use twig_proto::apikeys::v1 as pb;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

pub(crate) const ORIGIN: &str = "https://app.example.com";

/// `tests/node`, with its packages and generated client code in place.
fn node_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    for needed in [
        "node_modules/@connectrpc/connect-web",
        "gen/twig/apikeys/v1/apikeys_pb.js",
    ] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: run `npm ci` and `buf generate` in tests/node (scripts/test does)",
            dir.join(needed).display()
        );
    }
    dir
}

/// Runs `grpc_web_flow.mjs` against the edge at `base` (which must allow
/// [`ORIGIN`]), signing in as `email` with `password` (an account made
/// beforehand); returns what the client saw.
pub(crate) async fn run_grpc_web_flow(
    base: String,
    email: String,
    password: String,
) -> serde_json::Value {
    let dir = node_dir();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&dir)
            .args(["grpc_web_flow.mjs", &base, ORIGIN, &email, &password])
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

async fn grpc_web_client_signs_up_creates_and_lists_a_key(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| c.server.cors_origins = vec![ORIGIN.into()])
        .spawn()
        .await;
    let ada = email("node");
    let account = app.sign_up(&ada).await;
    let seen = run_grpc_web_flow(format!("http://{}", app.addr), ada, PASSWORD.into()).await;

    // A sign-up started over gRPC-web: answered with nothing in it, and
    // its link mailed to the address.
    assert_eq!(seen["signUpAnswer"], serde_json::json!({}), "{seen}");
    app.link_token(seen["newcomer"].as_str().unwrap(), "Verify your email")
        .await;
    // Signed in to the operator-made account.
    assert_eq!(seen["userId"], account.user.unwrap().id.as_str(), "{seen}");

    // Created and listed through gRPC-web.
    let key_id = seen["keyId"].as_str().unwrap();
    let listed: Vec<&str> = seen["listedIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listed, [key_id]);
    // A bad token fails cleanly, with the code and message intact.
    assert_eq!(seen["badToken"]["code"], "Unauthenticated", "{seen}");
    assert!(!seen["badToken"]["message"].as_str().unwrap().is_empty());
    // The browser would have let the page read the answer.
    assert_eq!(seen["corsAllowOrigin"], ORIGIN);
    assert!(
        seen["corsExposed"]
            .as_str()
            .is_some_and(|h| h.contains("grpc-status") && h.contains("grpc-message")),
        "{seen}"
    );

    // The key works over native gRPC.
    let secret = seen["secret"].as_str().unwrap();
    assert!(secret.starts_with("twig_sk_"));
    let keys = app
        .api_keys()
        .list_api_keys(bearer(secret, pb::ListApiKeysRequest::default()))
        .await
        .expect("the web-created key works over gRPC")
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, key_id);
    assert_eq!(
        keys[0].organization_id,
        seen["organizationId"].as_str().unwrap()
    );
    app.stop().await;
}

on_both_backends!(grpc_web_client_signs_up_creates_and_lists_a_key);
