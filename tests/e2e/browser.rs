//! A real browser: headless Chromium (playwright-core) loads a small page
//! built with Connect's gRPC-web transport from another origin; the page
//! starts a sign-up, and — opened again with the link mailed to the
//! address, as a person would — finishes it, logs in, creates an API key,
//! lists it, renames and revokes it through the HTTP/JSON routes (PATCH
//! and DELETE, preflighted), and shows a bad token's clean failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use twig_tests::{Backend, TestApp};

fn node_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    for needed in [
        "node_modules/playwright-core",
        "browser/dist/app.js",
        "gen/twig/apikeys/v1/apikeys_pb.js",
    ] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: scripts/test installs the packages, generates the client and bundles the page",
            dir.join(needed).display()
        );
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (scripts/test does)"
    );
    dir
}

/// Serves the page's two files on 127.0.0.1:0: the page's own origin.
async fn serve_page(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let root = root.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .split('?')
                    .next()
                    .unwrap_or("/");
                let (file, kind) = match path {
                    "/index.html" => ("index.html", "text/html"),
                    "/dist/app.js" => ("dist/app.js", "text/javascript"),
                    _ => ("", ""),
                };
                let response = match std::fs::read(root.join(file))
                    .ok()
                    .filter(|_| !file.is_empty())
                {
                    Some(body) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response).await;
            });
        }
    });
    origin
}

/// `value` percent-encoded for a URL's query.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Opens `page` in Chromium, clicks Run and returns what the page showed.
async fn open_in_chromium(dir: PathBuf, page: String) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(&dir)
            .args(["browser_flow.mjs", &page])
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser run failed: {stderr}");
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_in_chromium_signs_up_and_manages_keys() {
    let dir = node_dir();
    let page_origin = serve_page(dir.join("browser")).await;
    let app = TestApp::builder(Backend::Sqlite)
        .weak_hashing()
        .config(|c| c.server.cors_origins = vec![page_origin.clone()])
        .spawn()
        .await;
    let page = format!("{page_origin}/index.html?api=http://{}", app.addr);
    let signed_up = open_in_chromium(dir.clone(), page.clone()).await;
    assert_eq!(signed_up["status"], "done", "{signed_up}");
    assert_eq!(signed_up["result"]["step"], "signed-up", "{signed_up}");
    let address = signed_up["result"]["email"].as_str().unwrap();

    // The link in the mail, opened in the browser.
    let token = app.link_token(address, "Verify your email").await;
    let seen = open_in_chromium(dir, format!("{page}&token={}", query_value(&token))).await;
    assert_eq!(seen["status"], "done", "{seen}");
    assert_eq!(seen["result"]["step"], "verified", "{seen}");
    assert_eq!(seen["result"]["email"], address, "{seen}");
    assert_eq!(
        seen["result"]["loginOrganizationId"], seen["result"]["organizationId"],
        "the account signs in to the organisation the link made: {seen}"
    );
    let key_id = seen["result"]["keyId"].as_str().unwrap();
    assert_eq!(seen["result"]["listedIds"], serde_json::json!([key_id]));
    assert_eq!(seen["listedText"].as_array().unwrap().len(), 1);
    assert!(
        seen["listedText"][0]
            .as_str()
            .unwrap()
            .starts_with("made in a browser (twig_sk_")
    );
    // PATCH and DELETE on the HTTP/JSON routes pass the browser's
    // preflight and reach the API.
    let http = &seen["result"]["http"];
    assert_eq!(http["patch"]["status"], 200, "{seen}");
    assert_eq!(http["patch"]["name"], "renamed in a browser", "{seen}");
    assert_eq!(http["delete"]["status"], 200, "{seen}");
    assert!(http["revokedAt"].is_string(), "{seen}");
    assert_eq!(
        seen["result"]["badToken"]["code"], "Unauthenticated",
        "{seen}"
    );
    assert!(
        seen["badTokenText"]
            .as_str()
            .unwrap()
            .starts_with("Unauthenticated: "),
        "{seen}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_an_unlisted_origin_is_blocked_by_the_browser() {
    let dir = node_dir();
    let page_origin = serve_page(dir.join("browser")).await;
    // The API allows another origin only.
    let app = TestApp::builder(Backend::Sqlite)
        .weak_hashing()
        .config(|c| c.server.cors_origins = vec!["https://app.example.com".into()])
        .spawn()
        .await;
    let page = format!("{page_origin}/index.html?api=http://{}", app.addr);
    let seen = open_in_chromium(dir, page).await;
    assert_eq!(seen["status"], "failed", "{seen}");
    assert!(
        seen["consoleErrors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("CORS")),
        "{seen}"
    );
    app.stop().await;
}
