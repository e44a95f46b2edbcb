//! Which service checks a bearer credential.

use std::net::IpAddr;
use std::sync::Arc;

use twig_auth::Authenticator;
use twig_auth::principal::AuthFuture;
use twig_crypto::TokenKind;
use twig_errors::ApiError;

/// Sends a session access token to the sessions service and an API key to
/// the api-keys service, by the token's prefix. A service that does not
/// run here leaves its credentials UNAVAILABLE (never accepted).
#[derive(Clone, Default)]
pub struct CredentialRouter {
    /// Checks `twig_st_…` session access tokens.
    pub sessions: Option<Arc<dyn Authenticator>>,
    /// Checks `twig_sk_…` API keys.
    pub api_keys: Option<Arc<dyn Authenticator>>,
}

impl Authenticator for CredentialRouter {
    fn authenticate<'a>(&'a self, bearer: &'a str, client_ip: Option<IpAddr>) -> AuthFuture<'a> {
        let (service, name) = match TokenKind::of(bearer) {
            Some(TokenKind::SessionAccess) => (&self.sessions, "sessions"),
            Some(TokenKind::ApiKey) => (&self.api_keys, "api-keys"),
            Some(TokenKind::SessionRefresh) | None => {
                return Box::pin(async {
                    Err(ApiError::unauthenticated(
                        "the bearer token is not an access token or API key this server accepts",
                    ))
                });
            }
        };
        match service {
            Some(service) => service.authenticate(bearer, client_ip),
            None => Box::pin(async move {
                Err(ApiError::unavailable(format!(
                    "the {name} service, which checks this credential, does not run in this process"
                )))
            }),
        }
    }
}
