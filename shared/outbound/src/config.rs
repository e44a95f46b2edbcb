//! [`OutboundConfig`]: timeouts, caps, redirects, retries and the
//! networks the operator allows although they are private.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// Largest `max_body_bytes` accepted (256 MiB: room for federation
/// metadata aggregates, not for nonsense).
pub const MAX_BODY_BYTES_LIMIT: u64 = 256 * 1024 * 1024;
/// Largest `max_redirects` accepted.
pub const MAX_REDIRECTS_LIMIT: u32 = 10;
/// Largest `retry.attempts` accepted.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;

/// How outbound HTTP behaves. Durations are written like the rest of the
/// configuration (`"5s"`, `"250ms"`); every field has a default, and
/// unknown fields are refused.
///
/// ```toml
/// connect_timeout = "5s"
/// read_timeout = "10s"
/// total_timeout = "30s"
/// max_body_bytes = 1048576
/// max_redirects = 0
/// user_agent = "twig-identity/0.1.0"
/// allow_networks = ["10.20.0.0/16"]   # e.g. an IdP inside the cluster
///
/// [retry]
/// attempts = 3
/// first_backoff = "200ms"
/// max_backoff = "5s"
/// jitter = true
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Longest a connection may take to set up, per attempt: DNS
    /// resolution, TCP connect and TLS handshake together. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait, per attempt, for the response head and then between
    /// any two reads of the body. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Longest one call may take from start to the last byte of the
    /// body: every attempt, the waits between them and every redirect
    /// hop. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub total_timeout: Duration,
    /// Largest response body, in bytes. A larger declared
    /// `Content-Length` is refused before reading; a body without one is
    /// read up to this many bytes and then refused. Default 1 MiB.
    pub max_body_bytes: u64,
    /// Redirects followed, at most. Default 0: a redirect is an error
    /// (`RedirectRefused`). Each hop followed passes the same rules as
    /// the first request (scheme, address), never goes from https to
    /// http, and loses `Authorization` and `Cookie` when it leaves the
    /// origin.
    pub max_redirects: u32,
    /// Retries of idempotent requests.
    pub retry: RetryConfig,
    /// The `User-Agent` header sent.
    pub user_agent: String,
    /// Networks (CIDR, or a single address) that may be connected to
    /// although they are private, loopback, link-local or otherwise
    /// refused: e.g. an IdP inside the cluster. Empty by default. Public
    /// addresses need no entry.
    #[serde(deserialize_with = "networks")]
    pub allow_networks: Vec<IpNet>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            max_redirects: 0,
            retry: RetryConfig::default(),
            user_agent: concat!("twig-identity/", env!("CARGO_PKG_VERSION")).to_owned(),
            allow_networks: Vec::new(),
        }
    }
}

/// Retries: only of idempotent requests (GET, HEAD, or a request carrying
/// the [`Idempotent`](crate::Idempotent) extension), only after a
/// connection failure, a timeout of one attempt, or a 429, 502, 503 or
/// 504 answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included: 1 never retries. Default 3.
    pub attempts: u32,
    /// Wait before the second attempt; each later wait doubles. Default
    /// 200 ms.
    #[serde(with = "humantime_serde")]
    pub first_backoff: Duration,
    /// Longest wait between attempts. A `Retry-After` up to this long is
    /// honoured exactly; a longer one ends the retries (the answer is
    /// returned). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Each computed wait is drawn at random between half of it and all
    /// of it, so callers that failed together do not retry together.
    /// Default true.
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            jitter: true,
        }
    }
}

/// The configuration is not valid, or the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OutboundConfigError {
    /// Values break a rule; each line says which and why.
    #[error("invalid outbound HTTP configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    /// The HTTP client could not be built.
    #[error("cannot build the outbound HTTP client")]
    Build(#[source] reqwest::Error),
    /// The TLS configuration could not be built.
    #[error("cannot build the outbound TLS configuration")]
    Tls(#[source] rustls::Error),
}

impl OutboundConfig {
    /// Checks the rules no type can express; all problems at once.
    pub fn validate(&self) -> Result<(), OutboundConfigError> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("total_timeout", self.total_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{name} must be more than 0 (e.g. \"5s\")"));
            }
        }
        if self.total_timeout < self.read_timeout {
            problems.push(format!(
                "total_timeout ({:?}) must be at least read_timeout ({:?})",
                self.total_timeout, self.read_timeout,
            ));
        }
        if self.total_timeout < self.connect_timeout {
            problems.push(format!(
                "total_timeout ({:?}) must be at least connect_timeout ({:?})",
                self.total_timeout, self.connect_timeout,
            ));
        }
        if self.max_body_bytes == 0 {
            problems.push("max_body_bytes must be at least 1".into());
        }
        if self.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            problems.push(format!(
                "max_body_bytes must be at most {MAX_BODY_BYTES_LIMIT} (256 MiB)"
            ));
        }
        if self.max_redirects > MAX_REDIRECTS_LIMIT {
            problems.push(format!(
                "max_redirects must be at most {MAX_REDIRECTS_LIMIT}"
            ));
        }
        self.retry.problems(&mut problems);
        if self.user_agent.trim().is_empty() {
            problems.push("user_agent must not be empty".into());
        } else if http::HeaderValue::from_str(&self.user_agent).is_err() {
            problems.push("user_agent must be visible ASCII (a valid header value)".into());
        }
        for net in &self.allow_networks {
            if net.prefix_len() == 0 {
                problems.push(format!(
                    "allow_networks entry {net} allows every address, which turns the \
                     address rules off: list only the networks you need"
                ));
            } else if net.trunc() != *net {
                problems.push(format!(
                    "allow_networks entry {net} has bits set after its prefix: did you mean {}?",
                    net.trunc()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(OutboundConfigError::Invalid(problems))
        }
    }
}

impl RetryConfig {
    fn problems(&self, problems: &mut Vec<String>) {
        if self.attempts == 0 {
            problems.push("retry.attempts must be at least 1 (1 = no retries)".into());
        }
        if self.attempts > MAX_ATTEMPTS_LIMIT {
            problems.push(format!(
                "retry.attempts must be at most {MAX_ATTEMPTS_LIMIT}"
            ));
        }
        if self.attempts > 1 && self.first_backoff.is_zero() {
            problems.push("retry.first_backoff must be more than 0 when retrying".into());
        }
        if self.max_backoff < self.first_backoff {
            problems.push(format!(
                "retry.max_backoff ({:?}) must be at least retry.first_backoff ({:?})",
                self.max_backoff, self.first_backoff,
            ));
        }
    }
}

/// `allow_networks`: CIDR strings, or single addresses (a /32 or /128),
/// with a message naming the entry that is neither.
fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    let entries = Vec::<String>::deserialize(deserializer)?;
    entries
        .iter()
        .map(|entry| {
            let text = entry.trim();
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "allow_networks entry {entry:?} is not a network in CIDR form \
                         (e.g. \"10.20.0.0/16\", \"fd00::/8\") or an IP address"
                    ))
                })
        })
        .collect()
}
