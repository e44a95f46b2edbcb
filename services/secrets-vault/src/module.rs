//! The secrets vault as a module of the suite.

use std::sync::Arc;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use tonic::transport::Channel;
use twig_auth::ServiceCredential;
use twig_config::Owners;
use twig_errors::ApiError;
use twig_module::{
    Context, Module, ModuleError, Port, RemoteContext, SealContext, Sealer, Sealing,
};
use twig_proto::vault::v1 as pb;
use twig_proto::vault::v1::vault_service_client::VaultServiceClient;
use twig_proto::vault::v1::vault_service_server::VaultServiceServer;
use zeroize::Zeroizing;

use crate::config::VaultConfig;
use crate::grpc::REVEAL_SCOPE;
use crate::{Migrator, SERVICE_NAME, Vault};

/// The secrets vault: provider keys, transit sealing, master keys.
pub struct VaultModule;

/// The module the binary lists.
pub static MODULE: VaultModule = VaultModule;

impl Module for VaultModule {
    fn name(&self) -> &'static str {
        "secrets-vault"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn owns(&self, owners: &mut Owners) {
        owners
            .section::<VaultConfig>()
            .internal_scopes(&[REVEAL_SCOPE]);
    }

    fn migrate<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(twig_db::migrate::<Migrator>(db))
    }

    fn provides(&self) -> &'static [&'static str] {
        &[Sealer::NAME]
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let name = self.name();
            let config = cx
                .config()
                .section::<VaultConfig>()
                .map_err(|e| ModuleError::setup(name, "cannot read [secrets_vault]", e))?;
            let keys = crate::keyring_config::load(&config, cx.config().database.url.expose())
                .map_err(|e| ModuleError::setup(name, "cannot load the master keys", e))?;
            let vault = Arc::new(
                Vault::open(
                    cx.db().clone(),
                    Arc::new(keys),
                    cx.clock(),
                    config.rewrap_batch,
                )
                .await
                .map_err(|e| ModuleError::setup(name, "cannot open the vault", e))?,
            );
            cx.workers()
                .listen("vault re-wrap", vault.clone().resume_rewrap());
            let max_message = cx.max_message_bytes();
            cx.serve(
                VaultServiceServer::new(crate::grpc::VaultGrpc::new(vault.clone()))
                    .max_decoding_message_size(max_message),
            );
            cx.provide(Sealer(Arc::new(LocalSealer(vault.clone()))));
            cx.expose(vault);
            Ok(())
        })
    }

    fn remote(&self, cx: &mut RemoteContext<'_>) -> Result<(), ModuleError> {
        cx.provide(Sealer(Arc::new(RemoteSealer {
            client: VaultServiceClient::new(cx.channel()),
            credential: cx.credential(),
        })));
        Ok(())
    }
}

fn transit_context(context: &SealContext) -> Result<crate::service::Context, ApiError> {
    Ok(crate::service::Context::new(
        &context.org.to_string(),
        &context.purpose,
        &context.record,
    )?)
}

/// Sealing by the vault in this process.
struct LocalSealer(Arc<Vault>);

impl Sealing for LocalSealer {
    fn seal<'a>(
        &'a self,
        context: &'a SealContext,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move { Ok(self.0.seal(&transit_context(context)?, plaintext)?) })
    }

    fn unseal<'a>(
        &'a self,
        context: &'a SealContext,
        sealed: &'a str,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, ApiError>> {
        Box::pin(async move { Ok(self.0.unseal(&transit_context(context)?, sealed)?) })
    }
}

/// Sealing by the vault in another process (`Seal`, `Unseal`).
struct RemoteSealer {
    client: VaultServiceClient<Channel>,
    credential: ServiceCredential,
}

fn wire_context(context: &SealContext) -> Option<pb::SealContext> {
    Some(pb::SealContext {
        organization_id: context.org.to_string(),
        purpose: context.purpose.clone(),
        record_id: context.record.clone(),
    })
}

impl Sealing for RemoteSealer {
    fn seal<'a>(
        &'a self,
        context: &'a SealContext,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::SealRequest {
                context: wire_context(context),
                plaintext: plaintext.to_vec().into(),
            });
            let answer = self.client.clone().seal(request).await;
            Ok(answer
                .map_err(|status| ApiError::from_remote("secrets-vault", &status))?
                .into_inner()
                .ciphertext)
        })
    }

    fn unseal<'a>(
        &'a self,
        context: &'a SealContext,
        sealed: &'a str,
    ) -> BoxFuture<'a, Result<Zeroizing<Vec<u8>>, ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::UnsealRequest {
                context: wire_context(context),
                ciphertext: sealed.to_string(),
            });
            let answer = self.client.clone().unseal(request).await;
            let plaintext = answer
                .map_err(|status| ApiError::from_remote("secrets-vault", &status))?
                .into_inner()
                .plaintext;
            Ok(Zeroizing::new(plaintext.to_vec()))
        })
    }
}
