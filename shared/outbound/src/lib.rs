//! Outbound HTTP, in one place: every request that leaves the process
//! (IdP metadata, OIDC discovery, JWKS, token exchange and refresh,
//! provider token revocation) goes through an [`OutboundClient`], so the
//! rules below hold for all of them.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use twig_outbound::{OutboundClient, OutboundConfig, Purpose};
//!
//! let client = OutboundClient::new(&OutboundConfig::default())?;
//! let jwks: serde_json::Value = client
//!     .get_json(Purpose::JWKS, "https://idp.example.com/.well-known/jwks.json")
//!     .await?;
//! // openidconnect 4 / oauth2 5 take any `Fn(http::Request<Vec<u8>>) -> Future`:
//! let http = client.http_client(Purpose::TOKEN_EXCHANGE);
//! # let _ = (jwks, http);
//! # Ok(()) }
//! ```
//!
//! # The rules
//!
//! **Where a request may go (SSRF).** Only `http` and `https` URLs, with
//! no `user:password@` in them. The address connected to must be public
//! unicast: loopback, unspecified, link-local (169.254.0.0/16 with the
//! cloud metadata service 169.254.169.254, fe80::/10), private
//! (10/8, 172.16/12, 192.168/16, fc00::/7), carrier-grade NAT
//! (100.64/10), 0/8, multicast, broadcast and reserved, documentation and
//! benchmarking ranges, IPv4-mapped and IPv4-compatible IPv6
//! (`::ffff:127.0.0.1`), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
//! forms of a refused IPv4 address are all refused — unless inside one of
//! the operator's `allow_networks` ([`address::classify`] has the table).
//! The rule is applied **after DNS, in the resolver reqwest connects
//! through**, so the address checked is the address connected to (no
//! window for DNS rebinding; a name with some refused addresses is
//! connected to its allowed ones only). Hosts written as addresses never
//! reach a resolver, so they are checked before sending, after the URL is
//! parsed the way reqwest parses it (`http://2130706433/` and
//! `http://0x7f.1/` are 127.0.0.1). Proxies from the environment
//! (`HTTP_PROXY`, …) are ignored.
//!
//! **Redirects.** None are followed by default: a redirect is
//! [`OutboundError::RedirectRefused`]. With `max_redirects > 0` they are
//! followed here, hop by hop, each hop under the same rules (scheme,
//! credentials, address), never from https to http, and without
//! `Authorization` or `Cookie` once the hop leaves the original origin.
//! 303 (and 301/302 after a POST) go on as a GET without the body.
//!
//! **Size.** A response declaring a `Content-Length` over
//! `max_body_bytes` is refused before its body is read; any other body
//! is read as it arrives and refused as soon as it passes the cap.
//! Nothing is decompressed (no `Accept-Encoding` is sent).
//!
//! **Time.** `connect_timeout` bounds DNS, TCP and TLS; `read_timeout`
//! the wait for the response head and between reads of the body;
//! `total_timeout` the whole call with its retries and redirects.
//!
//! **Retries.** Only of idempotent requests (GET, HEAD, or carrying the
//! [`Idempotent`] extension), only after a failed connection, a timed-out
//! attempt, or a 429, 502, 503 or 504 answer; exponential backoff from
//! `retry.first_backoff` to `retry.max_backoff` with jitter. A
//! `Retry-After` up to `retry.max_backoff` is waited exactly; a longer
//! one returns the answer at once. A refused address or URL, an
//! over-cap body and a refused redirect are never retried, and no wait
//! runs past `total_timeout`.
//!
//! **Statuses are answers.** [`OutboundClient::send`] returns every
//! response whatever its status; the caller decides (only
//! [`OutboundClient::get_json`] requires a 2xx).
//!
//! **TLS.** rustls with the ring provider and the Mozilla roots of
//! `webpki-roots`; HTTP/1.1.
//!
//! # Settings
//!
//! See [`OutboundConfig`] (and [`RetryConfig`]) for each field and its
//! default; [`OutboundConfig::validate`] says what is wrong with a
//! configuration, every problem at once.
//!
//! # Metrics and traces
//!
//! - `twig_outbound_requests_total{purpose, outcome}`: one per call;
//!   `outcome` is `success`, `redirect`, `client_error`, `server_error`,
//!   `other_status` (the status of the final response), or `forbidden_address`,
//!   `forbidden_url`, `redirect_refused`, `too_many_redirects`,
//!   `timeout`, `body_too_large`, `transport`, `invalid_request`.
//! - `twig_outbound_duration_seconds{purpose}`: the whole call.
//! - `twig_outbound_retries_total{purpose}`: retries made.
//!
//! `purpose` is a [`Purpose`], a fixed name from code; no URL or host is
//! ever a label. Each call runs in an `outbound` span with its purpose,
//! method, host, final status, attempts and redirects.

pub mod address;
mod client;
mod config;
mod error;
mod purpose;
mod resolver;
mod rules;

pub use address::AddressClass;
pub use client::{Idempotent, OutboundClient, VecResponseFuture};
pub use config::{
    MAX_ATTEMPTS_LIMIT, MAX_BODY_BYTES_LIMIT, MAX_REDIRECTS_LIMIT, OutboundConfig,
    OutboundConfigError, RetryConfig,
};
pub use error::{OutboundError, TimeoutPhase};
pub use purpose::Purpose;
