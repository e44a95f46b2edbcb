//! The quota service's errors and their one wire mapping ([`ApiError`]).

use sea_orm::DbErr;
use twig_errors::ApiError;

use crate::window::LimitError;

/// Everything that can go wrong in the quota service.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// A request field is not valid.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A requested limit breaks the rule's bounds.
    #[error("invalid {field}: {source}")]
    InvalidLimit {
        /// The field of the limit.
        field: &'static str,
        /// Which bound.
        #[source]
        source: LimitError,
    },
    /// The subject (organisation, key, limit) is absent or another's.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out in the present state (e.g. a
    /// limit above the organisation's plan).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this (e.g. an admin setting a shadow limit).
    #[error("{0}")]
    Forbidden(String),
    /// The store is down and `quota.on_store_error = closed`.
    #[error(
        "the quota store cannot be reached and quota.on_store_error = closed refuses \
         requests until it is back; retry later"
    )]
    StoreClosed,
    /// A refusal decided elsewhere (the caller's scope, another service's
    /// answer about key ownership), passed on as it is.
    #[error(transparent)]
    Refused(#[from] ApiError),
    /// A stored limit breaks the rule's bounds (written by another version?).
    #[error("the stored limit of {subject} is not valid")]
    StoredLimit {
        /// Whose limit.
        subject: String,
        /// Which bound.
        #[source]
        source: LimitError,
    },
    /// A limit written moments ago in the same transaction is not there.
    #[error("the limit of {0} just written is missing")]
    Vanished(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl QuotaError {
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

    /// Failed precondition.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::FailedPrecondition(message.into())
    }
}

impl From<QuotaError> for ApiError {
    fn from(err: QuotaError) -> Self {
        match err {
            QuotaError::InvalidField { field, reason } => ApiError::invalid_field(field, reason),
            QuotaError::InvalidLimit { field, source } => {
                ApiError::invalid_field(field, source.to_string())
            }
            QuotaError::NotFound(m) => ApiError::not_found(m),
            QuotaError::FailedPrecondition(m) => ApiError::failed_precondition(m),
            QuotaError::Forbidden(m) => ApiError::permission_denied(m),
            e @ QuotaError::StoreClosed => ApiError::unavailable(e.to_string()),
            QuotaError::Refused(e) => e,
            QuotaError::Db(e) => twig_db::api_error(&e),
            e @ (QuotaError::StoredLimit { .. } | QuotaError::Vanished(_)) => {
                ApiError::internal(&e)
            }
        }
    }
}

impl From<QuotaError> for tonic::Status {
    fn from(err: QuotaError) -> Self {
        ApiError::from(err).into()
    }
}
