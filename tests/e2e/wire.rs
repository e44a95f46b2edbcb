//! Hostile bytes on the wire: oversized messages, gRPC-web frames that lie
//! about their length or stop short, malformed protobuf, compression the
//! server does not speak, oversized headers. Each gets a clean gRPC error,
//! and the server keeps serving.

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use twig_proto::sessions::v1 as pb;
use twig_tests::{Backend, TestApp, header, http1};

/// The gRPC status of a gRPC-web answer: a header (trailers-only) or the
/// trailer frame at the end of the body.
fn grpc_web_status(headers: &[(String, String)], body: &[u8]) -> Option<u32> {
    if let Some(code) = header(headers, "grpc-status") {
        return code.parse().ok();
    }
    let text = String::from_utf8_lossy(body);
    let at = text.find("grpc-status:")? + "grpc-status:".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

async fn grpc_web(app: &TestApp, extra_headers: &str, body: &[u8]) -> (String, Option<u32>) {
    let head = format!(
        "POST /twig.sessions.v1.SessionService/SignUp HTTP/1.1\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1{extra_headers}"
    );
    let (status, headers, body) = http1(app.addr, &head, body).await;
    let code = grpc_web_status(&headers, &body);
    (status, code)
}

fn frame(flags: u8, claimed_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flags];
    f.extend_from_slice(&claimed_len.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

async fn still_serving(app: &TestApp) {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clean_errors() {
    let app = TestApp::builder(Backend::Sqlite)
        .weak_hashing()
        .spawn()
        .await;
    let limit = app.config.server.max_message_bytes;

    // A message over the limit, over native gRPC: refused before decoding
    // (OUT_OF_RANGE is tonic's code for it, with the sizes in the message).
    let huge = app
        .sessions()
        .sign_up(pb::SignUpRequest {
            email: "big@example.com".into(),
            password: "a long enough password".into(),
            display_name: "x".repeat(limit + 1),
            organization_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
    assert!(huge.message().contains("too large"), "{huge:?}");
    still_serving(&app).await;

    let invalid = Code::InvalidArgument as u32;
    let cases: Vec<(&str, &str, Vec<u8>, Vec<u32>)> = vec![
        // Wrong wire types.
        (
            "malformed protobuf",
            "",
            frame(0, 3, &[0xff, 0xff, 0xff]),
            vec![invalid],
        ),
        // Field 1 (a string) holding bytes that are not UTF-8.
        (
            "invalid UTF-8",
            "",
            frame(0, 4, &[0x0a, 0x02, 0xc3, 0x28]),
            vec![invalid],
        ),
        // Says 1000 bytes, carries 10.
        (
            "lying length prefix",
            "",
            frame(0, 1000, &[0u8; 10]),
            vec![Code::Internal as u32, invalid, Code::Cancelled as u32],
        ),
        // Stops inside the frame header.
        (
            "truncated frame",
            "",
            vec![0, 0, 0],
            vec![Code::Internal as u32, invalid, Code::Cancelled as u32],
        ),
        // Claims 100 MB: refused from the header, nothing buffered.
        (
            "claims 100 MB",
            "",
            frame(0, 100_000_000, &[0u8; 16]),
            vec![Code::OutOfRange as u32],
        ),
        // Compressed with an algorithm the server does not accept.
        (
            "unsupported compression",
            "\r\nGrpc-Encoding: gzip",
            frame(1, 4, &[1, 2, 3, 4]),
            vec![Code::Unimplemented as u32, Code::Internal as u32],
        ),
    ];
    for (what, extra, body, expected) in cases {
        let (status, code) = grpc_web(&app, extra, &body).await;
        let code = code.unwrap_or_else(|| panic!("{what}: no grpc-status ({status})"));
        assert!(
            expected.contains(&code),
            "{what}: grpc-status {code}, want one of {expected:?}"
        );
        still_serving(&app).await;
    }

    // A header block over the limit: refused, the server unharmed.
    let mut request = tonic::Request::new(pb::LoginRequest::default());
    request.metadata_mut().insert(
        "x-padding",
        "p".repeat(app.config.server.max_header_bytes as usize * 2)
            .parse()
            .unwrap(),
    );
    let too_big = app.sessions().login(request).await.unwrap_err();
    assert_ne!(too_big.code(), Code::Ok);
    still_serving(&app).await;
    app.stop().await;
}
