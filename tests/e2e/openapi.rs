//! The OpenAPI document a real server serves at `/openapi.json`, checked
//! by a validator no one here wrote (PyPI `openapi-spec-validator`, which
//! `scripts/test` installs), and the RPCs that the `google.api.http`
//! rules newly put on the HTTP/JSON surface, called as a developer would,
//! with good input and bad.

use std::path::PathBuf;
use std::process::Command;

use twig_tests::{Backend, PASSWORD, TestApp, email, header, http1};

/// One HTTP/1.1 call: status code, headers and the body as JSON (`Null`
/// when it is not JSON).
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let mut head = format!("{method} {path} HTTP/1.1");
    if let Some(token) = token {
        head.push_str(&format!("\r\nAuthorization: Bearer {token}"));
    }
    if !body.is_empty() {
        head.push_str("\r\nContent-Type: application/json");
    }
    let (status, headers, body) = http1(app.addr, &head, body.as_bytes()).await;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status}"));
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (code, headers, json)
}

/// `openapi-spec-validator` from the virtual environment `scripts/test`
/// makes, or `OPENAPI_SPEC_VALIDATOR`.
fn validator() -> PathBuf {
    let path = std::env::var_os("OPENAPI_SPEC_VALIDATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/openapi/.venv/bin/openapi-spec-validator")
        });
    assert!(
        path.exists(),
        "{} is missing: run scripts/test (it installs PyPI openapi-spec-validator \
         into tests/openapi/.venv)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_is_valid_and_lists_every_public_rpc() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, headers, doc) = call(&app, "GET", "/openapi.json", None, "").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(doc["openapi"], "3.0.3");

    // The outside validator, on the document as served.
    let file = std::env::temp_dir().join(format!(
        "twig-openapi-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = Command::new(validator())
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every RPC that is not internal-only is an operation; a credential
    // RPC names the bearer scheme, a public one none.
    let policy = twig_auth::AccessPolicy::of_twig_apis().unwrap();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push((path.clone(), method.clone(), op.clone()));
        }
    }
    let mut public = 0;
    for rpc in policy.paths() {
        let requirement = policy.requirement(rpc).unwrap();
        if matches!(requirement, twig_auth::Requirement::Internal(_)) {
            continue;
        }
        public += 1;
        let (path, method, op) = operations
            .iter()
            .find(|(_, _, op)| op["x-twig-rpc"] == rpc)
            .unwrap_or_else(|| panic!("{rpc} is not in /openapi.json"));
        let security = op["security"].to_string();
        match requirement {
            twig_auth::Requirement::Public => assert_eq!(security, "[]", "{method} {path}"),
            _ => assert!(security.contains("bearer"), "{method} {path}: {security}"),
        }
        assert!(
            op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .is_some(),
            "{method} {path}"
        );
    }
    assert!(public >= 31, "{public} public RPCs");
    // The proto3 JSON mapping in the schemas.
    let schemas = &doc["components"]["schemas"];
    let usage = &schemas["twig.apikeys.v1.UsagePoint"]["properties"];
    assert_eq!(usage["requests"]["type"], "string", "uint64 as a string");
    assert_eq!(usage["start"]["format"], "date-time", "Timestamp");
    assert_eq!(
        schemas["twig.quota.v1.Limit"]["properties"]["period"]["type"], "string",
        "Duration"
    );
    assert_eq!(
        schemas["twig.auth.v1.Scope"]["enum"][1], "SCOPE_READ",
        "enums by name"
    );
    app.stop().await;
}

/// Sessions, password, key usage, key rotation by verb and the IP
/// allowlist over HTTP/JSON; wrong methods, unknown paths and malformed
/// JSON get JSON errors and change nothing.
async fn newly_routed_rpcs_over_http(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("http-routes");
    let (status, _, signed_up) = call(
        &app,
        "POST",
        "/v1/sign-up",
        None,
        &format!(r#"{{"email":"{ada}","password":"{PASSWORD}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{signed_up}");
    assert_eq!(signed_up, serde_json::json!({}), "answered at once");
    // The mailed link, followed over HTTP: the account and its first
    // session.
    let token = app.link_token(&ada, "Verify your email").await;
    let (status, _, signed_up) = call(
        &app,
        "POST",
        "/v1/sign-up:verify",
        None,
        &format!(r#"{{"token":"{token}","password":"{PASSWORD}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{signed_up}");
    let first = signed_up["tokens"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let first_id = signed_up["tokens"]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let second = app.login(&ada).await;
    let third = app.login(&ada).await;

    // ListSessions: the three, the caller's marked current.
    let (status, _, listed) = call(&app, "GET", "/v1/sessions", Some(&first), "").await;
    assert_eq!(status, 200, "{listed}");
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{listed}");
    assert!(
        sessions
            .iter()
            .any(|s| s["id"] == first_id.as_str() && s["current"] == true)
    );

    // RevokeSession: a path variable on DELETE; again is NOT_FOUND.
    let revoke = format!("/v1/sessions/{}", second.session_id);
    let (status, _, body) = call(&app, "DELETE", &revoke, Some(&first), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(app.verify(&second.access_token).await.is_err());
    let (status, _, body) = call(&app, "DELETE", &revoke, Some(&first), "").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "NOT_FOUND");

    // ChangePassword: malformed JSON, a wrong current password (with the
    // field named), then the change, which ends the other session.
    let (status, headers, body) =
        call(&app, "POST", "/v1/me:changePassword", Some(&first), "{nope").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(body["code"], "INVALID_ARGUMENT");
    let new_password = "a new and long enough password";
    let (status, _, body) = call(
        &app,
        "POST",
        "/v1/me:changePassword",
        Some(&first),
        &format!(r#"{{"currentPassword":"wrong one","newPassword":"{new_password}"}}"#),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["fieldViolations"][0]["field"], "current_password");
    assert!(
        app.verify(&third.access_token).await.is_ok(),
        "nothing changed"
    );
    let (status, _, body) = call(
        &app,
        "POST",
        "/v1/me:changePassword",
        Some(&first),
        &format!(r#"{{"currentPassword":"{PASSWORD}","newPassword":"{new_password}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["otherSessionsEnded"], 1, "{body}");
    assert!(app.verify(&third.access_token).await.is_err());

    // A key, rotated by its verb, and its usage with query parameters.
    let (status, _, created) = call(
        &app,
        "POST",
        "/v1/api-keys",
        Some(&first),
        r#"{"name":"usage","scopes":["SCOPE_READ"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let key_id = created["key"]["id"].as_str().unwrap().to_string();
    let (status, _, rotated) = call(
        &app,
        "POST",
        &format!("/v1/api-keys/{key_id}:rotate"),
        Some(&first),
        r#"{"overlapSeconds":0}"#,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let key = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(key, created["secret"].as_str().unwrap());
    let (status, _, me) = call(&app, "GET", "/v1/me", Some(&key), "").await;
    assert_eq!(status, 200, "{me}");
    let usage = format!("/v1/api-keys/{key_id}/usage?granularity=GRANULARITY_MINUTE");
    let (status, _, body) = call(&app, "GET", &usage, Some(&first), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("points").is_none() || body["points"].is_array(),
        "{body}"
    );
    let (status, _, body) = call(
        &app,
        "GET",
        &format!("/v1/api-keys/{key_id}/usage?granularity=HOURLY"),
        Some(&first),
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "INVALID_ARGUMENT");
    let (status, _, body) = call(
        &app,
        "GET",
        &format!("/v1/api-keys/{}/usage", uuid::Uuid::now_v7()),
        Some(&first),
        "",
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // The organisation's IP allowlist: `body: "allowlist"` on PUT.
    let (status, _, body) = call(
        &app,
        "PUT",
        "/v1/ip-allowlist",
        Some(&first),
        r#"{"cidrs":["127.0.0.1","10.0.0.0/8"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stored = body["allowlist"]["cidrs"].clone();
    assert_eq!(stored.as_array().map(Vec::len), Some(2), "{body}");
    let (status, _, body) = call(
        &app,
        "PUT",
        "/v1/ip-allowlist",
        Some(&first),
        r#"{"cidrs":["not a network"]}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["fieldViolations"][0]["field"], "cidrs", "{body}");
    let (status, _, body) = call(&app, "GET", "/v1/ip-allowlist", Some(&key), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["allowlist"]["cidrs"], stored,
        "the bad list changed nothing"
    );

    // Wrong method, unknown path: JSON errors.
    for (method, path, expected, code) in [
        ("PATCH", "/v1/sessions", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/sessions:logout", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/no-such-thing", 404, "NOT_FOUND"),
        (
            "POST",
            &format!("/v1/api-keys/{key_id}:explode"),
            404,
            "NOT_FOUND",
        ),
    ] {
        let (status, headers, body) = call(&app, method, path, Some(&first), "").await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(body["code"], code, "{method} {path}");
    }

    // Logout: the caller's session ends; LogoutEverywhere needs a session.
    let (status, _, body) = call(&app, "POST", "/v1/sessions:logout", Some(&first), "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(&app, "GET", "/v1/me", Some(&first), "").await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = call(
        &app,
        "POST",
        "/v1/sessions:logoutEverywhere",
        Some(&key),
        "",
    )
    .await;
    assert_eq!(status, 403, "an API key is no session: {body}");
    app.stop().await;
}

on_both_backends!(newly_routed_rpcs_over_http);
