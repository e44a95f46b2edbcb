//! [`OutboundError`]: what went wrong with an outbound request, and what
//! to do about it.

use std::fmt;
use std::net::IpAddr;

use http::StatusCode;

use crate::address::AddressClass;

/// Which timeout ended a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Setting up the connection (DNS, TCP, TLS) took longer than
    /// `connect_timeout`.
    Connect,
    /// The server sent nothing (response head, or the next part of the
    /// body) for `read_timeout`.
    Read,
    /// The whole call, with retries and redirects, took longer than
    /// `total_timeout`.
    Total,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting (connect_timeout)",
            Self::Read => "waiting for the server (read_timeout)",
            Self::Total => "the whole call (total_timeout)",
        })
    }
}

/// An outbound request failed. Responses with any status are not errors
/// ([`OutboundClient::send`](crate::OutboundClient::send) returns them);
/// only [`get_json`](crate::OutboundClient::get_json) turns a non-2xx
/// status into [`OutboundError::Status`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundError {
    /// The request could not be built or its URL is not an absolute
    /// http(s) URL.
    #[error("invalid outbound request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The URL's scheme is neither `http` nor `https`.
    #[error("URL scheme {scheme:?} is not allowed: only http and https URLs are fetched")]
    ForbiddenScheme {
        /// The scheme refused.
        scheme: String,
    },
    /// The URL carries a user name or password (`https://user:pw@host/`).
    #[error(
        "URLs with credentials (user:password@) are refused: send credentials in headers instead"
    )]
    CredentialsInUrl,
    /// The host is, or resolves only to, an address the rules refuse.
    #[error(
        "refused to connect to {host} at {address}: it is {class}; if this destination is \
         intended, add its network to the outbound allow_networks setting"
    )]
    ForbiddenAddress {
        /// The host as written in the URL.
        host: String,
        /// The address refused (the first, when DNS gave several).
        address: IpAddr,
        /// Why it is refused.
        class: AddressClass,
    },
    /// The server redirected and the redirect may not be followed.
    #[error("refused to follow the {status} redirect to {location}: {reason}")]
    RedirectRefused {
        /// The redirect status.
        status: StatusCode,
        /// Where it pointed (without query or fragment), or what the
        /// `Location` header held when it is not a URL.
        location: String,
        /// Why it is refused, and what to do.
        reason: &'static str,
    },
    /// More redirects than `max_redirects` in a row.
    #[error(
        "more than {limit} redirects in a row; use the final URL directly or raise max_redirects"
    )]
    TooManyRedirects {
        /// The configured `max_redirects`.
        limit: u32,
    },
    /// A timeout ended the request.
    #[error("outbound request timed out {phase}")]
    Timeout {
        /// Which one.
        phase: TimeoutPhase,
    },
    /// The response body is larger than `max_body_bytes`.
    #[error(
        "response body larger than {limit} bytes (max_body_bytes); raise it if this is expected"
    )]
    BodyTooLarge {
        /// The configured `max_body_bytes`.
        limit: u64,
    },
    /// [`get_json`](crate::OutboundClient::get_json) only: the server
    /// answered with a status that is not 2xx.
    #[error("the server answered {status}")]
    Status {
        /// The status received.
        status: StatusCode,
    },
    /// [`get_json`](crate::OutboundClient::get_json) only: the body is not
    /// the JSON expected.
    #[error("the response is not the JSON expected")]
    Json(#[source] serde_json::Error),
    /// The connection failed or broke (refused, reset, TLS, protocol).
    #[error("outbound request failed")]
    Transport(#[source] reqwest::Error),
}

impl OutboundError {
    /// The bounded `outcome` metric label of this error.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidRequest { .. } => "invalid_request",
            Self::ForbiddenScheme { .. } | Self::CredentialsInUrl => "forbidden_url",
            Self::ForbiddenAddress { .. } => "forbidden_address",
            Self::RedirectRefused { .. } => "redirect_refused",
            Self::TooManyRedirects { .. } => "too_many_redirects",
            Self::Timeout { .. } => "timeout",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::Status { .. } => "status",
            Self::Json(_) => "invalid_json",
            Self::Transport(_) => "transport",
        }
    }
}
