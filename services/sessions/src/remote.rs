//! The sessions service in another process, as an [`Authenticator`]: a
//! session access token is checked there with `VerifySession`.

use std::net::IpAddr;

use tonic::transport::Channel;
use twig_auth::principal::AuthFuture;
use twig_auth::{Authenticator, Credential, Principal, Role, Scope, ServiceCredential, Stale};
use twig_errors::ApiError;
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

/// The principal a `VerifySession` answer stands for, as the local
/// verification builds it (scopes follow from the roles).
fn principal_of(answer: &pb::VerifySessionResponse) -> Option<Principal> {
    let roles: Vec<Role> = answer
        .roles
        .iter()
        .map(|raw| crate::grpc::role_from_pb(*raw).ok())
        .collect::<Option<_>>()?;
    Some(Principal {
        user_id: Uuid::parse_str(&answer.user_id).ok()?,
        org_id: Uuid::parse_str(&answer.organization_id).ok()?,
        scopes: roles.iter().flat_map(|r| Scope::of_role(*r)).collect(),
        roles,
        credential: Credential::Session {
            session_id: Uuid::parse_str(&answer.session_id).ok()?,
        },
        expires_at: match &answer.expires_at {
            Some(t) => Some(twig_proto::datetime(t)?),
            None => None,
        },
    })
}

/// What a sessions announcement on the fan-out makes stale in a
/// [`twig_auth::VerifyCache`] of this service's answers.
pub fn stale_of(topic: &str, payload: &str) -> Option<Stale> {
    let id = Uuid::parse_str(payload).ok()?;
    match topic {
        crate::service::ENDED_SESSION => Some(Stale::Session(id)),
        crate::service::ENDED_USER => Some(Stale::UserSessions(id)),
        _ => None,
    }
}
