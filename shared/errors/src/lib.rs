//! One mapping from domain errors to the wire: gRPC status codes with rich
//! error details, and HTTP status codes for the plain HTTP routes.
//!
//! Each service has its own `thiserror` enum and converts it into
//! [`ApiError`]; `ApiError` alone knows how to become a [`tonic::Status`].

use std::fmt;
use std::time::Duration;

pub mod fields;

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The small set of outcomes every client understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed; field violations say which field and why.
    InvalidArgument,
    /// No credential, or a credential that is not valid.
    Unauthenticated,
    /// A valid credential that may not do this.
    PermissionDenied,
    /// The thing does not exist (or the caller may not know it does).
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The system is not in the state the request needs.
    FailedPrecondition,
    /// A limit was hit; retry after the given delay.
    ResourceExhausted,
    /// A dependency (database, Redis) is down; retry later.
    Unavailable,
    /// A bug or an unexpected failure; details are logged, not returned.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code.
    pub fn grpc(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::Unavailable => Code::Unavailable,
            Self::Internal => Code::Internal,
        }
    }

    /// The code for a gRPC status from anywhere (tonic's own errors
    /// included): OUT_OF_RANGE reads as INVALID_ARGUMENT, codes the
    /// services never send as INTERNAL.
    pub fn from_grpc(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::Unavailable | Code::DeadlineExceeded => Self::Unavailable,
            _ => Self::Internal,
        }
    }

    /// The HTTP status code for the same outcome.
    pub fn http(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::InvalidArgument => S::BAD_REQUEST,
            Self::Unauthenticated => S::UNAUTHORIZED,
            Self::PermissionDenied => S::FORBIDDEN,
            Self::NotFound => S::NOT_FOUND,
            Self::AlreadyExists => S::CONFLICT,
            Self::FailedPrecondition => S::PRECONDITION_FAILED,
            Self::ResourceExhausted => S::TOO_MANY_REQUESTS,
            Self::Unavailable => S::SERVICE_UNAVAILABLE,
            Self::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, e.g. `password`.
    pub field: String,
    /// What is wrong with it and what to do.
    pub description: String,
}

/// An error as it leaves a service: a code, a message safe to show the
/// caller, and optional details.
///
/// Messages never contain secrets (tokens, passwords, keys): the
/// constructors take only what the caller already knows or may know.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    violations: Vec<FieldViolation>,
    retry_after: Option<Duration>,
    rate_limit: Option<RateLimit>,
}

/// The limit a refused request hit, sent as `ratelimit-limit`,
/// `ratelimit-remaining` and `ratelimit-reset` (seconds) metadata, and as
/// those HTTP headers on the HTTP/JSON surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests (units) per period.
    pub limit: u64,
    /// Units still admissible now.
    pub remaining: u64,
    /// When the limit admits this request again.
    pub reset: Duration,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            violations: Vec::new(),
            retry_after: None,
            rate_limit: None,
        }
    }

    /// INVALID_ARGUMENT for one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        let description = description.into();
        Self::new(
            ErrorCode::InvalidArgument,
            format!("invalid {field}: {description}"),
        )
        .with_violation(field, description)
    }

    /// UNAUTHENTICATED.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// PERMISSION_DENIED.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// ALREADY_EXISTS.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, message)
    }

    /// FAILED_PRECONDITION.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }

    /// RESOURCE_EXHAUSTED with the delay after which a retry may succeed.
    pub fn resource_exhausted(message: impl Into<String>, retry_after: Duration) -> Self {
        let mut err = Self::new(ErrorCode::ResourceExhausted, message);
        err.retry_after = Some(retry_after);
        err
    }

    /// UNAVAILABLE: a dependency is down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// INTERNAL. The cause is logged here with its chain; the caller sees
    /// only a generic message.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %ErrorChain(cause), "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }

    /// Adds a field violation.
    pub fn with_violation(
        mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message shown to the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Field violations, if any.
    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }

    /// The retry delay, for RESOURCE_EXHAUSTED.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// With the limit that was hit.
    pub fn with_rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limit = Some(rate_limit);
        self
    }

    /// The limit that was hit, for a rate-limit refusal.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
}

impl ApiError {
    /// The answer of `service`, called in another process, as this
    /// process's own: code, message, field violations and retry delay
    /// kept. A call that never got an answer from the service (it is down,
    /// unreachable or too slow) is UNAVAILABLE naming it.
    pub fn from_remote(service: &str, status: &tonic::Status) -> Self {
        let answered = status.metadata().contains_key("content-type")
            || !matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
            );
        if !answered {
            return Self::unavailable(format!(
                "the {service} service could not be reached: {}",
                status.message()
            ));
        }
        let mut err = Self::new(ErrorCode::from_grpc(status.code()), status.message());
        let details = status.get_error_details();
        if let Some(bad) = details.bad_request() {
            for v in &bad.field_violations {
                err = err.with_violation(v.field.clone(), v.description.clone());
            }
        }
        err.retry_after = details.retry_info().and_then(|r| r.retry_delay);
        err
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let mut details = ErrorDetails::new();
        for v in &err.violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        if let Some(delay) = err.retry_after {
            details.set_retry_info(Some(delay));
        }
        let mut status = if err.violations.is_empty() && err.retry_after.is_none() {
            tonic::Status::new(err.code.grpc(), err.message)
        } else {
            tonic::Status::with_error_details(err.code.grpc(), err.message, details)
        };
        if let Some(limit) = err.rate_limit {
            let reset = whole_seconds_up(limit.reset);
            let metadata = status.metadata_mut();
            for (name, value) in [
                ("ratelimit-limit", limit.limit),
                ("ratelimit-remaining", limit.remaining),
                ("ratelimit-reset", reset),
            ] {
                metadata.insert(name, value.into());
            }
        }
        status
    }
}

/// A delay in whole seconds, rounded up, as `Retry-After` and
/// `RateLimit-Reset` give it (never telling a client to come back early).
pub fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The canonical name of a gRPC status code (`RESOURCE_EXHAUSTED`), as
/// metrics labels and HTTP/JSON error bodies show it.
pub fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Displays an error with its whole `source()` chain: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_violations_travel_as_rich_details() {
        let status: tonic::Status = ApiError::invalid_field("email", "must contain @").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "email");
        assert_eq!(bad.field_violations[0].description, "must contain @");
    }

    #[test]
    fn resource_exhausted_carries_retry_info() {
        let status: tonic::Status =
            ApiError::resource_exhausted("slow down", Duration::from_secs(3)).into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_error_details().retry_info().cloned().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(3)));
    }

    #[test]
    fn every_code_maps_to_its_http_status() {
        assert_eq!(ErrorCode::InvalidArgument.http(), 400);
        assert_eq!(ErrorCode::Unauthenticated.http(), 401);
        assert_eq!(ErrorCode::PermissionDenied.http(), 403);
        assert_eq!(ErrorCode::NotFound.http(), 404);
        assert_eq!(ErrorCode::AlreadyExists.http(), 409);
        assert_eq!(ErrorCode::FailedPrecondition.http(), 412);
        assert_eq!(ErrorCode::ResourceExhausted.http(), 429);
        assert_eq!(ErrorCode::Unavailable.http(), 503);
    }
}
