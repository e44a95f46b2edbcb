//! The secrets vault: customers' external provider keys encrypted at
//! rest, and sealing for other services.
//!
//! - [`keys`]: master keys (versioned, zeroized) and the keyring;
//! - [`envelope`]: envelope encryption with AES-256-GCM-SIV, bound to
//!   organisation, record and field.

pub mod envelope;
pub mod keys;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.vault.v1.VaultService";
