//! `twig.vault.v1.VaultService` on the wire.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use twig_auth::{principal, require_internal, require_internal_scope};
use twig_proto::vault::v1 as pb;

use crate::entity::secret;
use crate::error::VaultError;
use crate::service::{Context, JobStatus, KeyStatus, Vault};

/// The internal scope that reveals provider keys.
pub const REVEAL_SCOPE: &str = "vault.reveal";

/// The gRPC face of the vault.
#[derive(Clone)]
pub struct VaultGrpc {
    inner: Arc<Vault>,
}

impl VaultGrpc {
    /// Wraps the service.
    pub fn new(inner: Arc<Vault>) -> Self {
        Self { inner }
    }
}

fn wire_key(m: secret::Model) -> pb::ProviderKey {
    pb::ProviderKey {
        id: m.id.to_string(),
        provider: m.provider,
        name: m.name,
        masked_value: m.masked,
        created_at: Some(twig_proto::timestamp(m.created_at)),
        updated_at: Some(twig_proto::timestamp(m.updated_at)),
        last_used_at: m.last_used_at.map(twig_proto::timestamp),
        created_by: m.created_by,
    }
}

fn context(c: Option<&pb::SealContext>) -> Result<Context, VaultError> {
    let c = c.ok_or_else(|| VaultError::invalid_field("context", "is required"))?;
    Context::new(&c.organization_id, &c.purpose, &c.record_id)
}

fn wire_master_key(k: KeyStatus) -> pb::MasterKey {
    pb::MasterKey {
        version: u32::try_from(k.record.version).unwrap_or(0),
        check_value: k.record.check_value,
        recorded_at: Some(twig_proto::timestamp(k.record.recorded_at)),
        retired_at: k.record.retired_at.map(twig_proto::timestamp),
        configured: k.configured,
        active: k.active,
        data_keys: k.data_keys,
    }
}

fn wire_job(j: JobStatus) -> pb::RewrapJob {
    pb::RewrapJob {
        id: j.job.id.to_string(),
        target_version: u32::try_from(j.job.target_version).unwrap_or(0),
        rewrapped: u64::try_from(j.job.rewrapped).unwrap_or(0),
        remaining: j.remaining,
        started_at: Some(twig_proto::timestamp(j.job.started_at)),
        finished_at: j.job.finished_at.map(twig_proto::timestamp),
    }
}

#[tonic::async_trait]
impl pb::vault_service_server::VaultService for VaultGrpc {
    async fn add_provider_key(
        &self,
        request: Request<pb::AddProviderKeyRequest>,
    ) -> Result<Response<pb::AddProviderKeyResponse>, Status> {
        let p = principal(&request)?;
        let r = request.get_ref();
        let key = self.inner.add(p, &r.provider, &r.name, &r.value).await?;
        Ok(Response::new(pb::AddProviderKeyResponse {
            key: Some(wire_key(key)),
        }))
    }

    async fn list_provider_keys(
        &self,
        request: Request<pb::ListProviderKeysRequest>,
    ) -> Result<Response<pb::ListProviderKeysResponse>, Status> {
        let p = principal(&request)?;
        let keys = self.inner.list(p).await?;
        Ok(Response::new(pb::ListProviderKeysResponse {
            keys: keys.into_iter().map(wire_key).collect(),
        }))
    }

    async fn update_provider_key(
        &self,
        request: Request<pb::UpdateProviderKeyRequest>,
    ) -> Result<Response<pb::UpdateProviderKeyResponse>, Status> {
        let p = principal(&request)?;
        let r = request.get_ref();
        let key = self.inner.update(p, &r.id, &r.value).await?;
        Ok(Response::new(pb::UpdateProviderKeyResponse {
            key: Some(wire_key(key)),
        }))
    }

    async fn delete_provider_key(
        &self,
        request: Request<pb::DeleteProviderKeyRequest>,
    ) -> Result<Response<pb::DeleteProviderKeyResponse>, Status> {
        let p = principal(&request)?;
        self.inner.delete(p, &request.get_ref().id).await?;
        Ok(Response::new(pb::DeleteProviderKeyResponse {}))
    }

    async fn reveal_provider_key(
        &self,
        request: Request<pb::RevealProviderKeyRequest>,
    ) -> Result<Response<pb::RevealProviderKeyResponse>, Status> {
        let caller = require_internal_scope(&request, REVEAL_SCOPE)?;
        let r = request.get_ref();
        let (provider, value) = self.inner.reveal(caller, &r.organization_id, &r.id).await?;
        Ok(Response::new(pb::RevealProviderKeyResponse {
            provider,
            value: value.to_string(),
        }))
    }

    async fn seal(
        &self,
        request: Request<pb::SealRequest>,
    ) -> Result<Response<pb::SealResponse>, Status> {
        require_internal(&request)?;
        let r = request.get_ref();
        let ciphertext = self
            .inner
            .seal(&context(r.context.as_ref())?, &r.plaintext)?;
        Ok(Response::new(pb::SealResponse { ciphertext }))
    }

    async fn unseal(
        &self,
        request: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::UnsealResponse>, Status> {
        require_internal(&request)?;
        let r = request.get_ref();
        let mut plaintext = self
            .inner
            .unseal(&context(r.context.as_ref())?, &r.ciphertext)?;
        // The response owns the buffer from here (no second copy).
        Ok(Response::new(pb::UnsealResponse {
            plaintext: std::mem::take(&mut *plaintext).into(),
        }))
    }

    async fn rewrap(
        &self,
        request: Request<pb::RewrapRequest>,
    ) -> Result<Response<pb::RewrapResponse>, Status> {
        require_internal(&request)?;
        let r = request.get_ref();
        let ciphertext = self
            .inner
            .rewrap_value(&context(r.context.as_ref())?, &r.ciphertext)?;
        Ok(Response::new(pb::RewrapResponse { ciphertext }))
    }

    async fn list_master_keys(
        &self,
        request: Request<pb::ListMasterKeysRequest>,
    ) -> Result<Response<pb::ListMasterKeysResponse>, Status> {
        require_internal(&request)?;
        let (keys, job) = self.inner.master_keys().await?;
        Ok(Response::new(pb::ListMasterKeysResponse {
            keys: keys.into_iter().map(wire_master_key).collect(),
            rewrap: job.map(wire_job),
        }))
    }

    async fn start_rewrap(
        &self,
        request: Request<pb::StartRewrapRequest>,
    ) -> Result<Response<pb::StartRewrapResponse>, Status> {
        require_internal(&request)?;
        let job = self.inner.start_rewrap().await?;
        Ok(Response::new(pb::StartRewrapResponse {
            job: Some(wire_job(job)),
        }))
    }

    async fn retire_master_key(
        &self,
        request: Request<pb::RetireMasterKeyRequest>,
    ) -> Result<Response<pb::RetireMasterKeyResponse>, Status> {
        require_internal(&request)?;
        let key = self.inner.retire(request.get_ref().version).await?;
        Ok(Response::new(pb::RetireMasterKeyResponse {
            key: Some(wire_master_key(key)),
        }))
    }
}
