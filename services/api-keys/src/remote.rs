//! The api-keys service in another process: API keys are checked there
//! with `VerifyApiKey` (allowlists included), and key ownership asked with
//! `GetApiKey` on the caller's behalf; members' keys changed with
//! `SetMemberKeys` and described with `LookupApiKey`.

use std::net::IpAddr;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use twig_auth::principal::AuthFuture;
use twig_auth::{
    Authenticator, Credential, FORWARDED_HEADER, ForwardedCaller, Principal, ServiceCredential,
    Stale,
};
use twig_errors::{ApiError, ErrorCode};
use twig_module::{KeyDescription, KeyOwner, MemberKeysChange};
use twig_proto::apikeys::v1 as pb;
use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
use uuid::Uuid;

/// The api-keys service at a gRPC address (`remote.api_keys`).
#[derive(Clone)]
pub struct RemoteKeys {
    client: ApiKeyServiceClient<Channel>,
    credential: ServiceCredential,
}

impl RemoteKeys {
    /// Calls the api-keys service on `channel`, presenting `credential`.
    pub fn new(channel: Channel, credential: ServiceCredential) -> Self {
        Self {
            client: ApiKeyServiceClient::new(channel),
            credential,
        }
    }

    /// Whether `key_id` is a key of the principal's organisation, asked as
    /// the principal.
    pub async fn owns_key(&self, principal: &Principal, key_id: Uuid) -> Result<bool, ApiError> {
        let mut request = self.credential.request(pb::GetApiKeyRequest {
            key_id: key_id.to_string(),
        });
        let caller = ForwardedCaller {
            principal: Some(principal.clone()),
            ..ForwardedCaller::default()
        };
        request.metadata_mut().insert_bin(
            FORWARDED_HEADER,
            MetadataValue::from_bytes(&caller.encode()),
        );
        match self.client.clone().get_api_key(request).await {
            Ok(_) => Ok(true),
            Err(status) => match ApiError::from_remote("api-keys", &status) {
                e if e.code() == ErrorCode::NotFound => Ok(false),
                e => Err(e),
            },
        }
    }
}

impl RemoteKeys {
    /// Stops, resumes or revokes a member's keys with `SetMemberKeys`.
    pub async fn change_member_keys(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        change: MemberKeysChange,
    ) -> Result<u64, ApiError> {
        let (change, scopes) = crate::grpc::member_keys_change_to_pb(&change);
        let request = self.credential.request(pb::SetMemberKeysRequest {
            organization_id: org_id.to_string(),
            user_id: user_id.to_string(),
            change: change as i32,
            scopes,
        });
        let answer = self
            .client
            .clone()
            .set_member_keys(request)
            .await
            .map_err(|status| ApiError::from_remote("api-keys", &status))?;
        Ok(answer.into_inner().keys_changed.into())
    }

    /// A key by id with `LookupApiKey`; `None` when unknown.
    pub async fn describe_key(&self, key_id: Uuid) -> Result<Option<KeyDescription>, ApiError> {
        let request = self.credential.request(pb::LookupApiKeyRequest {
            key_id: key_id.to_string(),
        });
        let key = match self.client.clone().lookup_api_key(request).await {
            Ok(answer) => answer.into_inner().key,
            Err(status) => {
                return match ApiError::from_remote("api-keys", &status) {
                    e if e.code() == ErrorCode::NotFound => Ok(None),
                    e => Err(e),
                };
            }
        };
        key.as_ref()
            .and_then(description_of)
            .map(Some)
            .ok_or_else(|| {
                ApiError::unavailable(
                    "the api-keys service answered with a key this process cannot read; \
                 run the services at the same version",
                )
            })
    }
}

/// A `LookupApiKey` answer's key as a [`KeyDescription`].
fn description_of(key: &pb::ApiKey) -> Option<KeyDescription> {
    let scopes = key
        .scopes
        .iter()
        .map(|raw| twig_auth::wire::scope_from_pb(*raw).ok().flatten())
        .collect::<Option<Vec<_>>>()?;
    Some(KeyDescription {
        id: Uuid::parse_str(&key.id).ok()?,
        name: key.name.clone(),
        org_id: Uuid::parse_str(&key.organization_id).ok()?,
        scopes,
        owner: match pb::OwnerKind::try_from(key.owner_kind).ok()? {
            pb::OwnerKind::Member => KeyOwner::Member(Uuid::parse_str(&key.created_by).ok()?),
            pb::OwnerKind::ServiceAccount => {
                KeyOwner::ServiceAccount(Uuid::parse_str(&key.service_account_id).ok()?)
            }
            pb::OwnerKind::Unspecified => return None,
        },
    })
}

impl Authenticator for RemoteKeys {
    fn authenticate<'a>(&'a self, bearer: &'a str, client_ip: Option<IpAddr>) -> AuthFuture<'a> {
        Box::pin(async move {
            let request = self.credential.request(pb::VerifyApiKeyRequest {
                key: bearer.to_string(),
                required_scope: twig_proto::auth::v1::Scope::Unspecified as i32,
                client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            });
            let answer = self
                .client
                .clone()
                .verify_api_key(request)
                .await
                .map_err(|status| ApiError::from_remote("api-keys", &status))?
                .into_inner();
            principal_of(&answer).ok_or_else(|| {
                ApiError::unavailable(
                    "the api-keys service answered with a principal this process cannot read; \
                     run the services at the same version",
                )
            })
        })
    }
}

/// The principal a `VerifyApiKey` answer stands for; `None` when it is
/// not a key's.
fn principal_of(answer: &pb::VerifyApiKeyResponse) -> Option<Principal> {
    let p = Principal::from_pb(answer.principal.as_ref()?).ok()?;
    matches!(p.credential, Credential::ApiKey { .. }).then_some(p)
}

/// What the api-keys service announces on the fan-out: each replica then
/// forgets what it cached about the key or organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysChanged {
    /// A key changed (revoked, rotated, updated).
    Key(Uuid),
    /// Several keys of an organisation changed at once (its IP allowlist,
    /// a member's keys stopped, resumed or revoked).
    Org(Uuid),
}

/// Topics and payloads as older replicas send and read them.
const INVALIDATE: &str = "apikeys.invalidate";
const INVALIDATE_ORG: &str = "apikeys.invalidate_org";

impl twig_fanout::Announcement for KeysChanged {
    fn topic(&self) -> &'static str {
        match self {
            Self::Key(_) => INVALIDATE,
            Self::Org(_) => INVALIDATE_ORG,
        }
    }

    fn payload(&self) -> String {
        match self {
            Self::Key(id) | Self::Org(id) => id.to_string(),
        }
    }

    fn decode(topic: &str, payload: &str) -> Option<Self> {
        let make = match topic {
            INVALIDATE => Self::Key,
            INVALIDATE_ORG => Self::Org,
            _ => return None,
        };
        Uuid::parse_str(payload).ok().map(make)
    }
}

/// What an api-keys announcement makes stale in a
/// [`twig_auth::VerifyCache`] of this service's answers.
pub fn stale_of(changed: KeysChanged) -> Stale {
    match changed {
        KeysChanged::Key(id) => Stale::Key(id),
        KeysChanged::Org(id) => Stale::Org(id),
    }
}

#[cfg(test)]
mod announcement_tests {
    use super::*;
    use twig_fanout::{Announcement, round_trips};

    #[test]
    fn announcements_round_trip_in_the_wire_format_of_older_replicas() {
        let id = Uuid::new_v4();
        for a in [KeysChanged::Key(id), KeysChanged::Org(id)] {
            assert!(round_trips(&a));
            assert_eq!(a.payload(), id.to_string());
        }
        assert_eq!(KeysChanged::Key(id).topic(), "apikeys.invalidate");
        assert_eq!(KeysChanged::Org(id).topic(), "apikeys.invalidate_org");
        assert_eq!(KeysChanged::decode("apikeys.invalidate", "nope"), None);
        assert_eq!(KeysChanged::decode("sessions.ended", &id.to_string()), None);
    }
}
