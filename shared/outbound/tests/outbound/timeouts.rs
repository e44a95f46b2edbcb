//! Silent and slow servers end in Timeout, within the configured bound.

use std::time::{Duration, Instant};

use twig_outbound::{OutboundConfig, OutboundError, Purpose, RetryConfig, TimeoutPhase};

use crate::common::{Reply, TestServer};
use crate::{client, get, local_config};

fn timeouts(read: u64, total: u64) -> OutboundConfig {
    OutboundConfig {
        read_timeout: Duration::from_millis(read),
        total_timeout: Duration::from_millis(total),
        connect_timeout: Duration::from_millis(read.min(total)),
        ..local_config()
    }
}

async fn timed_out(config: &OutboundConfig, url: &str) -> (TimeoutPhase, Duration) {
    let started = Instant::now();
    let error = client(config)
        .send(Purpose::JWKS, get(url))
        .await
        .unwrap_err();
    match error {
        OutboundError::Timeout { phase } => (phase, started.elapsed()),
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_read_timeout() {
    let server = TestServer::start(|_, _| Reply::Never).await;
    let (phase, took) = timed_out(&timeouts(200, 2000), &server.url("/")).await;
    assert_eq!(phase, TimeoutPhase::Read);
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(900),
        "{took:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_total_timeout() {
    let server = TestServer::start(|_, _| Reply::Never).await;
    // total_timeout is at least read_timeout, so one attempt ends at its
    // read timeout (200 ms); the retries then run into the total (500 ms).
    let config = OutboundConfig {
        retry: RetryConfig {
            attempts: 10,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            jitter: false,
        },
        ..timeouts(200, 500)
    };
    let (phase, took) = timed_out(&config, &server.url("/")).await;
    assert_eq!(phase, TimeoutPhase::Total);
    assert!(
        took >= Duration::from_millis(490) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    assert!(
        server.requests().len() >= 2,
        "retried before the total ran out"
    );
}

#[tokio::test]
async fn a_dribbling_body_hits_the_total_timeout() {
    // A byte every 50 ms keeps each read well inside read_timeout.
    let server = TestServer::start(|_, _| Reply::Dribble {
        head: b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec(),
        every: Duration::from_millis(50),
    })
    .await;
    let (phase, took) = timed_out(&timeouts(500, 500), &server.url("/")).await;
    assert_eq!(phase, TimeoutPhase::Total);
    assert!(
        took >= Duration::from_millis(490) && took < Duration::from_millis(1000),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_body_that_stops_hits_the_read_timeout() {
    let server = TestServer::start(|_, _| {
        Reply::head_then_silence("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
    })
    .await;
    let (phase, took) = timed_out(&timeouts(200, 2000), &server.url("/")).await;
    assert_eq!(phase, TimeoutPhase::Read);
    assert!(took < Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn read_timeouts_of_a_get_are_retried() {
    let server = TestServer::start(|index, _| match index {
        0 => Reply::Never,
        _ => Reply::ok("second time"),
    })
    .await;
    let config = OutboundConfig {
        retry: RetryConfig {
            attempts: 2,
            ..local_config().retry
        },
        ..timeouts(200, 2000)
    };
    let response = client(&config)
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.body().as_ref(), b"second time");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_full_accept_queue_hits_the_connect_timeout() {
    // A listener that is never accepted from, with its queue filled: the
    // kernel drops further SYNs, so a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut hangs = false;
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            _ => {
                hangs = true;
                break;
            }
        }
    }
    assert!(hangs, "the accept queue never filled");
    let config = OutboundConfig {
        connect_timeout: Duration::from_millis(200),
        ..timeouts(1000, 2000)
    };
    let (phase, took) = timed_out(&config, &format!("http://{addr}/")).await;
    assert_eq!(phase, TimeoutPhase::Connect);
    assert!(took < Duration::from_millis(900), "{took:?}");
}
