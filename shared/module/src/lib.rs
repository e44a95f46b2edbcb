//! What a service is to the binary.
//!
//! Each service crate exports one value implementing [`Module`]; the binary
//! holds the one list of them and builds the suite from it in two phases:
//! every module that runs here builds, adding its gRPC routes, workers and
//! the ports it provides to a [`Context`], and takes late handles to the
//! ports it needs; every module that runs elsewhere at a `remote` address
//! provides clients of its ports instead ([`Module::remote`]); then
//! [`Context::assemble`] resolves every handle in one place
//! ([`ports::Ports::resolve`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Channel;
use twig_auth::ServiceCredential;
use twig_clock::Clock;
use twig_config::{Config, Owners};
use twig_crypto::PasswordHasher;
use twig_fanout::Fanout;
use twig_mail::Mailer;
use twig_server::Workers;

pub mod ports;

pub use ports::{Brake, Throttles, Throttling};
pub use ports::{
    CredentialCheck, KeyDescription, KeyOwner, KeyOwners, KeyOwnership, MemberKeyControl,
    MemberKeys, MemberKeysChange, Needed, NeededAll, OrgPlan, Origin, PlanLookup, Plans, Port,
    Ports, SealContext, Sealer, Sealing,
};
pub use ports::{
    DirectoryUser, InvalidSessionMethod, IssuedSession, OAuthProvider, ProvisionedUser,
    SessionClient, SessionIssuer, SessionIssuing, SessionMethod, SignInFacts, UserDirectory, Users,
};
pub use ports::{PasswordPolicy, PasswordRules, PasswordSignIn};

/// A service of the suite.
pub trait Module: Send + Sync + 'static {
    /// The service's one name (`api-keys`): its folder `services/<name>`,
    /// crate `twig-<name>`, `serve --services <name>`, chart key; with `_`
    /// for `-`, its configuration section and `remote` key.
    fn name(&self) -> &'static str;

    /// Its gRPC services, fully qualified (fixed by contract, e.g.
    /// `twig.apikeys.v1.ApiKeyService`).
    fn grpc_services(&self) -> &'static [&'static str];

    /// Declares its configuration section and the internal scopes it
    /// checks.
    fn owns(&self, owners: &mut Owners) {
        let _ = owners;
    }

    /// Applies its migrations.
    fn migrate<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>>;

    /// The ports it provides ([`Port::NAME`]s).
    fn provides(&self) -> &'static [&'static str] {
        &[]
    }

    /// The ports it needs ([`Port::NAME`]s).
    fn needs(&self) -> &'static [&'static str] {
        &[]
    }

    /// Builds the service in this process: routes, workers, ports.
    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>>;

    /// The path prefix its browser routes live under (`/sso/`), if it has
    /// any ([`Context::browser_routes`]). Declared statically so that the
    /// edge forwards the prefix to the module's process without the module
    /// running there.
    fn browser_prefix(&self) -> Option<&'static str> {
        None
    }

    /// Provides clients of its ports when it runs at a `remote` address.
    fn remote(&self, cx: &mut RemoteContext<'_>) -> Result<(), ModuleError> {
        let _ = cx;
        Ok(())
    }
}

/// Why the suite could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A module's configuration or keys are unusable.
    #[error("{module}: {message}")]
    Setup {
        /// The module.
        module: &'static str,
        /// What is wrong and what to do.
        message: String,
        /// The cause, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Two modules of the same origin provide a port only one may.
    #[error("two services provide the {port} port: {first} and {second}")]
    TwoProviders {
        /// The port.
        port: &'static str,
        /// One provider.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// A module's browser prefix is malformed, undeclared, or overlaps
    /// another module's.
    #[error("{module}: browser prefix {prefix:?}: {problem}")]
    BrowserPrefix {
        /// The module.
        module: &'static str,
        /// The prefix.
        prefix: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A module used a port it does not declare (a bug in that module).
    #[error("{module} {verb} the {port} port without declaring it in Module::{verb}")]
    Undeclared {
        /// The module.
        module: &'static str,
        /// `provides` or `needs`.
        verb: &'static str,
        /// The port.
        port: &'static str,
    },
}

impl ModuleError {
    /// A setup failure of `module`, with its cause.
    pub fn setup(
        module: &'static str,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Setup {
            module,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A setup failure of `module` with no underlying error.
    pub fn invalid(module: &'static str, message: impl Into<String>) -> Self {
        Self::Setup {
            module,
            message: message.into(),
            source: None,
        }
    }
}

/// What the outside world gives the suite: time and password hashing
/// (tests give a manual clock and cheap hashing).
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
            clock: Arc::new(twig_clock::SystemClock),
            hasher: PasswordHasher::owasp(),
        }
    }
}

/// Routes the calls of one gRPC service (its fully qualified name) to its
/// process at the channel, presenting the credential.
pub type ForwardFn =
    Box<dyn Fn(&'static str, Channel, ServiceCredential) -> axum::Router + Send + 'static>;

/// Routes a remote module's browser prefix to its process at the address
/// (`http://host:port`), presenting the credential.
pub type BrowserForwardFn =
    Box<dyn Fn(&'static str, http::Uri, ServiceCredential) -> axum::Router + Send + 'static>;

/// The gRPC routes of this process behind the auth layer: what the HTTP
/// routes built from the API's HTTP mapping call.
pub type GrpcRoutes = twig_auth::AuthService<Routes>;

/// Builds HTTP routes once the suite's gRPC routes are known.
pub type HttpRoutesFn =
    Box<dyn FnOnce(GrpcRoutes) -> Result<axum::Router, ModuleError> + Send + 'static>;

/// What a module builds with, and what it adds to the suite.
pub struct Context {
    config: Config,
    db: DatabaseConnection,
    deps: Deps,
    fanout: Fanout,
    mailer: Mailer,
    access: Arc<twig_auth::AccessPolicy>,
    building: Option<&'static dyn Module>,
    routes: Routes,
    names: Vec<&'static str>,
    workers: Workers,
    ports: Ports,
    handles: ports::Ports,
    http_routes: Vec<HttpRoutesFn>,
    forward: Option<ForwardFn>,
    browser: Vec<twig_web::BrowserMount>,
    browser_forward: Option<BrowserForwardFn>,
    remotes: Vec<Remote>,
    problems: Vec<ModuleError>,
}

/// A module running at a remote address.
struct Remote {
    module: &'static dyn Module,
    address: http::Uri,
    channel: Channel,
    credential: ServiceCredential,
}

/// The suite's parts once every module has built and every port is
/// resolved.
pub struct Assembly {
    /// Every gRPC route of this process.
    pub routes: Routes,
    /// The gRPC service names served here (for health).
    pub names: Vec<&'static str>,
    /// Every background worker.
    pub workers: Workers,
    /// Every port, resolved.
    pub ports: Ports,
    /// The modules' own objects, by type ([`Context::expose`]).
    pub handles: ports::Ports,
    /// HTTP routes to build from the auth-layered gRPC routes.
    pub http_routes: Vec<HttpRoutesFn>,
    /// Browser routes: of the modules here, and the edge's forwarding of
    /// remote modules' prefixes ([`twig_web::mount`] them).
    pub browser_routes: Vec<twig_web::BrowserMount>,
}

impl Context {
    /// A context over one database, fan-out and mailer.
    pub fn new(
        config: Config,
        db: DatabaseConnection,
        deps: Deps,
        fanout: Fanout,
        mailer: Mailer,
        access: Arc<twig_auth::AccessPolicy>,
    ) -> Self {
        Self {
            config,
            db,
            deps,
            fanout,
            mailer,
            access,
            building: None,
            routes: Routes::default(),
            names: Vec::new(),
            workers: Workers::new(),
            ports: Ports::default(),
            handles: ports::Ports::default(),
            http_routes: Vec::new(),
            forward: None,
            browser: Vec::new(),
            browser_forward: None,
            remotes: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Builds `module` here.
    pub async fn build(&mut self, module: &'static dyn Module) -> Result<(), ModuleError> {
        self.building = Some(module);
        let built = module.build(self).await;
        self.building = None;
        built?;
        match self.problems.pop() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Lets `module`, which runs at `address` (reached through `channel`),
    /// provide clients of its ports.
    pub fn remote(
        &mut self,
        module: &'static dyn Module,
        address: http::Uri,
        channel: Channel,
        credential: ServiceCredential,
    ) -> Result<(), ModuleError> {
        self.remotes.push(Remote {
            module,
            address,
            channel: channel.clone(),
            credential: credential.clone(),
        });
        let mut cx = RemoteContext {
            module,
            channel,
            credential,
            cx: self,
        };
        module.remote(&mut cx)?;
        match self.problems.pop() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Resolves every port, routes the calls of services elsewhere when
    /// this process is a front door, and hands over the parts.
    pub fn assemble(mut self) -> Result<Assembly, ModuleError> {
        self.ports.resolve()?;
        self.handles.resolve()?;
        self.check_browser_prefixes()?;
        if let Some(forward) = &self.forward {
            let mut router = std::mem::take(&mut self.routes).into_axum_router();
            for remote in &self.remotes {
                for service in remote.module.grpc_services() {
                    router = router.merge(forward(
                        service,
                        remote.channel.clone(),
                        remote.credential.clone(),
                    ));
                }
            }
            self.routes = Routes::from(router);
        }
        if let Some(forward) = &self.browser_forward {
            for remote in &self.remotes {
                if let Some(prefix) = remote.module.browser_prefix() {
                    self.browser.push(twig_web::BrowserMount {
                        module: remote.module.name(),
                        prefix,
                        router: forward(prefix, remote.address.clone(), remote.credential.clone()),
                        forwarded: true,
                    });
                }
            }
        }
        Ok(Assembly {
            routes: self.routes,
            names: self.names,
            workers: self.workers,
            ports: self.ports,
            handles: self.handles,
            http_routes: self.http_routes,
            browser_routes: self.browser,
        })
    }

    /// Every prefix of a module here or at a remote address is well
    /// formed and overlaps no other.
    fn check_browser_prefixes(&self) -> Result<(), ModuleError> {
        let mut claimed: Vec<(&'static str, &'static str)> =
            self.browser.iter().map(|m| (m.module, m.prefix)).collect();
        for remote in &self.remotes {
            if let Some(prefix) = remote.module.browser_prefix() {
                twig_web::check_prefix(prefix).map_err(|e| ModuleError::BrowserPrefix {
                    module: remote.module.name(),
                    prefix,
                    problem: e.to_string(),
                })?;
                claimed.push((remote.module.name(), prefix));
            }
        }
        for (i, (module, prefix)) in claimed.iter().enumerate() {
            if let Some((other, theirs)) = claimed[..i]
                .iter()
                .find(|(_, theirs)| twig_web::overlaps(prefix, theirs))
            {
                return Err(ModuleError::BrowserPrefix {
                    module,
                    prefix,
                    problem: format!("overlaps {other}'s {theirs:?}"),
                });
            }
        }
        Ok(())
    }

    /// The whole configuration (a module reads its own section with
    /// [`Config::section`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.deps.clock.clone()
    }

    /// The password hasher.
    pub fn hasher(&self) -> PasswordHasher {
        self.deps.hasher.clone()
    }

    /// Announcements between replicas.
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// The process's one sender of email: [`Mailer::send`] queues a
    /// message and returns at once, whether or not it will be delivered.
    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    /// Who may call each RPC, read once from the descriptor set: the
    /// same policy the process's auth layer enforces.
    pub fn access_policy(&self) -> Arc<twig_auth::AccessPolicy> {
        self.access.clone()
    }

    /// Largest request message (`server.max_message_bytes`): give it to
    /// each gRPC server's `max_decoding_message_size`.
    pub fn max_message_bytes(&self) -> usize {
        self.config.server.max_message_bytes
    }

    /// Serves a gRPC service.
    pub fn serve<S>(&mut self, service: S)
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = std::mem::take(&mut self.routes).add_service(service);
    }

    /// The background workers (listeners and periodic writers).
    pub fn workers(&mut self) -> &mut Workers {
        &mut self.workers
    }

    /// Provides a port from this process.
    pub fn provide<P: Port>(&mut self, port: P) {
        let module = self.declared("provides", P::NAME);
        self.ports.provide(module, Origin::Local, port);
    }

    /// A late handle to the port `P` from at most one provider.
    pub fn need<P: Port>(&mut self) -> Needed<P> {
        let module = self.declared("needs", P::NAME);
        self.ports.need(module)
    }

    /// A late handle to every provider of `P`.
    pub fn need_all<P: Port>(&mut self) -> NeededAll<P> {
        self.declared("needs", P::NAME);
        self.ports.need_all()
    }

    /// Makes one of the module's own objects reachable by type from the
    /// built suite (the CLI's bootstrap, tests).
    pub fn expose<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        let module = self.building.map_or("suite", |m| m.name());
        self.handles.provide(module, Origin::Local, Handle(value));
    }

    /// HTTP routes built from the suite's auth-layered gRPC routes, once
    /// every module has added its own.
    pub fn http_routes(
        &mut self,
        build: impl FnOnce(GrpcRoutes) -> Result<axum::Router, ModuleError> + Send + 'static,
    ) {
        self.http_routes.push(Box::new(build));
    }

    /// Serves the module's browser routes (plain HTTP for browsers:
    /// redirects, form posts, cookies) under `prefix`, its declared
    /// [`Module::browser_prefix`]; `router`'s paths are relative to it
    /// (`/start` is `/sso/start`). They are outside the bearer auth layer
    /// (a browser carries cookies) and CORS (same-origin pages), under
    /// the server's trace, limits and metrics; each request carries
    /// [`twig_web::ClientInfo`]. State-changing routes that trust a
    /// cookie must use [`twig_web::Csrf`].
    pub fn browser_routes(&mut self, prefix: &'static str, router: axum::Router) {
        let module = self.building.map_or("suite", |m| m.name());
        let declared = self.building.and_then(|m| m.browser_prefix());
        let problem = if declared != Some(prefix) {
            Some(format!(
                "not the module's declared Module::browser_prefix ({declared:?})"
            ))
        } else if let Err(e) = twig_web::check_prefix(prefix) {
            Some(e.to_string())
        } else {
            self.browser
                .iter()
                .find(|m| twig_web::overlaps(prefix, m.prefix))
                .map(|m| format!("overlaps {}'s {:?}", m.module, m.prefix))
        };
        if let Some(problem) = problem {
            self.problems.push(ModuleError::BrowserPrefix {
                module,
                prefix,
                problem,
            });
            return;
        }
        self.browser.push(twig_web::BrowserMount {
            module,
            prefix,
            router,
            forwarded: false,
        });
    }

    /// Makes this process the front door for browser routes too: a remote
    /// module's [`Module::browser_prefix`] is routed to its process by
    /// `forward` (the edge).
    pub fn forward_remote_browser_routes(
        &mut self,
        forward: impl Fn(&'static str, http::Uri, ServiceCredential) -> axum::Router + Send + 'static,
    ) {
        self.browser_forward = Some(Box::new(forward));
    }

    /// Makes this process a front door: calls to a service that runs at a
    /// remote address are routed there by `forward` (the edge), after the
    /// same decision as local ones.
    pub fn forward_remote_calls(
        &mut self,
        forward: impl Fn(&'static str, Channel, ServiceCredential) -> axum::Router + Send + 'static,
    ) {
        self.forward = Some(Box::new(forward));
    }

    /// The module being built, after checking it declares `port` under
    /// `verb`; a use outside any module is the composition's own.
    fn declared(&mut self, verb: &'static str, port: &'static str) -> &'static str {
        let Some(module) = self.building else {
            return "suite";
        };
        let declared = match verb {
            "provides" => module.provides(),
            _ => module.needs(),
        };
        if !declared.contains(&port) {
            self.problems.push(ModuleError::Undeclared {
                module: module.name(),
                verb,
                port,
            });
        }
        module.name()
    }
}

/// One of a module's own objects, found by type.
#[derive(Clone)]
pub struct Handle<T>(pub T);

impl<T: Clone + Send + Sync + 'static> Port for Handle<T> {
    const NAME: &'static str = "handle";
}

impl Assembly {
    /// A module's own object of type `T`, when that module runs here.
    pub fn handle<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.handles.all::<Handle<T>>().pop().map(|h| h.0)
    }
}

/// What a module running elsewhere provides clients with.
pub struct RemoteContext<'a> {
    module: &'static dyn Module,
    channel: Channel,
    credential: ServiceCredential,
    cx: &'a mut Context,
}

impl RemoteContext<'_> {
    /// A lazy channel to the service's process.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// What this process presents there (the edge's credential).
    pub fn credential(&self) -> ServiceCredential {
        self.credential.clone()
    }

    /// The whole configuration.
    pub fn config(&self) -> &Config {
        &self.cx.config
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.cx.deps.clock.clone()
    }

    /// Announcements between replicas.
    pub fn fanout(&self) -> &Fanout {
        &self.cx.fanout
    }

    /// The background workers.
    pub fn workers(&mut self) -> &mut Workers {
        &mut self.cx.workers
    }

    /// A remote credential service's answers, kept for
    /// `remote.verify_cache_ttl` (positive answers only) and dropped as
    /// soon as the service announces a change of kind `A` (`stale_of`
    /// says which answers it makes stale), or all of them after a
    /// reconnect, when announcements may have been missed.
    pub fn keep_answers<A: twig_fanout::Announcement>(
        &mut self,
        remote: Arc<dyn twig_auth::Authenticator>,
        stale_of: fn(A) -> twig_auth::Stale,
    ) -> Arc<dyn twig_auth::Authenticator> {
        let ttl = self.cx.config.remote.verify_cache_ttl;
        if ttl.is_zero() {
            return remote;
        }
        let cache = Arc::new(twig_auth::VerifyCache::new(
            remote,
            ttl,
            self.cx.fanout.freshness(),
            self.cx.deps.clock.clone(),
        ));
        let heard = self.cx.fanout.listen::<A>();
        self.cx.workers.listen(
            "stale remote answers",
            forget_stale(heard, cache.clone(), stale_of),
        );
        cache
    }

    /// Provides a client of one of its ports.
    pub fn provide<P: Port>(&mut self, port: P) {
        if !self.module.provides().contains(&P::NAME) {
            self.cx.problems.push(ModuleError::Undeclared {
                module: self.module.name(),
                verb: "provides",
                port: P::NAME,
            });
        }
        self.cx
            .ports
            .provide(self.module.name(), Origin::Remote, port);
    }
}

/// Drops `cache`'s answers as announcements say they are stale.
async fn forget_stale<A: twig_fanout::Announcement>(
    mut heard: twig_fanout::Listener<A>,
    cache: Arc<twig_auth::VerifyCache>,
    stale_of: fn(A) -> twig_auth::Stale,
) {
    while let Some(heard) = heard.recv().await {
        cache.forget(match heard {
            twig_fanout::Heard::Announced(changed) => stale_of(changed),
            twig_fanout::Heard::Resync => twig_auth::Stale::All,
        });
    }
}
