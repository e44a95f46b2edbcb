//! The quota service: rate limits that hold across replicas.
//!
//! This first part is the limiting rule itself, [`window`]: a bucketed
//! sliding window that never admits more than the limit in any window of
//! one period. The service (`twig.quota.v1.QuotaService`), its stores
//! (in memory, Redis) and overrides build on it.

pub mod window;

pub use window::{Decision, Limit, LimitError, Window};
