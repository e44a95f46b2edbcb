//! How an email signs in, from its domain and its organisation's
//! settings alone (never from whether an account exists): home-realm
//! discovery for the login page, and the password rule the sessions
//! service asks through the `PasswordPolicy` port.

use std::sync::Arc;

use futures::future::BoxFuture;
use twig_email::Email;
use twig_errors::ApiError;
use twig_module::{PasswordPolicy, PasswordSignIn};

use crate::browser::start_path;
use crate::connection::Stage;
use crate::connections::Connections;

/// How an email signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The organisation whose connection serves the domain, if any.
    pub org_id: Option<uuid::Uuid>,
    /// Through a connection (its start path), or by password (`None`).
    pub sso_start: Option<String>,
    /// Whether sign-in through the connection is what the login page
    /// should do (pilot: listed emails; enforced: everyone).
    pub use_sso: bool,
    /// Whether a password is still accepted.
    pub password_allowed: bool,
}

/// The rule, over the connections.
#[derive(Clone)]
pub struct SignInPolicy {
    connections: Arc<Connections>,
}

impl SignInPolicy {
    /// Over `connections`.
    pub fn new(connections: Arc<Connections>) -> Self {
        Self { connections }
    }

    /// How `email` signs in.
    pub async fn discover(&self, email: &Email) -> Result<Discovered, ApiError> {
        let Some(connection) = self.connections.serving(&email.domain()).await? else {
            return Ok(Discovered {
                org_id: None,
                sso_start: None,
                use_sso: false,
                password_allowed: true,
            });
        };
        let start = Some(start_path(connection.id, Some(email)));
        Ok(match connection.stage {
            Stage::Off => Discovered {
                org_id: None,
                sso_start: None,
                use_sso: false,
                password_allowed: true,
            },
            Stage::Pilot => Discovered {
                org_id: Some(connection.org_id),
                sso_start: start,
                use_sso: connection.pilot.lists(email),
                password_allowed: true,
            },
            Stage::Enforced => Discovered {
                org_id: Some(connection.org_id),
                sso_start: start,
                use_sso: true,
                password_allowed: false,
            },
        })
    }
}

impl PasswordPolicy for SignInPolicy {
    fn password_sign_in<'a>(
        &'a self,
        email: &'a str,
    ) -> BoxFuture<'a, Result<PasswordSignIn, ApiError>> {
        Box::pin(async move {
            // An email that is not valid has no domain to enforce; the
            // caller refuses it on its own terms.
            let Ok(email) = Email::parse(email) else {
                return Ok(PasswordSignIn::Allowed);
            };
            let found = self.discover(&email).await?;
            Ok(
                match (found.password_allowed, found.org_id, found.sso_start) {
                    (false, Some(org_id), Some(start_path)) => {
                        PasswordSignIn::UseSso { org_id, start_path }
                    }
                    _ => PasswordSignIn::Allowed,
                },
            )
        })
    }
}
