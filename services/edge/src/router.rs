//! Which service checks a bearer credential.

use std::net::IpAddr;

use twig_auth::Authenticator;
use twig_auth::principal::AuthFuture;
use twig_crypto::TokenKind;
use twig_errors::ApiError;
use twig_module::{CredentialCheck, NeededAll};

/// Sends each bearer credential to the service that checks its kind (by
/// the token's prefix): session access tokens to sessions, API keys to
/// api-keys, each in this process or at its remote address. A kind no
/// reachable service checks is UNAVAILABLE (never accepted).
#[derive(Clone)]
pub struct CredentialRouter {
    checks: NeededAll<CredentialCheck>,
}

impl CredentialRouter {
    /// Routes to the credential checks the suite provides.
    pub fn new(checks: NeededAll<CredentialCheck>) -> Self {
        Self { checks }
    }
}

impl Authenticator for CredentialRouter {
    fn authenticate<'a>(&'a self, bearer: &'a str, client_ip: Option<IpAddr>) -> AuthFuture<'a> {
        let kind = match TokenKind::of(bearer) {
            Some(kind @ (TokenKind::SessionAccess | TokenKind::ApiKey)) => kind,
            Some(
                TokenKind::SessionRefresh
                | TokenKind::EmailVerification
                | TokenKind::PasswordReset
                | TokenKind::Invitation,
            )
            | None => {
                return Box::pin(async {
                    Err(ApiError::unauthenticated(
                        "the bearer token is not an access token or API key this server accepts",
                    ))
                });
            }
        };
        match self.checks.get().iter().find(|c| c.kind == kind) {
            Some(check) => check.check.authenticate(bearer, client_ip),
            None => Box::pin(async move {
                Err(ApiError::unavailable(format!(
                    "the service that checks {} credentials neither runs in this process \
                     nor has a remote address",
                    kind.prefix()
                )))
            }),
        }
    }
}
