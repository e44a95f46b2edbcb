//! The body cap: a declared length over it is refused before reading;
//! a body without one is cut off as soon as it passes the cap.

use std::time::{Duration, Instant};

use twig_outbound::{OutboundConfig, OutboundError, Purpose};

use crate::common::{Reply, TestServer};
use crate::{client, get, local_config};

const CAP: u64 = 64 * 1024;

fn capped() -> OutboundConfig {
    OutboundConfig {
        max_body_bytes: CAP,
        read_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(5),
        ..local_config()
    }
}

#[tokio::test]
async fn a_huge_declared_length_is_refused_without_reading() {
    // The head promises 10 GB and then nothing comes: only refusing on
    // the header ends this before the 5 s timeouts.
    let server = TestServer::start(|_, _| {
        Reply::head_then_silence("HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")
    })
    .await;
    let started = Instant::now();
    let error = client(&capped())
        .send(Purpose::SAML_METADATA, get(&server.url("/")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::BodyTooLarge { limit: CAP }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn an_endless_chunked_body_stops_at_the_cap() {
    let server = TestServer::start(|_, _| Reply::EndlessChunked).await;
    let started = Instant::now();
    let error = client(&capped())
        .send(Purpose::SAML_METADATA, get(&server.url("/")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::BodyTooLarge { limit: CAP }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn the_cap_is_exact_without_a_length() {
    let exactly = vec![b'a'; CAP as usize];
    let over = vec![b'a'; CAP as usize + 1];
    let server = TestServer::start(move |_, seen| match seen.path.as_str() {
        "/exactly" => Reply::chunked(&exactly, 1000),
        _ => Reply::chunked(&over, 1000),
    })
    .await;
    let client = client(&capped());
    let response = client
        .send(Purpose::JWKS, get(&server.url("/exactly")))
        .await
        .unwrap();
    assert_eq!(response.body().len() as u64, CAP);
    let error = client
        .send(Purpose::JWKS, get(&server.url("/over")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::BodyTooLarge { limit: CAP }),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_cap_is_exact_with_a_length() {
    let exactly = vec![b'b'; CAP as usize];
    let over = vec![b'b'; CAP as usize + 1];
    let server = TestServer::start(move |_, seen| match seen.path.as_str() {
        "/exactly" => Reply::status(200, &[], &exactly),
        _ => Reply::status(200, &[], &over),
    })
    .await;
    let client = client(&capped());
    let response = client
        .send(Purpose::JWKS, get(&server.url("/exactly")))
        .await
        .unwrap();
    assert_eq!(response.body().len() as u64, CAP);
    let error = client
        .send(Purpose::JWKS, get(&server.url("/over")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::BodyTooLarge { limit: CAP }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_body_longer_than_its_declared_length_is_not_taken() {
    // Content-Length says 5: the connection is closed after 5 bytes are
    // read; the rest never reaches the caller.
    let server = TestServer::start(|_, _| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello and more"
                .to_vec(),
        )
    })
    .await;
    let response = client(&capped())
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.body().as_ref(), b"hello");
}
