//! Browser routes: the plain HTTP pages and endpoints a module serves to
//! browsers (redirects to identity providers, form POSTs back, metadata,
//! cookies), beside gRPC and the HTTP/JSON surface on the one port.
//!
//! - [`answer`]: [`json_error`], the one JSON error of browser routes.
//! - [`cookie`]: `Set-Cookie` for session and state cookies
//!   ([`Cookie`]), and reading a named cookie exactly once.
//! - [`csrf`]: [`Csrf`], the one check for cookie-authenticated
//!   state-changing requests (`Origin`/`Referer` against
//!   `server.public_origins`, plus [`CSRF_HEADER`]).
//! - [`prefix`]: the path prefix a module owns ([`check_prefix`],
//!   [`overlaps`]).
//! - [`trust`]: [`EdgeTrust`] and [`ClientInfo`], the client as the
//!   receiving process may believe it: its peer (through trusted
//!   proxies), or what the edge forwarded next to its credential.
//! - [`forward`]: [`BrowserForward`], the edge's forwarding of a remote
//!   module's browser prefix to its process.
//! - [`mount`]: every module's browser routes as one router.
//! - [`session`]: the browser session's refresh cookie, one definition
//!   for every module that signs a browser in.

pub mod answer;
pub mod cookie;
pub mod csrf;
pub mod forward;
pub mod mount;
pub mod prefix;
pub mod session;
pub mod trust;

pub use answer::json_error;
pub use cookie::{Cookie, CookieError, SameSite};
pub use csrf::{CSRF_HEADER, Csrf, CsrfLayer, CsrfRefusal};
pub use forward::BrowserForward;
pub use mount::{BrowserMount, Mounted, mount};
pub use prefix::{PrefixError, check_prefix, overlaps};
pub use trust::{ClientInfo, EdgeTrust};

/// The header carrying the edge's credential on a forwarded browser
/// request (the same one as on its gRPC calls).
pub const EDGE_CREDENTIAL_HEADER: &str = twig_auth::INTERNAL_TOKEN_HEADER;
