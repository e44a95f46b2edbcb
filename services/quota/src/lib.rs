//! The quota service: rate limits.
//!
//! - [`window`]: the limiting rule, a bucketed sliding window that never
//!   admits more than the limit in any window of one period;
//! - [`subject`]: who a limit counts (`key:…`, `org:…`, `user:…`, `ip:…`,
//!   `custom:…`);
//! - [`store`]: where counts live — in memory (one replica) or in Redis
//!   (shared, one atomic script per batch of checks);
//! - [`limits`]: which limit applies — the configured default or an
//!   organisation's or key's own, cached and fanned out on change;
//! - [`usage`]: admitted and refused checks per subject per minute;
//! - [`service::Quota`]: the decision, the store-down policy, who may
//!   change limits;
//! - [`requests`]: what an authenticated request counts under, and
//!   [`RequestCounter`] (this process's [`Quota`] or
//!   [`remote::RemoteQuota`] over gRPC) for the front doors;
//! - [`grpc::QuotaGrpc`]: `twig.quota.v1.QuotaService` on the wire.

mod config;
pub mod entity;
mod error;
mod grpc;
mod limits;
mod migration;
mod module;
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
pub use requests::{PerRequest, RequestCounter, RequestCounting};
pub use service::{Outcome, Quota, StorePolicy};
pub use store::{MemoryStore, RedisStore, Store, Unreachable};
pub use subject::Subject;
pub use usage::{Tally, Usage};
pub use window::{Decision, Limit, LimitError, Window};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.quota.v1.QuotaService";
