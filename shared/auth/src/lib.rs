//! Who is calling: the one authentication layer in front of every service.
//!
//! [`AuthLayer`] runs once per request, before any service code:
//! - it strips every `x-twig-principal*` header a client sent (the
//!   principal travels in request extensions, which a client cannot set);
//! - `authorization: Bearer <token>` goes to the configured
//!   [`Authenticator`]; the result is stored as an [`Authentication`];
//! - `x-twig-internal-token` is compared in constant time with the
//!   configured service credential; a match stores [`InternalCaller`].
//!
//! - the RPC's declared caller (`option (twig.auth.v1.access)` in the
//!   proto files, read into an [`AccessPolicy`]) is checked: a call that
//!   does not meet it is refused before any service code runs;
//! - then the principal's request is counted by the [`RequestQuota`]
//!   (when one runs here); over the limit it is refused.
//!
//! Where the edge runs in another process, it forwards each call with the
//! caller it decided ([`ForwardedCaller`]); next to the edge's credential
//! the layer takes that caller instead of authenticating again.
//!
//! Services then ask [`principal`] or [`require_internal`] and authorize
//! their own operations (org scoping, roles, ownership).

pub mod access;
pub mod bearer;
mod client_ip;
pub mod decide;
pub mod forwarded;
mod layer;
pub mod principal;
mod service_credential;
pub mod verify_cache;
pub mod wire;

pub use access::{AccessPolicy, PolicyError, Requirement};
pub use client_ip::client_ip;
pub use decide::{Count, Decision, Denial, Presented, Target, decide};
pub use forwarded::{FORWARDED_HEADER, Forwarded, ForwardedCaller};
pub use layer::{AuthLayer, AuthService, ClientIp, INTERNAL_TOKEN_HEADER};
pub use principal::{
    Authentication, Authenticator, Credential, InternalCaller, Principal, RequestQuota, Role, Scope,
};
pub use service_credential::ServiceCredential;
pub use verify_cache::{Stale, VerifyCache};

use twig_errors::ApiError;

/// The authenticated principal of a request, or UNAUTHENTICATED (or
/// UNAVAILABLE when the credential store is down).
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, ApiError> {
    access::principal_in(request.extensions())
}

/// The principal, which must have signed in with a session (not an API
/// key): for calls about the user's own sessions and password.
pub fn session_principal<T>(
    request: &tonic::Request<T>,
) -> Result<(&Principal, uuid::Uuid), ApiError> {
    let p = principal(request)?;
    match p.session_id() {
        Some(id) => Ok((p, id)),
        None => Err(access::not_a_session()),
    }
}

/// The end client's address: as the auth layer found it (through trusted
/// proxies, or as the edge forwarded it), else the connection's peer.
pub fn request_client_ip<T>(request: &tonic::Request<T>) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ClientIp>()
        .map(|ip| ip.0)
        .or_else(|| request.remote_addr().map(|a| a.ip()))
}

/// PERMISSION_DENIED unless the request carried the internal service
/// credential.
pub fn require_internal<T>(request: &tonic::Request<T>) -> Result<(), ApiError> {
    internal_caller(request).map(|_| ())
}

/// The internal scope of the platform operator: disabling accounts,
/// setting an organisation's plan and limits beyond it. Only an internal
/// client configured with it (and the CLI on the server) acts as the
/// operator; no session or API key ever does.
pub const OPERATOR_SCOPE: &str = "platform.operator";

/// The internal caller, or PERMISSION_DENIED.
pub fn internal_caller<T>(request: &tonic::Request<T>) -> Result<&InternalCaller, ApiError> {
    access::internal_in(request.extensions())
}

/// The internal caller holding `scope`, or PERMISSION_DENIED.
pub fn require_internal_scope<'a, T>(
    request: &'a tonic::Request<T>,
    scope: &str,
) -> Result<&'a InternalCaller, ApiError> {
    access::caller_with_scope(internal_caller(request)?, scope)
}
