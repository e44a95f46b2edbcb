//! Helpers for the end-to-end tests: [`TestApp`] starts the real suite on
//! 127.0.0.1 port 0 with its own fresh database and gives typed clients.

use std::net::SocketAddr;
use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use twig_config::{Config, Secret};
use twig_crypto::{PasswordHasher, argon2_params};
use twig_proto::sessions::v1 as pb;
use twig_proto::sessions::v1::session_service_client::SessionServiceClient;
use twig_sessions::ManualClock;

pub use twig_testkit::{Backend, TestDatabase};

/// The vault master key (version 1) of test servers: fixed, so replicas
/// on one database agree. Base64 of 32 bytes.
pub const TEST_MASTER_KEY: &str = "dHdpZy10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXMhISE=";

/// The name of the platform operator's internal client in every
/// [`TestApp`].
pub const OPERATOR: &str = "test-operator";

/// A strong-enough password for tests.
pub const PASSWORD: &str = "correct horse battery staple";

/// How a [`TestApp`] is set up.
pub struct TestAppBuilder {
    backend: Backend,
    config: Config,
    weak_hashing: bool,
}

impl TestAppBuilder {
    /// Changes the configuration before start.
    pub fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Cheap argon2 parameters, for tests that log in many times.
    pub fn weak_hashing(mut self) -> Self {
        self.weak_hashing = true;
        self
    }

    /// Starts the server.
    pub async fn spawn(self) -> TestApp {
        twig_testkit::init_logs();
        let database = TestDatabase::new(self.backend).await;
        let mut config = self.config;
        config.database.url = Secret::new(database.url.clone());
        config.database.max_connections = 8;
        let internal_token = format!("internal-{}", uuid::Uuid::new_v4().simple());
        config.auth.internal_token = Some(Secret::new(internal_token.clone()));
        let operator_token = format!("operator-{}", uuid::Uuid::new_v4().simple());
        config
            .auth
            .internal_clients
            .push(twig_config::InternalClient {
                name: OPERATOR.into(),
                token: Secret::new(operator_token.clone()),
                scopes: vec![twig_auth::OPERATOR_SCOPE.into()],
            });
        config.edit::<twig_secrets_vault::VaultConfig>(|vault| {
            if vault.master_keys.is_empty() && vault.master_keys_dir.is_none() {
                vault
                    .master_keys
                    .insert("1".into(), Secret::new(TEST_MASTER_KEY));
            }
        });
        config
            .validate(&twig_identity::owners())
            .expect("test configuration is valid");

        let db = twig_identity::open_database(&config)
            .await
            .expect("open database");
        twig_identity::migrate(&db, twig_identity::MODULES)
            .await
            .expect("migrate");
        let clock = Arc::new(ManualClock::default());
        let hasher = if self.weak_hashing {
            PasswordHasher::with_params(argon2_params(256, 1, 1).expect("params"), 4)
        } else {
            PasswordHasher::owasp()
        };
        let deps = twig_identity::Deps {
            clock: clock.clone(),
            hasher,
        };
        let suite = twig_identity::build(&config, db.clone(), twig_identity::MODULES, deps)
            .await
            .expect("build the suite");
        let sessions_service = suite.handle().expect("sessions runs");
        let session_issuer = suite.handle().expect("sessions provides SessionIssuing");
        let user_directory = suite.handle().expect("sessions provides UserDirectory");
        let api_keys_service = suite.handle().expect("api-keys runs");
        let quota_service = suite.handle().expect("quota runs");
        let vault_service = suite.handle().expect("the vault runs");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = oneshot::channel::<()>();
        let drain = config.server.drain_timeout;
        let server = tokio::spawn(async move {
            twig_identity::run(listener, suite, drain, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        TestApp {
            addr,
            channel,
            db,
            clock,
            internal_token,
            operator_token,
            config,
            sessions_service,
            session_issuer,
            user_directory,
            api_keys_service,
            quota_service,
            vault_service,
            shutdown: Some(tx),
            server: Some(server),
            database: Some(database),
        }
    }
}

/// The running suite of one test.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A channel to it.
    pub channel: Channel,
    /// The database, for checking what was stored.
    pub db: DatabaseConnection,
    /// The clock the services read.
    pub clock: Arc<ManualClock>,
    /// The internal service credential.
    pub internal_token: String,
    /// The credential of the internal client [`OPERATOR`], which holds
    /// `platform.operator`.
    pub operator_token: String,
    /// The configuration it runs with.
    pub config: Config,
    /// The sessions service inside the server, for flushing batched work.
    pub sessions_service: Arc<twig_sessions::Sessions>,
    /// The in-process `SessionIssuing` port, as other services get it.
    pub session_issuer: twig_module::SessionIssuer,
    /// The in-process `UserDirectory` port, as other services get it.
    pub user_directory: twig_module::Users,
    /// The api-keys service inside the server, for flushing batched work.
    pub api_keys_service: Arc<twig_api_keys::ApiKeys>,
    /// The quota service inside the server, for flushing usage.
    pub quota_service: Arc<twig_quota::Quota>,
    /// The vault inside the server.
    pub vault_service: Arc<twig_secrets_vault::Vault>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// Dropped with the app (a PostgreSQL database is dropped then).
    database: Option<TestDatabase>,
}

impl TestApp {
    /// Default configuration on `backend`, with every organisation on the
    /// `enterprise` plan (every feature; the same 100 a minute per key by
    /// default as `free`), so that tests of features and limits need no
    /// operator. Tests of plans set `plans.default_plan` themselves.
    pub fn builder(backend: Backend) -> TestAppBuilder {
        let mut config = Config::default();
        config.plans.default_plan = "enterprise".into();
        TestAppBuilder {
            backend,
            config,
            weak_hashing: false,
        }
    }

    /// Default configuration on `backend`, started.
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::builder(backend).spawn().await
    }

    /// A sessions client.
    pub fn sessions(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel.clone())
    }

    /// A sessions client whose connection comes from `ip` (any address
    /// of 127.0.0.0/8), to act as many clients from one machine.
    pub async fn sessions_from(&self, ip: &str) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel_from(ip).await)
    }

    /// A channel whose connection comes from `ip` (any of 127.0.0.0/8).
    pub async fn channel_from(&self, ip: &str) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .local_address(Some(ip.parse().expect("ip address")))
            .connect()
            .await
            .expect("connect")
    }

    /// The services' current time, in Unix seconds.
    pub fn clock_now(&self) -> i64 {
        use twig_sessions::Clock;
        self.clock.now().timestamp()
    }

    /// An api-keys client.
    pub fn api_keys(
        &self,
    ) -> twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient<Channel> {
        twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient::new(
            self.channel.clone(),
        )
    }

    /// A vault client.
    pub fn vault(
        &self,
    ) -> twig_proto::vault::v1::vault_service_client::VaultServiceClient<Channel> {
        twig_proto::vault::v1::vault_service_client::VaultServiceClient::new(self.channel.clone())
    }

    /// A quota client.
    pub fn quota(
        &self,
    ) -> twig_proto::quota::v1::quota_service_client::QuotaServiceClient<Channel> {
        twig_proto::quota::v1::quota_service_client::QuotaServiceClient::new(self.channel.clone())
    }

    /// An audit client.
    pub fn audit(
        &self,
    ) -> twig_proto::audit::v1::audit_service_client::AuditServiceClient<Channel> {
        twig_proto::audit::v1::audit_service_client::AuditServiceClient::new(self.channel.clone())
    }

    /// Signs up a new user with [`PASSWORD`]; returns the response.
    pub async fn sign_up(&self, email: &str) -> pb::SignUpResponse {
        self.sessions()
            .sign_up(pb::SignUpRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                organization_name: String::new(),
            })
            .await
            .expect("sign up")
            .into_inner()
    }

    /// Logs in with [`PASSWORD`]; returns the tokens.
    pub async fn login(&self, email: &str) -> pb::SessionTokens {
        self.sessions()
            .login(pb::LoginRequest {
                email: email.into(),
                password: PASSWORD.into(),
                organization_id: String::new(),
            })
            .await
            .expect("login")
            .into_inner()
            .tokens
            .expect("tokens")
    }

    /// `VerifySession` as an internal caller: the session's principal.
    pub async fn verify(
        &self,
        access_token: &str,
    ) -> Result<twig_proto::auth::v1::Principal, tonic::Status> {
        self.sessions()
            .verify_session(self.internal(pb::VerifySessionRequest {
                access_token: access_token.into(),
            }))
            .await
            .map(|r| r.into_inner().principal.expect("a principal"))
    }

    /// Wraps `message` with the internal credential.
    pub fn internal<T>(&self, message: T) -> Request<T> {
        with_internal_token(&self.internal_token, message)
    }

    /// Wraps `message` with the platform operator's credential (the
    /// internal client [`OPERATOR`], scope `platform.operator`).
    pub fn operator<T>(&self, message: T) -> Request<T> {
        with_internal_token(&self.operator_token, message)
    }

    /// Puts organisation `org_id` on `plan`, as the platform operator.
    pub async fn set_plan(&self, org_id: &str, plan: &str) {
        self.quota()
            .set_organization_plan(self.operator(
                twig_proto::quota::v1::SetOrganizationPlanRequest {
                    organization_id: org_id.into(),
                    plan: plan.into(),
                },
            ))
            .await
            .expect("the operator sets the plan");
    }

    /// Stops the server and waits for it.
    pub async fn stop(self) {
        self.stop_keeping_database().await;
    }

    /// Stops the server and waits for it; the database stays (until the
    /// returned guard is dropped) for checking what the server wrote.
    pub async fn stop_keeping_database(mut self) -> TestDatabase {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        self.database
            .take()
            .expect("the database is kept until the app is dropped")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Signs `email` up with [`PASSWORD`] through `channel` (a server started
/// with [`spawn_serve`]); returns the new session's access token.
pub async fn sign_up_on(channel: &Channel, email: &str) -> String {
    SessionServiceClient::new(channel.clone())
        .sign_up(pb::SignUpRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .expect("sign up")
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token
}

/// Wraps `message` with `x-twig-internal-token: token`.
pub fn with_internal_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "x-twig-internal-token",
        MetadataValue::try_from(token).expect("ascii"),
    );
    request
}

/// Sends SIGTERM to a server started with piped output, waits for it to
/// exit, and returns its stdout and stderr together.
pub async fn stop_and_collect_logs(child: std::process::Child) -> String {
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("wait task")
        .expect("wait");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Wraps `message` with `authorization: Bearer token`.
pub fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"),
    );
    request
}

/// A unique email for a test.
pub fn email(name: &str) -> String {
    format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Runs `command serve` (the command prepared with its environment) on a
/// free port and waits until it accepts connections. The admin port is a
/// free one too unless the command sets `TWIG__SERVER__ADMIN_LISTEN`.
pub async fn spawn_serve(command: std::process::Command) -> (std::process::Child, Channel) {
    let (child, channel, _) = spawn_serve_at(command, None).await;
    (child, channel)
}

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("address")
}

/// [`spawn_serve`] on `addr` (or a free port), also giving the address.
pub async fn spawn_serve_at(
    mut command: std::process::Command,
    addr: Option<SocketAddr>,
) -> (std::process::Child, Channel, SocketAddr) {
    let port = addr.unwrap_or_else(free_addr).port();
    command.env("TWIG__SERVER__LISTEN", format!("127.0.0.1:{port}"));
    if !command
        .get_envs()
        .any(|(k, _)| k == "TWIG__SERVER__ADMIN_LISTEN")
    {
        command.env("TWIG__SERVER__ADMIN_LISTEN", "127.0.0.1:0");
    }
    if !command.get_envs().any(|(k, _)| {
        k.to_string_lossy()
            .starts_with("TWIG__SECRETS_VAULT__MASTER_KEYS")
    }) {
        command.env("TWIG__SECRETS_VAULT__MASTER_KEYS__1", TEST_MASTER_KEY);
    }
    let mut child = command.arg("serve").spawn().expect("start twig-identity");
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(endpoint.clone())
            .expect("uri")
            .connect()
            .await
        {
            return (child, channel, ([127, 0, 0, 1], port).into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("twig-identity serve did not accept connections within 10 s");
}

/// `GET /metrics` from an admin port: the whole HTTP response.
pub fn scrape_metrics(admin: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).expect("admin port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("response");
    body
}

/// Sends one raw HTTP/1.1 request (`head`: request line and headers,
/// without Host, Content-Length and Connection); returns the status line,
/// the headers (names lowercased) and the body (de-chunked).
pub async fn http1(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
) -> (String, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the server answers")
    .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = &raw[split + 4..];
    let body = if header(&headers, "transfer-encoding") == Some("chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    (status, headers, body)
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&raw[..end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
