//! Telemetry of the real binary: spans exported over OTLP to a collector
//! (here a local OTLP receiver), joined to the caller's W3C trace, and
//! JSON log lines when asked for.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::twig_binary;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use twig_proto::sessions::v1 as pb;
use twig_tests::{Backend, TestDatabase};

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_otlp_collector_in_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let db = TestDatabase::new(Backend::Sqlite).await;
    let mut command = Command::new(twig_binary());
    command
        .env("DATABASE_URL", &db.url)
        .env("TWIG__TELEMETRY__JSON_LOGS", "true")
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (child, channel) = twig_tests::spawn_serve(command).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(pb::SignUpRequest {
        email: "traced@example.com".into(),
        password: "correct horse battery staple".into(),
        display_name: String::new(),
        organization_name: String::new(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    pb::session_service_client::SessionServiceClient::new(channel)
        .sign_up(request)
        .await
        .unwrap();

    // SIGTERM: the server drains, then flushes its spans before exiting.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "the server exited with {}:\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let spans = collector.0.lock().unwrap().clone();
    let span = spans
        .iter()
        .find(|s| s.name == "twig.sessions.v1.SessionService/SignUp")
        .unwrap_or_else(|| {
            panic!(
                "no SignUp span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(hex(&span.trace_id), trace_id, "joined the caller's trace");
    assert_eq!(hex(&span.parent_span_id), parent_id);

    // Every log line is one JSON object.
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<_> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Debug logs of a whole session's life hold no token and no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_tokens_or_passwords() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let internal = "logs-test-internal-token-0123456789abcdef";
    let mut command = Command::new(twig_binary());
    command
        .env("DATABASE_URL", &db.url)
        .env("TWIG__AUTH__INTERNAL_TOKEN", internal)
        .env(
            "RUST_LOG",
            "debug,twig_sessions=trace,twig_auth=trace,twig_server=trace",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let outbox = twig_tests::Outbox::new();
    outbox.configure(&mut command);
    let (child, channel) = twig_tests::spawn_serve(command).await;
    let mut client = pb::session_service_client::SessionServiceClient::new(channel);
    let password = "log-canary password 1234";
    let wrong = "log-canary wrong guess";
    let email = "logs@example.com";
    // Signed up through the mailed link: the link's token is a secret too.
    client
        .sign_up(pb::SignUpRequest {
            email: email.into(),
            password: password.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .unwrap();
    let link = outbox.link_token(email, "Verify your email").await;
    let first = client
        .verify_email(pb::VerifyEmailRequest {
            token: link.clone(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let _ = client
        .login(pb::LoginRequest {
            email: email.into(),
            password: wrong.into(),
            organization_id: String::new(),
        })
        .await;
    let tokens = client
        .login(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
            organization_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let mut verify = tonic::Request::new(pb::VerifySessionRequest {
        access_token: tokens.access_token.clone(),
    });
    verify
        .metadata_mut()
        .insert("x-twig-internal-token", internal.parse().unwrap());
    client.verify_session(verify).await.unwrap();
    let refreshed = client
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    // Reuse of the old refresh token (after the grace) is logged as a warning.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let _ = client
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await;
    let mut logout = tonic::Request::new(pb::LogoutRequest {});
    logout.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", refreshed.access_token)
            .parse()
            .unwrap(),
    );
    let _ = client.logout(logout).await;

    let logs = twig_tests::stop_and_collect_logs(child).await;
    assert!(
        logs.contains("refresh token reuse"),
        "the logs are being captured"
    );
    for secret in [
        password,
        wrong,
        internal,
        link.as_str(),
        first.access_token.as_str(),
        first.refresh_token.as_str(),
        tokens.access_token.as_str(),
        tokens.refresh_token.as_str(),
        refreshed.access_token.as_str(),
        refreshed.refresh_token.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
}
