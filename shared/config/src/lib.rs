//! Configuration of the whole binary: defaults, then an optional TOML file,
//! then `TWIG__SECTION__KEY` environment variables (and the standard
//! `DATABASE_URL`). Everything is validated before any port is bound.
//!
//! Secrets live in [`Secret`], which never prints its value.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod secret;

pub use secret::Secret;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening port and shutdown.
    pub server: ServerConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Service-to-service credentials.
    pub auth: AuthConfig,
    /// The sessions service.
    pub sessions: SessionsConfig,
    /// The api-keys service.
    pub api_keys: ApiKeysConfig,
    /// Redis, for what replicas must agree on.
    pub redis: RedisConfig,
    /// The quota service.
    pub quota: QuotaConfig,
    /// The secrets vault.
    pub vault: VaultConfig,
    /// Where the services that do not run in this process are.
    pub remote: RemoteConfig,
    /// HTTP requests that leave the process (identity providers).
    pub outbound: twig_outbound::OutboundConfig,
}

/// Services in other processes (`serve --services edge` and other splits):
/// their gRPC addresses. A service that runs here is always called
/// in-process; one that runs neither here nor at an address is
/// unavailable (its credentials and RPCs are answered UNAVAILABLE).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// The sessions service, e.g. `http://twig-sessions:50051`.
    pub sessions: Option<String>,
    /// The api-keys service.
    pub api_keys: Option<String>,
    /// The quota service.
    pub quota: Option<String>,
    /// The secrets vault.
    pub secrets_vault: Option<String>,
    /// The credential this process presents to them: their
    /// `auth.edge_token`. Required when any address is set.
    pub token: Option<Secret>,
    /// Longest wait for one call to another service.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest wait for a connection to another service.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long this process keeps a remote sessions or api-keys answer
    /// about a token (positive answers only, never past expiry; changes
    /// announced through Redis drop them at once). 0 turns it off.
    #[serde(with = "humantime_serde")]
    pub verify_cache_ttl: Duration,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            sessions: None,
            api_keys: None,
            quota: None,
            secrets_vault: None,
            token: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            verify_cache_ttl: Duration::from_secs(1),
        }
    }
}

impl RemoteConfig {
    /// Each configured address with its setting's name.
    pub fn addresses(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("remote.sessions", &self.sessions),
            ("remote.api_keys", &self.api_keys),
            ("remote.quota", &self.quota),
            ("remote.secrets_vault", &self.secrets_vault),
        ]
        .into_iter()
        .filter_map(|(name, url)| url.as_deref().map(|url| (name, url)))
    }
}

/// The secrets vault. Master keys are checked when the service is built,
/// before any port is bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// Master keys by version (`1`, `2`, …), each base64 of 32 random
    /// bytes; e.g. `TWIG__VAULT__MASTER_KEYS__1=…`. The newest encrypts.
    pub master_keys: std::collections::BTreeMap<String, Secret>,
    /// A folder with one file per version, named by the version number
    /// (a mounted Kubernetes Secret); merged with `master_keys`.
    pub master_keys_dir: Option<std::path::PathBuf>,
    /// Stored data keys moved to a new master key per transaction.
    pub rewrap_batch: u32,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            master_keys: std::collections::BTreeMap::new(),
            master_keys_dir: None,
            rewrap_batch: 500,
        }
    }
}

/// The quota service. The limit's rules (at least 1, period 1 s to 1 day,
/// 1 to 600 buckets) are checked when the service is built, before any
/// port is bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests (cost units) per period for every subject.
    pub default_limit: u64,
    /// The period of the default limit.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Slices the period is counted in; capacity comes back up to one
    /// slice late.
    pub buckets: u32,
    /// The default limit only computes, counts and logs its refusals.
    pub shadow: bool,
    /// Where counts live: `memory` (one replica) or `redis` (replicas
    /// share one count; needs `redis.url`).
    pub store: QuotaStore,
    /// When Redis cannot be reached: `open` admits uncounted, `closed`
    /// refuses with UNAVAILABLE.
    pub on_store_error: OnStoreError,
    /// How long one Redis call may take before the policy applies.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            default_limit: 100,
            period: Duration::from_secs(60),
            buckets: 60,
            shadow: false,
            store: QuotaStore::Memory,
            on_store_error: OnStoreError::Open,
            redis_timeout: Duration::from_millis(100),
        }
    }
}

/// Where quota counts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaStore {
    /// In this process: one replica.
    Memory,
    /// In Redis: every replica shares one count.
    Redis,
}

/// What a quota check does when its store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Admit, uncounted (logged and counted in metrics).
    Open,
    /// Refuse with UNAVAILABLE.
    Closed,
}

/// Redis: fan-out of revocations between replicas. Unset: one replica,
/// in-process only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://…` (also `REDIS_URL`); may hold a password.
    pub url: Option<Secret>,
    /// Prefix of every key and channel this deployment uses.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "twig:".into(),
        }
    }
}

/// The api-keys service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// How long a valid key is answered from memory. Revocation reaches
    /// other replicas within this time.
    #[serde(with = "humantime_serde")]
    pub verify_cache_ttl: Duration,
    /// How long an unknown key is answered from memory.
    #[serde(with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// Refused verifications are written to the audit log as one row per
    /// source (client address, or key and address) and period of this
    /// length, with a count, rather than one row per request.
    #[serde(with = "humantime_serde")]
    pub refusal_audit_period: Duration,
    /// Sources tracked per period; refusals from any more are counted in
    /// one overflow row (per key for refusals of a real key).
    pub refusal_audit_max_sources: usize,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            verify_cache_ttl: Duration::from_millis(500),
            negative_cache_ttl: Duration::from_millis(500),
            refusal_audit_period: Duration::from_secs(60),
            refusal_audit_max_sources: 1000,
        }
    }
}

/// Listening port and shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the one gRPC port.
    pub listen: SocketAddr,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Address of the admin port (Prometheus `/metrics`).
    pub admin_listen: SocketAddr,
    /// Proxies whose `X-Forwarded-For` is believed (networks); from any
    /// other peer the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Browser origins allowed to call across origins (gRPC-web), exactly
    /// as the browser sends them (`https://app.example.com`, with a port
    /// when not the default). Credentials are allowed for these only; any
    /// other origin gets no CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest request message, in bytes; larger ones are refused with
    /// OUT_OF_RANGE before they are decoded.
    pub max_message_bytes: usize,
    /// Largest header block a client may send, in bytes.
    pub max_header_bytes: u32,
    /// Longest a request may run (a client's shorter deadline wins).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub max_concurrent_streams: u32,
    /// How long a new connection may stay silent before its first bytes;
    /// then it is closed.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// How long an HTTP/1 client may take to send a request's headers
    /// (also the wait for the next request on a kept-alive connection).
    #[serde(with = "humantime_serde")]
    pub http1_header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/2: GOAWAY first).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often the server pings an HTTP/2 client it has not heard from.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is
    /// closed.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// A connection is asked to close (GOAWAY) after about this long (± 10 %
    /// jitter), so clients spread over replicas; `0s` never.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// How long requests on a connection closing for its age (or being
    /// idle) may still run before it is closed outright.
    #[serde(with = "humantime_serde")]
    pub max_connection_age_grace: Duration,
    /// Open connections at most; when reached, the longest-idle ones are
    /// closed first, and a new one is refused only if none is idle. Unset:
    /// three quarters of the process's file-descriptor limit.
    pub max_connections: Option<u32>,
    /// Open connections from one client address at most (its longest-idle
    /// one is closed first).
    pub max_connections_per_address: u32,
    /// Requests being served at once across all connections; beyond it a
    /// request is refused at once (gRPC RESOURCE_EXHAUSTED, HTTP 503).
    pub max_requests_in_flight: u32,
    /// Streams an HTTP/2 client may make the server reset for protocol
    /// errors before the connection is closed (the CVE-2025-8671 defence).
    pub http2_max_local_error_resets: u32,
    /// Streams reset by the client that the server has not yet taken up,
    /// at most (the rapid-reset defence).
    pub http2_max_pending_accept_resets: u32,
    /// Bytes the server buffers for sending per HTTP/2 stream.
    pub http2_max_send_buf_bytes: u32,
    /// HTTP/2 flow-control window a client may fill per stream.
    pub http2_initial_stream_window_bytes: u32,
    /// HTTP/2 flow-control window a client may fill per connection.
    pub http2_initial_connection_window_bytes: u32,
    /// Largest HTTP/2 frame payload the server accepts.
    pub http2_max_frame_bytes: u32,
    /// Headers one HTTP/1 request may carry.
    pub http1_max_headers: u32,
    /// Largest HTTP/1 read buffer (bounds a request's header block).
    pub http1_max_buf_bytes: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            drain_timeout: Duration::from_secs(10),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            max_message_bytes: 4 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
            first_byte_timeout: Duration::from_secs(10),
            http1_header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            http2_keepalive_interval: Duration::from_secs(60),
            http2_keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Duration::from_secs(3600),
            max_connection_age_grace: Duration::from_secs(300),
            max_connections: None,
            max_connections_per_address: 1024,
            max_requests_in_flight: 4096,
            http2_max_local_error_resets: 1024,
            http2_max_pending_accept_resets: 20,
            http2_max_send_buf_bytes: 256 * 1024,
            http2_initial_stream_window_bytes: 1024 * 1024,
            http2_initial_connection_window_bytes: 2 * 1024 * 1024,
            http2_max_frame_bytes: 16 * 1024,
            http1_max_headers: 100,
            http1_max_buf_bytes: 64 * 1024,
        }
    }
}

impl ServerConfig {
    /// The rules of the connection limits and timeouts.
    fn connection_problems(&self, problems: &mut Vec<String>) {
        let at_least = |name: &str, value: Duration, min: Duration| {
            (value < min).then(|| format!("server.{name} must be at least {min:?}"))
        };
        problems.extend(
            [
                ("first_byte_timeout", self.first_byte_timeout),
                ("http1_header_read_timeout", self.http1_header_read_timeout),
                ("idle_timeout", self.idle_timeout),
                ("http2_keepalive_interval", self.http2_keepalive_interval),
                ("http2_keepalive_timeout", self.http2_keepalive_timeout),
                ("max_connection_age_grace", self.max_connection_age_grace),
            ]
            .into_iter()
            .filter_map(|(name, value)| at_least(name, value, Duration::from_millis(100))),
        );
        if !self.max_connection_age.is_zero() && self.max_connection_age < Duration::from_secs(1) {
            problems.push("server.max_connection_age must be 0s (never) or at least 1s".into());
        }
        let positive = [
            ("max_connections", self.max_connections.unwrap_or(1)),
            (
                "max_connections_per_address",
                self.max_connections_per_address,
            ),
            ("max_requests_in_flight", self.max_requests_in_flight),
            (
                "http2_max_local_error_resets",
                self.http2_max_local_error_resets,
            ),
            (
                "http2_max_pending_accept_resets",
                self.http2_max_pending_accept_resets,
            ),
            ("http1_max_headers", self.http1_max_headers),
        ];
        for (name, value) in positive {
            if value == 0 {
                problems.push(format!("server.{name} must be at least 1"));
            }
        }
        if self.http1_max_headers > 1000 {
            problems.push("server.http1_max_headers must be at most 1000".into());
        }
        if self.http2_max_send_buf_bytes < 16 * 1024 {
            problems.push("server.http2_max_send_buf_bytes must be at least 16384".into());
        }
        // RFC 9113 §6.5.2: windows up to 2^31-1, frames 2^14 to 2^24-1.
        for (name, value) in [
            (
                "http2_initial_stream_window_bytes",
                self.http2_initial_stream_window_bytes,
            ),
            (
                "http2_initial_connection_window_bytes",
                self.http2_initial_connection_window_bytes,
            ),
        ] {
            if !(65_535..=0x7fff_ffff).contains(&value) {
                problems.push(format!(
                    "server.{name} must be between 65535 and 2147483647"
                ));
            }
        }
        if !(16_384..=16_777_215).contains(&self.http2_max_frame_bytes) {
            problems.push("server.http2_max_frame_bytes must be between 16384 and 16777215".into());
        }
        // hyper refuses a smaller HTTP/1 buffer; the header block must fit.
        if self.http1_max_buf_bytes < 8192 || self.http1_max_buf_bytes < self.max_header_bytes {
            problems.push(
                "server.http1_max_buf_bytes must be at least 8192 and at least server.max_header_bytes"
                    .into(),
            );
        }
    }
}

/// Why `origin` is not a browser origin (`scheme://host[:port]`), if it
/// is not.
fn origin_problem(origin: &str) -> Option<&'static str> {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return Some("must start with https:// or http://");
    };
    if rest.is_empty() {
        return Some("has no host");
    }
    if rest.contains('*') {
        return Some("wildcards are not allowed: list each origin");
    }
    if rest.contains(['/', '?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must be scheme://host[:port] with no path");
    }
    None
}

/// The database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`. Also read from `DATABASE_URL`.
    /// May hold a password, so it is a secret.
    pub url: Secret,
    /// Largest connection pool.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://./twig-data/twig.db?mode=rwc"),
            max_connections: 16,
        }
    }
}

/// Logs and traces. OTLP export turns on when the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` variable is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// One JSON object per log line instead of human-readable lines.
    pub json_logs: bool,
    /// `tracing` filter, e.g. `info,twig_sessions=debug`. `RUST_LOG` wins.
    pub log_filter: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            json_logs: false,
            log_filter: "info".into(),
        }
    }
}

/// Service-to-service credentials.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The credential internal callers present in `x-twig-internal-token`
    /// to reach internal RPCs such as `VerifySession`. Unset: internal RPCs
    /// are refused.
    pub internal_token: Option<Secret>,
    /// Internal callers with scopes of their own beyond the plain internal
    /// credential (e.g. the agent runtime, which may reveal stored provider
    /// keys): each presents its own token in `x-twig-internal-token`.
    pub internal_clients: Vec<InternalClient>,
    /// The edge's credential (`x-twig-internal-token`) where services run
    /// apart from the edge (`serve --services …`): a call presenting it
    /// may carry the caller the edge decided (`x-twig-principal-bin`), which
    /// this process then believes instead of checking again. Give it only
    /// to the edge (its `remote.token`). Unset: forwarded callers are
    /// refused.
    pub edge_token: Option<Secret>,
}

/// Scopes only internal clients can hold.
pub const INTERNAL_SCOPES: [&str; 1] = ["vault.reveal"];

/// One internal caller with scopes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalClient {
    /// Who it is, for audit events (e.g. `agent-runtime`).
    pub name: String,
    /// Its credential, at least 32 characters.
    pub token: Secret,
    /// What it may do beyond internal RPCs: see [`INTERNAL_SCOPES`].
    pub scopes: Vec<String>,
}

/// The sessions service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Lifetime of an access (session) token.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// A session not refreshed for this long ends.
    #[serde(with = "humantime_serde")]
    pub refresh_idle_ttl: Duration,
    /// A session ends this long after login, however often it is refreshed.
    #[serde(with = "humantime_serde")]
    pub refresh_absolute_ttl: Duration,
    /// Two refreshes with the same token this close together are a race of
    /// one client (the loser is refused); further apart, the second one is
    /// reuse of a stolen token and ends the session.
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// How long a verified access token is answered from memory.
    #[serde(with = "humantime_serde")]
    pub verify_cache_ttl: Duration,
    /// Shortest password, in Unicode scalar values.
    pub password_min_chars: usize,
    /// Longest password, in UTF-8 bytes; longer ones are refused unhashed.
    pub password_max_bytes: usize,
    /// Failed logins per account before the growing delay starts.
    pub login_delay_after_failures: u32,
    /// First delay; it doubles with each further failure.
    #[serde(with = "humantime_serde")]
    pub login_delay_base: Duration,
    /// Largest delay.
    #[serde(with = "humantime_serde")]
    pub login_delay_max: Duration,
    /// Failures are forgotten this long after the last one.
    #[serde(with = "humantime_serde")]
    pub login_failure_window: Duration,
    /// Failed logins one IP address may make per minute.
    pub failed_logins_per_ip_per_minute: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            refresh_absolute_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(2),
            verify_cache_ttl: Duration::from_secs(2),
            password_min_chars: 12,
            password_max_bytes: 1024,
            login_delay_after_failures: 3,
            login_delay_base: Duration::from_millis(500),
            login_delay_max: Duration::from_secs(10),
            login_failure_window: Duration::from_secs(15 * 60),
            failed_logins_per_ip_per_minute: 30,
        }
    }
}

/// Configuration could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be parsed.
    #[error("cannot read configuration: {0}")]
    Read(#[from] Box<figment::Error>),
    /// Values parsed but break a rule.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
            .merge(Env::prefixed("TWIG__").split("__"));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules no type can express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        // The vault takes values up to 64 KiB; leave room for the envelope.
        if self.server.max_message_bytes < 128 * 1024 {
            problems.push("server.max_message_bytes must be at least 131072 (128 KiB)".into());
        }
        if self.server.max_header_bytes < 4 * 1024 {
            problems.push("server.max_header_bytes must be at least 4096".into());
        }
        if self.server.request_timeout.is_zero() {
            problems.push("server.request_timeout must be more than 0".into());
        }
        if self.server.max_concurrent_streams == 0 {
            problems.push("server.max_concurrent_streams must be at least 1".into());
        }
        self.server.connection_problems(&mut problems);
        if let Err(twig_outbound::OutboundConfigError::Invalid(outbound)) = self.outbound.validate()
        {
            problems.extend(outbound.into_iter().map(|p| format!("outbound.{p}")));
        }
        for origin in &self.server.cors_origins {
            if let Some(problem) = origin_problem(origin) {
                problems.push(format!("server.cors_origins: {origin:?} {problem}"));
            }
        }
        if self.server.admin_listen == self.server.listen && self.server.listen.port() != 0 {
            problems.push("server.admin_listen must differ from server.listen".to_string());
        }
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(
                "database.url must start with sqlite:, postgres:// or postgresql://".to_string(),
            );
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".into());
        }
        if let Some(token) = &self.auth.internal_token
            && token.expose().len() < 32
        {
            problems.push("auth.internal_token must be at least 32 characters".into());
        }
        let s = &self.sessions;
        if s.access_ttl.is_zero() {
            problems.push("sessions.access_ttl must be more than 0".into());
        }
        if s.refresh_idle_ttl < s.access_ttl {
            problems.push("sessions.refresh_idle_ttl must be at least sessions.access_ttl".into());
        }
        if s.refresh_absolute_ttl < s.refresh_idle_ttl {
            problems.push(
                "sessions.refresh_absolute_ttl must be at least sessions.refresh_idle_ttl".into(),
            );
        }
        if s.password_min_chars < 8 {
            problems.push("sessions.password_min_chars must be at least 8".into());
        }
        if s.password_max_bytes < s.password_min_chars * 4 || s.password_max_bytes > 64 * 1024 {
            problems.push(
                "sessions.password_max_bytes must be between 4 × password_min_chars and 65536"
                    .into(),
            );
        }
        if s.login_delay_max < s.login_delay_base {
            problems.push("sessions.login_delay_max must be at least login_delay_base".into());
        }
        if let Some(url) = &self.redis.url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            problems.push("redis.url must start with redis:// or rediss://".into());
        }
        let ttl_limit = if self.redis.url.is_some() { 60 } else { 1 };
        let session_ttl_limit = if self.redis.url.is_some() { 60 } else { 5 };
        if self.sessions.verify_cache_ttl > Duration::from_secs(session_ttl_limit) {
            problems.push(format!(
                "sessions.verify_cache_ttl must be at most {session_ttl_limit}s \
                 (without Redis it bounds how long an ended session passes on another replica)"
            ));
        }
        if self.api_keys.verify_cache_ttl > Duration::from_secs(ttl_limit) {
            problems.push(format!(
                "api_keys.verify_cache_ttl must be at most {ttl_limit}s \
                 (without Redis it bounds how long a revoked key passes on another replica)"
            ));
        }
        if self.api_keys.refusal_audit_period < Duration::from_secs(1)
            || self.api_keys.refusal_audit_period > Duration::from_secs(3600)
        {
            problems.push("api_keys.refusal_audit_period must be between 1s and 1h".into());
        }
        if !(1..=100_000).contains(&self.api_keys.refusal_audit_max_sources) {
            problems.push("api_keys.refusal_audit_max_sources must be between 1 and 100000".into());
        }
        if self.quota.store == QuotaStore::Redis && self.redis.url.is_none() {
            problems.push("quota.store = redis needs redis.url (or REDIS_URL)".into());
        }
        if self.quota.redis_timeout < Duration::from_millis(1)
            || self.quota.redis_timeout > Duration::from_secs(10)
        {
            problems.push("quota.redis_timeout must be between 1ms and 10s".into());
        }
        if !(1..=10_000).contains(&self.vault.rewrap_batch) {
            problems.push("vault.rewrap_batch must be between 1 and 10000".into());
        }
        for (name, url) in self.remote.addresses() {
            if let Some(problem) = origin_problem(url) {
                problems.push(format!("{name}: {url:?} {problem}"));
            }
        }
        match &self.remote.token {
            None if self.remote.addresses().next().is_some() => problems.push(
                "remote.token is required when a remote address is set: \
                 the services there know it as their auth.edge_token"
                    .into(),
            ),
            Some(token) if token.expose().len() < 32 => {
                problems.push("remote.token must be at least 32 characters".into());
            }
            _ => {}
        }
        if self.remote.verify_cache_ttl > Duration::from_secs(60) {
            problems.push("remote.verify_cache_ttl must be at most 60s".into());
        }
        if self.remote.timeout.is_zero() || self.remote.connect_timeout.is_zero() {
            problems.push("remote.timeout and remote.connect_timeout must be more than 0".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        if let Some(t) = &self.auth.internal_token {
            tokens.insert(t.expose().to_string());
        }
        if let Some(t) = &self.auth.edge_token {
            if t.expose().len() < 32 {
                problems.push("auth.edge_token must be at least 32 characters".into());
            } else if !tokens.insert(t.expose().to_string()) {
                problems.push("auth.edge_token must differ from auth.internal_token".into());
            }
        }
        for client in &self.auth.internal_clients {
            let name = &client.name;
            if name.is_empty() || !names.insert(name.clone()) {
                problems.push(format!(
                    "auth.internal_clients: names must be present and distinct ({name:?})"
                ));
            }
            if client.token.expose().len() < 32 {
                problems.push(format!(
                    "auth.internal_clients[{name}].token must be at least 32 characters"
                ));
            } else if !tokens.insert(client.token.expose().to_string()) {
                problems.push(format!(
                    "auth.internal_clients[{name}].token must differ from every other internal token"
                ));
            }
            for scope in &client.scopes {
                if !INTERNAL_SCOPES.contains(&scope.as_str()) {
                    problems.push(format!(
                        "auth.internal_clients[{name}]: unknown scope {scope:?}; known: {}",
                        INTERNAL_SCOPES.join(", ")
                    ));
                }
            }
        }
        if s.failed_logins_per_ip_per_minute == 0 {
            problems.push("sessions.failed_logins_per_ip_per_minute must be at least 1".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn remote_services_need_addresses_and_the_edge_credential() {
        let mut config = Config::default();
        config.remote.api_keys = Some("http://twig-api-keys:50051".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("remote.token is required"), "{err}");
        config.remote.token = Some(Secret::new("e".repeat(32)));
        config.validate().unwrap();
        config.remote.sessions = Some("twig-sessions:50051".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("remote.sessions"), "{err}");
        config.remote.sessions = None;
        config.auth.internal_token = Some(Secret::new("i".repeat(32)));
        config.auth.edge_token = Some(Secret::new("i".repeat(32)));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("auth.edge_token must differ"), "{err}");
        config.auth.edge_token = Some(Secret::new("short"));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("auth.edge_token must be at least 32"), "{err}");
    }

    #[test]
    fn cors_origins_must_be_exact_origins() {
        let mut config = Config::default();
        config.server.cors_origins = vec![
            "https://app.example.com".into(),
            "http://localhost:5173".into(),
        ];
        config.validate().unwrap();
        for bad in [
            "*",
            "https://*.example.com",
            "app.example.com",
            "https://app.example.com/",
            "https://",
            "ftp://app.example.com",
        ] {
            config.server.cors_origins = vec![bad.into()];
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("server.cors_origins"), "{bad}: {err}");
        }
    }

    #[test]
    fn cors_origins_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "TWIG__SERVER__CORS_ORIGINS",
                r#"["https://app.example.com","http://localhost:5173"]"#,
            );
            let config = Config::load(None).unwrap();
            assert_eq!(
                config.server.cors_origins,
                ["https://app.example.com", "http://localhost:5173"]
            );
            jail.set_env("TWIG__SERVER__CORS_ORIGINS", r#"["*"]"#);
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "twig.toml",
                "[server]\nlisten = \"127.0.0.1:7000\"\n[sessions]\naccess_ttl = \"5m\"\n",
            )?;
            jail.set_env("TWIG__SESSIONS__ACCESS_TTL", "7m");
            let config = Config::load(Some(Path::new("twig.toml"))).unwrap();
            assert_eq!(config.server.listen.port(), 7000);
            assert_eq!(config.sessions.access_ttl, Duration::from_secs(420));
            Ok(())
        });
    }

    #[test]
    fn database_url_variable_is_honoured() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://u:hunter2@db/twig");
            let config = Config::load(None).unwrap();
            assert_eq!(config.database.url.expose(), "postgres://u:hunter2@db/twig");
            assert!(!format!("{config:?}").contains("hunter2"));
            Ok(())
        });
    }

    #[test]
    fn redis_url_allows_longer_key_caches() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__API_KEYS__VERIFY_CACHE_TTL", "30s");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("verify_cache_ttl must be at most 1s"), "{err}");
            jail.set_env("REDIS_URL", "redis://:pw@127.0.0.1:6379");
            let config = Config::load(None).unwrap();
            assert_eq!(
                config.redis.url.unwrap().expose(),
                "redis://:pw@127.0.0.1:6379"
            );
            jail.set_env("REDIS_URL", "http://nope");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_all_reported() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__DATABASE__URL", "mysql://x");
            jail.set_env("TWIG__SESSIONS__PASSWORD_MIN_CHARS", "3");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("database.url"), "{err}");
            assert!(err.contains("password_min_chars"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_outbound_section_is_read_and_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "twig.toml",
                "[outbound]\nallow_networks = [\"10.20.0.0/16\"]\nread_timeout = \"2s\"\n",
            )?;
            let config = Config::load(Some(std::path::Path::new("twig.toml"))).unwrap();
            assert_eq!(config.outbound.read_timeout, Duration::from_secs(2));
            assert_eq!(config.outbound.allow_networks.len(), 1);
            jail.set_env("TWIG__OUTBOUND__TOTAL_TIMEOUT", "1s");
            let err = Config::load(Some(std::path::Path::new("twig.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("outbound.total_timeout"), "{err}");
            jail.create_file(
                "bad.toml",
                "[outbound]\nallow_networks = [\"10.0.0.1/8\"]\n",
            )?;
            let err = Config::load(Some(std::path::Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("10.0.0.0/8"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn quota_store_settings_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__QUOTA__STORE", "redis");
            jail.set_env("TWIG__QUOTA__REDIS_TIMEOUT", "0s");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("quota.store = redis needs redis.url"), "{err}");
            assert!(err.contains("quota.redis_timeout"), "{err}");
            jail.set_env("REDIS_URL", "redis://127.0.0.1:6379");
            jail.set_env("TWIG__QUOTA__REDIS_TIMEOUT", "50ms");
            jail.set_env("TWIG__QUOTA__ON_STORE_ERROR", "closed");
            let config = Config::load(None).unwrap();
            assert_eq!(config.quota.store, QuotaStore::Redis);
            assert_eq!(config.quota.on_store_error, OnStoreError::Closed);
            jail.set_env("TWIG__QUOTA__ON_STORE_ERROR", "maybe");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn connection_limits_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__SERVER__IDLE_TIMEOUT", "0s");
            jail.set_env("TWIG__SERVER__HTTP2_MAX_LOCAL_ERROR_RESETS", "0");
            jail.set_env("TWIG__SERVER__HTTP2_MAX_FRAME_BYTES", "1000");
            jail.set_env("TWIG__SERVER__HTTP1_MAX_BUF_BYTES", "4096");
            jail.set_env("TWIG__SERVER__MAX_CONNECTIONS", "0");
            let err = Config::load(None).unwrap_err().to_string();
            for name in [
                "server.idle_timeout",
                "server.http2_max_local_error_resets",
                "server.http2_max_frame_bytes",
                "server.http1_max_buf_bytes",
                "server.max_connections must",
            ] {
                assert!(err.contains(name), "{name}: {err}");
            }
            jail.set_env("TWIG__SERVER__IDLE_TIMEOUT", "2s");
            jail.set_env("TWIG__SERVER__HTTP2_MAX_LOCAL_ERROR_RESETS", "10");
            jail.set_env("TWIG__SERVER__HTTP2_MAX_FRAME_BYTES", "32768");
            jail.set_env("TWIG__SERVER__HTTP1_MAX_BUF_BYTES", "65536");
            jail.set_env("TWIG__SERVER__MAX_CONNECTIONS", "500");
            jail.set_env("TWIG__SERVER__MAX_CONNECTION_AGE", "0s");
            let config = Config::load(None).unwrap();
            assert_eq!(config.server.idle_timeout, Duration::from_secs(2));
            assert_eq!(config.server.max_connections, Some(500));
            assert!(config.server.max_connection_age.is_zero());
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("twig.toml", "[server]\nlisten_on = \"x\"\n")?;
            assert!(Config::load(Some(Path::new("twig.toml"))).is_err());
            Ok(())
        });
    }
}
