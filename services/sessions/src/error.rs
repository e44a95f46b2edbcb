//! The sessions service's errors and their wire mapping.

use std::time::Duration;

use sea_orm::DbErr;
use twig_crypto::PasswordError;
use twig_errors::ApiError;

/// Everything that can go wrong in the sessions service.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A request field is not valid.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Unknown email, wrong password or disabled user: one answer for all.
    #[error("email or password is wrong")]
    BadCredentials,
    /// The presented token is malformed, unknown, expired or revoked.
    #[error("the token is not valid; sign in again")]
    InvalidToken,
    /// The refresh token was traded in moments ago by a concurrent refresh.
    #[error("this refresh token was just used by another refresh; use the newest tokens")]
    RefreshRace,
    /// Too many failed logins from this address.
    #[error("too many failed logins from this address; retry later")]
    TooManyFailures(Duration),
    /// Sign-up with an email that has an account.
    #[error("an account with this email exists; sign in instead")]
    EmailTaken,
    /// The thing is absent or belongs to someone else.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The user is disabled: no session may be issued.
    #[error("the user is disabled")]
    UserDisabled,
    /// A pending invitation to this email exists.
    #[error("an invitation to this email is pending; resend or revoke it")]
    AlreadyInvited,
    /// The user is a member already.
    #[error("the user is a member of this organisation already")]
    AlreadyMember,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The change would leave the organisation without an active owner.
    #[error(
        "an organisation keeps at least one active owner; make another member an owner first \
         (TransferOwnership or SetMemberRole)"
    )]
    LastOwner,
    /// The membership is not in a state the change applies to.
    #[error("{0}")]
    MembershipState(&'static str),
    /// Another service (api-keys) failed; the change is safe to retry.
    #[error("{0}")]
    Remote(ApiError),
    /// A link's token (sign-up, verification, reset, invitation) does not
    /// work: unknown, used, voided by a newer one, revoked or expired.
    #[error(
        "this link is not valid: it was used, replaced by a newer one, revoked, or has expired; \
         ask for a new one"
    )]
    InvalidLink,
    /// The email's organisation enforces single sign-on: no password.
    #[error(
        "this email's organisation signs in through single sign-on; sign in at {0} instead of \
         using a password"
    )]
    UseSso(String),
    /// The current password given to ChangePassword is wrong.
    #[error("current password is wrong")]
    WrongCurrentPassword,
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// Password hashing failed, or a stored hash is unreadable.
    #[error("password hashing: {0}")]
    Hashing(#[source] PasswordError),
}

impl SessionError {
    /// A field error.
    pub fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    /// Maps a password rule failure to the field it concerns.
    pub fn password(field: &'static str, err: PasswordError) -> Self {
        match err {
            PasswordError::TooShort(_) | PasswordError::TooLong(_) => {
                Self::field(field, err.to_string())
            }
            PasswordError::CorruptHash | PasswordError::Hashing(_) => Self::Hashing(err),
        }
    }
}

impl From<twig_errors::fields::InvalidField> for SessionError {
    fn from(e: twig_errors::fields::InvalidField) -> Self {
        Self::InvalidField {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match &err {
            SessionError::InvalidField { field, reason } => ApiError::invalid_field(*field, reason),
            SessionError::BadCredentials
            | SessionError::InvalidToken
            | SessionError::RefreshRace => ApiError::unauthenticated(err.to_string()),
            SessionError::TooManyFailures(retry) => {
                ApiError::resource_exhausted(err.to_string(), *retry)
            }
            SessionError::EmailTaken
            | SessionError::AlreadyMember
            | SessionError::AlreadyInvited => ApiError::already_exists(err.to_string()),
            SessionError::NotFound(_) => ApiError::not_found(err.to_string()),
            SessionError::Forbidden(_) => ApiError::permission_denied(err.to_string()),
            SessionError::UserDisabled
            | SessionError::LastOwner
            | SessionError::MembershipState(_)
            | SessionError::UseSso(_) => ApiError::failed_precondition(err.to_string()),
            SessionError::Remote(e) => e.clone(),
            SessionError::InvalidLink => ApiError::invalid_field("token", err.to_string()),
            SessionError::WrongCurrentPassword => {
                ApiError::invalid_field("current_password", "is wrong")
            }
            SessionError::Db(db) => twig_db::api_error(db),
            SessionError::Hashing(_) => ApiError::internal(&err),
        }
    }
}

impl From<SessionError> for tonic::Status {
    fn from(err: SessionError) -> Self {
        ApiError::from(err).into()
    }
}
