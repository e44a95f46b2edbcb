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
    assert_eq!(
        app.config
            .section::<twig_quota::QuotaConfig>()
            .unwrap()
            .default_limit,
        100,
        "the default limit"
    );
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
    assert_eq!(signed_up.json, serde_json::json!({}), "answered at once");
    // The mailed link finishes it: the account, its organisation, a session.
    let token = app.link_token(&ada, "Verify your email").await;
    let verified = curl(
        "POST",
        format!("{base}/v1/sign-up:verify"),
        None,
        Some(&format!(r#"{{"token":"{token}","password":"{password}"}}"#)),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.json);
    assert_eq!(verified.json["user"]["email"], ada.as_str());
    assert_eq!(verified.json["user"]["emailVerified"], true);
    assert!(
        verified.json["tokens"]["accessToken"]
            .as_str()
            .is_some_and(|t| t.starts_with("twig_st_")),
        "{}",
        verified.json
    );
    let again = curl(
        "POST",
        format!("{base}/v1/sign-up:verify"),
        None,
        Some(&format!(r#"{{"token":"{token}","password":"{password}"}}"#)),
    )
    .await;
    assert_eq!(again.status, 400, "a link works once: {}", again.json);
    assert_eq!(again.json["fieldViolations"][0]["field"], "token");
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

/// Quota limits, provider keys and the audit log over HTTP/JSON, routes
/// taken from the same proto options; bad input gets a JSON error and
/// changes nothing.
async fn an_admin_manages_limits_keys_and_audit_with_curl(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let base = format!("http://{}", app.addr);
    let ada = email("curl-admin");
    app.sign_up(&ada).await;
    let session = app.login(&ada).await.access_token;
    let me = curl("GET", format!("{base}/v1/me"), Some(&session), None).await;
    let org = me.json["memberships"][0]["organization"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an organisation in {}", me.json))
        .to_string();
    let subject = format!("org:{org}");

    // Quota limits.
    let set = curl(
        "POST",
        format!("{base}/v1/quota/limits"),
        Some(&session),
        Some(&format!(
            r#"{{"limit":{{"subject":"{subject}","limit":"50","period":"60s"}}}}"#
        )),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.json);
    assert_eq!(set.json["limit"]["limit"], "50");
    let zero = curl(
        "POST",
        format!("{base}/v1/quota/limits"),
        Some(&session),
        Some(&format!(
            r#"{{"limit":{{"subject":"{subject}","limit":"0","period":"60s"}}}}"#
        )),
    )
    .await;
    assert_eq!(zero.status, 400, "{}", zero.json);
    assert_eq!(zero.json["code"], "INVALID_ARGUMENT");
    let got = curl(
        "GET",
        format!("{base}/v1/quota/limits/{subject}"),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.json);
    assert_eq!(
        got.json["limit"]["limit"], "50",
        "the bad change changed nothing"
    );
    let listed = curl(
        "GET",
        format!("{base}/v1/quota/limits"),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(listed.json["limits"].as_array().map(Vec::len), Some(1));
    let stranger = curl(
        "GET",
        format!("{base}/v1/quota/limits/org:{}", uuid::Uuid::new_v4()),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(stranger.status, 404, "{}", stranger.json);
    let deleted = curl(
        "DELETE",
        format!("{base}/v1/quota/limits/{subject}"),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.json);
    let now = chrono::DateTime::from_timestamp(app.clock_now(), 0).unwrap();
    let (from, to) = (
        (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let usage = curl(
        "GET",
        format!("{base}/v1/quota/usage/{subject}?from={from}&to={to}"),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(usage.status, 200, "{}", usage.json);

    // Provider keys: the value goes in, only its mask comes out.
    let value = "sk-proj-abcdefghijklmnopqrstuvwxyz0123";
    let added = curl(
        "POST",
        format!("{base}/v1/provider-keys"),
        Some(&session),
        Some(&format!(
            r#"{{"provider":"openai","name":"main","value":"{value}"}}"#
        )),
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.json);
    assert!(!added.json.to_string().contains(value));
    let id = added.json["key"]["id"].as_str().unwrap().to_string();
    let wrong = curl(
        "POST",
        format!("{base}/v1/provider-keys"),
        Some(&session),
        Some(r#"{"provider":"openai","name":"other","value":"pk-nope"}"#),
    )
    .await;
    assert_eq!(wrong.status, 400, "{}", wrong.json);
    let taken = curl(
        "POST",
        format!("{base}/v1/provider-keys"),
        Some(&session),
        Some(&format!(
            r#"{{"provider":"openai","name":"main","value":"{value}"}}"#
        )),
    )
    .await;
    assert_eq!(taken.status, 409, "{}", taken.json);
    let keys = curl(
        "GET",
        format!("{base}/v1/provider-keys"),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(
        keys.json["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        keys.json
    );
    assert!(!keys.json.to_string().contains(value));
    let updated = curl(
        "PATCH",
        format!("{base}/v1/provider-keys/{id}"),
        Some(&session),
        Some(r#"{"value":"sk-proj-zyxwvutsrqponmlkjihgfedcba9876"}"#),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.json);
    for expected in [200, 404] {
        let gone = curl(
            "DELETE",
            format!("{base}/v1/provider-keys/{id}"),
            Some(&session),
            None,
        )
        .await;
        assert_eq!(gone.status, expected, "{}", gone.json);
    }

    // The audit log saw each change.
    let events = curl(
        "GET",
        format!("{base}/v1/audit/events?action=quota.limit_set&page_size=10"),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(events.status, 200, "{}", events.json);
    assert_eq!(
        events.json["events"].as_array().map(Vec::len),
        Some(1),
        "{}",
        events.json
    );
    let bad_page = curl(
        "GET",
        format!("{base}/v1/audit/events?page_size=lots"),
        Some(&session),
        None,
    )
    .await;
    assert_eq!(bad_page.status, 400, "{}", bad_page.json);
    app.stop().await;
}

on_both_backends!(
    a_developer_with_curl,
    an_admin_manages_limits_keys_and_audit_with_curl
);
