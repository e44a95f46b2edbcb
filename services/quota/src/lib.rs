//! The quota service: rate limits.
//!
//! - [`window`]: the limiting rule, a bucketed sliding window that never
//!   admits more than the limit in any window of one period;
//! - [`subject`]: who a limit counts (`key:…`, `org:…`, `user:…`, `ip:…`,
//!   `custom:…`);
//! - [`service::Quota`]: checks against the default limit, counted in
//!   memory (one replica);
//! - [`grpc::QuotaGrpc`]: `twig.quota.v1.QuotaService` on the wire.

pub mod grpc;
pub mod service;
pub mod subject;
pub mod window;

pub use service::Quota;
pub use window::{Decision, Limit, LimitError, Window};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "twig.quota.v1.QuotaService";
