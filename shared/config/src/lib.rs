//! Configuration of the whole binary: defaults, then an optional TOML file,
//! then `TWIG__SECTION__KEY` environment variables (and the standard
//! `DATABASE_URL`). Everything is validated before any port is bound.
//!
//! Secrets live in [`Secret`], which never prints its value.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use std::collections::BTreeMap;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod mail;
pub mod plans;
mod secret;

pub use mail::{MailConfig, SmtpConfig, SmtpTls};
pub use plans::{Feature, PlanConfig, PlanLimit, PlansConfig};
pub use secret::Secret;

/// The whole configuration: the shared sections, typed here, and each
/// service's own section, typed and checked by the service's module
/// ([`Section`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Listening port and shutdown.
    pub server: ServerConfig,
    /// The database.
    pub database: DatabaseConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Service-to-service credentials.
    pub auth: AuthConfig,
    /// Redis, for what replicas must agree on.
    pub redis: RedisConfig,
    /// Where the services that do not run in this process are.
    pub remote: RemoteConfig,
    /// What each plan gives an organisation (read by every service that
    /// gates on one; the quota service keeps who is on which).
    pub plans: PlansConfig,
    /// HTTP requests that leave the process (identity providers).
    pub outbound: twig_outbound::OutboundConfig,
    /// Outbound email (`twig-mail`): SMTP or an outbox folder.
    pub mail: MailConfig,
    /// Every other top-level section, by key: a service's own, read
    /// through [`Config::section`]. Keys no service owns are refused by
    /// [`Config::validate`].
    #[serde(flatten)]
    sections: BTreeMap<String, Value>,
}

/// The top-level keys of the shared sections.
const SHARED_SECTIONS: &[&str] = &[
    "server",
    "database",
    "telemetry",
    "auth",
    "redis",
    "remote",
    "plans",
    "outbound",
    "mail",
];

/// A service's own section of the configuration. Its key is the
/// service's name with `_` for `-` (`api-keys` → `[api_keys]`,
/// `TWIG__API_KEYS__…`), since environment variables cannot carry `-`.
pub trait Section: Serialize + DeserializeOwned + Default + Clone + 'static {
    /// The section's top-level key.
    const KEY: &'static str;

    /// The rules no type can express, each naming its setting without the
    /// section's key (`access_ttl must be more than 0`); `config` gives
    /// the shared sections some rules depend on.
    fn problems(&self, config: &Config) -> Vec<String>;
}

/// A section's own rules, as problems found in a configuration.
type SectionCheck = fn(&Config) -> Vec<String>;

/// What the services of this binary own: their sections (checked with
/// their own rules) and the internal scopes they check. Built from the
/// binary's module list.
#[derive(Default)]
pub struct Owners {
    sections: Vec<(&'static str, SectionCheck)>,
    services: Vec<String>,
    internal_scopes: Vec<&'static str>,
}

impl Owners {
    /// A service named `name` (`api-keys`), which may be configured at a
    /// `remote` address.
    pub fn service(&mut self, name: &str) -> &mut Self {
        self.services.push(config_key(name));
        self
    }

    /// A section and its rules.
    pub fn section<S: Section>(&mut self) -> &mut Self {
        fn check<S: Section>(config: &Config) -> Vec<String> {
            match config.section::<S>() {
                Ok(section) => section
                    .problems(config)
                    .into_iter()
                    .map(|p| format!("{}.{p}", S::KEY))
                    .collect(),
                Err(e) => vec![e.to_string()],
            }
        }
        self.sections.push((S::KEY, check::<S>));
        self
    }

    /// Scopes only internal clients may hold, checked by this service.
    pub fn internal_scopes(&mut self, scopes: &[&'static str]) -> &mut Self {
        for scope in scopes {
            // Several services may check one scope (`platform.operator`).
            if !self.internal_scopes.contains(scope) {
                self.internal_scopes.push(scope);
            }
        }
        self
    }

    /// The keys of the sections declared so far.
    pub fn section_keys(&self) -> Vec<&'static str> {
        self.sections.iter().map(|(key, _)| *key).collect()
    }

    /// Every internal scope some service checks.
    pub fn known_internal_scopes(&self) -> &[&'static str] {
        &self.internal_scopes
    }
}

/// The key of a service's section and `remote` address: its name with
/// `_` for `-`.
pub fn config_key(service_name: &str) -> String {
    service_name.replace('-', "_")
}

/// Services in other processes (`serve --services edge` and other splits):
/// their gRPC addresses, keyed by the service's name with `_` for `-`
/// (`remote.api_keys`). A service that runs here is always called
/// in-process; one that runs neither here nor at an address is
/// unavailable (its credentials and RPCs are answered UNAVAILABLE).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteConfig {
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
    /// Each service's address by its key, e.g.
    /// `sessions = "http://twig-sessions:50051"`.
    #[serde(flatten)]
    pub addresses: BTreeMap<String, String>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            token: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            verify_cache_ttl: Duration::from_secs(1),
            addresses: BTreeMap::new(),
        }
    }
}

impl RemoteConfig {
    /// The address of the service named `service_name` (`api-keys`).
    pub fn address(&self, service_name: &str) -> Option<&str> {
        self.addresses
            .get(&config_key(service_name))
            .map(String::as_str)
    }

    /// Sets the address of the service named `service_name`.
    pub fn set_address(&mut self, service_name: &str, url: impl Into<String>) {
        self.addresses.insert(config_key(service_name), url.into());
    }
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
    /// The origins browsers reach this service's own pages at
    /// (`https://id.example.com`), exactly as the browser sends them in
    /// `Origin`. A state-changing request to a browser route (a module's
    /// `Context::browser_routes`) protected by `twig_web::Csrf` is
    /// admitted only from one of these; with none, every such request is
    /// refused.
    pub public_origins: Vec<String>,
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
            public_origins: Vec::new(),
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

impl DatabaseConfig {
    /// The folder of a file-backed SQLite database (`./twig-data` for the
    /// default), where the embedded default keeps what it writes beside
    /// the database; `None` for PostgreSQL and in-memory SQLite.
    pub fn sqlite_folder(&self) -> Option<std::path::PathBuf> {
        let url = self.url.expose();
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = path.split('?').next()?;
        if path.is_empty() || path.contains(":memory:") {
            return None;
        }
        Some(
            Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| std::path::PathBuf::from("."), Path::to_path_buf),
        )
    }
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

/// One internal caller with scopes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalClient {
    /// Who it is, for audit events (e.g. `agent-runtime`).
    pub name: String,
    /// Its credential, at least 32 characters.
    pub token: Secret,
    /// What it may do beyond internal RPCs: scopes the services declare
    /// ([`Owners::internal_scopes`]), e.g. `vault.reveal`.
    pub scopes: Vec<String>,
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
    /// Defaults, then `file` if given, then the environment; checked
    /// against the rules of the shared sections and of `owners`.
    pub fn load(file: Option<&Path>, owners: &Owners) -> Result<Self, ConfigError> {
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
        config.validate(owners)?;
        Ok(config)
    }

    /// A service's own section (its defaults where the section is absent).
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        match self.sections.get(S::KEY) {
            None => Ok(S::default()),
            Some(value) => value
                .deserialize()
                .map_err(|e| ConfigError::Invalid(vec![format!("[{}]: {e}", S::KEY)])),
        }
    }

    /// Replaces a service's own section.
    pub fn set_section<S: Section>(&mut self, section: &S) {
        let value = Value::serialize(section).expect("a section serializes to a value");
        self.sections.insert(S::KEY.to_string(), value);
    }

    /// Changes a service's own section (tests, tools).
    ///
    /// # Panics
    /// When the section held now does not parse.
    pub fn edit<S: Section>(&mut self, change: impl FnOnce(&mut S)) {
        let mut section = self.section::<S>().expect("the section parses");
        change(&mut section);
        self.set_section(&section);
    }

    /// Checks the rules no type can express, of the shared sections and
    /// of each owner's section; refuses sections and `remote` addresses
    /// no service owns.
    pub fn validate(&self, owners: &Owners) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for key in self.sections.keys() {
            if !owners.sections.iter().any(|(owned, _)| owned == key) {
                let mut known: Vec<&str> = SHARED_SECTIONS.to_vec();
                known.extend(owners.sections.iter().map(|(k, _)| *k));
                problems.push(format!(
                    "unknown section [{key}]; known: {}",
                    known.join(", ")
                ));
            }
        }
        for (_, check) in &owners.sections {
            problems.extend(check(self));
        }
        for key in self.remote.addresses.keys() {
            if !owners.services.contains(key) {
                problems.push(format!(
                    "remote.{key}: no such service; known: {}",
                    owners.services.join(", ")
                ));
            }
        }
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
        problems.extend(self.plans.problems());
        if let Err(twig_outbound::OutboundConfigError::Invalid(outbound)) = self.outbound.validate()
        {
            problems.extend(outbound.into_iter().map(|p| format!("outbound.{p}")));
        }
        problems.extend(
            self.mail
                .problems()
                .into_iter()
                .map(|p| format!("mail.{p}")),
        );
        for origin in &self.server.cors_origins {
            if let Some(problem) = origin_problem(origin) {
                problems.push(format!("server.cors_origins: {origin:?} {problem}"));
            }
        }
        for origin in &self.server.public_origins {
            if let Some(problem) = origin_problem(origin) {
                problems.push(format!("server.public_origins: {origin:?} {problem}"));
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
        if let Some(url) = &self.redis.url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            problems.push("redis.url must start with redis:// or rediss://".into());
        }
        for (key, url) in &self.remote.addresses {
            if let Some(problem) = origin_problem(url) {
                problems.push(format!("remote.{key}: {url:?} {problem}"));
            }
        }
        match &self.remote.token {
            None if !self.remote.addresses.is_empty() => problems.push(
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
                if !owners.internal_scopes.contains(&scope.as_str()) {
                    problems.push(format!(
                        "auth.internal_clients[{name}]: unknown scope {scope:?}; known: {}",
                        owners.internal_scopes.join(", ")
                    ));
                }
            }
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

    /// A service's section, as a module would declare it.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Widgets {
        #[serde(with = "humantime_serde")]
        ttl: Duration,
        count: u32,
    }

    impl Default for Widgets {
        fn default() -> Self {
            Self {
                ttl: Duration::from_secs(60),
                count: 3,
            }
        }
    }

    impl Section for Widgets {
        const KEY: &'static str = "widget_store";

        fn problems(&self, config: &Config) -> Vec<String> {
            let mut problems = Vec::new();
            if self.count == 0 {
                problems.push("count must be at least 1".into());
            }
            if config.redis.url.is_none() && self.ttl > Duration::from_secs(60) {
                problems.push("ttl must be at most 60s without Redis".into());
            }
            problems
        }
    }

    fn owners() -> Owners {
        let mut owners = Owners::default();
        owners
            .service("widget-store")
            .section::<Widgets>()
            .internal_scopes(&["widgets.reveal"]);
        owners
    }

    #[test]
    fn remote_services_need_addresses_and_the_edge_credential() {
        let mut config = Config::default();
        config
            .remote
            .set_address("widget-store", "http://twig-widget-store:50051");
        let err = config.validate(&owners()).unwrap_err().to_string();
        assert!(err.contains("remote.token is required"), "{err}");
        config.remote.token = Some(Secret::new("e".repeat(32)));
        config.validate(&owners()).unwrap();
        config
            .remote
            .set_address("widget-store", "twig-widget-store:50051");
        let err = config.validate(&owners()).unwrap_err().to_string();
        assert!(err.contains("remote.widget_store"), "{err}");
        config.remote.addresses.clear();
        config
            .remote
            .set_address("gadgets", "http://twig-gadgets:50051");
        let err = config.validate(&owners()).unwrap_err().to_string();
        assert!(err.contains("remote.gadgets: no such service"), "{err}");
        config.remote.addresses.clear();
        config.auth.internal_token = Some(Secret::new("i".repeat(32)));
        config.auth.edge_token = Some(Secret::new("i".repeat(32)));
        let err = config.validate(&owners()).unwrap_err().to_string();
        assert!(err.contains("auth.edge_token must differ"), "{err}");
        config.auth.edge_token = Some(Secret::new("short"));
        let err = config.validate(&owners()).unwrap_err().to_string();
        assert!(err.contains("auth.edge_token must be at least 32"), "{err}");
    }

    #[test]
    fn cors_origins_must_be_exact_origins() {
        let mut config = Config::default();
        config.server.cors_origins = vec![
            "https://app.example.com".into(),
            "http://localhost:5173".into(),
        ];
        config.validate(&owners()).unwrap();
        for bad in [
            "*",
            "https://*.example.com",
            "app.example.com",
            "https://app.example.com/",
            "https://",
            "ftp://app.example.com",
        ] {
            config.server.cors_origins = vec![bad.into()];
            let err = config.validate(&owners()).unwrap_err().to_string();
            assert!(err.contains("server.cors_origins"), "{bad}: {err}");
            config.server.cors_origins = Vec::new();
            config.server.public_origins = vec![bad.into()];
            let err = config.validate(&owners()).unwrap_err().to_string();
            assert!(err.contains("server.public_origins"), "{bad}: {err}");
            config.server.public_origins = Vec::new();
        }
    }

    #[test]
    fn cors_origins_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "TWIG__SERVER__CORS_ORIGINS",
                r#"["https://app.example.com","http://localhost:5173"]"#,
            );
            let config = Config::load(None, &owners()).unwrap();
            assert_eq!(
                config.server.cors_origins,
                ["https://app.example.com", "http://localhost:5173"]
            );
            jail.set_env("TWIG__SERVER__CORS_ORIGINS", r#"["*"]"#);
            assert!(Config::load(None, &owners()).is_err());
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate(&owners()).unwrap();
    }

    #[test]
    fn internal_clients_hold_only_declared_scopes() {
        let mut config = Config::default();
        config.auth.internal_clients = vec![InternalClient {
            name: "runtime".into(),
            token: Secret::new("r".repeat(32)),
            scopes: vec!["widgets.reveal".into()],
        }];
        config.validate(&owners()).unwrap();
        config.auth.internal_clients[0].scopes = vec!["vault.reveal".into()];
        let err = config.validate(&owners()).unwrap_err().to_string();
        assert!(
            err.contains("unknown scope \"vault.reveal\"; known: widgets.reveal"),
            "{err}"
        );
    }

    #[test]
    fn a_section_edited_in_code_is_read_back() {
        let mut config = Config::default();
        assert_eq!(config.section::<Widgets>().unwrap().count, 3);
        config.edit::<Widgets>(|w| w.count = 0);
        assert_eq!(config.section::<Widgets>().unwrap().count, 0);
        let err = config.validate(&owners()).unwrap_err().to_string();
        assert!(err.contains("widget_store.count"), "{err}");
    }

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "twig.toml",
                "[server]\nlisten = \"127.0.0.1:7000\"\n[widget_store]\nttl = \"5s\"\ncount = 9\n",
            )?;
            jail.set_env("TWIG__WIDGET_STORE__TTL", "7s");
            let config = Config::load(Some(Path::new("twig.toml")), &owners()).unwrap();
            assert_eq!(config.server.listen.port(), 7000);
            let widgets = config.section::<Widgets>().unwrap();
            assert_eq!(widgets.ttl, Duration::from_secs(7));
            assert_eq!(widgets.count, 9);
            Ok(())
        });
    }

    #[test]
    fn database_url_variable_is_honoured() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://u:hunter2@db/twig");
            let config = Config::load(None, &owners()).unwrap();
            assert_eq!(config.database.url.expose(), "postgres://u:hunter2@db/twig");
            assert!(!format!("{config:?}").contains("hunter2"));
            Ok(())
        });
    }

    #[test]
    fn redis_url_allows_longer_key_caches() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__WIDGET_STORE__TTL", "30m");
            let err = Config::load(None, &owners()).unwrap_err().to_string();
            assert!(
                err.contains("widget_store.ttl must be at most 60s"),
                "{err}"
            );
            jail.set_env("REDIS_URL", "redis://:pw@127.0.0.1:6379");
            let config = Config::load(None, &owners()).unwrap();
            assert_eq!(
                config.redis.url.unwrap().expose(),
                "redis://:pw@127.0.0.1:6379"
            );
            jail.set_env("REDIS_URL", "http://nope");
            assert!(Config::load(None, &owners()).is_err());
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_all_reported() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__DATABASE__URL", "mysql://x");
            jail.set_env("TWIG__WIDGET_STORE__COUNT", "0");
            let err = Config::load(None, &owners()).unwrap_err().to_string();
            assert!(err.contains("database.url"), "{err}");
            assert!(
                err.contains("widget_store.count must be at least 1"),
                "{err}"
            );
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
            let config = Config::load(Some(std::path::Path::new("twig.toml")), &owners()).unwrap();
            assert_eq!(config.outbound.read_timeout, Duration::from_secs(2));
            assert_eq!(config.outbound.allow_networks.len(), 1);
            jail.set_env("TWIG__OUTBOUND__TOTAL_TIMEOUT", "1s");
            let err = Config::load(Some(std::path::Path::new("twig.toml")), &owners())
                .unwrap_err()
                .to_string();
            assert!(err.contains("outbound.total_timeout"), "{err}");
            jail.create_file(
                "bad.toml",
                "[outbound]\nallow_networks = [\"10.0.0.1/8\"]\n",
            )?;
            let err = Config::load(Some(std::path::Path::new("bad.toml")), &owners())
                .unwrap_err()
                .to_string();
            assert!(err.contains("10.0.0.0/8"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_mail_section_from_a_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "twig.toml",
                "[mail]\nfrom = \"Acme <no-reply@acme.example>\"\nlink_base = \"https://app.acme.example\"\n\
                 [mail.smtp]\nhost = \"smtp.acme.example\"\ntls = \"tls\"\n",
            )?;
            jail.set_env("TWIG__MAIL__SMTP__USERNAME", "twig");
            jail.set_env("TWIG__MAIL__SMTP__PASSWORD", "hunter2");
            jail.set_env("TWIG__MAIL__SMTP__PORT", "2465");
            let config = Config::load(Some(Path::new("twig.toml")), &owners()).unwrap();
            let smtp = config.mail.smtp.as_ref().unwrap();
            assert_eq!(smtp.tls, SmtpTls::Tls);
            assert_eq!(smtp.port(), 2465);
            assert_eq!(smtp.password.as_ref().unwrap().expose(), "hunter2");
            assert!(!format!("{config:?}").contains("hunter2"));
            // A relay from the environment alone, in plain text to a
            // host that is not loopback: refused, naming the setting.
            jail.set_env("TWIG__MAIL__SMTP__TLS", "none");
            let err = Config::load(Some(Path::new("twig.toml")), &owners())
                .unwrap_err()
                .to_string();
            assert!(err.contains("mail.smtp.tls = \"none\""), "{err}");
            jail.set_env("TWIG__MAIL__SMTP__ALLOW_PLAINTEXT", "true");
            Config::load(Some(Path::new("twig.toml")), &owners()).unwrap();
            jail.set_env("TWIG__MAIL__SMTP__TLS", "ssl");
            assert!(Config::load(Some(Path::new("twig.toml")), &owners()).is_err());
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__MAIL__SMTP__HOST", "127.0.0.1");
            let err = Config::load(None, &owners()).unwrap_err().to_string();
            assert!(err.contains("mail.from is required"), "{err}");
            assert!(err.contains("mail.link_base is required"), "{err}");
            jail.set_env("TWIG__MAIL__FROM", "no-reply@example.com");
            jail.set_env("TWIG__MAIL__LINK_BASE", "http://localhost:5173");
            jail.set_env("TWIG__MAIL__SMTP__TLS", "none");
            let config = Config::load(None, &owners()).unwrap();
            assert_eq!(config.mail.smtp.unwrap().port(), 25);
            Ok(())
        });
    }

    #[test]
    fn the_mail_outbox_is_beside_a_sqlite_database() {
        let folder = |url: &str| {
            let mut config = Config::default();
            config.database.url = Secret::new(url);
            config.database.sqlite_folder()
        };
        assert_eq!(
            folder("sqlite://./twig-data/twig.db?mode=rwc"),
            Some("./twig-data".into())
        );
        assert_eq!(
            folder("sqlite:///var/lib/twig/twig.db"),
            Some("/var/lib/twig".into())
        );
        assert_eq!(folder("sqlite://twig.db"), Some(".".into()));
        assert_eq!(folder("sqlite::memory:"), None);
        assert_eq!(folder("postgres://u@db/twig"), None);
    }

    #[test]
    fn connection_limits_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__SERVER__IDLE_TIMEOUT", "0s");
            jail.set_env("TWIG__SERVER__HTTP2_MAX_LOCAL_ERROR_RESETS", "0");
            jail.set_env("TWIG__SERVER__HTTP2_MAX_FRAME_BYTES", "1000");
            jail.set_env("TWIG__SERVER__HTTP1_MAX_BUF_BYTES", "4096");
            jail.set_env("TWIG__SERVER__MAX_CONNECTIONS", "0");
            let err = Config::load(None, &owners()).unwrap_err().to_string();
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
            let config = Config::load(None, &owners()).unwrap();
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
            assert!(Config::load(Some(Path::new("twig.toml")), &owners()).is_err());
            jail.create_file("twig.toml", "[widget_store]\nspeed = 3\n")?;
            let err = Config::load(Some(Path::new("twig.toml")), &owners())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("[widget_store]") && err.contains("speed"),
                "{err}"
            );
            jail.create_file("twig.toml", "[gadgets]\nspeed = 3\n")?;
            let err = Config::load(Some(Path::new("twig.toml")), &owners())
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown section [gadgets]"), "{err}");
            jail.set_env("TWIG__WIDGETS__COUNT", "3");
            assert!(Config::load(None, &owners()).is_err());
            Ok(())
        });
    }
}
