//! Single sign-on for organisations (`twig.sso.v1.SsoService`).
//!
//! - [`domains`]: email domains an organisation claims and proves with a
//!   DNS TXT record; a proved domain belongs to one organisation;
//! - [`dns`]: the TXT lookups, against the system's resolvers or the
//!   configured `sso_federation.dns_servers`;
//! - [`connection`]: what a connection is (protocol settings — OpenID
//!   Connect now —, rollout stage, attribute mapping, pilot), valid by
//!   construction;
//! - [`connections`]: connections made, changed, staged and removed,
//!   client secrets sealed by the vault;
//! - [`oidc`]: discovery, keys, the code flow and ID token checks, through
//!   `twig-outbound`;
//! - [`signin`]: the one decision on a sign-in (stage, tenant, email,
//!   proved domain, pilot, role);
//! - [`browser`]: the `/sso/` routes — start, callback — and the session
//!   cookie they leave;
//! - [`return_to`]: the exact allowlist of return URLs;
//! - [`policy`]: home-realm discovery and the password rule (the
//!   `PasswordRules` port the sessions service asks);
//! - [`social`]: "Sign in with Google / Microsoft / …" for individual
//!   accounts: providers from configuration, linked identities, linking
//!   only after the account's password;
//! - `gate`: the plan gate; `grpc`: the wire;
//! - `entity/`, [`migration`]: `sso_domains`, `sso_connections`.

pub mod browser;
mod config;
pub mod connection;
pub mod connections;
pub mod dns;
pub mod domains;
pub mod entity;
mod gate;
mod grpc;
mod migration;
mod module;
pub mod oidc;
pub mod policy;
pub mod return_to;
pub mod signin;
pub mod social;

pub use config::{SocialProviderConfig, SsoConfig};
pub use connections::Connections;
pub use domains::Domains;
pub use migration::Migrator;
pub use module::{MODULE, SsoModule};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.sso.v1.SsoService";
