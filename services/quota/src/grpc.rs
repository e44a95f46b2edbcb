//! `twig.quota.v1.QuotaService` on the wire.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use twig_auth::require_internal;
use twig_proto::quota::v1 as pb;

use crate::service::Quota;

/// The gRPC face of the quota service.
#[derive(Clone)]
pub struct QuotaGrpc {
    inner: Arc<Quota>,
}

impl QuotaGrpc {
    /// Wraps the service.
    pub fn new(inner: Arc<Quota>) -> Self {
        Self { inner }
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

#[tonic::async_trait]
impl pb::quota_service_server::QuotaService for QuotaGrpc {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let decision = self.inner.check(&r.subject, r.cost)?;
        Ok(Response::new(pb::CheckResponse {
            allowed: decision.allowed,
            limit: decision.limit,
            remaining: decision.remaining,
            reset_after: Some(duration(decision.reset_after)),
            retry_after: decision.retry_after.map(duration),
            period: Some(duration(decision.period)),
        }))
    }
}
