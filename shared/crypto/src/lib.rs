//! Crypto primitives shared by every service: tokens with a kind prefix and
//! an offline-checkable checksum, SHA-256 token hashing, and argon2id
//! password hashing off the async runtime with bounded concurrency.

mod password;
mod pool;
mod token;

pub use password::{
    PasswordError, PasswordHasher, PasswordPolicy, VerifyOutcome, params as argon2_params,
};
pub use token::{Token, TokenFormatError, TokenHash, TokenKind};
