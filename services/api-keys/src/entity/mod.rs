//! The tables the api-keys service owns.

pub mod api_key;
pub mod api_key_secret;
