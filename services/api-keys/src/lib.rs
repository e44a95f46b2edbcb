//! The api-keys service: keys for programs (`Authorization: Bearer
//! twig_sk_…`), created once, stored as hashes, verified from memory.
//!
//! - [`service::ApiKeys`]: the logic;
//! - [`grpc::ApiKeysGrpc`]: `twig.apikeys.v1.ApiKeyService` on the wire;
//! - [`KeyAuthenticator`]: API keys for the shared auth layer;
//!   [`remote::RemoteKeys`] the same (and key ownership) over gRPC.

mod cache;
pub mod cidrs;
mod config;
pub mod entity;
mod error;
mod grpc;
mod migration;
mod module;
mod remote;
mod scopes;
mod service;
mod service_accounts;

use std::sync::Arc;

use twig_auth::Authenticator;
use twig_auth::principal::AuthFuture;
use twig_errors::ApiError;

pub use migration::Migrator;
pub use module::{ApiKeysModule, MODULE};
pub use service::{ApiKeys, ApiKeysConfig};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.apikeys.v1.ApiKeyService";

/// Authenticates API keys for [`twig_auth::AuthLayer`].
pub struct KeyAuthenticator(pub Arc<ApiKeys>);

impl Authenticator for KeyAuthenticator {
    fn authenticate<'a>(
        &'a self,
        bearer: &'a str,
        client_ip: Option<std::net::IpAddr>,
    ) -> AuthFuture<'a> {
        Box::pin(async move {
            self.0
                .verify(bearer, None, client_ip)
                .await
                .map_err(ApiError::from)
        })
    }
}
