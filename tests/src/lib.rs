//! Helpers for the end-to-end tests: [`TestApp`] starts the real suite on
//! 127.0.0.1 port 0 with its own fresh database and gives typed clients.

pub mod curl;
pub mod dns;
pub mod forging_idp;
pub mod oidc_peer;

use std::net::SocketAddr;
use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection};
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

/// The `mail.link_base` of apps started [`TestAppBuilder::with_smtp`].
pub const TEST_LINK_BASE: &str = "https://app.twig.test";

/// The token of the platform operator's internal client (internal scope
/// `platform.operator`) in every test server: [`TestApp::operator`], and
/// servers started with [`spawn_serve`].
pub const TEST_OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdefghij";

/// The operator's internal client as `TWIG__AUTH__INTERNAL_CLIENTS` holds
/// it (TOML inline table).
const TEST_OPERATOR_CLIENT: &str = r#"{name="test-operator",token="test-operator-token-0123456789abcdefghij",scopes=["platform.operator"]}"#;

/// The name of the platform operator's internal client in every
/// [`TestApp`].
pub const OPERATOR: &str = "test-operator";

/// A strong-enough password for tests.
pub const PASSWORD: &str = "correct horse battery staple";

/// A change to the configuration that needs the server's own origin.
type AtOrigin = Box<dyn FnOnce(&mut Config, &str) + Send>;

/// How a [`TestApp`] is set up.
pub struct TestAppBuilder {
    backend: Backend,
    config: Config,
    weak_hashing: bool,
    maildev: Option<Maildev>,
    default_outbox: bool,
    at_origin: Option<AtOrigin>,
    extra_modules: Vec<&'static dyn twig_module::Module>,
}

impl TestAppBuilder {
    /// Runs `module` too, beside the binary's (a test's own browser
    /// routes, say).
    pub fn with_module(mut self, module: &'static dyn twig_module::Module) -> Self {
        self.extra_modules.push(module);
        self
    }

    /// Changes the configuration before start with the server's own
    /// origin (`http://127.0.0.1:<port>`), known before it starts: for
    /// settings that name it (public origins, redirect URIs).
    pub fn config_at_origin(
        mut self,
        change: impl FnOnce(&mut Config, &str) + Send + 'static,
    ) -> Self {
        self.at_origin = Some(Box::new(change));
        self
    }

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

    /// Mail goes over SMTP to the test run's maildev ([`Maildev::from_env`];
    /// fails when it is not running), where [`TestApp::mail_to`] reads it
    /// back. Without this, mail goes to the app's own outbox folder, read
    /// the same way, on either backend.
    pub fn with_smtp(mut self) -> Self {
        let maildev = Maildev::from_env();
        self.config.mail.from = Some("Twig Tests <no-reply@twig.test>".into());
        self.config.mail.link_base = Some(TEST_LINK_BASE.into());
        self.config.mail.retry_backoff = std::time::Duration::from_millis(100);
        self.config.mail.smtp = Some(twig_config::SmtpConfig {
            host: maildev.smtp.ip().to_string(),
            port: Some(maildev.smtp.port()),
            tls: twig_config::SmtpTls::None,
            timeout: std::time::Duration::from_secs(5),
            ..Default::default()
        });
        self.maildev = Some(maildev);
        self
    }

    /// Without SMTP, mail goes where the configuration's defaults put it
    /// (`outbox/` beside the SQLite database; nowhere on PostgreSQL)
    /// rather than into the app's own folder; [`TestApp::mail_to`] reads
    /// it there.
    pub fn default_outbox(mut self) -> Self {
        self.default_outbox = true;
        self
    }

    /// Starts the server.
    pub async fn spawn(self) -> TestApp {
        twig_testkit::init_logs();
        let database = TestDatabase::new(self.backend).await;
        let mut config = self.config;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        if let Some(change) = self.at_origin {
            change(&mut config, &format!("http://{addr}"));
        }
        config.database.url = Secret::new(database.url.clone());
        config.database.max_connections = 8;
        let internal_token = format!("internal-{}", uuid::Uuid::new_v4().simple());
        config.auth.internal_token = Some(Secret::new(internal_token.clone()));
        let operator_token = TEST_OPERATOR_TOKEN.to_string();
        config
            .auth
            .internal_clients
            .push(twig_config::InternalClient {
                name: OPERATOR.into(),
                token: Secret::new(operator_token.clone()),
                scopes: vec![twig_auth::OPERATOR_SCOPE.into()],
            });
        // Without SMTP, mail goes to this app's own outbox folder, where
        // `mail_to` reads it.
        let outbox = tempfile::tempdir().expect("outbox folder");
        let mut outbox_dir = outbox.path().to_path_buf();
        if config.mail.smtp.is_none() {
            if self.default_outbox {
                if let Some(dir) = config
                    .mail
                    .outbox_dir
                    .clone()
                    .or_else(|| config.database.sqlite_folder().map(|d| d.join("outbox")))
                {
                    outbox_dir = dir;
                }
            } else {
                config.mail.outbox_dir = Some(outbox_dir.clone());
                config
                    .mail
                    .link_base
                    .get_or_insert_with(|| TEST_LINK_BASE.into());
            }
        }
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
        let mut modules = twig_identity::MODULES.to_vec();
        modules.extend(self.extra_modules.iter().copied());
        let suite = twig_identity::build_known(&config, db.clone(), &modules, &modules, deps)
            .await
            .expect("build the suite");
        let mailer = suite.handle().expect("every suite has a mailer");
        let sessions_service = suite.handle().expect("sessions runs");
        let session_issuer = suite.handle().expect("sessions provides SessionIssuing");
        let user_directory = suite.handle().expect("sessions provides UserDirectory");
        let api_keys_service = suite.handle().expect("api-keys runs");
        let quota_service = suite.handle().expect("quota runs");
        let vault_service = suite.handle().expect("the vault runs");
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
            mailer,
            maildev: self.maildev,
            _outbox: outbox,
            outbox_dir,
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
    /// The suite's one mailer, as every service gets it.
    pub mailer: twig_mail::Mailer,
    maildev: Option<Maildev>,
    /// The app's own outbox folder, kept for its life.
    _outbox: tempfile::TempDir,
    /// Where mail goes without SMTP: `outbox`, or the configured default.
    outbox_dir: std::path::PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// Dropped with the app (a PostgreSQL database is dropped then).
    database: Option<TestDatabase>,
}

impl TestApp {
    /// Every value of every row of `tables`, as text: strings as they are,
    /// bytes both as lossy UTF-8 and as hex. A column of a type it cannot read
    /// fails the test (the dump is never silently empty).
    pub async fn stored_text(&self, tables: &[&str]) -> (usize, String) {
        let backend = self.db.get_database_backend();
        let mut rows_seen = 0;
        let mut text = String::new();
        for table in tables {
            let rows = self
                .db
                .query_all_raw(sea_orm::Statement::from_string(
                    backend,
                    format!("SELECT * FROM {table}"),
                ))
                .await
                .unwrap();
            rows_seen += rows.len();
            for row in rows {
                for column in row.column_names() {
                    let value = if let Ok(v) = row.try_get::<Option<String>>("", &column) {
                        v.unwrap_or_default()
                    } else if let Ok(v) = row.try_get::<Option<Vec<u8>>>("", &column) {
                        let v = v.unwrap_or_default();
                        let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
                        // One line per value: a hash may hold a newline byte.
                        let text = String::from_utf8_lossy(&v).replace(['\n', '\r'], " ");
                        format!("{text} {hex}")
                    } else if let Ok(v) = row.try_get::<Option<uuid::Uuid>>("", &column) {
                        v.map(|v| v.to_string()).unwrap_or_default()
                    } else if let Ok(v) =
                        row.try_get::<Option<chrono::DateTime<chrono::Utc>>>("", &column)
                    {
                        v.map(|v| v.to_rfc3339()).unwrap_or_default()
                    } else if let Ok(v) = row.try_get::<Option<i64>>("", &column) {
                        v.map(|v| v.to_string()).unwrap_or_default()
                    } else if let Ok(v) = row.try_get::<Option<i32>>("", &column) {
                        v.map(|v| v.to_string()).unwrap_or_default()
                    } else if let Ok(v) = row.try_get::<Option<bool>>("", &column) {
                        v.map(|v| v.to_string()).unwrap_or_default()
                    } else {
                        panic!("{table}.{column}: a column the dump cannot read");
                    };
                    text.push_str(&format!("{table}.{column}={value}\n"));
                }
            }
        }
        (rows_seen, text)
    }

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
            maildev: None,
            default_outbox: false,
            at_origin: None,
            extra_modules: Vec::new(),
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

    /// A single sign-on client.
    pub fn sso(&self) -> twig_proto::sso::v1::sso_service_client::SsoServiceClient<Channel> {
        twig_proto::sso::v1::sso_service_client::SsoServiceClient::new(self.channel.clone())
    }

    /// An audit client.
    pub fn audit(
        &self,
    ) -> twig_proto::audit::v1::audit_service_client::AuditServiceClient<Channel> {
        twig_proto::audit::v1::audit_service_client::AuditServiceClient::new(self.channel.clone())
    }

    /// Signs up a new user with [`PASSWORD`]; returns the response.
    pub async fn sign_up(&self, email: &str) -> SignedUp {
        sign_up_with(&self.channel, email).await
    }

    /// Signs `email` up the way a person does: `SignUp`, then the link
    /// mailed to the address (`VerifyEmail`). The account, its
    /// organisation and its first session.
    pub async fn sign_up_by_mail(&self, email: &str) -> SignedUp {
        self.sessions()
            .sign_up(pb::SignUpRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                organization_name: String::new(),
            })
            .await
            .expect("sign up");
        let token = self.link_token(email, "Verify your email").await;
        let done = self
            .sessions()
            .verify_email(pb::VerifyEmailRequest {
                token,
                password: PASSWORD.into(),
            })
            .await
            .expect("follow the sign-up link")
            .into_inner();
        SignedUp {
            user: done.user,
            organization: done.organization,
            tokens: done.tokens,
        }
    }

    /// Makes `email` (an account) a member of `org_id` with `role` the
    /// way people do: an owner or admin (`inviter_token`) invites, the
    /// invitee signs in and accepts the mailed invitation.
    pub async fn add_member(&self, inviter_token: &str, org_id: &str, email: &str, role: pb::Role) {
        self.invite(inviter_token, org_id, email, role)
            .await
            .expect("invite");
        let token = self.link_token(email, "You are invited").await;
        let invitee = self.login(email).await;
        self.sessions()
            .accept_invitation(bearer(
                &invitee.access_token,
                pb::AcceptInvitationRequest { token },
            ))
            .await
            .expect("accept the invitation");
    }

    /// `CreateInvitation` as `inviter_token`.
    pub async fn invite(
        &self,
        inviter_token: &str,
        org_id: &str,
        email: &str,
        role: pb::Role,
    ) -> Result<pb::Invitation, tonic::Status> {
        self.sessions()
            .create_invitation(bearer(
                inviter_token,
                pb::CreateInvitationRequest {
                    organization_id: org_id.into(),
                    email: email.into(),
                    role: role as i32,
                },
            ))
            .await
            .map(|r| r.into_inner().invitation.expect("an invitation"))
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

    /// The mail maildev received for `address` (a unique one:
    /// [`email`]), oldest first: waits until the mailer's queue is empty,
    /// then until at least one message is there (at most 10 s). Needs
    /// [`TestAppBuilder::with_smtp`].
    pub async fn mail_to(&self, address: &str) -> Vec<ReceivedMail> {
        self.mail_count_to(address, 1).await
    }

    /// [`TestApp::mail_to`], waiting for at least `count` messages.
    pub async fn mail_count_to(&self, address: &str, count: usize) -> Vec<ReceivedMail> {
        self.mailer.flush().await;
        match &self.maildev {
            Some(maildev) => maildev.wait_for(address, count).await,
            None => wait_for_outbox(&self.outbox_dir, address, count).await,
        }
    }

    /// The token of the newest link in the newest mail to `address` whose
    /// subject contains `subject` (waiting for it as [`TestApp::mail_to`]).
    pub async fn link_token(&self, address: &str, subject: &str) -> String {
        for _ in 0..100 {
            let mail = self.mail_to(address).await;
            if let Some(token) = newest_link_token(&mail, subject) {
                return token;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no mail to {address} about {subject:?} with a link");
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

/// A signed-up account: the user, the organisation it owns, a session.
#[derive(Debug, Clone)]
pub struct SignedUp {
    /// The account.
    pub user: Option<pb::User>,
    /// The organisation it owns.
    pub organization: Option<pb::Organization>,
    /// A session in that organisation.
    pub tokens: Option<pb::SessionTokens>,
}

/// An account for `email` with [`PASSWORD`] owning a new organisation,
/// made by the platform operator (`CreateAccount`) on the server behind
/// `channel` (the sessions service, or the monolith), and signed in. Tests
/// of the sign-up flow itself use [`TestApp::sign_up_by_mail`].
pub async fn sign_up_with(channel: &Channel, email: &str) -> SignedUp {
    let mut client = SessionServiceClient::new(channel.clone());
    let made = client
        .create_account(with_internal_token(
            TEST_OPERATOR_TOKEN,
            pb::CreateAccountRequest {
                email: email.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                organization_name: String::new(),
            },
        ))
        .await
        .expect("the operator creates the account")
        .into_inner();
    let login = client
        .login(pb::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .expect("log in")
        .into_inner();
    SignedUp {
        user: made.user,
        organization: made.organization,
        tokens: login.tokens,
    }
}

/// [`sign_up_with`] on a server started with [`spawn_serve`]; the new
/// session's access token.
pub async fn sign_up_on(channel: &Channel, email: &str) -> String {
    sign_up_with(channel, email)
        .await
        .tokens
        .expect("tokens")
        .access_token
}

/// The token of the newest link in the newest of `mail` whose subject
/// contains `subject`.
fn newest_link_token(mail: &[ReceivedMail], subject: &str) -> Option<String> {
    mail.iter()
        .rev()
        .filter(|m| m.subject.contains(subject))
        .find_map(|m| m.links.iter().rev().find_map(|l| token_from_link(l)))
}

/// An outbox folder for servers started with [`spawn_serve`]: give it to
/// the command ([`Outbox::configure`]) and read the mail they send, as
/// [`TestApp::link_token`] reads an app's.
pub struct Outbox {
    dir: tempfile::TempDir,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    /// A fresh, empty folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("outbox folder"),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Makes `command`'s server write its mail here
    /// (`TWIG__MAIL__OUTBOX_DIR`).
    pub fn configure(&self, command: &mut std::process::Command) {
        command.env("TWIG__MAIL__OUTBOX_DIR", self.path());
    }

    /// The token of the newest link in the newest mail to `address` whose
    /// subject contains `subject`; waits up to 10 s for it.
    pub async fn link_token(&self, address: &str, subject: &str) -> String {
        for _ in 0..100 {
            let mail = wait_for_outbox(self.path(), address, 1).await;
            if let Some(token) = newest_link_token(&mail, subject) {
                return token;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no mail to {address} about {subject:?} with a link in the outbox");
    }
}

/// Makes `email` (an account with [`PASSWORD`]) a member of `org_id` with
/// `role` on the server behind `channel`, whose mail goes to `outbox`:
/// `inviter_token` invites, the invitee signs in and accepts the mailed
/// invitation.
pub async fn add_member_on(
    channel: &Channel,
    outbox: &Outbox,
    inviter_token: &str,
    org_id: &str,
    email: &str,
    role: pb::Role,
) {
    let mut client = SessionServiceClient::new(channel.clone());
    client
        .create_invitation(bearer(
            inviter_token,
            pb::CreateInvitationRequest {
                organization_id: org_id.into(),
                email: email.into(),
                role: role as i32,
            },
        ))
        .await
        .expect("invite");
    let token = outbox.link_token(email, "You are invited").await;
    let invitee = client
        .login(pb::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .expect("the invitee logs in")
        .into_inner()
        .tokens
        .expect("tokens");
    client
        .accept_invitation(bearer(
            &invitee.access_token,
            pb::AcceptInvitationRequest { token },
        ))
        .await
        .expect("accept the invitation");
}

/// Mail to `address` in an outbox folder, waiting up to 10 s for `count`.
async fn wait_for_outbox(dir: &std::path::Path, address: &str, count: usize) -> Vec<ReceivedMail> {
    let mut found = Vec::new();
    for _ in 0..100 {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        found = files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|raw| ReceivedMail::from_eml(&raw))
            .filter(|m| m.to.to_lowercase().contains(&address.to_lowercase()))
            .collect();
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    found
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

/// A port on 127.0.0.1 that nothing listens on now, chosen at random
/// below the system's ephemeral range: every listener that asks the
/// system for a port (port 0: the tests' own servers, the npm peers,
/// clients' outgoing connections) gets one from that range, so none of
/// them can take this port between now and when the test binds it.
pub fn free_addr() -> SocketAddr {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FROM: u16 = 10_000;
    if low > FROM + 1000 {
        for _ in 0..100 {
            let random = u16::from_le_bytes(
                uuid::Uuid::new_v4().as_bytes()[..2]
                    .try_into()
                    .expect("two bytes"),
            );
            let port = FROM + random % (low - FROM);
            if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return listener.local_addr().expect("address");
            }
        }
    }
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
    // The platform operator's client, beside any the test configures.
    let clients = command
        .get_envs()
        .find(|(k, _)| *k == "TWIG__AUTH__INTERNAL_CLIENTS")
        .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()));
    let clients = match clients {
        Some(list) => {
            let open = list.trim_end().trim_end_matches(']').trim_end();
            let comma = if open.ends_with('[') { "" } else { "," };
            format!("{open}{comma}{TEST_OPERATOR_CLIENT}]")
        }
        None => format!("[{TEST_OPERATOR_CLIENT}]"),
    };
    command.env("TWIG__AUTH__INTERNAL_CLIENTS", clients);
    if !command.get_envs().any(|(k, _)| {
        k.to_string_lossy()
            .starts_with("TWIG__SECRETS_VAULT__MASTER_KEYS")
    }) {
        command.env("TWIG__SECRETS_VAULT__MASTER_KEYS__1", TEST_MASTER_KEY);
    }
    let mut child = command.arg("serve").spawn().expect("start twig-identity");
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        // The port was free when chosen, but another test's server may
        // have taken it since: wait until this process listens on it, so
        // the test never talks to someone else's server.
        if listens_on(child.id(), port)
            && let Ok(channel) = Channel::from_shared(endpoint.clone())
                .expect("uri")
                .connect()
                .await
        {
            return (child, channel, ([127, 0, 0, 1], port).into());
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "twig-identity serve exited ({status}) before listening on 127.0.0.1:{port} \
                 (its output says why; a port another process took meanwhile is one reason)"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("twig-identity serve did not listen on 127.0.0.1:{port} within 10 s");
}

/// Does process `pid` hold a socket listening on 127.0.0.1:`port` (or any
/// address)? Read from /proc: the listening sockets of `/proc/net/tcp`
/// against the sockets among the process's open files.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let (_, local_port) = local.split_once(':')?;
            let listening = fields.get(3) == Some(&"0A");
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9).map(|i| format!("socket:[{i}]")))
                .flatten()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
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

/// The SMTP server of the test run: maildev (npm, `tests/node`), started
/// once by `scripts/test`, which exports where it listens. Tests share it
/// and tell their mail apart by recipient ([`email`] makes unique ones).
#[derive(Debug, Clone, Copy)]
pub struct Maildev {
    /// Its SMTP port.
    pub smtp: SocketAddr,
    /// Its web port, with the REST API mail is read back through.
    pub web: SocketAddr,
}

impl Maildev {
    /// Where `scripts/test` started it: `TWIG_TEST_MAILDEV_SMTP` and
    /// `TWIG_TEST_MAILDEV_WEB` (`127.0.0.1:<port>` each).
    ///
    /// # Panics
    /// When they are not set: the mail tests need the peer and are never
    /// skipped.
    pub fn from_env() -> Self {
        let read = |name: &str| -> SocketAddr {
            let value = std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: the mail tests need the maildev SMTP peer. Run them \
                     through scripts/test, which starts it, or start it yourself:\n  \
                     node tests/node/node_modules/maildev/dist/bin/maildev.js --ip 127.0.0.1 \
                     --web-ip 127.0.0.1 --smtp 1025 --web 1080 &\n  \
                     export TWIG_TEST_MAILDEV_SMTP=127.0.0.1:1025 TWIG_TEST_MAILDEV_WEB=127.0.0.1:1080"
                )
            });
            value.parse().unwrap_or_else(|_| {
                panic!("{name}={value:?} is not an address like 127.0.0.1:1025")
            })
        };
        Self {
            smtp: read("TWIG_TEST_MAILDEV_SMTP"),
            web: read("TWIG_TEST_MAILDEV_WEB"),
        }
    }

    /// The messages to `address` now, oldest first.
    pub async fn received(&self, address: &str) -> Vec<ReceivedMail> {
        let mut query = String::new();
        for b in address.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                query.push(char::from(b));
            } else {
                query.push_str(&format!("%{b:02X}"));
            }
        }
        let list = self
            .get_json(&format!("/api/email?to.address={query}&sort=asc"))
            .await;
        let mut mails = Vec::new();
        for item in list.as_array().expect("maildev lists mail as an array") {
            let id = item["id"].as_str().expect("an id");
            let (status, _, source) = http1(
                self.web,
                &format!("GET /api/email/{id}/source HTTP/1.1"),
                b"",
            )
            .await;
            assert!(status.contains(" 200 "), "maildev source of {id}: {status}");
            let mut mail = ReceivedMail::from_eml(&String::from_utf8_lossy(&source));
            // maildev's own reading of the message, when it has one.
            if let Some(text) = item["text"].as_str() {
                mail.text = text.to_string();
            }
            if let Some(html) = item["html"].as_str() {
                mail.html = html.to_string();
            }
            mail.links = links_in(&mail.text, &mail.html);
            mails.push(mail);
        }
        mails
    }

    /// Waits (at most 10 s) until at least `count` messages to `address`
    /// arrived; returns them all.
    pub async fn wait_for(&self, address: &str, count: usize) -> Vec<ReceivedMail> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mails = self.received(address).await;
            if mails.len() >= count {
                return mails;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {count} messages to {address} reached maildev within 10 s",
                mails.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = http1(self.web, &format!("GET {path} HTTP/1.1"), b"").await;
        assert!(
            status.contains(" 200 "),
            "maildev GET {path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).expect("maildev answers JSON")
    }
}

/// A maildev of one test's own, beside the shared one of
/// [`Maildev::from_env`]: for relay settings the shared one does not have
/// (TLS, a login). On free ports of 127.0.0.1, with its mail in a folder
/// of its own; killed when dropped.
pub struct PrivateMaildev {
    /// Where it listens; read its mail back through [`Maildev::received`].
    pub maildev: Maildev,
    child: std::process::Child,
    folder: tempfile::TempDir,
}

impl PrivateMaildev {
    /// `tests/node/…/maildev.js`, installed by `npm ci` in `tests/node`.
    fn script() -> std::path::PathBuf {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("node/node_modules/maildev/dist/bin/maildev.js");
        assert!(
            script.exists(),
            "{} is missing: run `npm ci` in tests/node (scripts/test does)",
            script.display()
        );
        script
    }

    /// Starts maildev with `options` besides the addresses, ports and
    /// folder (e.g. `--incoming-secure`, `--incoming-user`), and waits (at
    /// most 10 s) until its SMTP port accepts connections and its API
    /// answers. Tries other ports if the free ones it picked were taken
    /// meanwhile.
    pub async fn start<I, S>(options: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let options: Vec<std::ffi::OsString> = options
            .into_iter()
            .map(|o| o.as_ref().to_os_string())
            .collect();
        let script = Self::script();
        let mut last_log = String::new();
        for _ in 0..3 {
            let folder = tempfile::tempdir().expect("maildev folder");
            let log = std::fs::File::create(folder.path().join("maildev.log")).expect("log file");
            let (smtp, web) = (free_addr(), free_addr());
            let mut child = std::process::Command::new("node")
                .arg(&script)
                .args(["--ip", "127.0.0.1", "--web-ip", "127.0.0.1"])
                .arg("--smtp")
                .arg(smtp.port().to_string())
                .arg("--web")
                .arg(web.port().to_string())
                .arg("--mail-directory")
                .arg(folder.path().join("mail"))
                .args(&options)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("run node (tests/node needs it)");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let started = loop {
                if child.try_wait().expect("maildev status").is_some() {
                    break false;
                }
                if tokio::net::TcpStream::connect(smtp).await.is_ok()
                    && tokio::net::TcpStream::connect(web).await.is_ok()
                {
                    break true;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            if started {
                let relay = Self {
                    maildev: Maildev { smtp, web },
                    child,
                    folder,
                };
                let (status, _, _) = http1(web, "GET /api/healthz HTTP/1.1", b"").await;
                assert!(status.contains(" 200 "), "maildev healthz: {status}");
                return relay;
            }
            last_log =
                std::fs::read_to_string(folder.path().join("maildev.log")).unwrap_or_default();
        }
        panic!("maildev {options:?} did not start: {last_log}");
    }

    /// What maildev wrote so far (nothing with `--silent`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.folder.path().join("maildev.log")).unwrap_or_default()
    }
}

impl Drop for PrivateMaildev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate authority of a test's own and a server certificate it
/// signed, as PEM files in a folder of their own (removed when dropped):
/// for a TLS peer no system trusts.
pub struct TestCertificates {
    /// The CA's certificate.
    pub ca: std::path::PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: std::path::PathBuf,
    /// The server's private key.
    pub key: std::path::PathBuf,
    folder: tempfile::TempDir,
}

impl TestCertificates {
    /// A new CA, and a certificate it signed for `names` (host names or
    /// IP addresses).
    pub fn new(names: &[&str]) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "twig tests private CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut server = CertificateParams::new(names.clone()).expect("server parameters");
        server.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        server.use_authority_key_identifier_extension = true;
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .expect("server certificate");

        let folder = tempfile::tempdir().expect("certificate folder");
        let write = |name: &str, pem: String| {
            let path = folder.path().join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("server.pem", server_cert.pem()),
            key: write("server-key.pem", server_key.serialize_pem()),
            folder,
        }
    }

    /// The folder of the files, for others beside them.
    pub fn folder(&self) -> &std::path::Path {
        self.folder.path()
    }
}

/// A message as received: from maildev ([`TestApp::mail_to`]) or from an
/// `.eml` file of the outbox folder ([`ReceivedMail::from_eml`]).
#[derive(Debug, Clone, Default)]
pub struct ReceivedMail {
    /// `Subject` (RFC 2047 words decoded).
    pub subject: String,
    /// `From`, as written.
    pub from: String,
    /// `To`, as written.
    pub to: String,
    /// Every header, names lower-cased, continuation lines unfolded.
    pub headers: Vec<(String, String)>,
    /// The `text/plain` part, decoded.
    pub text: String,
    /// The `text/html` part, decoded.
    pub html: String,
    /// Every `http(s)://` link in the text part and every `href` of the
    /// HTML part, once each, in order.
    pub links: Vec<String>,
    /// The message as it arrived.
    pub source: String,
}

impl ReceivedMail {
    /// Reads an RFC 5322 message with a `multipart/alternative` (or a
    /// single `text/*`) body: headers, and each part decoded from its
    /// transfer encoding (7bit, 8bit, quoted-printable, base64).
    pub fn from_eml(raw: &str) -> Self {
        let raw_crlf = raw.replace("\r\n", "\n");
        let (head, body) = raw_crlf
            .split_once("\n\n")
            .expect("headers, a blank line, a body");
        let headers = parse_headers(head);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut mail = ReceivedMail {
            subject: decode_words(&header("subject")),
            from: header("from"),
            to: header("to"),
            source: raw.to_string(),
            ..Default::default()
        };
        let content_type = header("content-type");
        let parts: Vec<(Vec<(String, String)>, String)> =
            match content_type.split("boundary=").nth(1) {
                Some(boundary) => {
                    let boundary = boundary
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim_matches('"');
                    body.split(&format!("--{boundary}"))
                        .skip(1)
                        .take_while(|part| !part.starts_with("--"))
                        .filter_map(|part| {
                            let part = part.strip_prefix('\n').unwrap_or(part);
                            let (head, body) = part.split_once("\n\n")?;
                            Some((parse_headers(head), body.to_string()))
                        })
                        .collect()
                }
                None => vec![(headers.clone(), body.to_string())],
            };
        for (part_headers, part_body) in parts {
            let get = |name: &str| {
                part_headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.to_ascii_lowercase())
                    .unwrap_or_default()
            };
            let decoded = decode_body(&get("content-transfer-encoding"), &part_body);
            let kind = get("content-type");
            if kind.starts_with("text/plain") {
                mail.text = decoded;
            } else if kind.starts_with("text/html") {
                mail.html = decoded;
            }
        }
        mail.links = links_in(&mail.text, &mail.html);
        mail.headers = headers;
        mail
    }

    /// The header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The `token` query parameter of `link`, percent-decoded.
pub fn token_from_link(link: &str) -> Option<String> {
    let query = link.split_once('?')?.1.split('#').next()?;
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Unfolded headers, names lower-cased.
fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    headers
}

/// A part's body from its transfer encoding.
fn decode_body(encoding: &str, body: &str) -> String {
    let bytes = match encoding.trim() {
        "base64" => {
            use base64::Engine as _;
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("a base64 body")
        }
        "quoted-printable" => {
            let mut out = Vec::new();
            let body = body.replace("=\n", "");
            let bytes = body.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'=' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                    out.push(u8::from_str_radix(hex, 16).expect("=XX in quoted-printable"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            out
        }
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8(bytes)
        .expect("a UTF-8 body")
        .replace("\r\n", "\n")
        .trim_end_matches('\n')
        .to_string()
        + "\n"
}

/// A header value with RFC 2047 encoded words (`=?utf-8?b?…?=`,
/// `=?utf-8?q?…?=`) decoded.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let before = &rest[..start];
        if !(last_was_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        let word = &rest[start + 2..];
        let mut fields = word.splitn(3, '?');
        let (Some(_charset), Some(encoding), Some(tail)) =
            (fields.next(), fields.next(), fields.next())
        else {
            out.push_str(&rest[start..]);
            return out;
        };
        let Some(end) = tail.find("?=") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let text = &tail[..end];
        let bytes = if encoding.eq_ignore_ascii_case("b") {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("a base64 encoded word")
        } else {
            let mut out = Vec::new();
            let bytes = text.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'_' => out.push(b' '),
                    b'=' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                        out.push(u8::from_str_radix(hex, 16).expect("=XX"));
                        i += 2;
                    }
                    b => out.push(b),
                }
                i += 1;
            }
            out
        };
        out.push_str(&String::from_utf8_lossy(&bytes));
        last_was_word = true;
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Links in a text part and `href`s of an HTML part, once each.
fn links_in(text: &str, html: &str) -> Vec<String> {
    let mut links: Vec<String> = Vec::new();
    let mut add = |link: String| {
        if !link.is_empty() && !links.contains(&link) {
            links.push(link);
        }
    };
    for word in text.split(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"') {
        if word.starts_with("https://") || word.starts_with("http://") {
            add(word.to_string());
        }
    }
    let mut rest = html;
    while let Some(start) = rest.find("href=\"") {
        rest = &rest[start + 6..];
        let Some(end) = rest.find('"') else { break };
        add(rest[..end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"));
        rest = &rest[end..];
    }
    links
}

/// The Prometheus page of this test process's metrics: the recorder is
/// installed at the first call (metrics recorded before it are not
/// counted; call it before starting the app). Each test runs in its own
/// process under nextest.
pub fn metrics_page() -> String {
    static RECORDER: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    RECORDER
        .get_or_init(|| twig_server::install_recorder().expect("install the metrics recorder"))
        .render()
}

/// The value of the series `series` (name and labels, exactly as the page
/// writes them) on a metrics page, 0 when absent.
pub fn metric_value(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}
