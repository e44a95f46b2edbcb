//! The sessions service: organisations, users, email/password login,
//! access and rotating refresh tokens, and `VerifySession` for the other
//! services.
//!
//! - [`identity::IdentityStore`]: users, organisations, memberships,
//!   provisioning (the [`twig_module::UserDirectory`] port);
//! - [`sessions::Sessions`]: login, sign-up, `issue_session` (the one way
//!   a session is minted; the [`twig_module::SessionIssuing`] port),
//!   refresh, verify, logout;
//! - [`grpc::SessionsGrpc`]: `twig.sessions.v1.SessionService` on the wire;
//! - [`SessionAuthenticator`]: access tokens for the shared auth layer;
//!   [`remote::RemoteSessionAuthenticator`] the same over gRPC, and
//!   [`remote::RemoteSessionIssuer`], [`remote::RemoteUserDirectory`] the
//!   ports over the internal RPCs.

pub mod cache;
pub mod config;
pub mod email;
pub mod entity;
pub mod error;
pub mod grpc;
pub mod identity;
pub mod last_seen;
pub mod migration;
mod module;
pub mod remote;
pub mod sessions;
pub mod throttle;

use std::sync::Arc;

use twig_auth::{Authenticator, principal::AuthFuture};
use twig_errors::ApiError;

pub use config::SessionsConfig;
pub use identity::IdentityStore;
pub use migration::Migrator;
pub use module::{MODULE, SessionsModule};
pub use sessions::Sessions;
pub use twig_clock::{Clock, ManualClock, SystemClock};
pub use twig_module::SessionMethod;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.sessions.v1.SessionService";

/// Authenticates session access tokens for [`twig_auth::AuthLayer`].
pub struct SessionAuthenticator(pub Arc<Sessions>);

impl Authenticator for SessionAuthenticator {
    fn authenticate<'a>(
        &'a self,
        bearer: &'a str,
        _client_ip: Option<std::net::IpAddr>,
    ) -> AuthFuture<'a> {
        Box::pin(async move { self.0.verify(bearer).await.map_err(ApiError::from) })
    }
}
