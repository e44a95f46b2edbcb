//! The quota service: rate limits.
//!
//! - [`window`]: the limiting rule, a bucketed sliding window that never
//!   admits more than the limit in any window of one period;
//! - [`subject`]: who a limit counts (`key:…`, `org:…`, `user:…`, `ip:…`,
//!   `custom:…`);
//! - [`store`]: where counts live — in memory (one replica) or in Redis
//!   (shared, one atomic script per batch of checks);
//! - [`limits`]: which limit applies — an organisation's or key's own,
//!   the default of the organisation's plan, or the configured default;
//!   cached and fanned out on change;
//! - [`plans`]: which plan each organisation is on (the operator's
//!   assignments, else `plans.default_plan`), cached and fanned out on
//!   change; the `Plans` port;
//! - [`usage`]: admitted and refused checks per subject per minute;
//! - [`service::Quota`]: the decision, the store-down policy, who may
//!   change limits (admins within their plan, the operator beyond it);
//! - [`requests`]: what an authenticated request counts under, and
//!   [`RequestCounter`] (this process's [`Quota`] or
//!   [`remote::RemoteQuota`] over gRPC) for the front doors;
//! - [`grpc::QuotaGrpc`]: `twig.quota.v1.QuotaService` on the wire.

mod brakes;
mod config;
pub mod entity;
mod error;
mod grpc;
mod limits;
mod migration;
mod module;
mod plans;
mod remote;
mod requests;
mod service;
mod store;
mod subject;
mod usage;
mod window;

pub use config::{OnStoreError, QuotaConfig, QuotaStore};
pub use error::QuotaError;
pub use limits::{Limits, Rule};
pub use migration::Migrator;
pub use module::{MODULE, QuotaModule};
pub use plans::{Assignment, OrgPlans, Plan, PlanChanged};
pub use requests::{PerRequest, RequestCounter, RequestCounting};
pub use service::{Outcome, Quota, StorePolicy};
pub use store::{MemoryStore, RedisStore, Store, Unreachable};
pub use subject::Subject;
pub use usage::{Tally, Usage};
pub use window::{Decision, Limit, LimitError, Window};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.quota.v1.QuotaService";
