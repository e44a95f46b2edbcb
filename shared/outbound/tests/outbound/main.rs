//! twig-outbound against real sockets on 127.0.0.x: each test starts its
//! own servers on port 0, so tests run in parallel and in any order.

#[path = "../common/mod.rs"]
mod common;

mod body;
mod config;
mod metrics;
mod redirects;
mod retries;
mod ssrf;
mod timeouts;

use std::time::Duration;

use twig_outbound::{OutboundClient, OutboundConfig, RetryConfig};

/// Short timeouts, no retries, 127.0.0.1 allowed (the test servers).
pub fn local_config() -> OutboundConfig {
    OutboundConfig {
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(2),
        retry: RetryConfig {
            attempts: 1,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            jitter: false,
        },
        allow_networks: vec!["127.0.0.1/32".parse().unwrap()],
        ..OutboundConfig::default()
    }
}

pub fn client(config: &OutboundConfig) -> OutboundClient {
    OutboundClient::new(config).expect("valid configuration")
}

pub fn get(url: &str) -> http::Request<Vec<u8>> {
    http::Request::get(url).body(Vec::new()).unwrap()
}

pub fn post(url: &str, body: &str) -> http::Request<Vec<u8>> {
    http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.as_bytes().to_vec())
        .unwrap()
}
