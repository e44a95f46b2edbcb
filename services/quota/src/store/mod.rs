//! Where counts live: in this process ([`MemoryStore`], one replica) or in
//! Redis ([`RedisStore`], N replicas share one count). Both apply the rule
//! of [`crate::window`].

mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::subject::Subject;
use crate::window::{Decision, Limit};

/// The store could not answer; the configured policy decides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the quota store (Redis) cannot be reached: {0}")]
pub struct Unreachable(pub String);

/// The counts, behind one interface.
pub enum Store {
    /// In this process.
    Memory(MemoryStore),
    /// In Redis, shared by every replica.
    Redis(RedisStore),
}

impl Store {
    /// Checks `cost` against `limit` for `subject` at `now_ms`, counting it
    /// when admitted.
    pub async fn check(
        &self,
        subject: &Subject,
        limit: &Limit,
        now_ms: u64,
        cost: u64,
    ) -> Result<Decision, Unreachable> {
        match self {
            Self::Memory(m) => Ok(m.check(subject, limit, now_ms, cost)),
            Self::Redis(r) => r.check(subject, limit, now_ms, cost).await,
        }
    }

    /// Forgets what can no longer matter at `now_ms`.
    pub fn sweep(&self, now_ms: u64) {
        match self {
            Self::Memory(m) => m.sweep(now_ms),
            Self::Redis(r) => r.sweep(now_ms),
        }
    }

    /// `memory` or `redis`, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}
