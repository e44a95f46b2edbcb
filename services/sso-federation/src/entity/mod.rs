//! The tables of single sign-on.

pub mod connection;
pub mod domain;
pub mod identity;
