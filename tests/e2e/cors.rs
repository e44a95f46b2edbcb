//! Browsers across origins: configured origins get CORS answers with the
//! gRPC status headers exposed; any other origin gets none.

use twig_tests::{Backend, TestApp, header, http1};

const APP: &str = "https://app.example.com";

fn preflight(origin: &str) -> String {
    format!(
        "OPTIONS /twig.apikeys.v1.ApiKeyService/ListApiKeys HTTP/1.1\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization,content-type,x-grpc-web"
    )
}

fn grpc_web_health(origin: &str) -> String {
    format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nOrigin: {origin}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1"
    )
}

/// An empty message in one gRPC-web frame.
const EMPTY_FRAME: [u8; 5] = [0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_origins_only() {
    let app = TestApp::builder(Backend::Sqlite)
        .config(|c| c.server.cors_origins = vec![APP.into()])
        .spawn()
        .await;

    // A configured origin's preflight: its own origin, credentials, the
    // request headers a gRPC-web client sends.
    let (status, headers, _) = http1(app.addr, &preflight(APP), b"").await;
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&headers, "access-control-allow-credentials"),
        Some("true")
    );
    let allowed = header(&headers, "access-control-allow-headers").unwrap_or_default();
    for h in ["authorization", "content-type", "x-grpc-web"] {
        assert!(allowed.contains(h), "{h} in {allowed}");
    }
    assert!(header(&headers, "vary").is_some_and(|v| v.to_ascii_lowercase().contains("origin")));

    // The HTTP/JSON routes' methods are allowed too.
    for method in ["PATCH", "DELETE", "PUT", "GET"] {
        let request = format!(
            "OPTIONS /v1/api-keys/some-id HTTP/1.1\r\nOrigin: {APP}\r\n\
             Access-Control-Request-Method: {method}\r\n\
             Access-Control-Request-Headers: authorization,content-type"
        );
        let (status, headers, _) = http1(app.addr, &request, b"").await;
        assert!(status.contains(" 200"), "{method}: {status}");
        let methods = header(&headers, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains(method), "{method} in {methods}");
    }

    // Its real call: the gRPC status headers are readable by the page.
    let (status, headers, body) = http1(app.addr, &grpc_web_health(APP), &EMPTY_FRAME).await;
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    let exposed = header(&headers, "access-control-expose-headers").unwrap_or_default();
    for h in ["grpc-status", "grpc-message"] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }
    assert!(
        String::from_utf8_lossy(&body).contains("grpc-status:0"),
        "the trailers frame says OK"
    );

    // Any other origin, however similar: no CORS headers, never reflected.
    for hostile in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "null",
    ] {
        for request in [preflight(hostile), grpc_web_health(hostile)] {
            let body: &[u8] = if request.starts_with("POST") {
                &EMPTY_FRAME
            } else {
                b""
            };
            let (_, headers, _) = http1(app.addr, &request, body).await;
            assert_eq!(
                header(&headers, "access-control-allow-origin"),
                None,
                "{hostile}"
            );
            assert_eq!(
                header(&headers, "access-control-allow-credentials"),
                None,
                "{hostile}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_origin_is_allowed_by_default() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, headers, _) = http1(app.addr, &preflight(APP), b"").await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    app.stop().await;
}
