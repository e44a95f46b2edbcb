//! Retries: idempotent requests only, on 429/502/503/504, connection
//! failures and timeouts; Retry-After honoured up to max_backoff; never
//! past the total timeout; never a refusal or an over-cap body.

use std::time::{Duration, Instant};

use twig_outbound::{Idempotent, OutboundConfig, OutboundError, Purpose, RetryConfig};

use crate::common::{Reply, TestServer};
use crate::{client, get, local_config, post};

fn retrying(attempts: u32) -> OutboundConfig {
    OutboundConfig {
        retry: RetryConfig {
            attempts,
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(1500),
            jitter: true,
        },
        ..local_config()
    }
}

/// 503 for the first two requests, then 200.
async fn flaky() -> TestServer {
    TestServer::start(|index, _| match index {
        0 | 1 => Reply::status(503, &[], b"busy"),
        _ => Reply::ok("done"),
    })
    .await
}

#[tokio::test]
async fn a_get_is_retried_until_it_succeeds() {
    let server = flaky().await;
    let response = client(&retrying(3))
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().as_ref(), b"done");
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_post_is_not_retried() {
    let server = flaky().await;
    let response = client(&retrying(3))
        .send(Purpose::TOKEN_EXCHANGE, post(&server.url("/"), "code=x"))
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "the answer, not an error");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_post_marked_idempotent_is_retried() {
    let server = flaky().await;
    let mut request = post(&server.url("/revoke"), "token=x");
    request.extensions_mut().insert(Idempotent);
    let response = client(&retrying(3))
        .send(Purpose::REVOCATION, request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.body == b"token=x"));
}

#[tokio::test]
async fn attempts_are_bounded() {
    let server = TestServer::start(|_, _| Reply::status(502, &[], b"")).await;
    let response = client(&retrying(3))
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn other_statuses_are_not_retried() {
    for status in [500, 501, 400, 404] {
        let server = TestServer::start(move |_, _| Reply::status(status, &[], b"")).await;
        let response = client(&retrying(3))
            .send(Purpose::JWKS, get(&server.url("/")))
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(server.requests().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = TestServer::start(|index, _| match index {
        0 => Reply::status(429, &[("Retry-After", "1")], b""),
        _ => Reply::ok("later"),
    })
    .await;
    let started = Instant::now();
    let response = client(&retrying(2))
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.body().as_ref(), b"later");
    // The backoff alone would have been 10–20 ms.
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_max_backoff_returns_the_answer() {
    let server =
        TestServer::start(|_, _| Reply::status(429, &[("Retry-After", "3600")], b"")).await;
    let started = Instant::now();
    let response = client(&retrying(3))
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3600");
    assert_eq!(server.requests().len(), 1);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn no_wait_runs_past_the_total_timeout() {
    // Retry-After 1 s fits max_backoff but not the 500 ms total: the
    // answer comes back at once instead of a timeout later.
    let server = TestServer::start(|_, _| Reply::status(503, &[("Retry-After", "1")], b"")).await;
    let config = OutboundConfig {
        read_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        total_timeout: Duration::from_millis(500),
        ..retrying(3)
    };
    let started = Instant::now();
    let response = client(&config)
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.requests().len(), 1);
    assert!(started.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    // A port nobody listens on (bound, then closed).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = OutboundConfig {
        retry: RetryConfig {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(200),
            jitter: false,
        },
        ..local_config()
    };
    let started = Instant::now();
    let error = client(&config)
        .send(Purpose::JWKS, get(&format!("http://{addr}/")))
        .await
        .unwrap_err();
    assert!(matches!(error, OutboundError::Transport(_)), "{error:?}");
    // Waited 100 ms, then 200 ms: three attempts.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_over_cap_body_is_not_retried() {
    let server = TestServer::start(|_, _| Reply::status(200, &[], &[b'z'; 2048])).await;
    let config = OutboundConfig {
        max_body_bytes: 1024,
        ..retrying(3)
    };
    let error = client(&config)
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::BodyTooLarge { limit: 1024 }),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_address_is_not_retried() {
    let config = OutboundConfig {
        allow_networks: Vec::new(),
        retry: RetryConfig {
            attempts: 3,
            first_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_millis(300),
            jitter: false,
        },
        ..local_config()
    };
    let server = TestServer::start(|_, _| Reply::ok("no")).await;
    let started = Instant::now();
    let url = format!("http://localhost:{}/", server.addr.port());
    let error = client(&config)
        .send(Purpose::JWKS, get(&url))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::ForbiddenAddress { .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(server.connections(), 0);
}
