//! Who may call each RPC, as the proto files declare it.
//!
//! Every RPC carries `option (twig.auth.v1.access) = {...}`. [`AccessPolicy`]
//! takes those options from the API's catalogue
//! ([`twig_proto::catalogue::Catalogue`], read from the descriptor set the
//! build produces), so the rule lives beside the RPC and nowhere else; the
//! auth layer checks it before any service code runs.

use std::collections::HashMap;

use http::Extensions;
use twig_errors::ApiError;
use twig_proto::auth::v1 as pb;
use twig_proto::catalogue::Catalogue;

use crate::principal::{Authentication, InternalCaller, Principal, Scope};
use crate::wire::{UnknownScope, scope_from_pb};

/// What an RPC requires of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone.
    Public,
    /// A session or API key, with the scope if one is named.
    Principal(Option<Scope>),
    /// A signed-in user's session, with the scope if one is named.
    Session(Option<Scope>),
    /// The internal credential, of a client holding the internal scope if
    /// one is named.
    Internal(Option<String>),
    /// The internal credential, or a principal with the scope.
    PrincipalOrInternal(Option<Scope>),
}

/// Why the declared access rules cannot be used. The server does not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// An RPC of a twig service has no `(twig.auth.v1.access)` option.
    #[error(
        "{0} declares no caller: add `option (twig.auth.v1.access) = {{caller: …}};` to the RPC"
    )]
    Undeclared(String),
    /// An option that makes no sense, e.g. a scope on a public RPC.
    #[error("{path}: {reason}")]
    Invalid {
        /// The RPC.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The requirement of every RPC, by gRPC path (`/package.Service/Method`).
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    rules: HashMap<String, Requirement>,
}

impl AccessPolicy {
    /// The policy of the given RPCs, each a gRPC path and its
    /// `(twig.auth.v1.access)` option; each must declare its caller.
    pub fn from_declarations<'a>(
        rpcs: impl IntoIterator<Item = (&'a str, Option<&'a pb::Access>)>,
    ) -> Result<Self, PolicyError> {
        let mut rules = HashMap::new();
        for (path, access) in rpcs {
            rules.insert(path.to_string(), requirement(path, access)?);
        }
        Ok(Self { rules })
    }

    /// The policy of the twig APIs built into this binary: every RPC of the
    /// catalogue whose package starts with `twig.`.
    pub fn of_twig_apis() -> Result<Self, PolicyError> {
        Self::from_declarations(
            Catalogue::get()
                .rpcs()
                .filter(|rpc| rpc.service.starts_with("twig."))
                .map(|rpc| (rpc.path.as_str(), rpc.access.as_ref())),
        )
    }

    /// The requirement of the RPC at `path`; `None` for paths that are not
    /// twig RPCs (health, reflection), which are open to everyone.
    pub fn requirement(&self, path: &str) -> Option<&Requirement> {
        self.rules.get(path)
    }

    /// Every declared RPC path.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.rules.keys().map(String::as_str)
    }
}

fn requirement(path: &str, access: Option<&pb::Access>) -> Result<Requirement, PolicyError> {
    let access = access.ok_or_else(|| PolicyError::Undeclared(path.to_string()))?;
    let invalid = |reason| PolicyError::Invalid {
        path: path.to_string(),
        reason,
    };
    let scope = scope_from_pb(access.scope).map_err(|UnknownScope| invalid("unknown scope"))?;
    let internal_scope = Some(access.internal_scope.clone()).filter(|s| !s.is_empty());
    let caller = pb::Caller::try_from(access.caller).map_err(|_| invalid("unknown caller"))?;
    if caller != pb::Caller::Internal && internal_scope.is_some() {
        return Err(invalid("internal_scope applies to CALLER_INTERNAL only"));
    }
    match caller {
        pb::Caller::Unspecified => Err(PolicyError::Undeclared(path.to_string())),
        pb::Caller::Public if scope.is_some() => Err(invalid("a public RPC takes no scope")),
        pb::Caller::Public => Ok(Requirement::Public),
        pb::Caller::Principal => Ok(Requirement::Principal(scope)),
        pb::Caller::Session => Ok(Requirement::Session(scope)),
        pb::Caller::Internal if scope.is_some() => Err(invalid(
            "an internal RPC takes internal_scope, not a principal's scope",
        )),
        pb::Caller::Internal => Ok(Requirement::Internal(internal_scope)),
        pb::Caller::PrincipalOrInternal => Ok(Requirement::PrincipalOrInternal(scope)),
    }
}

impl Requirement {
    /// Whether the request, as the auth layer authenticated it (its
    /// extensions), meets the requirement; the error says what is missing.
    pub fn check(&self, extensions: &Extensions) -> Result<(), ApiError> {
        self.check_caller(
            || principal_in(extensions),
            extensions.get::<InternalCaller>(),
        )
    }

    /// Whether `principal`, calling from outside (no internal credential),
    /// meets the requirement.
    pub fn check_principal(&self, principal: &Principal) -> Result<(), ApiError> {
        self.check_caller(|| Ok(principal), None)
    }

    /// Whether the caller — its principal as authenticated (asked only if
    /// needed) and its internal credential — meets the requirement.
    pub(crate) fn check_caller<'a>(
        &self,
        principal: impl FnOnce() -> Result<&'a Principal, ApiError>,
        internal: Option<&InternalCaller>,
    ) -> Result<(), ApiError> {
        match self {
            Requirement::Public => Ok(()),
            Requirement::Principal(scope) => with_scope(principal()?, *scope),
            Requirement::Session(scope) => {
                let p = principal()?;
                if p.session_id().is_none() {
                    return Err(not_a_session());
                }
                with_scope(p, *scope)
            }
            Requirement::Internal(scope) => {
                let caller = internal.ok_or_else(not_internal)?;
                match scope {
                    Some(scope) => caller_with_scope(caller, scope).map(|_| ()),
                    None => Ok(()),
                }
            }
            Requirement::PrincipalOrInternal(scope) => match internal {
                Some(_) => Ok(()),
                None => with_scope(principal()?, *scope),
            },
        }
    }
}

fn with_scope(principal: &Principal, scope: Option<Scope>) -> Result<(), ApiError> {
    match scope {
        Some(scope) => principal.require_scope(scope),
        None => Ok(()),
    }
}

/// The authenticated principal in `extensions`, or UNAUTHENTICATED (or the
/// authentication's own error, e.g. UNAVAILABLE when the store is down).
pub(crate) fn principal_in(extensions: &Extensions) -> Result<&Principal, ApiError> {
    match extensions.get::<Authentication>() {
        Some(Authentication(Ok(p))) => Ok(p),
        Some(Authentication(Err(e))) => Err(e.clone()),
        None => Err(unauthenticated_without_bearer()),
    }
}

/// UNAUTHENTICATED for a call that needs a principal and presented no
/// credential.
pub(crate) fn unauthenticated_without_bearer() -> ApiError {
    ApiError::unauthenticated("this call needs `authorization: Bearer <access token>`")
}

pub(crate) fn not_a_session() -> ApiError {
    ApiError::permission_denied("this call needs a signed-in user's session token, not an API key")
}

/// The internal caller in `extensions`, or PERMISSION_DENIED.
pub(crate) fn internal_in(extensions: &Extensions) -> Result<&InternalCaller, ApiError> {
    extensions.get::<InternalCaller>().ok_or_else(not_internal)
}

fn not_internal() -> ApiError {
    ApiError::permission_denied(
        "internal RPC: present the service credential in x-twig-internal-token",
    )
}

/// The internal caller if it holds `scope`, or PERMISSION_DENIED.
pub(crate) fn caller_with_scope<'a>(
    caller: &'a InternalCaller,
    scope: &str,
) -> Result<&'a InternalCaller, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Credential;

    /// The policy of one RPC, `/twig.demo.v1.DemoService/Do`, declared so.
    fn policy_with(access: Option<pb::Access>) -> Result<AccessPolicy, PolicyError> {
        AccessPolicy::from_declarations([("/twig.demo.v1.DemoService/Do", access.as_ref())])
    }

    fn access(caller: pb::Caller, scope: pb::Scope, internal_scope: &str) -> Option<pb::Access> {
        Some(pb::Access {
            caller: caller as i32,
            scope: scope as i32,
            internal_scope: internal_scope.into(),
        })
    }

    #[test]
    fn every_twig_rpc_declares_its_caller() {
        let policy = AccessPolicy::of_twig_apis().expect("every RPC declares its caller");
        // Spot checks against the proto files.
        let get = |p: &str| policy.requirement(p).cloned();
        assert_eq!(
            get("/twig.sessions.v1.SessionService/Login"),
            Some(Requirement::Public)
        );
        assert_eq!(
            get("/twig.apikeys.v1.ApiKeyService/SetOrgAllowlist"),
            Some(Requirement::Principal(Some(Scope::Admin)))
        );
        assert_eq!(
            get("/twig.vault.v1.VaultService/RevealProviderKey"),
            Some(Requirement::Internal(Some("vault.reveal".into())))
        );
        assert_eq!(
            get("/twig.sessions.v1.SessionService/ChangePassword"),
            Some(Requirement::Session(None))
        );
        assert_eq!(get("/grpc.health.v1.Health/Check"), None);
        assert!(
            policy.paths().count() >= 40,
            "every service's RPCs are read"
        );
    }

    #[test]
    fn an_rpc_without_a_declaration_stops_the_start() {
        let err = policy_with(None).unwrap_err();
        assert_eq!(
            err,
            PolicyError::Undeclared("/twig.demo.v1.DemoService/Do".into())
        );
        assert!(err.to_string().contains("option (twig.auth.v1.access)"));
        let unspecified = access(pb::Caller::Unspecified, pb::Scope::Unspecified, "");
        assert!(matches!(
            policy_with(unspecified),
            Err(PolicyError::Undeclared(_))
        ));
    }

    #[test]
    fn contradictory_declarations_stop_the_start() {
        for bad in [
            access(pb::Caller::Public, pb::Scope::Read, ""),
            access(pb::Caller::Internal, pb::Scope::Admin, ""),
            access(pb::Caller::Principal, pb::Scope::Read, "vault.reveal"),
        ] {
            assert!(
                matches!(policy_with(bad.clone()), Err(PolicyError::Invalid { .. })),
                "{bad:?}"
            );
        }
        // A descriptor set that does not decode is the catalogue's
        // (twig_proto::catalogue, sets_that_cannot_be_read_are_refused).
    }

    fn principal(credential: Credential, scopes: Vec<Scope>) -> Principal {
        Principal {
            user_id: uuid::Uuid::nil(),
            org_id: uuid::Uuid::nil(),
            roles: Vec::new(),
            scopes,
            credential,
            expires_at: None,
        }
    }

    fn with_principal(p: Principal) -> Extensions {
        let mut e = Extensions::new();
        e.insert(Authentication(Ok(p)));
        e
    }

    #[test]
    fn requirements_say_what_is_missing() {
        let key = Credential::ApiKey {
            key_id: uuid::Uuid::nil(),
        };
        let session = Credential::Session {
            session_id: uuid::Uuid::nil(),
        };
        let none = Extensions::new();
        let reader = with_principal(principal(key, vec![Scope::Read]));
        let member = with_principal(principal(session, vec![Scope::Read, Scope::Write]));
        let mut internal = Extensions::new();
        internal.insert(InternalCaller {
            name: "runtime".into(),
            scopes: vec!["vault.reveal".into()],
        });
        let mut plain_internal = Extensions::new();
        plain_internal.insert(InternalCaller {
            name: "internal".into(),
            scopes: Vec::new(),
        });

        assert!(Requirement::Public.check(&none).is_ok());
        let code = |r: Result<(), ApiError>| tonic::Status::from(r.unwrap_err()).code();
        assert_eq!(
            code(Requirement::Principal(None).check(&none)),
            tonic::Code::Unauthenticated
        );
        assert!(
            Requirement::Principal(Some(Scope::Read))
                .check(&reader)
                .is_ok()
        );
        let denied = Requirement::Principal(Some(Scope::Write))
            .check(&reader)
            .unwrap_err();
        assert!(
            tonic::Status::from(denied)
                .message()
                .contains("write scope")
        );
        assert_eq!(
            code(Requirement::Session(None).check(&reader)),
            tonic::Code::PermissionDenied
        );
        assert!(
            Requirement::Session(Some(Scope::Write))
                .check(&member)
                .is_ok()
        );
        assert_eq!(
            code(Requirement::Internal(None).check(&member)),
            tonic::Code::PermissionDenied
        );
        assert!(
            Requirement::Internal(Some("vault.reveal".into()))
                .check(&internal)
                .is_ok()
        );
        assert_eq!(
            code(Requirement::Internal(Some("vault.reveal".into())).check(&plain_internal)),
            tonic::Code::PermissionDenied
        );
        assert!(
            Requirement::PrincipalOrInternal(Some(Scope::Admin))
                .check(&plain_internal)
                .is_ok()
        );
        assert_eq!(
            code(Requirement::PrincipalOrInternal(Some(Scope::Admin)).check(&reader)),
            tonic::Code::PermissionDenied
        );
    }
}
