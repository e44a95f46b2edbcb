//! The secrets vault: customers' external provider keys encrypted at
//! rest, and sealing for other services.
//!
//! - [`keys`]: master keys (versioned, zeroized) and the keyring;
//! - [`envelope`]: envelope encryption with AES-256-GCM-SIV, bound to
//!   organisation, record and field;
//! - [`keyring_config`]: where master keys come from (configuration, a
//!   mounted folder, a development key beside SQLite);
//! - [`providers`]: provider key formats and masking;
//! - [`service::Vault`]: provider keys, transit, rotation and re-wrap;
//! - [`error::VaultError`]: every failure, mapped to the wire in one place;
//! - `entity/`, [`migration`]: `vault_master_keys`, `vault_secrets`,
//!   `vault_rewrap_jobs`.

mod config;
pub mod entity;
pub mod envelope;
mod error;
mod grpc;
mod keyring_config;
pub mod keys;
mod migration;
mod module;
mod providers;
mod service;

pub use config::VaultConfig;
pub use error::VaultError;
pub use migration::Migrator;
pub use module::{MODULE, VaultModule};
pub use service::Vault;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.vault.v1.VaultService";
