//! The tables the api-keys service owns.

pub mod api_key;
pub mod api_key_secret;
pub mod org_ip_allowlist;
