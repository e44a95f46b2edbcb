//! The api-keys service's errors and their wire mapping.

use sea_orm::DbErr;
use twig_errors::ApiError;

/// Everything that can go wrong in the api-keys service.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A request field is not valid.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Malformed, unknown, expired or revoked key: one answer for all.
    #[error("the API key is not valid")]
    InvalidKey,
    /// A valid key without the scope the operation needs.
    #[error("the API key lacks the {0} scope")]
    MissingScope(&'static str),
    /// The client's address is outside the organisation's or the key's
    /// allowlist.
    #[error("this API key may not be used from this address")]
    AddressNotAllowed,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The key is absent or belongs to another organisation.
    #[error("API key not found")]
    NotFound,
    /// The key was revoked.
    #[error("the API key is revoked")]
    Revoked,
    /// A refusal decided elsewhere (the organisation's plan, as the quota
    /// service answers it), passed on as it is.
    #[error(transparent)]
    Refused(#[from] ApiError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl KeyError {
    /// A field error.
    pub fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl From<twig_errors::fields::InvalidField> for KeyError {
    fn from(e: twig_errors::fields::InvalidField) -> Self {
        Self::InvalidField {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        match &err {
            KeyError::InvalidField { field, reason } => ApiError::invalid_field(*field, reason),
            KeyError::InvalidKey => ApiError::unauthenticated(err.to_string()),
            KeyError::MissingScope(_) | KeyError::Forbidden(_) | KeyError::AddressNotAllowed => {
                ApiError::permission_denied(err.to_string())
            }
            KeyError::NotFound => ApiError::not_found(err.to_string()),
            KeyError::Revoked => ApiError::failed_precondition(err.to_string()),
            KeyError::Db(db) => twig_db::api_error(db),
            KeyError::Refused(e) => e.clone(),
        }
    }
}

impl From<KeyError> for tonic::Status {
    fn from(err: KeyError) -> Self {
        ApiError::from(err).into()
    }
}
