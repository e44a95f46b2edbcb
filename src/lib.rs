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
use tonic::service::Routes;
use tonic::transport::Channel;
use twig_apikeys::ApiKeys;
use twig_auth::AuthLayer;
use twig_config::Config;
use twig_crypto::PasswordHasher;
use twig_sessions::{Clock, Sessions, SystemClock};

/// A service this binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceId {
    /// `twig.sessions.v1.SessionService`.
    Sessions,
    /// `twig.apikeys.v1.ApiKeyService`.
    ApiKeys,
    /// `twig.quota.v1.QuotaService`.
    Quota,
    /// `twig.vault.v1.VaultService`.
    Vault,
    /// `twig.edge.v1.AuthorizeService`.
    Edge,
}

impl ServiceId {
    /// Every service, in start order.
    pub const ALL: &'static [ServiceId] = &[
        ServiceId::Sessions,
        ServiceId::ApiKeys,
        ServiceId::Quota,
        ServiceId::Vault,
        ServiceId::Edge,
    ];

    /// Parses a name given to `--services`.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim() {
            "sessions" => Ok(Self::Sessions),
            "api-keys" => Ok(Self::ApiKeys),
            "quota" => Ok(Self::Quota),
            "secrets-vault" => Ok(Self::Vault),
            "edge" => Ok(Self::Edge),
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
            Self::ApiKeys => "api-keys",
            Self::Quota => "quota",
            Self::Vault => "secrets-vault",
            Self::Edge => "edge",
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
            ServiceId::ApiKeys => twig_db::migrate::<twig_apikeys::Migrator>(db)
                .await
                .context("migrating api-keys")?,
            ServiceId::Quota => twig_db::migrate::<twig_quota::Migrator>(db)
                .await
                .context("migrating quota")?,
            ServiceId::Vault => twig_db::migrate::<twig_vault::Migrator>(db)
                .await
                .context("migrating the vault")?,
            // The edge keeps no tables.
            ServiceId::Edge => {}
        }
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
    /// The sessions service, when it runs here.
    pub sessions: Option<Arc<Sessions>>,
    /// The api-keys service, when it runs here.
    pub api_keys: Option<Arc<ApiKeys>>,
    /// The quota service, when it runs here.
    pub quota: Option<Arc<twig_quota::Quota>>,
    /// The vault, when it runs here.
    pub vault: Option<Arc<twig_vault::Vault>>,
    workers: twig_server::Workers,
}

/// Builds `services` on `db`. Migrations must have run.
pub async fn build(
    config: &Config,
    db: DatabaseConnection,
    services: &[ServiceId],
    deps: Deps,
) -> anyhow::Result<Suite> {
    let fanout = match &config.redis.url {
        Some(url) => twig_fanout::Fanout::redis(url.expose(), &config.redis.key_prefix)
            .await
            .context("connecting to Redis (redis.url)")?,
        None => twig_fanout::Fanout::local(),
    };
    // Larger requests are refused (OUT_OF_RANGE) before decoding.
    let max_message = config.server.max_message_bytes;
    // The audit log is shared by every service; its query service runs
    // wherever any service does.
    let mut routes = Routes::default().add_service(
        twig_proto::audit::v1::audit_service_server::AuditServiceServer::new(
            twig_audit::AuditGrpc::new(db.clone()),
        )
        .max_decoding_message_size(max_message),
    );
    let mut names = vec![twig_audit::SERVICE_NAME];
    let mut workers = twig_server::Workers::new();
    let mut sessions = None;
    let mut api_keys = None;
    let mut vault = None;
    for service in services {
        match service {
            ServiceId::Sessions => {
                let svc = Arc::new(Sessions::new(
                    db.clone(),
                    config.sessions.clone(),
                    deps.hasher.clone(),
                    deps.clock.clone(),
                    fanout.clone(),
                ));
                workers.listen("ended sessions", svc.clone().listen_for_ended_sessions());
                routes = routes.add_service(
                    twig_proto::sessions::v1::session_service_server::SessionServiceServer::new(
                        twig_sessions::grpc::SessionsGrpc::new(svc.clone()),
                    )
                    .max_decoding_message_size(max_message),
                );
                names.push(twig_sessions::SERVICE_NAME);
                let last_seen = svc.clone();
                workers.periodic("last-seen times", LAST_SEEN_PERIOD, move |_| {
                    let sessions = last_seen.clone();
                    async move {
                        if let Err(e) = sessions.flush_last_seen().await {
                            tracing::warn!(error = %e, "could not write last-seen times; will retry");
                        }
                    }
                });
                sessions = Some(svc);
            }
            ServiceId::ApiKeys => {
                let svc = Arc::new(ApiKeys::new(
                    db.clone(),
                    config.api_keys.clone(),
                    deps.clock.clone(),
                    fanout.clone(),
                ));
                workers.listen("api-key changes", svc.clone().listen_for_changes());
                routes = routes.add_service(
                    twig_proto::apikeys::v1::api_key_service_server::ApiKeyServiceServer::new(
                        twig_apikeys::grpc::ApiKeysGrpc::new(svc.clone()),
                    )
                    .max_decoding_message_size(max_message),
                );
                names.push(twig_apikeys::SERVICE_NAME);
                let usage = svc.clone();
                workers.periodic("api-key usage", API_KEY_USAGE_PERIOD, move |run| {
                    let keys = usage.clone();
                    async move {
                        // Periods still open are written only at the end.
                        let written = match run {
                            twig_server::Run::Tick => keys.flush_ended().await,
                            twig_server::Run::Last => keys.flush().await,
                        };
                        if let Err(e) = written {
                            tracing::warn!(error = %e, "could not write api-key usage; will retry");
                        }
                    }
                });
                api_keys = Some(svc);
            }
            // Built last: it asks api-keys (when here) who owns a key.
            ServiceId::Quota => {}
            // Built last: it decides with every credential service here.
            ServiceId::Edge => {}
            ServiceId::Vault => {
                let keys =
                    twig_vault::keyring_config::load(&config.vault, config.database.url.expose())?;
                let svc = Arc::new(
                    twig_vault::Vault::open(
                        db.clone(),
                        Arc::new(keys),
                        deps.clock.clone(),
                        config.vault.rewrap_batch,
                    )
                    .await?,
                );
                workers.listen("vault re-wrap", svc.clone().resume_rewrap());
                routes = routes.add_service(
                    twig_proto::vault::v1::vault_service_server::VaultServiceServer::new(
                        twig_vault::grpc::VaultGrpc::new(svc.clone()),
                    )
                    .max_decoding_message_size(max_message),
                );
                names.push(twig_vault::SERVICE_NAME);
                vault = Some(svc);
            }
        }
    }
    let remote = Remote::connect(&config.remote, services)?;
    let remote_keys = remote
        .api_keys
        .clone()
        .map(|channel| twig_apikeys::remote::RemoteKeys::new(channel, remote.credential.clone()));
    let quota = if services.contains(&ServiceId::Quota) {
        let owners: Option<Arc<dyn twig_quota::KeyOwnership>> = match (&api_keys, &remote_keys) {
            (Some(local), _) => Some(Arc::new(KeysOfOrg(local.clone()))),
            (None, Some(remote)) => Some(Arc::new(RemoteKeysOfOrg(remote.clone()))),
            (None, None) => None,
        };
        let svc = Arc::new(build_quota(config, &db, &fanout, &deps, owners).await?);
        workers.listen("quota limit changes", svc.limits().listen_for_changes());
        let usage = svc.clone();
        workers.periodic("quota usage", QUOTA_USAGE_PERIOD, move |run| {
            let quota = usage.clone();
            async move {
                if run == twig_server::Run::Tick {
                    quota.sweep();
                }
                if let Err(e) = quota.flush().await {
                    tracing::warn!(error = %e, "could not write quota usage; will retry");
                }
            }
        });
        routes = routes.add_service(
            twig_proto::quota::v1::quota_service_server::QuotaServiceServer::new(
                twig_quota::grpc::QuotaGrpc::new(svc.clone()),
            )
            .max_decoding_message_size(max_message),
        );
        names.push(twig_quota::SERVICE_NAME);
        Some(svc)
    } else {
        None
    };
    // Each credential, and each request's count, goes to the service in
    // this process or else to its configured address (answers kept for a
    // moment, dropped on the services' announcements).
    let mut caches = Vec::new();
    let mut cached =
        |remote: Arc<dyn twig_auth::Authenticator>| -> Arc<dyn twig_auth::Authenticator> {
            if config.remote.verify_cache_ttl.is_zero() {
                return remote;
            }
            let cache = Arc::new(twig_auth::VerifyCache::new(
                remote,
                config.remote.verify_cache_ttl,
                fanout.freshness(),
                deps.clock.clone(),
            ));
            caches.push(cache.clone());
            cache
        };
    let credentials = twig_edge::CredentialRouter {
        sessions: match (&sessions, &remote.sessions) {
            (Some(local), _) => Some(Arc::new(twig_sessions::SessionAuthenticator(local.clone()))
                as Arc<dyn twig_auth::Authenticator>),
            (None, Some(channel)) => Some(cached(Arc::new(
                twig_sessions::remote::RemoteSessionAuthenticator::new(
                    channel.clone(),
                    remote.credential.clone(),
                ),
            ))),
            (None, None) => None,
        },
        api_keys: match (&api_keys, &remote_keys) {
            (Some(local), _) => Some(Arc::new(twig_apikeys::KeyAuthenticator(local.clone()))
                as Arc<dyn twig_auth::Authenticator>),
            (None, Some(remote)) => Some(cached(Arc::new(remote.clone()))),
            (None, None) => None,
        },
    };
    if !caches.is_empty() {
        workers.listen(
            "stale answers",
            forget_stale_answers(fanout.clone(), caches),
        );
    }
    let counter: Option<Arc<dyn twig_quota::RequestCounter>> = match (&quota, &remote.quota) {
        (Some(local), _) => Some(local.clone()),
        (None, Some(channel)) => Some(Arc::new(twig_quota::remote::RemoteQuota::new(
            channel.clone(),
            remote.credential.clone(),
        ))),
        (None, None) => None,
    };
    let policy = Arc::new(twig_auth::AccessPolicy::of_twig_apis()?);
    if services.contains(&ServiceId::Edge) {
        let authorizer =
            twig_edge::Authorizer::new(credentials.clone(), counter.clone(), policy.clone());
        routes = routes.add_service(
            twig_proto::edge::v1::authorize_service_server::AuthorizeServiceServer::new(
                twig_edge::grpc::AuthorizeGrpc::new(authorizer),
            )
            .max_decoding_message_size(max_message),
        );
        names.push(twig_edge::SERVICE_NAME);
        // The edge is the front door: calls to a service in another
        // process go on there, after the same decision as local ones.
        for (name, channel) in remote.forwarded() {
            let forward = twig_edge::Forward::new(name, channel, remote.credential.clone());
            let router = routes.axum_router_mut();
            *router = std::mem::take(router).route_service(&format!("/{name}/{{*rest}}"), forward);
        }
    }
    let auth = AuthLayer::new(
        Arc::new(credentials),
        &config.auth,
        config.server.trusted_proxies.clone(),
        policy,
        counter.map(|c| Arc::new(twig_quota::PerRequest(c)) as Arc<dyn twig_auth::RequestQuota>),
    );
    let routes = routes.prepare();
    // The HTTP/JSON routes call the gRPC routes through the same auth
    // layer, so both surfaces get one and the same decision.
    let http_routes = if services.contains(&ServiceId::Edge) {
        let grpc = tower::Layer::layer(&auth, routes.clone());
        Some(twig_edge::json::router(
            twig_proto::FILE_DESCRIPTOR_SET,
            grpc,
        )?)
    } else {
        None
    };
    Ok(Suite {
        routes,
        auth,
        names,
        cors_origins: config.server.cors_origins.clone(),
        http_routes,
        limits: twig_server::Limits::from_config(&config.server),
        sessions,
        api_keys,
        quota,
        vault,
        workers,
    })
}

/// The quota service as configured: its store, default rule and policy.
async fn build_quota(
    config: &Config,
    db: &DatabaseConnection,
    fanout: &twig_fanout::Fanout,
    deps: &Deps,
    key_owners: Option<Arc<dyn twig_quota::KeyOwnership>>,
) -> anyhow::Result<twig_quota::Quota> {
    use twig_config::{OnStoreError, QuotaStore};
    let q = &config.quota;
    let limit = twig_quota::Limit::new(q.default_limit, q.period, q.buckets)
        .context("invalid quota configuration (quota.default_limit, period, buckets)")?;
    let store = match q.store {
        QuotaStore::Memory => twig_quota::Store::Memory(twig_quota::MemoryStore::new()),
        QuotaStore::Redis => {
            let url = config
                .redis
                .url
                .as_ref()
                .context("quota.store = redis needs redis.url")?;
            twig_quota::Store::Redis(
                twig_quota::RedisStore::connect(
                    url.expose(),
                    &config.redis.key_prefix,
                    q.redis_timeout,
                )
                .await
                .context("connecting the quota store to Redis (redis.url)")?,
            )
        }
    };
    let limits = Arc::new(twig_quota::Limits::new(
        twig_quota::Rule {
            limit,
            shadow: q.shadow,
        },
        db.clone(),
        fanout.clone(),
    ));
    let policy = match q.on_store_error {
        OnStoreError::Open => twig_quota::StorePolicy::Open,
        OnStoreError::Closed => twig_quota::StorePolicy::Closed,
    };
    let quota = twig_quota::Quota::new(
        store,
        limits,
        twig_quota::Usage::new(db.clone()),
        policy,
        deps.clock.clone(),
    );
    Ok(match key_owners {
        Some(owners) => quota.with_key_ownership(owners),
        None => quota,
    })
}

/// Answers the quota service's "is this key the caller's?" from the
/// api-keys service in this process.
struct KeysOfOrg(Arc<ApiKeys>);

impl twig_quota::KeyOwnership for KeysOfOrg {
    fn owns_key<'a>(
        &'a self,
        principal: &'a twig_auth::Principal,
        key_id: uuid::Uuid,
    ) -> futures::future::BoxFuture<'a, Result<bool, twig_errors::ApiError>> {
        Box::pin(async move {
            match self.0.get(principal, key_id).await {
                Ok(_) => Ok(true),
                Err(twig_apikeys::error::KeyError::NotFound) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// The same, from the api-keys service in another process.
struct RemoteKeysOfOrg(twig_apikeys::remote::RemoteKeys);

impl twig_quota::KeyOwnership for RemoteKeysOfOrg {
    fn owns_key<'a>(
        &'a self,
        principal: &'a twig_auth::Principal,
        key_id: uuid::Uuid,
    ) -> futures::future::BoxFuture<'a, Result<bool, twig_errors::ApiError>> {
        Box::pin(self.0.owns_key(principal, key_id))
    }
}

/// Channels to the services that run in other processes
/// (`remote.*`), for those not running here.
struct Remote {
    credential: twig_auth::ServiceCredential,
    sessions: Option<Channel>,
    api_keys: Option<Channel>,
    quota: Option<Channel>,
    vault: Option<Channel>,
}

impl Remote {
    /// Lazy channels (connected on first use, reconnected after a
    /// failure) to every configured address of a service not in `here`.
    fn connect(config: &twig_config::RemoteConfig, here: &[ServiceId]) -> anyhow::Result<Self> {
        // Used only with an address, and validation requires the token
        // whenever one is set.
        let placeholder = twig_config::Secret::new("-");
        let token = config.token.as_ref().unwrap_or(&placeholder);
        let credential = twig_auth::ServiceCredential::new(token)
            .context("remote.token must be printable ASCII")?;
        let channel = |id: ServiceId, url: &Option<String>| -> anyhow::Result<Option<Channel>> {
            let Some(url) = url.as_deref().filter(|_| !here.contains(&id)) else {
                return Ok(None);
            };
            let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
                .with_context(|| format!("remote address of {} ({url})", id.name()))?
                .connect_timeout(config.connect_timeout)
                .timeout(config.timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
            Ok(Some(endpoint.connect_lazy()))
        };
        Ok(Self {
            sessions: channel(ServiceId::Sessions, &config.sessions)?,
            api_keys: channel(ServiceId::ApiKeys, &config.api_keys)?,
            quota: channel(ServiceId::Quota, &config.quota)?,
            vault: channel(ServiceId::Vault, &config.secrets_vault)?,
            credential,
        })
    }

    /// The gRPC service name and channel of each remote service.
    fn forwarded(&self) -> impl Iterator<Item = (&'static str, Channel)> + '_ {
        [
            (twig_sessions::SERVICE_NAME, &self.sessions),
            (twig_apikeys::SERVICE_NAME, &self.api_keys),
            (twig_quota::SERVICE_NAME, &self.quota),
            (twig_vault::SERVICE_NAME, &self.vault),
        ]
        .into_iter()
        .filter_map(|(name, channel)| channel.clone().map(|c| (name, c)))
    }
}

/// Drops the kept answers of remote credential services when they
/// announce a change (or everything after a reconnect, when announcements
/// may have been missed).
async fn forget_stale_answers(
    fanout: twig_fanout::Fanout,
    caches: Vec<Arc<twig_auth::VerifyCache>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = fanout.subscribe();
    loop {
        let stale = match events.recv().await {
            Ok(twig_fanout::Event::Message { topic, payload }) => {
                twig_sessions::remote::stale_of(&topic, &payload)
                    .or_else(|| twig_apikeys::remote::stale_of(&topic, &payload))
            }
            Ok(twig_fanout::Event::Resync) | Err(RecvError::Lagged(_)) => {
                Some(twig_auth::Stale::All)
            }
            Err(RecvError::Closed) => return,
        };
        if let Some(stale) = stale {
            for cache in &caches {
                cache.forget(stale);
            }
        }
    }
}

/// How often last-seen times are written.
const LAST_SEEN_PERIOD: Duration = Duration::from_secs(10);
/// How often ended periods of api-key usage are written.
const API_KEY_USAGE_PERIOD: Duration = Duration::from_secs(5);
/// How often quota usage is written (and idle counters swept).
const QUOTA_USAGE_PERIOD: Duration = Duration::from_secs(5);

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
        },
        shutdown,
    )
    .await;
    // Periodic writers finish their run and write what they still hold.
    suite.workers.stop(drain_timeout).await;
    Ok(result?)
}
