//! Single sign-on in a real browser: headless Chromium (playwright-core)
//! with a profile of its own opens a page served from the API's origin
//! (this test's `/app/` routes), which keeps its session with the
//! TypeScript client package (`clients/typescript`). The person signs in
//! through the organisation's provider (npm oidc-provider); the page
//! reloads and the browser restarts with the same profile — still signed
//! in; the server's clock passes the access token's expiry — the next call
//! refreshes by itself; sign-out leaves no cookie and kills the refresh
//! token.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use twig_module::{Context, Module, ModuleError};
use twig_proto::sessions::v1 as spb;
use twig_proto::sso::v1 as pb;
use twig_tests::Backend;

use crate::sso_oidc::{connect, owner, proved_domain, set_stage, setup};

/// The page's files, from `tests/node/browser` (bundled by scripts/test).
fn page_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    for needed in [
        "node_modules/playwright-core",
        "browser/sso.html",
        "browser/dist/sso.js",
    ] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: scripts/test installs the packages, builds clients/typescript and \
             bundles the page",
            dir.join(needed).display()
        );
    }
    dir
}

/// The page, served under `/app/` on the API's own origin, as a
/// deployment serves its front end beside the auth routes.
struct Pages;

static PAGES: Pages = Pages;

impl Module for Pages {
    fn name(&self) -> &'static str {
        "test-pages"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[]
    }

    fn migrate<'a>(&'a self, _db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(async { Ok(()) })
    }

    fn browser_prefix(&self) -> Option<&'static str> {
        Some("/app/")
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let dir = page_dir().join("browser");
            let html = std::fs::read(dir.join("sso.html")).expect("the page");
            let script = std::fs::read(dir.join("dist/sso.js")).expect("the bundle");
            let router = axum::Router::new()
                .route(
                    "/index.html",
                    axum::routing::get(move || async move {
                        (
                            [(http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                            html,
                        )
                    }),
                )
                .route(
                    "/sso.js",
                    axum::routing::get(move || async move {
                        ([(http::header::CONTENT_TYPE, "text/javascript")], script)
                    }),
                );
            cx.browser_routes("/app/", router);
            Ok(())
        })
    }
}

async fn a_person_signs_in_through_the_provider_and_stays_signed_in(backend: Backend) {
    let dir = page_dir();
    let mut s = setup(backend, Some(&PAGES)).await;
    let (token, org) = owner(&s.app).await;
    let domain = proved_domain(&s.app, &mut s.dns, &token, "acme").await;
    let alice = format!("alice@{domain}");
    s.idp
        .add_user(
            "acme",
            serde_json::json!({"sub": "u-alice", "email": alice, "email_verified": true,
                "name": "Alice A", "groups": ["staff"]}),
        )
        .await;
    let connection = connect(&s, &token, "acme", &[&domain], pb::Pilot::default()).await;
    set_stage(
        &s.app,
        &token,
        &connection.id,
        pb::ConnectionStage::Enforced,
    )
    .await
    .unwrap();

    let profile = tempfile::tempdir().unwrap();
    let mut driver = tokio::process::Command::new("node")
        .arg(dir.join("sso_browser_flow.mjs"))
        .arg(&s.origin)
        .arg(&alice)
        .arg(profile.path())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut stdin = driver.stdin.take().unwrap();
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
    let mut errors = driver.stderr.take().unwrap();
    let mut steps = Vec::new();
    loop {
        let Ok(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await
        else {
            let _ = driver.start_kill();
            let mut stderr = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut errors, &mut stderr).await;
            panic!("the browser did not move on within 60 s after {steps:#?}\n{stderr}");
        };
        let Some(line) = line.unwrap() else { break };
        let step: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if step["step"] == "waiting" {
            // The access token expires on the server's clock.
            s.app.clock.advance(Duration::from_secs(16 * 60));
            stdin.write_all(b"go\n").await.unwrap();
        }
        steps.push(step);
    }
    let status = driver.wait().await.unwrap();
    let mut stderr = String::new();
    let _ = tokio::io::AsyncReadExt::read_to_string(&mut errors, &mut stderr).await;
    assert!(
        status.success(),
        "the driver failed: {stderr}\nsteps: {steps:#?}"
    );
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no {name} step in {steps:#?}"))
            .clone()
    };

    // Before: one refresh tried from no cookie, signed out.
    let before = step("signed-out");
    assert_eq!(before["status"], "signed-out", "{before}");
    assert_eq!(before["refreshes"], 1);

    // Through the provider and back: signed in, the cookie as promised.
    let signed_in = step("signed-in");
    assert_eq!(signed_in["status"], "signed-in", "{signed_in}");
    assert_eq!(signed_in["email"], alice.as_str());
    assert_eq!(signed_in["url"], format!("{}/app/index.html", s.origin));
    assert_eq!(signed_in["refreshes"], 1, "one refresh from the new cookie");
    assert_eq!(
        signed_in["cookie"],
        serde_json::json!({"httpOnly": true, "secure": true, "sameSite": "Strict",
            "path": "/auth/", "persistent": true})
    );

    // A reload, and a restart with the same profile: still signed in.
    for name in ["reloaded", "restarted"] {
        let again = step(name);
        assert_eq!(again["status"], "signed-in", "{name}: {again}");
        assert_eq!(again["email"], alice.as_str());
        assert_eq!(again["refreshes"], 1, "{name}: one refresh on load");
    }

    // The access token expired on the server: the next call was refused,
    // refreshed by itself, and retried.
    let expired = step("expired");
    assert_eq!(expired["status"], "signed-in", "{expired}");
    assert_eq!(expired["call"], "ok");
    assert_eq!(expired["refreshes"], 2, "one more refresh: {expired}");

    // Signed out: no cookie left, and the refresh token is dead.
    let out = step("logged-out");
    assert_eq!(out["cookies_left"], 0, "{out}");
    let refresh = out["refresh_token_before"].as_str().unwrap();
    assert!(refresh.starts_with("twig_"), "{out}");
    let dead = s
        .app
        .sessions()
        .refresh(spb::RefreshRequest {
            refresh_token: refresh.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(dead.code(), tonic::Code::Unauthenticated);

    // The sign-in is in the organisation's audit log.
    let events = twig_audit::events_with_action(&s.app.db, "sso.sign_in")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "success");
    assert_eq!(events[0].org_id.map(|o| o.to_string()), Some(org));
    s.app.stop().await;
}

on_both_backends!(a_person_signs_in_through_the_provider_and_stays_signed_in);
