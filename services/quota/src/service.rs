//! Checking costs against limits, counted in memory.

use std::sync::Arc;

use dashmap::DashMap;
use twig_clock::Clock;
use twig_errors::ApiError;

use crate::subject::Subject;
use crate::window::{Decision, Limit, Window};

/// The largest cost one check may carry.
pub const MAX_COST: u64 = 1_000_000_000_000;

/// The quota service (one replica: counts live in this process).
pub struct Quota {
    default_limit: Limit,
    windows: DashMap<Subject, Window>,
    clock: Arc<dyn Clock>,
}

impl Quota {
    /// A service that applies `default_limit` to every subject.
    pub fn new(default_limit: Limit, clock: Arc<dyn Clock>) -> Self {
        Self {
            default_limit,
            windows: DashMap::new(),
            clock,
        }
    }

    /// Counts `cost` against `subject` when it fits.
    pub fn check(&self, subject: &str, cost: u64) -> Result<Decision, ApiError> {
        let subject =
            Subject::parse(subject).map_err(|reason| ApiError::invalid_field("subject", reason))?;
        let cost = if cost == 0 { 1 } else { cost };
        if cost > MAX_COST {
            return Err(ApiError::invalid_field("cost", "must be at most 10^12"));
        }
        let limit = self.default_limit;
        let now_ms = u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0);
        let decision = self
            .windows
            .entry(subject)
            .or_default()
            .check(&limit, now_ms, cost);
        metrics::counter!(
            "twig_quota_checks_total",
            "decision" => if decision.allowed { "allowed" } else { "denied" },
        )
        .increment(1);
        Ok(decision)
    }
}
