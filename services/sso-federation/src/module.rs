//! Single sign-on as a module of the suite.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use tonic::transport::Channel;
use twig_auth::ServiceCredential;
use twig_config::Owners;
use twig_errors::ApiError;
use twig_module::{
    Context, Module, ModuleError, PasswordPolicy, PasswordRules, PasswordSignIn, Plans, Port,
    RemoteContext, Sealer, SessionIssuer, Users,
};
use twig_outbound::OutboundClient;
use twig_proto::sso::v1 as pb;
use twig_proto::sso::v1::sso_service_client::SsoServiceClient;
use twig_proto::sso::v1::sso_service_server::SsoServiceServer;
use twig_redis::SeenOnce;

use crate::browser::{PREFIX, SignIns};
use crate::dns::HickoryTxt;
use crate::oidc::OidcProviders;
use crate::policy::SignInPolicy;
use crate::return_to::ReturnUrls;
use crate::social::{Identities, SocialProviders};
use crate::{Connections, Domains, Migrator, SERVICE_NAME, SsoConfig};

/// How often counted sign-in refusals are written.
const REFUSAL_WRITER_PERIOD: Duration = Duration::from_secs(5);
/// States remembered in memory (without Redis) at most.
const MEMORY_STATES: usize = 100_000;

/// Single sign-on: domains, connections, sign-in through identity
/// providers.
pub struct SsoModule;

/// The module the binary lists.
pub static MODULE: SsoModule = SsoModule;

impl Module for SsoModule {
    fn name(&self) -> &'static str {
        "sso-federation"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn owns(&self, owners: &mut Owners) {
        owners.section::<SsoConfig>();
    }

    fn migrate<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(twig_db::migrate::<Migrator>(db))
    }

    fn provides(&self) -> &'static [&'static str] {
        &[PasswordRules::NAME]
    }

    fn needs(&self) -> &'static [&'static str] {
        &[Plans::NAME, Sealer::NAME, Users::NAME, SessionIssuer::NAME]
    }

    fn browser_prefix(&self) -> Option<&'static str> {
        Some(PREFIX)
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let name = self.name();
            let config = cx
                .config()
                .section::<SsoConfig>()
                .map_err(|e| ModuleError::setup(name, "cannot read [sso_federation]", e))?;
            let dns = HickoryTxt::new(&config)
                .map_err(|e| ModuleError::invalid(name, e))?
                .shared();
            let presets = config
                .preset_endpoints()
                .map_err(|e| ModuleError::invalid(name, e))?;
            let return_urls = ReturnUrls::from_config(&config.return_urls)
                .map_err(|e| ModuleError::invalid(name, e.join("; ")))?;
            let outbound = OutboundClient::new(&cx.config().outbound)
                .map_err(|e| ModuleError::setup(name, "cannot set up outbound HTTP", e))?
                .with_clock(cx.clock());
            let providers = Arc::new(OidcProviders::new(
                outbound,
                cx.clock(),
                config.metadata_ttl,
                config.jwks_refresh_gap,
            ));
            let plans = cx.need::<Plans>();
            let sealer = cx.need::<Sealer>();
            let domains = Arc::new(Domains::new(
                cx.db().clone(),
                cx.clock(),
                dns,
                plans.clone(),
                config.max_domains_per_org,
            ));
            let connections = Arc::new(Connections::new(
                cx.db().clone(),
                cx.clock(),
                sealer.clone(),
                plans,
                providers.clone(),
                presets,
                config.max_connections_per_org,
            ));
            let socials =
                SocialProviders::from_config(&config).map_err(|e| ModuleError::invalid(name, e))?;
            let identities = Arc::new(Identities::new(cx.db().clone(), cx.clock()));
            let social_list = socials.clone();
            let policy = SignInPolicy::new(connections.clone());
            let users = cx.need::<Users>();
            let seen = match cx.fanout().redis_handle() {
                Some(redis) => SeenOnce::redis(redis.clone()),
                None => SeenOnce::memory(MEMORY_STATES),
            };
            let sign_ins = Arc::new(SignIns::new(
                connections.clone(),
                providers,
                sealer,
                users.clone(),
                cx.need::<SessionIssuer>(),
                seen,
                cx.db().clone(),
                cx.clock(),
                config.public_url(cx.config()),
                return_urls,
                config.sign_in_timeout,
                config.refusal_audit_period,
                socials,
                identities.clone(),
                twig_web::Csrf::from_config(cx.config()),
                policy.clone(),
            ));
            let writer = sign_ins.clone();
            cx.workers()
                .periodic("sso refusals", REFUSAL_WRITER_PERIOD, move |run| {
                    let writer = writer.clone();
                    async move {
                        let last = run == twig_server::Run::Last;
                        if let Err(e) = writer.write_refusals(last).await {
                            tracing::warn!(error = %e, "cannot write refused sign-ins yet");
                        }
                    }
                });
            cx.browser_routes(PREFIX, sign_ins.clone().router());
            cx.provide(PasswordRules(Arc::new(policy.clone())));
            let max_message = cx.max_message_bytes();
            cx.serve(
                SsoServiceServer::new(crate::grpc::SsoGrpc::new(
                    domains.clone(),
                    connections.clone(),
                    social_list,
                    identities,
                    users,
                    policy,
                ))
                .max_decoding_message_size(max_message),
            );
            cx.expose(domains);
            cx.expose(connections);
            cx.expose(sign_ins);
            Ok(())
        })
    }

    fn remote(&self, cx: &mut RemoteContext<'_>) -> Result<(), ModuleError> {
        cx.provide(PasswordRules(Arc::new(RemotePasswordRules {
            client: SsoServiceClient::new(cx.channel()),
            credential: cx.credential(),
        })));
        Ok(())
    }
}

/// The password rule asked of single sign-on in another process
/// (`CheckPasswordSignIn`).
struct RemotePasswordRules {
    client: SsoServiceClient<Channel>,
    credential: ServiceCredential,
}

impl PasswordPolicy for RemotePasswordRules {
    fn password_sign_in<'a>(
        &'a self,
        email: &'a str,
    ) -> BoxFuture<'a, Result<PasswordSignIn, ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::CheckPasswordSignInRequest {
                email: email.to_string(),
            });
            let answer = self
                .client
                .clone()
                .check_password_sign_in(request)
                .await
                .map_err(|status| ApiError::from_remote("sso-federation", &status))?
                .into_inner();
            if answer.allowed {
                return Ok(PasswordSignIn::Allowed);
            }
            let org_id = uuid::Uuid::parse_str(&answer.organization_id).map_err(|_| {
                ApiError::unavailable("sso-federation answered without an organisation")
            })?;
            Ok(PasswordSignIn::UseSso {
                org_id,
                start_path: answer.start_path,
            })
        })
    }
}
