//! twig-identity as one program: the composition point where every
//! service is built and put behind one port.
//!
//! A service joins the suite by adding a [`ServiceId`] variant and one arm
//! in [`build`] (and its migrator in [`migrate`]); nothing else changes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use twig_auth::AuthLayer;
use twig_config::Config;
use twig_crypto::PasswordHasher;
use twig_sessions::{Clock, Sessions, SystemClock};

/// A service this binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceId {
    /// `twig.sessions.v1.SessionService`.
    Sessions,
}

impl ServiceId {
    /// Every service, in start order.
    pub const ALL: &'static [ServiceId] = &[ServiceId::Sessions];

    /// Parses a name given to `--services`.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim() {
            "sessions" => Ok(Self::Sessions),
            other => Err(format!(
                "unknown service {other:?}; known: {}",
                Self::ALL
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sessions => "sessions",
        }
    }
}

/// Parses `a,b,c`; empty means every service.
pub fn parse_services(list: Option<&str>) -> Result<Vec<ServiceId>, String> {
    match list {
        None => Ok(ServiceId::ALL.to_vec()),
        Some(list) => {
            let mut out = Vec::new();
            for name in list.split(',').filter(|s| !s.trim().is_empty()) {
                let id = ServiceId::parse(name)?;
                if !out.contains(&id) {
                    out.push(id);
                }
            }
            if out.is_empty() {
                return Err("--services needs at least one service".into());
            }
            Ok(out)
        }
    }
}

/// What the outside world provides: time and password hashing (tests use
/// a manual clock).
#[derive(Clone)]
pub struct Deps {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The password hasher.
    pub hasher: PasswordHasher,
}

impl Default for Deps {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            hasher: PasswordHasher::owasp(),
        }
    }
}

/// Opens the configured database.
pub async fn open_database(config: &Config) -> anyhow::Result<DatabaseConnection> {
    Ok(twig_db::connect(
        config.database.url.expose(),
        config.database.max_connections,
    )
    .await?)
}

/// Applies the migrations of the audit log and of `services`.
pub async fn migrate(db: &DatabaseConnection, services: &[ServiceId]) -> anyhow::Result<()> {
    twig_db::migrate::<twig_audit::Migrator>(db)
        .await
        .context("migrating the audit log")?;
    for service in services {
        match service {
            ServiceId::Sessions => twig_db::migrate::<twig_sessions::Migrator>(db)
                .await
                .context("migrating sessions")?,
        }
    }
    Ok(())
}

/// The built suite, ready to serve.
pub struct Suite {
    routes: Routes,
    auth: AuthLayer,
    names: Vec<&'static str>,
    /// The sessions service, when it runs here.
    pub sessions: Option<Arc<Sessions>>,
    background: Vec<JoinHandle<()>>,
}

/// Builds `services` on `db`. Migrations must have run.
pub fn build(config: &Config, db: DatabaseConnection, services: &[ServiceId], deps: Deps) -> Suite {
    let mut routes = Routes::default();
    let mut names = Vec::new();
    let mut background = Vec::new();
    let mut sessions = None;
    for service in services {
        match service {
            ServiceId::Sessions => {
                let svc = Arc::new(Sessions::new(
                    db.clone(),
                    config.sessions.clone(),
                    deps.hasher.clone(),
                    deps.clock.clone(),
                ));
                routes = routes.add_service(
                    twig_proto::sessions::v1::session_service_server::SessionServiceServer::new(
                        twig_sessions::grpc::SessionsGrpc::new(svc.clone()),
                    ),
                );
                names.push(twig_sessions::SERVICE_NAME);
                background.push(tokio::spawn(flush_last_seen(svc.clone())));
                sessions = Some(svc);
            }
        }
    }
    let authenticator: Arc<dyn twig_auth::Authenticator> = match &sessions {
        Some(s) => Arc::new(twig_sessions::SessionAuthenticator(s.clone())),
        None => Arc::new(NoAuthenticator),
    };
    Suite {
        routes,
        auth: AuthLayer::new(authenticator, config.auth.internal_token.as_ref()),
        names,
        sessions,
        background,
    }
}

/// Serves `suite` on `listener` until `shutdown`, then drains.
pub async fn run(
    listener: TcpListener,
    suite: Suite,
    drain_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let result = twig_server::serve(
        listener,
        twig_server::ServeOptions {
            routes: suite.routes,
            auth: suite.auth,
            service_names: suite.names,
            drain_timeout,
        },
        shutdown,
    )
    .await;
    for task in &suite.background {
        task.abort();
    }
    if let Some(s) = &suite.sessions
        && let Err(e) = s.flush_last_seen().await
    {
        tracing::warn!(error = %e, "could not write last-seen times at shutdown");
    }
    result
}

async fn flush_last_seen(sessions: Arc<Sessions>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        if let Err(e) = sessions.flush_last_seen().await {
            tracing::warn!(error = %e, "could not write last-seen times; will retry");
        }
    }
}

/// Used when no service that verifies bearer tokens runs in this process.
struct NoAuthenticator;

impl twig_auth::Authenticator for NoAuthenticator {
    fn authenticate<'a>(&'a self, _bearer: &'a str) -> twig_auth::principal::AuthFuture<'a> {
        Box::pin(async {
            Err(twig_errors::ApiError::unauthenticated(
                "no service in this process verifies bearer tokens",
            ))
        })
    }
}
