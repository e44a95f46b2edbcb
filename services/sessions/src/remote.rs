//! The sessions service in another process, as an [`Authenticator`]: a
//! session access token is checked there with `VerifySession`.

use std::net::IpAddr;

use tonic::transport::Channel;
use twig_auth::principal::AuthFuture;
use twig_auth::{Authenticator, Principal, ServiceCredential, Stale};
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

/// The principal a `VerifySession` answer stands for; `None` when it is
/// not a session's.
fn principal_of(answer: &pb::VerifySessionResponse) -> Option<Principal> {
    let p = Principal::from_pb(answer.principal.as_ref()?).ok()?;
    p.session_id().is_some().then_some(p)
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
