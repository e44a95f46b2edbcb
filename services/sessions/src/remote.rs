//! The sessions service in another process: as an [`Authenticator`] (a
//! session access token is checked there with `VerifySession`), and as
//! the [`SessionIssuing`] and [`UserDirectory`] ports over the internal
//! RPCs `IssueSession`, `FindUser` and `ProvisionUser`.

use std::net::IpAddr;

use futures::future::BoxFuture;
use tonic::transport::Channel;
use twig_auth::principal::AuthFuture;
use twig_auth::{Authenticator, Principal, Role, ServiceCredential, Stale};
use twig_config::Secret;
use twig_errors::ApiError;
use twig_module::{
    DirectoryUser, IssuedSession, ProvisionedUser, SessionClient, SessionIssuing, SessionMethod,
    UserDirectory,
};
use twig_proto::sessions::v1 as pb;
use twig_proto::sessions::v1::session_service_client::SessionServiceClient;
use uuid::Uuid;

/// Checks session access tokens with the sessions service at a gRPC
/// address (`remote.sessions`).
#[derive(Clone)]
pub struct RemoteSessionAuthenticator {
    client: SessionServiceClient<Channel>,
    credential: ServiceCredential,
}

impl RemoteSessionAuthenticator {
    /// Calls the sessions service on `channel`, presenting `credential`.
    pub fn new(channel: Channel, credential: ServiceCredential) -> Self {
        Self {
            client: SessionServiceClient::new(channel),
            credential,
        }
    }
}

impl Authenticator for RemoteSessionAuthenticator {
    fn authenticate<'a>(&'a self, bearer: &'a str, _client_ip: Option<IpAddr>) -> AuthFuture<'a> {
        Box::pin(async move {
            let request = self.credential.request(pb::VerifySessionRequest {
                access_token: bearer.to_string(),
            });
            let answer = self
                .client
                .clone()
                .verify_session(request)
                .await
                .map_err(|status| ApiError::from_remote("sessions", &status))?
                .into_inner();
            principal_of(&answer).ok_or_else(|| {
                ApiError::unavailable(
                    "the sessions service answered with a principal this process cannot read; \
                     run the services at the same version",
                )
            })
        })
    }
}

/// The principal a `VerifySession` answer stands for; `None` when it is
/// not a session's.
fn principal_of(answer: &pb::VerifySessionResponse) -> Option<Principal> {
    let p = Principal::from_pb(answer.principal.as_ref()?).ok()?;
    p.session_id().is_some().then_some(p)
}

/// An answer this process cannot read: the services run at different
/// versions.
fn unreadable() -> ApiError {
    ApiError::unavailable(
        "the sessions service answered with a message this process cannot read; \
         run the services at the same version",
    )
}

/// Mints sessions with the sessions service at a gRPC address
/// (`IssueSession`).
#[derive(Clone)]
pub struct RemoteSessionIssuer {
    client: SessionServiceClient<Channel>,
    credential: ServiceCredential,
}

impl RemoteSessionIssuer {
    /// Calls the sessions service on `channel`, presenting `credential`.
    pub fn new(channel: Channel, credential: ServiceCredential) -> Self {
        Self {
            client: SessionServiceClient::new(channel),
            credential,
        }
    }
}

impl SessionIssuing for RemoteSessionIssuer {
    fn issue_session<'a>(
        &'a self,
        user_id: Uuid,
        org_id: Uuid,
        method: &'a SessionMethod,
        client: &'a SessionClient,
    ) -> BoxFuture<'a, Result<IssuedSession, ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::IssueSessionRequest {
                user_id: user_id.to_string(),
                organization_id: org_id.to_string(),
                method: method.to_string(),
                ip: client.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                user_agent: client.user_agent.clone().unwrap_or_default(),
            });
            let tokens = self
                .client
                .clone()
                .issue_session(request)
                .await
                .map_err(|status| ApiError::from_remote("sessions", &status))?
                .into_inner()
                .tokens
                .ok_or_else(unreadable)?;
            issued_of(tokens).ok_or_else(unreadable)
        })
    }

    /// The public `Login`, called on the person's behalf. (Per-address
    /// brakes see this process's address, not the person's.)
    fn sign_in_with_password<'a>(
        &'a self,
        email: &'a str,
        password: &'a str,
        _client: &'a SessionClient,
    ) -> BoxFuture<'a, Result<(Uuid, Uuid, IssuedSession), ApiError>> {
        Box::pin(async move {
            let answer = self
                .client
                .clone()
                .login(pb::LoginRequest {
                    email: email.to_string(),
                    password: password.to_string(),
                    organization_id: String::new(),
                })
                .await
                .map_err(|status| ApiError::from_remote("sessions", &status))?
                .into_inner();
            let user = answer
                .user
                .and_then(|u| Uuid::parse_str(&u.id).ok())
                .ok_or_else(unreadable)?;
            let org = Uuid::parse_str(&answer.organization_id).map_err(|_| unreadable())?;
            let session = answer.tokens.and_then(issued_of).ok_or_else(unreadable)?;
            Ok((user, org, session))
        })
    }
}

fn issued_of(t: pb::SessionTokens) -> Option<IssuedSession> {
    Some(IssuedSession {
        session_id: Uuid::parse_str(&t.session_id).ok()?,
        access_token: Secret::new(t.access_token),
        access_expires_at: twig_proto::datetime(t.access_expires_at.as_ref()?)?,
        refresh_token: Secret::new(t.refresh_token),
        refresh_expires_at: twig_proto::datetime(t.refresh_expires_at.as_ref()?)?,
    })
}

/// Finds and provisions users with the sessions service at a gRPC
/// address (`FindUser`, `ProvisionUser`).
#[derive(Clone)]
pub struct RemoteUserDirectory {
    client: SessionServiceClient<Channel>,
    credential: ServiceCredential,
}

impl RemoteUserDirectory {
    /// Calls the sessions service on `channel`, presenting `credential`.
    pub fn new(channel: Channel, credential: ServiceCredential) -> Self {
        Self {
            client: SessionServiceClient::new(channel),
            credential,
        }
    }

    async fn find(&self, by: pb::find_user_request::By) -> Result<Option<DirectoryUser>, ApiError> {
        let request = self
            .credential
            .request(pb::FindUserRequest { by: Some(by) });
        let answer = self
            .client
            .clone()
            .find_user(request)
            .await
            .map_err(|status| ApiError::from_remote("sessions", &status))?
            .into_inner();
        match answer.user {
            None => Ok(None),
            Some(user) => user_of(&user).map(Some).ok_or_else(unreadable),
        }
    }
}

fn user_of(u: &pb::User) -> Option<DirectoryUser> {
    Some(DirectoryUser {
        id: Uuid::parse_str(&u.id).ok()?,
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        disabled: u.disabled,
    })
}

impl UserDirectory for RemoteUserDirectory {
    fn find_user_by_email<'a>(
        &'a self,
        email: &'a str,
    ) -> BoxFuture<'a, Result<Option<DirectoryUser>, ApiError>> {
        Box::pin(self.find(pb::find_user_request::By::Email(email.to_string())))
    }

    fn find_user<'a>(
        &'a self,
        user_id: Uuid,
    ) -> BoxFuture<'a, Result<Option<DirectoryUser>, ApiError>> {
        Box::pin(self.find(pb::find_user_request::By::UserId(user_id.to_string())))
    }

    fn provision_user<'a>(
        &'a self,
        email: &'a str,
        display_name: &'a str,
        org_id: Uuid,
        role: Role,
    ) -> BoxFuture<'a, Result<ProvisionedUser, ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::ProvisionUserRequest {
                email: email.to_string(),
                display_name: display_name.to_string(),
                organization_id: org_id.to_string(),
                role: crate::grpc::role_to_pb(role) as i32,
            });
            let answer = self
                .client
                .clone()
                .provision_user(request)
                .await
                .map_err(|status| ApiError::from_remote("sessions", &status))?
                .into_inner();
            let user = answer
                .user
                .as_ref()
                .and_then(user_of)
                .ok_or_else(unreadable)?;
            let role = crate::grpc::role_from_pb(answer.role).map_err(|_| unreadable())?;
            Ok(ProvisionedUser {
                user,
                role,
                created_user: answer.created_user,
                joined: answer.joined,
            })
        })
    }

    fn create_federated_account<'a>(
        &'a self,
        email: &'a str,
        display_name: &'a str,
    ) -> BoxFuture<'a, Result<(DirectoryUser, Uuid), ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::CreateFederatedAccountRequest {
                email: email.to_string(),
                display_name: display_name.to_string(),
            });
            let answer = self
                .client
                .clone()
                .create_federated_account(request)
                .await
                .map_err(|status| ApiError::from_remote("sessions", &status))?
                .into_inner();
            let user = answer
                .user
                .as_ref()
                .and_then(user_of)
                .ok_or_else(unreadable)?;
            let org = answer
                .organization
                .and_then(|o| Uuid::parse_str(&o.id).ok())
                .ok_or_else(unreadable)?;
            Ok((user, org))
        })
    }

    fn sign_in_facts<'a>(
        &'a self,
        user_id: Uuid,
    ) -> BoxFuture<'a, Result<twig_module::SignInFacts, ApiError>> {
        Box::pin(async move {
            let request = self.credential.request(pb::GetSignInFactsRequest {
                user_id: user_id.to_string(),
            });
            let answer = self
                .client
                .clone()
                .get_sign_in_facts(request)
                .await
                .map_err(|status| ApiError::from_remote("sessions", &status))?
                .into_inner();
            let home_org = if answer.home_organization_id.is_empty() {
                None
            } else {
                Some(Uuid::parse_str(&answer.home_organization_id).map_err(|_| unreadable())?)
            };
            Ok(twig_module::SignInFacts {
                has_password: answer.has_password,
                home_org,
            })
        })
    }
}

/// What the sessions service announces on the fan-out: each replica then
/// forgets what it cached about the session or user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionsChanged {
    /// A session ended (signed out, revoked, expired by a refresh reuse).
    Ended(Uuid),
    /// Every session of a user ended.
    UserEnded(Uuid),
}

/// Topics and payloads as older replicas send and read them.
const ENDED_SESSION: &str = "sessions.ended";
const ENDED_USER: &str = "sessions.user_ended";

impl twig_fanout::Announcement for SessionsChanged {
    fn topic(&self) -> &'static str {
        match self {
            Self::Ended(_) => ENDED_SESSION,
            Self::UserEnded(_) => ENDED_USER,
        }
    }

    fn payload(&self) -> String {
        match self {
            Self::Ended(id) | Self::UserEnded(id) => id.to_string(),
        }
    }

    fn decode(topic: &str, payload: &str) -> Option<Self> {
        let make = match topic {
            ENDED_SESSION => Self::Ended,
            ENDED_USER => Self::UserEnded,
            _ => return None,
        };
        Uuid::parse_str(payload).ok().map(make)
    }
}

/// What a sessions announcement makes stale in a
/// [`twig_auth::VerifyCache`] of this service's answers.
pub fn stale_of(changed: SessionsChanged) -> Stale {
    match changed {
        SessionsChanged::Ended(id) => Stale::Session(id),
        SessionsChanged::UserEnded(id) => Stale::UserSessions(id),
    }
}

#[cfg(test)]
mod announcement_tests {
    use super::*;
    use twig_fanout::{Announcement, round_trips};

    #[test]
    fn announcements_round_trip_in_the_wire_format_of_older_replicas() {
        let id = Uuid::new_v4();
        for a in [SessionsChanged::Ended(id), SessionsChanged::UserEnded(id)] {
            assert!(round_trips(&a));
            assert_eq!(a.payload(), id.to_string());
        }
        assert_eq!(SessionsChanged::Ended(id).topic(), "sessions.ended");
        assert_eq!(
            SessionsChanged::UserEnded(id).topic(),
            "sessions.user_ended"
        );
        assert_eq!(
            SessionsChanged::decode("sessions.ended", "not-a-uuid"),
            None
        );
        assert_eq!(
            SessionsChanged::decode("apikeys.invalidate", &id.to_string()),
            None
        );
    }
}
