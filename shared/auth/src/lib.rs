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
//! Services then ask [`principal`] or [`require_internal`] and authorize
//! their own operations (org scoping, roles).

mod client_ip;
mod layer;
pub mod principal;

pub use client_ip::client_ip;
pub use layer::{AuthLayer, AuthService, ClientIp, INTERNAL_TOKEN_HEADER};
pub use principal::{
    Authentication, Authenticator, Credential, InternalCaller, Principal, Role, Scope,
};

use twig_errors::ApiError;

/// The authenticated principal of a request, or UNAUTHENTICATED (or
/// UNAVAILABLE when the credential store is down).
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, ApiError> {
    match request.extensions().get::<Authentication>() {
        Some(Authentication(Ok(p))) => Ok(p),
        Some(Authentication(Err(e))) => Err(e.clone()),
        None => Err(ApiError::unauthenticated(
            "this call needs `authorization: Bearer <access token>`",
        )),
    }
}

/// The principal, which must have signed in with a session (not an API
/// key): for calls about the user's own sessions and password.
pub fn session_principal<T>(
    request: &tonic::Request<T>,
) -> Result<(&Principal, uuid::Uuid), ApiError> {
    let p = principal(request)?;
    match p.session_id() {
        Some(id) => Ok((p, id)),
        None => Err(ApiError::permission_denied(
            "this call needs a signed-in user's session token, not an API key",
        )),
    }
}

/// PERMISSION_DENIED unless the request carried the internal service
/// credential.
pub fn require_internal<T>(request: &tonic::Request<T>) -> Result<(), ApiError> {
    internal_caller(request).map(|_| ())
}

/// The internal caller, or PERMISSION_DENIED.
pub fn internal_caller<T>(request: &tonic::Request<T>) -> Result<&InternalCaller, ApiError> {
    request.extensions().get::<InternalCaller>().ok_or_else(|| {
        ApiError::permission_denied(
            "internal RPC: present the service credential in x-twig-internal-token",
        )
    })
}

/// The internal caller holding `scope`, or PERMISSION_DENIED.
pub fn require_internal_scope<'a, T>(
    request: &'a tonic::Request<T>,
    scope: &str,
) -> Result<&'a InternalCaller, ApiError> {
    let caller = internal_caller(request)?;
    if caller.has_scope(scope) {
        Ok(caller)
    } else {
        Err(ApiError::permission_denied(format!(
            "this internal RPC needs an internal client with the {scope} scope \
             (auth.internal_clients); {:?} does not hold it",
            caller.name
        )))
    }
}
