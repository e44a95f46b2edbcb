//! The one conversion between [`Principal`]/[`Scope`] and their wire
//! shapes, `twig.auth.v1.Principal` and `twig.auth.v1.Scope`
//! (proto `twig/auth/v1/principal.proto`). Every principal on the wire —
//! `VerifySession`'s and `VerifyApiKey`'s answers, `Authorize`'s answer,
//! the edge's forwarded caller — goes through here.

use twig_proto::auth::v1 as pb;
use uuid::Uuid;

use crate::principal::{Credential, Principal, Role, Scope};

/// A number that is no `twig.auth.v1.Scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownScope;

/// A `twig.auth.v1.Scope` as a [`Scope`]; `None` for unspecified.
pub fn scope_from_pb(raw: i32) -> Result<Option<Scope>, UnknownScope> {
    match pb::Scope::try_from(raw).map_err(|_| UnknownScope)? {
        pb::Scope::Unspecified => Ok(None),
        pb::Scope::Read => Ok(Some(Scope::Read)),
        pb::Scope::Write => Ok(Some(Scope::Write)),
        pb::Scope::Execute => Ok(Some(Scope::Execute)),
        pb::Scope::Admin => Ok(Some(Scope::Admin)),
    }
}

/// A [`Scope`] as `twig.auth.v1.Scope`.
pub fn scope_to_pb(scope: Scope) -> pb::Scope {
    match scope {
        Scope::Read => pb::Scope::Read,
        Scope::Write => pb::Scope::Write,
        Scope::Execute => pb::Scope::Execute,
        Scope::Admin => pb::Scope::Admin,
    }
}

impl Principal {
    /// The principal as `twig.auth.v1.Principal`.
    pub fn to_pb(&self) -> pb::Principal {
        pb::Principal {
            user_id: self.user_id.to_string(),
            organization_id: self.org_id.to_string(),
            roles: self.roles.iter().map(|r| r.as_str().to_string()).collect(),
            scopes: self.scopes.iter().map(|s| scope_to_pb(*s) as i32).collect(),
            credential: Some(match self.credential {
                Credential::Session { session_id } => {
                    pb::principal::Credential::SessionId(session_id.to_string())
                }
                Credential::ApiKey { key_id } => {
                    pb::principal::Credential::ApiKeyId(key_id.to_string())
                }
            }),
            expires_at: self.expires_at.map(twig_proto::timestamp),
        }
    }

    /// A `twig.auth.v1.Principal` read back; the error names the field
    /// that is not what this process sends.
    pub fn from_pb(p: &pb::Principal) -> Result<Self, &'static str> {
        let uuid = |s: &str, what: &'static str| Uuid::parse_str(s).map_err(|_| what);
        let credential = match &p.credential {
            Some(pb::principal::Credential::SessionId(id)) => Credential::Session {
                session_id: uuid(id, "session_id is not a UUID")?,
            },
            Some(pb::principal::Credential::ApiKeyId(id)) => Credential::ApiKey {
                key_id: uuid(id, "api_key_id is not a UUID")?,
            },
            None => return Err("the principal has no credential"),
        };
        let roles = p
            .roles
            .iter()
            .map(|r| Role::parse(r).ok_or("unknown role"))
            .collect::<Result<_, _>>()?;
        let scopes = p
            .scopes
            .iter()
            .map(|s| match scope_from_pb(*s) {
                Ok(Some(scope)) => Ok(scope),
                _ => Err("unknown scope"),
            })
            .collect::<Result<_, _>>()?;
        let expires_at = match &p.expires_at {
            Some(t) => Some(twig_proto::datetime(t).ok_or("expires_at is out of range")?),
            None => None,
        };
        Ok(Principal {
            user_id: uuid(&p.user_id, "user_id is not a UUID")?,
            org_id: uuid(&p.organization_id, "organization_id is not a UUID")?,
            roles,
            scopes,
            credential,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_survives_the_wire() {
        for credential in [
            Credential::Session {
                session_id: Uuid::new_v4(),
            },
            Credential::ApiKey {
                key_id: Uuid::new_v4(),
            },
        ] {
            let p = Principal {
                user_id: Uuid::new_v4(),
                org_id: Uuid::new_v4(),
                roles: vec![Role::Owner, Role::Member],
                scopes: Scope::ALL.to_vec(),
                credential,
                expires_at: chrono::DateTime::from_timestamp(1_900_000_000, 0),
            };
            assert_eq!(Principal::from_pb(&p.to_pb()).unwrap(), p);
        }
    }

    #[test]
    fn every_scope_survives_the_wire() {
        for scope in Scope::ALL {
            assert_eq!(scope_from_pb(scope_to_pb(scope) as i32), Ok(Some(scope)));
        }
        assert_eq!(scope_from_pb(0), Ok(None));
        assert_eq!(scope_from_pb(99), Err(UnknownScope));
    }
}
