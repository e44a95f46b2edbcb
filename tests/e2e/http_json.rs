//! The HTTP/JSON surface as a developer meets it: `curl` with
//! `Authorization: Bearer twig_sk_…`, JSON errors with HTTP statuses, and
//! the 101st request of a minute refused with 429 and its headers — and
//! with RESOURCE_EXHAUSTED over gRPC, since both share one count.

use std::process::Command;

use tonic::Code;
use twig_proto::apikeys::v1 as pb;
use twig_tests::{Backend, TestApp, bearer, email};

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    json: serde_json::Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One `curl` call: method, URL, optional bearer and JSON body.
async fn curl(method: &str, url: String, token: Option<&str>, body: Option<&str>) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--max-time", "10", "-X", method, &url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run curl"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

async fn a_developer_with_curl(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    assert_eq!(app.config.quota.default_limit, 100, "the default limit");
    let base = format!("http://{}", app.addr);
    let ada = email("curl");
    let password = "a long enough password for curl";

    let signed_up = curl(
        "POST",
        format!("{base}/v1/sign-up"),
        None,
        Some(&format!(r#"{{"email":"{ada}","password":"{password}"}}"#)),
    )
    .await;
    assert_eq!(signed_up.status, 200, "{}", signed_up.json);
    assert_eq!(signed_up.header("content-type"), Some("application/json"));
    let login = curl(
        "POST",
        format!("{base}/v1/sessions:login"),
        None,
        Some(&format!(r#"{{"email":"{ada}","password":"{password}"}}"#)),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.json);
    let session = login.json["tokens"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();

    // Errors are JSON with the HTTP status of their gRPC code.
    let anonymous = curl("GET", format!("{base}/v1/api-keys"), None, None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json["code"], "UNAUTHENTICATED");
    let not_json = curl(
        "POST",
        format!("{base}/v1/api-keys"),
        Some(&session),
        Some("{nope"),
    )
    .await;
    assert_eq!(not_json.status, 400);
    let unknown_field = curl(
        "POST",
        format!("{base}/v1/api-keys"),
        Some(&session),
        Some(r#"{"name":"x","colour":"red"}"#),
    )
    .await;
    assert_eq!(unknown_field.status, 400, "{}", unknown_field.json);
    let bad_value = curl(
        "POST",
        format!("{base}/v1/api-keys"),
        Some(&session),
        Some(r#"{"name":"","scopes":["SCOPE_READ"]}"#),
    )
    .await;
    assert_eq!(bad_value.status, 400, "{}", bad_value.json);
    assert_eq!(bad_value.json["fieldViolations"][0]["field"], "name");

    let created = curl(
        "POST",
        format!("{base}/v1/api-keys"),
        Some(&session),
        Some(r#"{"name":"ci","scopes":["SCOPE_READ"]}"#),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.json);
    let key = created.json["secret"].as_str().unwrap().to_string();
    let key_id = created.json["key"]["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("twig_sk_"));

    // Path fields, and a 404 for another id.
    let one = curl(
        "GET",
        format!("{base}/v1/api-keys/{key_id}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.json);
    assert_eq!(one.json["key"]["name"], "ci");
    let missing = curl(
        "GET",
        format!("{base}/v1/api-keys/{}", uuid::Uuid::now_v7()),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.json);
    // A read key may not create keys (the RPC's declared scope).
    let forbidden = curl(
        "POST",
        format!("{base}/v1/api-keys"),
        Some(&key),
        Some(r#"{"name":"more"}"#),
    )
    .await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.json);
    // Query parameters fill the request.
    let page = curl(
        "GET",
        format!("{base}/v1/api-keys?pageSize=1"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.json);
    assert_eq!(page.json["keys"].as_array().unwrap().len(), 1);

    // Three requests of the key counted so far — the refused create spent
    // nothing — so 97 more fit in the minute.
    for n in 4..=100 {
        let ok = curl("GET", format!("{base}/v1/api-keys"), Some(&key), None).await;
        assert_eq!(ok.status, 200, "request {n}: {}", ok.json);
    }
    let over = curl("GET", format!("{base}/v1/api-keys"), Some(&key), None).await;
    assert_eq!(over.status, 429, "{}", over.json);
    assert_eq!(over.json["code"], "RESOURCE_EXHAUSTED");
    // Whole seconds, rounded up: at most the period and one bucket.
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry), "Retry-After {retry}");
    assert_eq!(over.header("ratelimit-limit"), Some("100"));
    assert_eq!(over.header("ratelimit-remaining"), Some("0"));
    let reset: u64 = over.header("ratelimit-reset").unwrap().parse().unwrap();
    assert_eq!(reset, retry, "RateLimit-Reset");

    // The same key over gRPC shares the count.
    let grpc = app
        .api_keys()
        .list_api_keys(bearer(&key, pb::ListApiKeysRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(grpc.code(), Code::ResourceExhausted);
    assert_eq!(
        grpc.metadata()
            .get("ratelimit-limit")
            .unwrap()
            .to_str()
            .unwrap(),
        "100"
    );
    app.stop().await;
}

on_both_backends!(a_developer_with_curl);
