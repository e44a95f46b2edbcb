//! The tables the sessions service owns.

pub mod email_link;
pub mod invitation;
pub mod login_failure;
pub mod membership;
pub mod organization;
pub mod refresh_token;
pub mod session;
pub mod user;
