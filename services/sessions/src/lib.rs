//! The sessions service: organisations, users, email/password login,
//! access and rotating refresh tokens, and `VerifySession` for the other
//! services.
//!
//! - [`IdentityStore`]: users, organisations, memberships, provisioning
//!   (the [`twig_module::UserDirectory`] port);
//! - [`Sessions`]: login, sign-up, `issue_session` (the one way a session
//!   is minted; the [`twig_module::SessionIssuing`] port), refresh, verify,
//!   logout;
//! - [`SessionsGrpc`]: `twig.sessions.v1.SessionService` on the wire;
//! - [`SessionAuthenticator`]: access tokens for the shared auth layer;
//!   [`RemoteSessionAuthenticator`] the same over gRPC, and
//!   [`RemoteSessionIssuer`], [`RemoteUserDirectory`] the ports over the
//!   internal RPCs.
//!
//! Its modules are private; `entity` (the tables) is public for tests and
//! operators' tools that read them.

mod accounts;
mod brakes;
pub mod browser;
mod cache;
mod config;
pub mod entity;
mod error;
mod grpc;
mod identity;
mod invitations;
mod last_seen;
mod links;
mod members;
mod migration;
mod module;
mod remote;
mod sessions;
mod sso_rule;
mod throttle;

use std::sync::Arc;

use twig_auth::{Authenticator, principal::AuthFuture};
use twig_errors::ApiError;

pub use config::{BrakesConfig, PerPeriod, SessionsConfig};
pub use error::SessionError;
pub use grpc::SessionsGrpc;
pub use identity::IdentityStore;
pub use members::{Ended, MembershipState, MembershipStatus};
pub use migration::Migrator;
pub use module::{MODULE, SessionsModule};
pub use remote::{RemoteSessionAuthenticator, RemoteSessionIssuer, RemoteUserDirectory};
pub use sessions::{ClientContext, IssuedTokens, SessionSummary, Sessions};
pub use twig_clock::{Clock, ManualClock, SystemClock};
pub use twig_email::Email;
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
