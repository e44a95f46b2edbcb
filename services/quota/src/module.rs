//! The quota service as a module of the suite.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use twig_config::Owners;
use twig_module::{
    Context, KeyOwners, MemberKeys, Module, ModuleError, Plans, Port, RemoteContext, Throttles,
};
use twig_proto::quota::v1::quota_service_server::QuotaServiceServer;

use crate::config::{OnStoreError, QuotaConfig, QuotaStore};
use crate::plans::{LocalPlans, OrgPlans};
use crate::remote::{RemotePlans, RemoteQuota};
use crate::{
    Limit, Limits, MemoryStore, Migrator, Quota, RedisStore, RequestCounting, Rule, SERVICE_NAME,
    Store, StorePolicy, Usage,
};

/// How often quota usage is written (and idle counters swept).
const USAGE_PERIOD: Duration = Duration::from_secs(5);

/// The quota service: limits and request counting.
pub struct QuotaModule;

/// The module the binary lists.
pub static MODULE: QuotaModule = QuotaModule;

impl Module for QuotaModule {
    fn name(&self) -> &'static str {
        "quota"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn owns(&self, owners: &mut Owners) {
        // `[plans]` is a shared section (twig-config): every service that
        // gates a feature reads it; the assignments are kept here.
        owners
            .section::<QuotaConfig>()
            .internal_scopes(&[twig_auth::OPERATOR_SCOPE]);
    }

    fn migrate<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(twig_db::migrate::<Migrator>(db))
    }

    fn provides(&self) -> &'static [&'static str] {
        &[RequestCounting::NAME, Plans::NAME, Throttles::NAME]
    }

    fn needs(&self) -> &'static [&'static str] {
        &[KeyOwners::NAME, MemberKeys::NAME]
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let name = self.name();
            let q = cx
                .config()
                .section::<QuotaConfig>()
                .map_err(|e| ModuleError::setup(name, "cannot read [quota]", e))?;
            let limit = Limit::new(q.default_limit, q.period, q.buckets)
                .map_err(|e| ModuleError::setup(name, "quota.default_limit, period, buckets", e))?;
            let store = match q.store {
                QuotaStore::Memory => Store::Memory(MemoryStore::new()),
                QuotaStore::Redis => {
                    // The process's one Redis connection, the fan-out's.
                    let redis = cx.fanout().redis_handle().ok_or_else(|| {
                        ModuleError::invalid(name, "quota.store = redis needs redis.url")
                    })?;
                    Store::Redis(RedisStore::on(redis.with_timeout(q.redis_timeout)))
                }
            };
            let plans = Arc::new(
                OrgPlans::new(
                    &cx.config().plans,
                    q.shadow,
                    cx.db().clone(),
                    cx.fanout().clone(),
                )
                .map_err(|e| ModuleError::invalid(name, e))?,
            );
            match plans.unknown_assignments().await {
                Ok(unknown) => {
                    for (plan, organisations) in unknown {
                        tracing::warn!(
                            plan,
                            organisations,
                            default_plan = %plans.default_plan().name,
                            "organisations are on a plan [plans] no longer names; they get the \
                             default plan until it is named again or the operator moves them"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not check the stored plans"),
            }
            let limits = Arc::new(Limits::new(
                Rule {
                    limit,
                    shadow: q.shadow,
                },
                plans.clone(),
                cx.db().clone(),
                cx.fanout().clone(),
            ));
            let policy = match q.on_store_error {
                OnStoreError::Open => StorePolicy::Open,
                OnStoreError::Closed => StorePolicy::Closed,
            };
            let key_owners = cx.need::<KeyOwners>();
            let member_keys = cx.need::<MemberKeys>();
            let quota = Arc::new(
                Quota::new(
                    store,
                    limits,
                    Usage::new(cx.db().clone()),
                    policy,
                    cx.clock(),
                )
                .with_key_ownership(key_owners)
                .with_member_keys(member_keys),
            );
            cx.workers()
                .listen("quota limit changes", quota.limits().listen_for_changes());
            cx.workers()
                .listen("quota plan changes", plans.clone().listen_for_changes());
            let usage = quota.clone();
            cx.workers()
                .periodic("quota usage", USAGE_PERIOD, move |run| {
                    let quota = usage.clone();
                    async move {
                        if run == twig_server::Run::Tick {
                            quota.sweep();
                        }
                        if let Err(e) = quota.flush().await {
                            tracing::warn!(error = %e, "could not write quota usage; will retry");
                        }
                    }
                });
            let max_message = cx.max_message_bytes();
            cx.serve(
                QuotaServiceServer::new(crate::grpc::QuotaGrpc::new(quota.clone()))
                    .max_decoding_message_size(max_message),
            );
            cx.provide(RequestCounting(quota.clone()));
            cx.provide(Throttles(quota.clone()));
            cx.provide(Plans(Arc::new(LocalPlans(plans))));
            cx.expose(quota);
            Ok(())
        })
    }

    fn remote(&self, cx: &mut RemoteContext<'_>) -> Result<(), ModuleError> {
        let remote = RemoteQuota::new(cx.channel(), cx.credential());
        cx.provide(RequestCounting(Arc::new(remote.clone())));
        cx.provide(Throttles(Arc::new(remote)));
        cx.provide(Plans(Arc::new(RemotePlans::new(
            cx.channel(),
            cx.credential(),
        ))));
        Ok(())
    }
}
