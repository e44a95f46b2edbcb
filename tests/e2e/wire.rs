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
    // Binary mode unless the extra headers name another content type.
    let content_type = if extra_headers.contains("Content-Type") {
        ""
    } else {
        "\r\nContent-Type: application/grpc-web+proto"
    };
    let head = format!(
        "POST /twig.sessions.v1.SessionService/SignUp HTTP/1.1\r\n\
         X-Grpc-Web: 1{content_type}{extra_headers}"
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
        // Groups nested 10,000 deep in an unknown field: the decoder's
        // recursion limit refuses it instead of exhausting the stack.
        (
            "deep nesting",
            "",
            {
                let mut nested = vec![0x7b_u8; 10_000];
                nested.extend(std::iter::repeat_n(0x7c_u8, 10_000));
                frame(0, nested.len() as u32, &nested)
            },
            vec![invalid],
        ),
        // Says 1000 bytes, carries 10.
        (
            "lying length prefix",
            "",
            frame(0, 1000, &[0u8; 10]),
            vec![invalid],
        ),
        // Stops inside the frame header.
        ("truncated frame", "", vec![0, 0, 0], vec![invalid]),
        // No message at all for a method that takes one.
        ("empty body", "", Vec::new(), vec![invalid]),
        // Two messages for a unary method.
        (
            "two messages",
            "",
            [frame(0, 0, &[]), frame(0, 0, &[])].concat(),
            vec![invalid],
        ),
        // Marked compressed, with no encoding named.
        (
            "compressed flag without an encoding",
            "",
            frame(1, 4, &[1, 2, 3, 4]),
            vec![invalid],
        ),
        // A flag that does not exist.
        ("flag 7", "", frame(7, 0, &[]), vec![invalid]),
        // gRPC-web text that is not base64, or stops inside a quantum.
        (
            "text mode, not base64",
            "\r\nContent-Type: application/grpc-web-text",
            b"!!!!not*base64".to_vec(),
            vec![invalid],
        ),
        (
            "text mode, cut short",
            "\r\nContent-Type: application/grpc-web-text",
            b"AAAAAAA".to_vec(),
            vec![invalid],
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
            vec![Code::Unimplemented as u32],
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

/// gRPC-web in both encodings a browser client may use: binary and text
/// (base64), over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_binary_and_text() {
    use base64::Engine as _;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let empty = frame(0, 0, &[]);
    for (content_type, body) in [
        ("application/grpc-web+proto", empty.clone()),
        (
            "application/grpc-web-text",
            base64::engine::general_purpose::STANDARD
                .encode(&empty)
                .into_bytes(),
        ),
    ] {
        let head = format!(
            "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nContent-Type: {content_type}\r\n\
             Accept: {content_type}\r\nX-Grpc-Web: 1"
        );
        let (status, headers, body) = http1(app.addr, &head, &body).await;
        assert!(status.contains(" 200"), "{content_type}: {status}");
        assert!(
            header(&headers, "content-type").is_some_and(|ct| ct.starts_with(content_type)),
            "{content_type}: {headers:?}"
        );
        let body = if content_type.ends_with("text") {
            // Base64 too, possibly several padded parts one after another.
            let text = String::from_utf8(body).unwrap();
            let mut decoded = Vec::new();
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let end = rest
                    .find(|c: char| c != '=')
                    .and_then(|start| rest[start..].find('=').map(|i| start + i))
                    .map(|i| i + rest[i..].chars().take_while(|c| *c == '=').count())
                    .unwrap_or(rest.len());
                decoded.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(&rest[..end])
                        .expect("base64"),
                );
                rest = &rest[end..];
            }
            decoded
        } else {
            body
        };
        assert_eq!(grpc_web_status(&headers, &body), Some(0), "{content_type}");
        // SERVING: field 1 = 1.
        assert!(body.windows(2).any(|w| w == [0x08, 0x01]), "{content_type}");
    }
    app.stop().await;
}

/// gRPC-web over HTTP/2 (prior knowledge, as a proxy in front of the edge
/// may speak it): tonic-web's client on an HTTP/2-only connection signs
/// up, creates a key and lists it; a bad token fails cleanly; the text
/// encoding works on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_over_http2() {
    use base64::Engine as _;
    use http_body_util::BodyExt as _;
    use twig_proto::apikeys::v1 as kpb;
    use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
    use twig_proto::sessions::v1::session_service_client::SessionServiceClient;

    let app = TestApp::builder(Backend::Sqlite)
        .weak_hashing()
        .spawn()
        .await;
    let http2_client = || {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .to_owned()
    };
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http2_client().build_http());
    let raw = http2_client().build_http::<tonic::body::Body>();
    let origin: http::Uri = format!("http://{}", app.addr).parse().unwrap();

    // Sign-up over gRPC-web, finished through the mailed link, also over
    // gRPC-web.
    let ada = twig_tests::email("h2-web");
    let started = SessionServiceClient::with_origin(web.clone(), origin.clone())
        .sign_up(pb::SignUpRequest {
            email: ada.clone(),
            password: twig_tests::PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .expect("sign up over gRPC-web on HTTP/2")
        .into_inner();
    assert_eq!(started, pb::SignUpResponse {});
    let link = app.link_token(&ada, "Verify your email").await;
    let signed_up = SessionServiceClient::with_origin(web.clone(), origin.clone())
        .verify_email(pb::VerifyEmailRequest {
            token: link,
            password: twig_tests::PASSWORD.into(),
        })
        .await
        .expect("follow the sign-up link over gRPC-web on HTTP/2")
        .into_inner();
    let token = signed_up.tokens.unwrap().access_token;
    let keys = ApiKeyServiceClient::with_origin(web.clone(), origin.clone());
    let created = keys
        .clone()
        .create_api_key(twig_tests::bearer(
            &token,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "h2".into(),
                scopes: vec![twig_proto::auth::v1::Scope::Read as i32],
                ..Default::default()
            },
        ))
        .await
        .expect("create over gRPC-web on HTTP/2")
        .into_inner();
    let listed = keys
        .clone()
        .list_api_keys(twig_tests::bearer(
            &token,
            kpb::ListApiKeysRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.key.unwrap().id);
    let bad = keys
        .clone()
        .list_api_keys(twig_tests::bearer(
            "twig_st_not-a-real-token",
            kpb::ListApiKeysRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::Unauthenticated, "{bad:?}");
    assert!(!bad.message().is_empty());

    // Text mode, on an HTTP/2 connection.
    let text = base64::engine::general_purpose::STANDARD.encode(frame(0, 0, &[]));
    let request = http::Request::post(format!("{origin}grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc-web-text")
        .header("accept", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .body(tonic::body::Body::new(http_body_util::Full::new(bytes_of(
            text,
        ))))
        .unwrap();
    let answer = raw.request(request).await.expect("an answer");
    assert_eq!(answer.version(), http::Version::HTTP_2);
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web-text")
    );
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    let body = base64::engine::general_purpose::STANDARD
        .decode(&body[..])
        .or_else(|_| {
            // Data and trailers may come as two padded parts.
            let text = String::from_utf8_lossy(&body).to_string();
            let split = text
                .find('=')
                .map(|i| i + text[i..].chars().take_while(|c| *c == '=').count());
            let (a, b) = text.split_at(split.unwrap_or(text.len()));
            let mut out = base64::engine::general_purpose::STANDARD.decode(a)?;
            out.extend(base64::engine::general_purpose::STANDARD.decode(b)?);
            Ok::<_, base64::DecodeError>(out)
        })
        .expect("base64");
    assert_eq!(grpc_web_status(&[], &body), Some(0));
    app.stop().await;
}

fn bytes_of(text: String) -> prost::bytes::Bytes {
    prost::bytes::Bytes::from(text.into_bytes())
}
