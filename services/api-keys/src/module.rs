//! The api-keys service as a module of the suite.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use twig_auth::Principal;
use twig_config::Owners;
use twig_crypto::TokenKind;
use twig_errors::ApiError;
use twig_module::{
    Context, CredentialCheck, KeyDescription, KeyOwners, KeyOwnership, MemberKeyControl,
    MemberKeys, MemberKeysChange, Module, ModuleError, Plans, Port, RemoteContext,
};
use twig_proto::apikeys::v1::api_key_service_server::ApiKeyServiceServer;
use uuid::Uuid;

use crate::config::ApiKeysConfig;
use crate::error::KeyError;
use crate::remote::RemoteKeys;
use crate::{ApiKeys, KeyAuthenticator, Migrator, SERVICE_NAME};

/// How often ended periods of api-key usage are written.
const USAGE_PERIOD: Duration = Duration::from_secs(5);

/// The api-keys service: keys, their checks, allowlists, usage.
pub struct ApiKeysModule;

/// The module the binary lists.
pub static MODULE: ApiKeysModule = ApiKeysModule;

impl Module for ApiKeysModule {
    fn name(&self) -> &'static str {
        "api-keys"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn owns(&self, owners: &mut Owners) {
        owners.section::<ApiKeysConfig>();
    }

    fn migrate<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(twig_db::migrate::<Migrator>(db))
    }

    fn provides(&self) -> &'static [&'static str] {
        &[CredentialCheck::NAME, KeyOwners::NAME, MemberKeys::NAME]
    }

    fn needs(&self) -> &'static [&'static str] {
        &[Plans::NAME]
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let config = cx
                .config()
                .section::<ApiKeysConfig>()
                .map_err(|e| ModuleError::setup(self.name(), "cannot read [api_keys]", e))?;
            let plans = cx.need::<Plans>();
            let keys = Arc::new(
                ApiKeys::new(cx.db().clone(), config, cx.clock(), cx.fanout().clone())
                    .with_plans(plans),
            );
            cx.workers()
                .listen("api-key changes", keys.clone().listen_for_changes());
            let usage = keys.clone();
            cx.workers()
                .periodic("api-key usage", USAGE_PERIOD, move |run| {
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
            let max_message = cx.max_message_bytes();
            cx.serve(
                ApiKeyServiceServer::new(crate::grpc::ApiKeysGrpc::new(keys.clone()))
                    .max_decoding_message_size(max_message),
            );
            cx.provide(CredentialCheck {
                kind: TokenKind::ApiKey,
                check: Arc::new(KeyAuthenticator(keys.clone())),
            });
            cx.provide(KeyOwners(Arc::new(LocalOwners(keys.clone()))));
            cx.provide(MemberKeys(Arc::new(LocalOwners(keys.clone()))));
            cx.expose(keys);
            Ok(())
        })
    }

    fn remote(&self, cx: &mut RemoteContext<'_>) -> Result<(), ModuleError> {
        let remote = RemoteKeys::new(cx.channel(), cx.credential());
        let check = cx.keep_answers(Arc::new(remote.clone()), crate::remote::stale_of);
        cx.provide(CredentialCheck {
            kind: TokenKind::ApiKey,
            check,
        });
        cx.provide(KeyOwners(Arc::new(remote.clone())));
        cx.provide(MemberKeys(Arc::new(remote)));
        Ok(())
    }
}

/// Key ownership and members' keys from the service in this process.
struct LocalOwners(Arc<ApiKeys>);

impl KeyOwnership for LocalOwners {
    fn owns_key<'a>(
        &'a self,
        principal: &'a Principal,
        key_id: Uuid,
    ) -> BoxFuture<'a, Result<bool, ApiError>> {
        Box::pin(async move {
            match self.0.get(principal, key_id).await {
                Ok(_) => Ok(true),
                Err(KeyError::NotFound) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }
}

impl KeyOwnership for RemoteKeys {
    fn owns_key<'a>(
        &'a self,
        principal: &'a Principal,
        key_id: Uuid,
    ) -> BoxFuture<'a, Result<bool, ApiError>> {
        Box::pin(RemoteKeys::owns_key(self, principal, key_id))
    }
}

impl MemberKeyControl for LocalOwners {
    fn change_member_keys(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        change: MemberKeysChange,
    ) -> BoxFuture<'_, Result<u64, ApiError>> {
        Box::pin(async move { Ok(self.0.change_member_keys(org_id, user_id, change).await?) })
    }

    fn describe_key(
        &self,
        key_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<KeyDescription>, ApiError>> {
        Box::pin(async move {
            match self.0.describe(key_id).await {
                Ok(key) => Ok(Some(crate::grpc::key_description(&key))),
                Err(KeyError::NotFound) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }
}

impl MemberKeyControl for RemoteKeys {
    fn change_member_keys(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        change: MemberKeysChange,
    ) -> BoxFuture<'_, Result<u64, ApiError>> {
        Box::pin(RemoteKeys::change_member_keys(
            self, org_id, user_id, change,
        ))
    }

    fn describe_key(
        &self,
        key_id: Uuid,
    ) -> BoxFuture<'_, Result<Option<KeyDescription>, ApiError>> {
        Box::pin(RemoteKeys::describe_key(self, key_id))
    }
}
