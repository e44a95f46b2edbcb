//! `twig.apikeys.v1.ApiKeyService` on the wire. The logic is in
//! [`ApiKeys`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use twig_auth::{Principal, Scope, principal, require_internal};
use twig_errors::ApiError;
use twig_module::{KeyDescription, KeyOwner, MemberKeysChange};
use twig_proto::apikeys::v1 as pb;
use uuid::Uuid;

use crate::entity::{api_key, service_account};
use crate::scopes;
use crate::service::ApiKeys;

/// The gRPC face of the api-keys service.
#[derive(Clone)]
pub struct ApiKeysGrpc {
    inner: Arc<ApiKeys>,
}

impl ApiKeysGrpc {
    /// Wraps the service.
    pub fn new(inner: Arc<ApiKeys>) -> Self {
        Self { inner }
    }
}

use twig_proto::timestamp as ts;

fn from_ts(field: &'static str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>, Status> {
    twig_proto::datetime(t)
        .ok_or_else(|| ApiError::invalid_field(field, "is not a valid time").into())
}

fn me<T>(request: &Request<T>) -> Result<Principal, Status> {
    principal(request).cloned().map_err(Status::from)
}

fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid_field(field, "must be a UUID").into())
}

/// Proto scope → domain scope (unspecified is refused).
pub fn scope_from_pb(field: &'static str, raw: i32) -> Result<Scope, Status> {
    match twig_auth::wire::scope_from_pb(raw) {
        Ok(Some(scope)) => Ok(scope),
        _ => Err(ApiError::invalid_field(field, "must be READ, WRITE, EXECUTE or ADMIN").into()),
    }
}

fn scope_to_pb(scope: Scope) -> i32 {
    twig_auth::wire::scope_to_pb(scope) as i32
}

fn key_to_pb(k: &api_key::Model) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        organization_id: k.org_id.to_string(),
        name: k.name.clone(),
        scopes: scopes::from_stored(&k.scopes)
            .into_iter()
            .map(scope_to_pb)
            .collect(),
        prefix: k.prefix.clone(),
        created_at: Some(ts(k.created_at)),
        expires_at: k.expires_at.map(ts),
        last_used_at: k.last_used_at.map(ts),
        created_by: k.created_by.to_string(),
        revoked_at: k.revoked_at.map(ts),
        allowed_cidrs: k
            .allowed_cidrs
            .split_whitespace()
            .map(String::from)
            .collect(),
        stopped_at: k.stopped_at.map(ts),
        owner_kind: match k.service_account_id {
            Some(_) => pb::OwnerKind::ServiceAccount,
            None => pb::OwnerKind::Member,
        } as i32,
        service_account_id: k
            .service_account_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

fn service_account_to_pb(a: &service_account::Model) -> pb::ServiceAccount {
    pb::ServiceAccount {
        id: a.id.to_string(),
        organization_id: a.org_id.to_string(),
        name: a.name.clone(),
        created_by: a.created_by.to_string(),
        created_at: Some(ts(a.created_at)),
    }
}

/// The scopes of a request: each one once, at most one of each kind.
fn scopes_from(raw: &[i32]) -> Result<Vec<Scope>, Status> {
    twig_errors::fields::distinct("scopes", raw, Scope::ALL.len())?;
    raw.iter().map(|s| scope_from_pb("scopes", *s)).collect()
}

#[tonic::async_trait]
impl pb::api_key_service_server::ApiKeyService for ApiKeysGrpc {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        let wanted = scopes_from(&r.scopes)?;
        let expires = r
            .expires_at
            .as_ref()
            .map(|t| from_ts("expires_at", t))
            .transpose()?;
        let service_account = if r.service_account_id.is_empty() {
            None
        } else {
            Some(parse_id("service_account_id", &r.service_account_id)?)
        };
        let minted = self
            .inner
            .create(&me, &r.name, &wanted, expires, service_account)
            .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(key_to_pb(&minted.key)),
            secret: minted.secret.expose().to_string(),
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        let size = match r.page_size {
            0 => 50,
            n => n.min(100),
        } as u64;
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(parse_id("page_token", &r.page_token)?)
        };
        let keys = self.inner.list(&me, size, after).await?;
        let next = if keys.len() as u64 == size {
            keys.last().map(|k| k.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.iter().map(key_to_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn get_api_key(
        &self,
        request: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::GetApiKeyResponse>, Status> {
        let me = me(&request)?;
        let id = parse_id("key_id", &request.get_ref().key_id)?;
        let key = self.inner.get(&me, id).await?;
        Ok(Response::new(pb::GetApiKeyResponse {
            key: Some(key_to_pb(&key)),
        }))
    }

    async fn update_api_key(
        &self,
        request: Request<pb::UpdateApiKeyRequest>,
    ) -> Result<Response<pb::UpdateApiKeyResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        let id = parse_id("key_id", &r.key_id)?;
        let narrow = scopes_from(&r.scopes)?;
        let key = self
            .inner
            .update(
                &me,
                id,
                r.name.as_deref(),
                &narrow,
                r.allowed_cidrs.as_ref().map(|l| l.cidrs.as_slice()),
            )
            .await?;
        Ok(Response::new(pb::UpdateApiKeyResponse {
            key: Some(key_to_pb(&key)),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let me = me(&request)?;
        let id = parse_id("key_id", &request.get_ref().key_id)?;
        self.inner.revoke(&me, id).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    async fn rotate_api_key(
        &self,
        request: Request<pb::RotateApiKeyRequest>,
    ) -> Result<Response<pb::RotateApiKeyResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        let id = parse_id("key_id", &r.key_id)?;
        let overlap = Duration::from_secs(u64::from(r.overlap_seconds));
        let (minted, old_until) = self.inner.rotate(&me, id, overlap).await?;
        Ok(Response::new(pb::RotateApiKeyResponse {
            key: Some(key_to_pb(&minted.key)),
            secret: minted.secret.expose().to_string(),
            old_secret_expires_at: Some(ts(old_until)),
        }))
    }

    async fn get_key_usage(
        &self,
        request: Request<pb::GetKeyUsageRequest>,
    ) -> Result<Response<pb::GetKeyUsageResponse>, Status> {
        let me = me(&request)?;
        let r = request.into_inner();
        let id = parse_id("key_id", &r.key_id)?;
        let bucket = match pb::Granularity::try_from(r.granularity) {
            Ok(pb::Granularity::Day) => 1440,
            Ok(pb::Granularity::Minute | pb::Granularity::Unspecified) => 1,
            Err(_) => {
                return Err(ApiError::invalid_field("granularity", "must be MINUTE or DAY").into());
            }
        };
        let until = match &r.until {
            Some(t) => from_ts("until", t)?,
            None => self.inner.now(),
        };
        let since = match &r.since {
            Some(t) => from_ts("since", t)?,
            None => until - chrono::Duration::minutes(if bucket == 1 { 60 } else { 30 * 1440 }),
        };
        // Whole minutes: a bucket is counted when its minute starts in range.
        let until_minute = until.timestamp().div_euclid(60) + 1;
        let since_minute = since.timestamp().div_euclid(60);
        let points = self
            .inner
            .usage(&me, id, bucket, since_minute, until_minute)
            .await?;
        let total = points.iter().map(|(_, n)| n).sum();
        Ok(Response::new(pb::GetKeyUsageResponse {
            points: points
                .into_iter()
                .map(|(minute, requests)| pb::UsagePoint {
                    start: DateTime::from_timestamp(minute * 60, 0).map(ts),
                    requests,
                })
                .collect(),
            total,
        }))
    }

    async fn get_org_allowlist(
        &self,
        request: Request<pb::GetOrgAllowlistRequest>,
    ) -> Result<Response<pb::GetOrgAllowlistResponse>, Status> {
        let me = me(&request)?;
        let cidrs = self.inner.org_allowlist(&me).await?;
        Ok(Response::new(pb::GetOrgAllowlistResponse {
            allowlist: Some(pb::CidrList { cidrs }),
        }))
    }

    async fn set_org_allowlist(
        &self,
        request: Request<pb::SetOrgAllowlistRequest>,
    ) -> Result<Response<pb::SetOrgAllowlistResponse>, Status> {
        let me = me(&request)?;
        let wanted = request.into_inner().allowlist.unwrap_or_default().cidrs;
        let cidrs = self.inner.set_org_allowlist(&me, &wanted).await?;
        Ok(Response::new(pb::SetOrgAllowlistResponse {
            allowlist: Some(pb::CidrList { cidrs }),
        }))
    }

    async fn verify_api_key(
        &self,
        request: Request<pb::VerifyApiKeyRequest>,
    ) -> Result<Response<pb::VerifyApiKeyResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let client_ip = if r.client_ip.is_empty() {
            None
        } else {
            Some(
                r.client_ip
                    .trim()
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| {
                        Status::from(ApiError::invalid_field("client_ip", "is not an IP address"))
                    })?,
            )
        };
        let required = match r.required_scope {
            0 => None,
            raw => Some(scope_from_pb("required_scope", raw)?),
        };
        let p = self.inner.verify(&r.key, required, client_ip).await?;
        Ok(Response::new(pb::VerifyApiKeyResponse {
            principal: Some(p.to_pb()),
        }))
    }

    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Result<Response<pb::CreateServiceAccountResponse>, Status> {
        let me = me(&request)?;
        let row = self
            .inner
            .create_service_account(&me, &request.get_ref().name)
            .await?;
        Ok(Response::new(pb::CreateServiceAccountResponse {
            service_account: Some(service_account_to_pb(&row)),
        }))
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Result<Response<pb::ListServiceAccountsResponse>, Status> {
        let me = me(&request)?;
        let rows = self.inner.list_service_accounts(&me).await?;
        Ok(Response::new(pb::ListServiceAccountsResponse {
            service_accounts: rows.iter().map(service_account_to_pb).collect(),
        }))
    }

    async fn delete_service_account(
        &self,
        request: Request<pb::DeleteServiceAccountRequest>,
    ) -> Result<Response<pb::DeleteServiceAccountResponse>, Status> {
        let me = me(&request)?;
        let id = parse_id("service_account_id", &request.get_ref().service_account_id)?;
        let revoked = self.inner.delete_service_account(&me, id).await?;
        Ok(Response::new(pb::DeleteServiceAccountResponse {
            keys_revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
    }

    async fn set_member_keys(
        &self,
        request: Request<pb::SetMemberKeysRequest>,
    ) -> Result<Response<pb::SetMemberKeysResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let org_id = parse_id("organization_id", &r.organization_id)?;
        let user_id = parse_id("user_id", &r.user_id)?;
        let change = match pb::MemberKeysChange::try_from(r.change) {
            Ok(pb::MemberKeysChange::Stop) => MemberKeysChange::Stop,
            Ok(pb::MemberKeysChange::Resume) => MemberKeysChange::Resume,
            Ok(pb::MemberKeysChange::Revoke) => MemberKeysChange::Revoke,
            _ => {
                return Err(
                    ApiError::invalid_field("change", "must be STOP, RESUME or REVOKE").into(),
                );
            }
        };
        let changed = self
            .inner
            .change_member_keys(org_id, user_id, change)
            .await?;
        Ok(Response::new(pb::SetMemberKeysResponse {
            keys_changed: u32::try_from(changed).unwrap_or(u32::MAX),
        }))
    }

    async fn lookup_api_key(
        &self,
        request: Request<pb::LookupApiKeyRequest>,
    ) -> Result<Response<pb::LookupApiKeyResponse>, Status> {
        require_internal(&request)?;
        let key_id = parse_id("key_id", &request.get_ref().key_id)?;
        let key = self.inner.describe(key_id).await?;
        Ok(Response::new(pb::LookupApiKeyResponse {
            key: Some(key_to_pb(&key)),
        }))
    }
}

/// The change a `SetMemberKeys` call asks for, on the wire: the kind and
/// the scopes it keeps (for a narrowing).
pub fn member_keys_change_to_pb(change: &MemberKeysChange) -> (pb::MemberKeysChange, Vec<i32>) {
    match change {
        MemberKeysChange::Stop => (pb::MemberKeysChange::Stop, Vec::new()),
        MemberKeysChange::Resume => (pb::MemberKeysChange::Resume, Vec::new()),
        MemberKeysChange::Revoke => (pb::MemberKeysChange::Revoke, Vec::new()),
        MemberKeysChange::LimitScopes(scopes) => (
            pb::MemberKeysChange::LimitScopes,
            scopes.iter().map(|s| scope_to_pb(*s)).collect(),
        ),
    }
}

/// A key as its holder may see it, from the stored row.
pub fn key_description(key: &api_key::Model) -> KeyDescription {
    KeyDescription {
        id: key.id,
        name: key.name.clone(),
        org_id: key.org_id,
        scopes: scopes::from_stored(&key.scopes),
        owner: match key.service_account_id {
            Some(id) => KeyOwner::ServiceAccount(id),
            None => KeyOwner::Member(key.created_by),
        },
    }
}
