//! Metric labels come from what the server knows, never from what a
//! client sends: 10,000 requests to junk paths (gRPC, gRPC-web, plain
//! HTTP with any method) leave the metrics page the size it was, are
//! counted with the status they were answered (404 is not OK), and real
//! RPCs and HTTP routes keep their names.

use std::process::{Command, Stdio};

use crate::twig_binary;
use futures::StreamExt as _;
use tonic::codegen::Bytes;
use twig_tests::{Backend, TestDatabase};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// The body of `GET /metrics`.
async fn metrics_page(admin: std::net::SocketAddr) -> String {
    let raw = tokio::task::spawn_blocking(move || twig_tests::scrape_metrics(admin))
        .await
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of the sample whose line starts with `series` (its name and
/// labels), 0 if there is none.
fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// One request; answers its HTTP status.
async fn send(client: &Client, request: http::Request<http_body_util::Full<Bytes>>) -> u16 {
    let response = client.request(request).await.expect("an answer");
    response.status().as_u16()
}

/// A gRPC frame with an empty message.
const EMPTY_FRAME: &[u8] = &[0, 0, 0, 0, 0];

fn junk() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_paths_leave_the_metrics_page_bounded() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let admin = twig_tests::free_addr();
    let mut command = Command::new(twig_binary());
    command
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .env("TWIG__SERVER__ADMIN_LISTEN", admin.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (mut child, channel, addr) = twig_tests::spawn_serve_at(command, None).await;
    let base = format!("http://{addr}");

    let h1: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let h2: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();

    // A real RPC and real HTTP routes, answered and refused.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health check");
    let sign_up = http::Request::post(format!("{base}/v1/sign-up"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(format!(
            r#"{{"email":"metrics-bounds@example.com","password":"{}"}}"#,
            twig_tests::PASSWORD
        ))))
        .unwrap();
    assert_eq!(send(&h1, sign_up).await, 200);
    let me = http::Request::get(format!("{base}/v1/me"))
        .body(http_body_util::Full::default())
        .unwrap();
    assert_eq!(send(&h1, me).await, 401);

    let before = metrics_page(admin).await;

    // 10,000 requests to paths nobody serves, five kinds in turn.
    const JUNK: usize = 10_000;
    let statuses: Vec<(usize, u16)> = futures::stream::iter(0..JUNK)
        .map(|i| {
            let (h1, h2, base) = (h1.clone(), h2.clone(), base.clone());
            async move {
                let kind = i % 5;
                let request = match kind {
                    // gRPC over HTTP/2
                    0 => http::Request::post(format!("{base}/junk.{}.Service/{}", junk(), junk()))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(http_body_util::Full::new(Bytes::from_static(EMPTY_FRAME))),
                    // gRPC-web over HTTP/1.1
                    1 => http::Request::post(format!("{base}/{}/{}", junk(), junk()))
                        .header("content-type", "application/grpc-web+proto")
                        .header("x-grpc-web", "1")
                        .body(http_body_util::Full::new(Bytes::from_static(EMPTY_FRAME))),
                    // plain GET with a query
                    2 => http::Request::get(format!("{base}/{}/{}?q={}", junk(), junk(), junk()))
                        .body(http_body_util::Full::default()),
                    // plain POST with a JSON body
                    3 => http::Request::post(format!("{base}/v1/{}", junk()))
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(Bytes::from_static(b"{}"))),
                    // a made-up method on a real route's path
                    _ => http::Request::builder()
                        .method(
                            http::Method::from_bytes(
                                format!("M{}", &junk()[..8].to_ascii_uppercase()).as_bytes(),
                            )
                            .unwrap(),
                        )
                        .uri(format!("{base}/v1/api-keys/{}", junk()))
                        .body(http_body_util::Full::default()),
                }
                .unwrap();
                let client = if kind == 0 { &h2 } else { &h1 };
                (kind, send(client, request).await)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;

    let after = metrics_page(admin).await;
    let _ = child.kill();
    let _ = child.wait();

    let (lines_before, lines_after) = (before.lines().count(), after.lines().count());
    eprintln!(
        "metrics page: {lines_before} lines, {} bytes before; {lines_after} lines, {} bytes after",
        before.len(),
        after.len()
    );
    // The few series of "unknown" (one per status) and nothing per path.
    assert!(
        lines_after <= lines_before + 80 && after.len() <= before.len() + 12 * 1024,
        "{lines_before} lines → {lines_after} lines; page now:\n{}",
        &after[..after.len().min(20_000)]
    );

    // Junk is counted under `unknown`, with the status it got.
    let count = |kind| statuses.iter().filter(|(k, _)| *k == kind).count() as u64;
    for (kind, status) in &statuses {
        let expected = match kind {
            0 | 1 => 200,
            2 | 3 => 404,
            _ => 405,
        };
        assert_eq!(*status, expected, "junk request of kind {kind}");
    }
    let grpc_unknown =
        r#"twig_rpc_requests_total{service="unknown",method="unknown",code="UNIMPLEMENTED"}"#;
    assert_eq!(sample(&after, grpc_unknown), count(0) + count(1), "{after}");
    assert!(
        !after
            .lines()
            .any(|l| l.contains(r#"service="unknown""#) && l.contains(r#"code="OK""#)),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"twig_http_requests_total{route="unknown",status="404"}"#
        ),
        count(2) + count(3),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"twig_http_requests_total{route="unknown",status="405"}"#
        ),
        count(4),
        "{after}"
    );

    // Real RPCs and routes keep their names.
    for series in [
        r#"twig_rpc_requests_total{service="grpc.health.v1.Health",method="Check",code="OK"}"#,
        r#"twig_http_requests_total{route="POST /v1/sign-up",status="200"}"#,
        r#"twig_http_requests_total{route="GET /v1/me",status="401"}"#,
        r#"twig_http_duration_seconds_count{route="POST /v1/sign-up"}"#,
    ] {
        assert!(sample(&after, series) >= 1, "{series} in\n{after}");
    }
}
