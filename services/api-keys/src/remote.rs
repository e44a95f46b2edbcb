//! The api-keys service in another process: API keys are checked there
//! with `VerifyApiKey` (allowlists included), and key ownership asked with
//! `GetApiKey` on the caller's behalf.

use std::net::IpAddr;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use twig_auth::principal::AuthFuture;
use twig_auth::{
    Authenticator, Credential, FORWARDED_HEADER, ForwardedCaller, Principal, ServiceCredential,
    Stale,
};
use twig_errors::{ApiError, ErrorCode};
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

impl Authenticator for RemoteKeys {
    fn authenticate<'a>(&'a self, bearer: &'a str, client_ip: Option<IpAddr>) -> AuthFuture<'a> {
        Box::pin(async move {
            let request = self.credential.request(pb::VerifyApiKeyRequest {
                key: bearer.to_string(),
                required_scope: pb::Scope::Unspecified as i32,
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

/// The principal a `VerifyApiKey` answer stands for, as the local
/// verification builds it (no roles; the key's scopes).
fn principal_of(answer: &pb::VerifyApiKeyResponse) -> Option<Principal> {
    Some(Principal {
        user_id: Uuid::parse_str(&answer.owner_user_id).ok()?,
        org_id: Uuid::parse_str(&answer.organization_id).ok()?,
        roles: Vec::new(),
        scopes: answer
            .scopes
            .iter()
            .map(|raw| crate::grpc::scope_from_pb("scopes", *raw).ok())
            .collect::<Option<_>>()?,
        credential: Credential::ApiKey {
            key_id: Uuid::parse_str(&answer.key_id).ok()?,
        },
        expires_at: match &answer.expires_at {
            Some(t) => Some(twig_proto::datetime(t)?),
            None => None,
        },
    })
}

/// What an api-keys announcement on the fan-out makes stale in a
/// [`twig_auth::VerifyCache`] of this service's answers.
pub fn stale_of(topic: &str, payload: &str) -> Option<Stale> {
    let id = Uuid::parse_str(payload).ok()?;
    match topic {
        crate::service::INVALIDATE => Some(Stale::Key(id)),
        crate::service::INVALIDATE_ORG => Some(Stale::Org(id)),
        _ => None,
    }
}
