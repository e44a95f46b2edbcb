//! The edge: the one place where a request's caller is decided.
//!
//! - [`CredentialRouter`]: a bearer credential goes to the service that
//!   issued it, by its prefix (session tokens to sessions, API keys to
//!   api-keys);
//! - [`Authorizer`]: the whole decision for one request — credential, the
//!   method's declared caller or a required scope, IP allowlists (checked
//!   by the credential's service), then quota;
//! - [`grpc::AuthorizeGrpc`]: `twig.edge.v1.AuthorizeService` on the wire;
//! - [`json`]: the HTTP/JSON routes, each call made as the RPC's gRPC call;
//! - [`Forward`]: a service in another process, called with the caller
//!   the edge decided.

mod authorize;
mod forward;
mod grpc;
mod json;
mod module;
mod router;

pub use authorize::{Authorizer, Decision, Denial, Target};
pub use forward::Forward;
pub use module::{EdgeModule, MODULE};
pub use router::CredentialRouter;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.edge.v1.AuthorizeService";
