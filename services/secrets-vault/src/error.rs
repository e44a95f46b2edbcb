//! The vault's errors and their one wire mapping ([`ApiError`]).

use sea_orm::DbErr;
use twig_errors::ApiError;

use crate::envelope::OpenError;

/// Everything that can go wrong in the vault: opening it at start, and
/// every operation.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A request field is not valid.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The thing asked for is absent (or another organisation's).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be carried out in the present state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A ciphertext a client sent does not open.
    #[error("the ciphertext does not open: {0}")]
    Ciphertext(#[from] OpenError),
    /// A stored secret does not decrypt with the configured keys.
    #[error("the stored value does not decrypt ({0}); it must be stored again")]
    Undecryptable(#[source] OpenError),
    /// A stored row holds something this version cannot read.
    #[error("the stored {what} is not readable")]
    Corrupt {
        /// What was read.
        what: &'static str,
        /// Why it is unreadable.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A row written moments ago is not there.
    #[error("the {0} just written is missing")]
    Vanished(&'static str),
    /// A refusal decided outside the vault (the caller's scope), passed on.
    #[error(transparent)]
    Refused(#[from] ApiError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// At start: stored secrets need master keys that are not configured.
    #[error(
        "stored secrets need vault master keys that are not configured: {missing}; \
         add them to vault.master_keys"
    )]
    MissingKeys {
        /// The versions and how many secrets need each.
        missing: String,
    },
    /// At start: a configured key differs from the one recorded under its
    /// version.
    #[error(
        "vault master key version {version} is not the key recorded under that version \
         (check value {recorded} expected); configure the original key or use a new \
         version number"
    )]
    KeyMismatch {
        /// The version.
        version: u32,
        /// The recorded check value.
        recorded: String,
    },
    /// At start: the newest configured key was retired.
    #[error(
        "the newest configured vault master key (version {version}) was retired at {at}; \
         add a new version"
    )]
    NewestRetired {
        /// The version.
        version: u32,
        /// When it was retired.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// A master key version beyond what the table stores.
    #[error(
        "vault master key version {version} is too large (at most {})",
        i32::MAX
    )]
    VersionTooLarge {
        /// The version.
        version: u32,
        /// The conversion's failure.
        #[source]
        source: std::num::TryFromIntError,
    },
}

impl VaultError {
    /// A field error.
    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Not found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// Already exists.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::AlreadyExists(message.into())
    }

    /// Failed precondition.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::FailedPrecondition(message.into())
    }

    /// A master key version as stored (`i32`).
    pub fn stored_version(version: u32) -> Result<i32, Self> {
        i32::try_from(version).map_err(|source| Self::VersionTooLarge { version, source })
    }
}

impl From<twig_errors::fields::InvalidField> for VaultError {
    fn from(e: twig_errors::fields::InvalidField) -> Self {
        Self::invalid_field(e.field, e.reason)
    }
}

impl From<VaultError> for ApiError {
    fn from(err: VaultError) -> Self {
        match err {
            VaultError::InvalidField { field, reason } => ApiError::invalid_field(field, reason),
            VaultError::NotFound(m) => ApiError::not_found(m),
            VaultError::AlreadyExists(m) => ApiError::already_exists(m),
            VaultError::FailedPrecondition(m) => ApiError::failed_precondition(m),
            VaultError::Ciphertext(e @ OpenError::UnknownKey(_)) => {
                ApiError::failed_precondition(e.to_string())
            }
            VaultError::Ciphertext(e) => ApiError::invalid_field("ciphertext", e.to_string()),
            e @ VaultError::Undecryptable(_) => ApiError::failed_precondition(e.to_string()),
            VaultError::Refused(e) => e,
            VaultError::Db(e) => twig_db::api_error(&e),
            e @ (VaultError::Corrupt { .. }
            | VaultError::Vanished(_)
            | VaultError::MissingKeys { .. }
            | VaultError::KeyMismatch { .. }
            | VaultError::NewestRetired { .. }
            | VaultError::VersionTooLarge { .. }) => ApiError::internal(&e),
        }
    }
}

impl From<VaultError> for tonic::Status {
    fn from(err: VaultError) -> Self {
        ApiError::from(err).into()
    }
}
