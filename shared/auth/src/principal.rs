//! The principal: who an authenticated request acts as.

use std::future::Future;
use std::net::IpAddr;
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

/// What an API key (or a signed-in user, through their role) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read resources.
    Read,
    /// Create and change resources.
    Write,
    /// Run agents and tools.
    Execute,
    /// Manage the organisation, its keys and settings; implies every scope.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Execute, Scope::Admin];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Execute => "execute",
            Self::Admin => "admin",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The scopes a member with `role` holds when signed in.
    pub fn of_role(role: Role) -> Vec<Scope> {
        match role {
            Role::Owner | Role::Admin => Self::ALL.to_vec(),
            Role::Member => vec![Scope::Read, Scope::Write, Scope::Execute],
        }
    }
}

/// The credential a principal authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A session's access token.
    Session {
        /// The session.
        session_id: Uuid,
    },
    /// An API key.
    ApiKey {
        /// The key.
        key_id: Uuid,
    },
}

/// An authenticated caller acting in one organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user (for an API key: the user who created it).
    pub user_id: Uuid,
    /// The organisation the credential is bound to.
    pub org_id: Uuid,
    /// The user's roles in that organisation (none for an API key).
    pub roles: Vec<Role>,
    /// What the credential may do.
    pub scopes: Vec<Scope>,
    /// How the caller authenticated.
    pub credential: Credential,
    /// When the credential stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// True if any role may manage the organisation.
    pub fn can_manage_org(&self) -> bool {
        self.roles.iter().any(|r| r.can_manage())
    }

    /// True if the credential carries `scope` (admin carries every scope).
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// PERMISSION_DENIED naming the scope unless the credential carries it.
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::permission_denied(format!(
                "this call needs the {} scope",
                scope.as_str()
            )))
        }
    }

    /// Who acted, as audit events name it: `user:<id>` or `key:<id>`.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::Session { .. } => format!("user:{}", self.user_id),
            Credential::ApiKey { key_id } => format!("key:{key_id}"),
        }
    }

    /// The session, for a session credential.
    pub fn session_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session { session_id } => Some(session_id),
            Credential::ApiKey { .. } => None,
        }
    }
}

/// The outcome of authenticating a bearer credential; present in request
/// extensions whenever the request had an `authorization` header.
#[derive(Debug, Clone)]
pub struct Authentication(pub Result<Principal, ApiError>);

/// Marks a request that carried a valid internal service credential: the
/// plain one (name `internal`, no scopes) or an internal client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalCaller {
    /// Who called, for audit events.
    pub name: String,
    /// Internal scopes it holds (e.g. `vault.reveal`).
    pub scopes: Vec<String>,
}

impl InternalCaller {
    /// True when it holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Boxed future returned by [`Authenticator::authenticate`].
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, ApiError>> + Send + 'a>>;

/// Boxed future returned by [`RequestQuota::count`].
pub type QuotaFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ApiError>> + Send + 'a>>;

/// Counts an authenticated request against its quota. The auth layer asks
/// once the RPC's requirement is met, so refused requests spend nothing.
/// Implemented by the quota service.
pub trait RequestQuota: Send + Sync + 'static {
    /// RESOURCE_EXHAUSTED (with the retry delay and the limit) when over.
    fn count<'a>(&'a self, principal: &'a Principal) -> QuotaFuture<'a>;
}

/// Turns a bearer token into a principal. Implemented by the sessions
/// service (session tokens) and the api-keys service (API keys).
pub trait Authenticator: Send + Sync + 'static {
    /// UNAUTHENTICATED for a bad token; PERMISSION_DENIED when the
    /// client's address is not allowed; UNAVAILABLE when the store is down.
    fn authenticate<'a>(&'a self, bearer: &'a str, client_ip: Option<IpAddr>) -> AuthFuture<'a>;
}
