//! The tables the api-keys service owns.

pub mod api_key;
pub mod api_key_secret;
pub mod api_key_usage;
pub mod org_ip_allowlist;
pub mod service_account;
