//! The vault's tables.

pub mod master_key;
pub mod rewrap_job;
pub mod secret;
