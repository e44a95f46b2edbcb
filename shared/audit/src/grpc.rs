//! `twig.audit.v1.AuditService`: the audit log of the caller's
//! organisation, for its admins.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::{Request, Response, Status};
use twig_auth::{Scope, principal};
use twig_clock::Clock;
use twig_errors::{ApiError, fields};
use twig_proto::audit::v1 as pb;
use uuid::Uuid;

use crate::entity;

/// The longest `actor` or `action` filter, in characters.
pub const MAX_FILTER_CHARS: usize = 256;

/// The audit query service.
#[derive(Clone)]
pub struct AuditGrpc {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
}

impl AuditGrpc {
    /// Reads the audit log through `db`; each read is an event of its own,
    /// at `clock`'s time.
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }
}

use twig_proto::timestamp as ts;

fn time(field: &'static str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>, Status> {
    twig_proto::datetime(t)
        .ok_or_else(|| ApiError::invalid_field(field, "is not a valid time").into())
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditGrpc {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let me = principal(&request).cloned()?;
        if !me.has_scope(Scope::Admin) {
            return Err(ApiError::permission_denied(
                "the audit log is for the organisation's admins (admin scope)",
            )
            .into());
        }
        let r = request.into_inner();
        let size = match r.page_size {
            0 => 100,
            n => n.min(500),
        } as u64;
        let mut query = entity::Entity::find()
            .filter(entity::Column::OrgId.eq(me.org_id))
            .order_by_desc(entity::Column::Id)
            .limit(size);
        if !r.actor.is_empty() {
            fields::exact_text("actor", &r.actor, MAX_FILTER_CHARS)?;
            query = query.filter(entity::Column::Actor.eq(r.actor.clone()));
        }
        if !r.action.is_empty() {
            fields::exact_text("action", &r.action, MAX_FILTER_CHARS)?;
            query = query.filter(entity::Column::Action.eq(r.action.clone()));
        }
        if let Some(since) = &r.since {
            query = query.filter(entity::Column::OccurredAt.gte(time("since", since)?));
        }
        if let Some(until) = &r.until {
            query = query.filter(entity::Column::OccurredAt.lt(time("until", until)?));
        }
        if !r.page_token.is_empty() {
            let after = Uuid::parse_str(&r.page_token)
                .map_err(|_| ApiError::invalid_field("page_token", "is not a token we issued"))?;
            query = query.filter(entity::Column::Id.lt(after));
        }
        let events = query
            .all(&self.db)
            .await
            .map_err(|e| Status::from(twig_db::api_error(&e)))?;
        // Reading the log is itself an event of the organisation's log.
        crate::AuditEvent::new("audit.read", crate::Outcome::Success)
            .org(me.org_id)
            .actor(me.actor())
            .details(serde_json::json!({
                "action": r.action,
                "actor": r.actor,
                "events": events.len(),
            }))
            .record_at(&self.db, self.clock.now())
            .await
            .map_err(|e| Status::from(twig_db::api_error(&e)))?;
        let next = if events.len() as u64 == size {
            events.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::AuditEvent {
                    id: e.id.to_string(),
                    occurred_at: Some(ts(e.occurred_at)),
                    organization_id: e.org_id.map(|o| o.to_string()).unwrap_or_default(),
                    actor: e.actor.unwrap_or_default(),
                    action: e.action,
                    outcome: e.outcome,
                    target: e.target.unwrap_or_default(),
                    ip: e.ip.unwrap_or_default(),
                    details_json: e.details,
                })
                .collect(),
            next_page_token: next,
        }))
    }
}
