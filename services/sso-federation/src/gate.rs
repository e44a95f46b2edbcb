//! The plan gate: configuring single sign-on needs a plan with the `sso`
//! feature. One check for domains and connections.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use twig_audit::{AuditEvent, Outcome};
use twig_auth::Principal;
use twig_clock::Clock;
use twig_config::Feature;
use twig_errors::ApiError;
use twig_module::{Needed, Plans};

/// Refuses an organisation whose plan lacks single sign-on (the plan's
/// refusal, FAILED_PRECONDITION), with an audit event naming `target`.
pub async fn require_sso(
    plans: &Needed<Plans>,
    db: &DatabaseConnection,
    clock: &Arc<dyn Clock>,
    principal: &Principal,
    target: &str,
) -> Result<(), ApiError> {
    let plan = Plans::of(plans, principal.org_id).await?;
    if plan.has(Feature::Sso) {
        return Ok(());
    }
    let dberr = |e: sea_orm::DbErr| twig_db::api_error(&e);
    let txn = twig_db::begin_write(db).await.map_err(dberr)?;
    AuditEvent::new("plan.feature_refused", Outcome::Failure)
        .org(principal.org_id)
        .actor(principal.actor())
        .target(target.to_string())
        .details(serde_json::json!({"feature": Feature::Sso.as_str(), "plan": plan.name}))
        .record_at(&txn, clock.now())
        .await
        .map_err(dberr)?;
    txn.commit().await.map_err(dberr)?;
    Err(plan.refusal(Feature::Sso))
}
