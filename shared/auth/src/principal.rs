//! The principal: who an authenticated request acts as.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use twig_errors::ApiError;
use uuid::Uuid;

/// A member's role in an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Full control, including other owners.
    Owner,
    /// Manages members and settings.
    Admin,
    /// Uses the organisation.
    Member,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }

    /// Owners and admins manage the organisation.
    pub fn can_manage(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }
}

/// An authenticated caller acting in one organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user.
    pub user_id: Uuid,
    /// The organisation the credential is bound to.
    pub org_id: Uuid,
    /// The user's roles in that organisation.
    pub roles: Vec<Role>,
    /// The session the credential belongs to.
    pub session_id: Uuid,
    /// When the credential stops working.
    pub expires_at: DateTime<Utc>,
}

impl Principal {
    /// True if any role may manage the organisation.
    pub fn can_manage_org(&self) -> bool {
        self.roles.iter().any(|r| r.can_manage())
    }
}

/// The outcome of authenticating a bearer credential; present in request
/// extensions whenever the request had an `authorization` header.
#[derive(Debug, Clone)]
pub struct Authentication(pub Result<Principal, ApiError>);

/// Marks a request that carried a valid internal service credential.
#[derive(Debug, Clone, Copy)]
pub struct InternalCaller;

/// Boxed future returned by [`Authenticator::authenticate`].
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, ApiError>> + Send + 'a>>;

/// Turns a bearer token into a principal. Implemented by the sessions
/// service (session tokens) and later by api-keys.
pub trait Authenticator: Send + Sync + 'static {
    /// UNAUTHENTICATED for a bad token; UNAVAILABLE when the store is down.
    fn authenticate<'a>(&'a self, bearer: &'a str) -> AuthFuture<'a>;
}
