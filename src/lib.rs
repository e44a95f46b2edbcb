//! twig-identity as one program: the one list of service modules, and
//! the composition of the suite from it.
//!
//! A service joins the suite with one line in [`MODULES`]; everything else
//! it needs (routes, workers, configuration, migrations, the ports it
//! offers and uses) comes from its own crate's [`Module`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Channel;
use twig_auth::AuthLayer;
use twig_config::{Config, Owners};
use twig_module::{Assembly, CredentialCheck, Module};
use twig_quota::RequestCounting;

pub use twig_module::Deps;

/// Every service this binary can run, in build order.
pub static MODULES: &[&dyn Module] = &[
    &twig_sessions::MODULE,
    &twig_api_keys::MODULE,
    &twig_quota::MODULE,
    &twig_secrets_vault::MODULE,
    &twig_sso_federation::MODULE,
    &twig_edge::MODULE,
];

/// The module named `name` (as given to `--services`).
pub fn module(name: &str) -> Result<&'static dyn Module, String> {
    MODULES
        .iter()
        .copied()
        .find(|m| m.name() == name.trim())
        .ok_or_else(|| {
            format!(
                "unknown service {name:?}; known: {}",
                MODULES
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Parses `a,b,c`; empty means every service.
pub fn parse_services(list: Option<&str>) -> Result<Vec<&'static dyn Module>, String> {
    let Some(list) = list else {
        return Ok(MODULES.to_vec());
    };
    let mut out: Vec<&'static dyn Module> = Vec::new();
    for name in list.split(',').filter(|s| !s.trim().is_empty()) {
        let module = module(name)?;
        if !out.iter().any(|m| m.name() == module.name()) {
            out.push(module);
        }
    }
    if out.is_empty() {
        return Err("--services needs at least one service".into());
    }
    Ok(out)
}

/// What the services own in the configuration: their sections, `remote`
/// keys and internal scopes.
pub fn owners() -> Owners {
    let mut owners = Owners::default();
    for module in MODULES {
        owners.service(module.name());
        module.owns(&mut owners);
    }
    owners
}

/// Reads and checks the configuration (defaults, `file`, environment).
pub fn load_config(file: Option<&std::path::Path>) -> Result<Config, twig_config::ConfigError> {
    Config::load(file, &owners())
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
pub async fn migrate(db: &DatabaseConnection, services: &[&dyn Module]) -> anyhow::Result<()> {
    twig_db::migrate::<twig_audit::Migrator>(db)
        .await
        .context("migrating the audit log")?;
    for module in services {
        module
            .migrate(db)
            .await
            .with_context(|| format!("migrating {}", module.name()))?;
    }
    Ok(())
}

/// The built suite, ready to serve.
pub struct Suite {
    routes: Routes,
    auth: AuthLayer,
    names: Vec<&'static str>,
    cors_origins: Vec<String>,
    limits: twig_server::Limits,
    http_routes: Option<axum::Router>,
    browser_prefixes: Vec<String>,
    workers: twig_server::Workers,
    handles: twig_module::Ports,
}

impl Suite {
    /// A service's own object, when it runs here (e.g.
    /// `Arc<twig_sessions::Sessions>`).
    pub fn handle<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.handles
            .all::<twig_module::Handle<T>>()
            .pop()
            .map(|h| h.0)
    }
}

/// Builds `services` on `db`. Migrations must have run.
pub async fn build(
    config: &Config,
    db: DatabaseConnection,
    services: &[&'static dyn Module],
    deps: Deps,
) -> anyhow::Result<Suite> {
    build_known(config, db, services, MODULES, deps).await
}

/// [`build`], with `known` as every module that may run elsewhere (the
/// binary's is [`MODULES`]; tests add modules of their own): a known
/// module that does not run here is reached at its `remote` address.
pub async fn build_known(
    config: &Config,
    db: DatabaseConnection,
    services: &[&'static dyn Module],
    known: &[&'static dyn Module],
    deps: Deps,
) -> anyhow::Result<Suite> {
    let fanout = match &config.redis.url {
        Some(url) => twig_fanout::Fanout::redis(url.expose(), &config.redis.key_prefix)
            .await
            .context("connecting to Redis (redis.url)")?,
        None => twig_fanout::Fanout::local(),
    };
    // One mailer for every service here; its worker delivers the queue.
    let mailer = twig_mail::Mailer::start(config, deps.clock.clone())
        .context("setting up outbound mail ([mail])")?;
    // Read once; the auth layer and the edge's Authorize decide with it.
    let policy = Arc::new(twig_auth::AccessPolicy::of_twig_apis()?);
    let mut cx = twig_module::Context::new(
        config.clone(),
        db.clone(),
        deps,
        fanout,
        mailer.clone(),
        policy.clone(),
    );
    cx.expose(mailer.clone());
    // At shutdown, after the requests that may send mail have drained,
    // the queue is delivered within what is left of the drain time.
    let budget = mail_drain_budget(config.server.drain_timeout);
    cx.workers()
        .periodic("mail queue", MAIL_WORKER_PERIOD, move |run| {
            let mailer = mailer.clone();
            async move {
                if run == twig_server::Run::Last {
                    mailer.drain(budget).await;
                }
            }
        });
    // The audit log is shared by every service; its query service runs
    // wherever any service does.
    cx.serve(
        twig_proto::audit::v1::audit_service_server::AuditServiceServer::new(
            twig_audit::AuditGrpc::new(db.clone(), cx.clock()),
        )
        .max_decoding_message_size(config.server.max_message_bytes),
    );
    for module in services {
        cx.build(*module)
            .await
            .with_context(|| format!("building {}", module.name()))?;
    }
    // A service that does not run here is reached at its remote address,
    // if it has one.
    let credential = remote_credential(&config.remote)?;
    for module in known {
        if services.iter().any(|m| m.name() == module.name()) {
            continue;
        }
        if let Some((address, channel)) = remote_channel(&config.remote, module.name())? {
            cx.remote(*module, address, channel, credential.clone())
                .with_context(|| format!("reaching {} at its remote address", module.name()))?;
        }
    }
    // Every request's authentication and count, in this process or not.
    let credentials = twig_edge::CredentialRouter::new(cx.need_all::<CredentialCheck>());
    let counting = cx.need::<RequestCounting>();
    let Assembly {
        routes,
        names,
        workers,
        handles,
        http_routes,
        browser_routes,
        ..
    } = cx.assemble()?;
    let auth = AuthLayer::new(
        Arc::new(credentials),
        &config.auth,
        config.server.trusted_proxies.clone(),
        policy,
        counting.get().map(|RequestCounting(counter)| {
            Arc::new(twig_quota::PerRequest(counter.clone())) as Arc<dyn twig_auth::RequestQuota>
        }),
    );
    let routes = routes.prepare();
    let mut http = None;
    for build in http_routes {
        let router = build(tower::Layer::layer(&auth, routes.clone()))?;
        http = Some(match http {
            None => router,
            Some(all) => axum::Router::merge(all, router),
        });
    }
    // Browser routes: beside the HTTP/JSON routes, outside the auth layer.
    let trust = twig_web::EdgeTrust::from_config(config);
    let (browser_prefixes, http) = match twig_web::mount(browser_routes, &trust) {
        None => (Vec::new(), http),
        Some(browser) => (
            browser.prefixes,
            Some(match http {
                None => browser.router,
                Some(all) => all.merge(browser.router),
            }),
        ),
    };
    Ok(Suite {
        routes,
        auth,
        names,
        cors_origins: config.server.cors_origins.clone(),
        http_routes: http,
        browser_prefixes,
        limits: twig_server::Limits::from_config(&config.server),
        workers,
        handles,
    })
}

/// The mail worker's registration runs only at shutdown (the delivery
/// task itself is the mailer's); its periodic run does nothing.
const MAIL_WORKER_PERIOD: Duration = Duration::from_secs(3600);

/// How long the mail queue may take to drain at shutdown: the drain time,
/// less a margin so the worker finishes before the workers' deadline
/// (which would abort it with a warning).
fn mail_drain_budget(drain_timeout: Duration) -> Duration {
    drain_timeout.saturating_sub((drain_timeout / 10).min(Duration::from_millis(500)))
}

/// What this process presents to services in other processes (their
/// `auth.edge_token`).
fn remote_credential(
    config: &twig_config::RemoteConfig,
) -> anyhow::Result<twig_auth::ServiceCredential> {
    // Used only with an address, and validation requires the token
    // whenever one is set.
    let placeholder = twig_config::Secret::new("-");
    let token = config.token.as_ref().unwrap_or(&placeholder);
    twig_auth::ServiceCredential::new(token).context("remote.token must be printable ASCII")
}

/// The service's remote address, if it has one, and a lazy channel
/// (connected on first use, reconnected after a failure) to it.
fn remote_channel(
    config: &twig_config::RemoteConfig,
    service: &str,
) -> anyhow::Result<Option<(http::Uri, Channel)>> {
    let Some(url) = config.address(service) else {
        return Ok(None);
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("remote address of {service} ({url})"))?
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(Some((endpoint.uri().clone(), endpoint.connect_lazy())))
}

/// Serves `suite` on `listener` until `shutdown`, then drains: requests
/// in flight for at most `drain_timeout`, then the background workers for
/// at most as long again.
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
            cors_origins: suite.cors_origins,
            limits: suite.limits,
            http_routes: suite.http_routes,
            browser_prefixes: suite.browser_prefixes,
        },
        shutdown,
    )
    .await;
    // Periodic writers finish their run and write what they still hold.
    suite.workers.stop(drain_timeout).await;
    Ok(result?)
}
