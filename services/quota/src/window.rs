//! A bucketed sliding window.
//!
//! The period is cut into `buckets` equal slices; each slice counts the
//! cost admitted in it. A request of cost `c` at time `t` is admitted when
//! the counts of every slice overlapping `(t − period, t]`, plus `c`, stay
//! within the limit.
//!
//! **The bound.** Any window `[s, s + period]` lies within the slices
//! overlapping `(t − period, t]` for the time `t` of its last admitted
//! request, so everything admitted in that window was counted when that
//! request was admitted: *no window of one period ever holds more than the
//! limit* — there is no boundary burst at all. The price is the other way
//! round: a slice is forgotten only once it lies wholly outside the window,
//! so capacity comes back up to one slice (`period / buckets`) late.

use std::collections::VecDeque;
use std::time::Duration;

/// A limit: `limit` cost units per `period`, counted in `buckets` slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    limit: u64,
    period_ms: u64,
    buckets: u32,
}

/// Why a limit cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Zero allows nothing; use a denial rule instead.
    #[error("the limit must be at least 1")]
    ZeroLimit,
    /// Too large to be meant.
    #[error("the limit must be at most 10^12 per period")]
    HugeLimit,
    /// Periods from 1 second to 1 day.
    #[error("the period must be between 1 s and 1 day")]
    Period,
    /// Slices from 1 to 600, each at least 1 ms.
    #[error("buckets must be between 1 and 600, each at least 1 ms long")]
    Buckets,
}

impl Limit {
    /// A limit, checked.
    pub fn new(limit: u64, period: Duration, buckets: u32) -> Result<Self, LimitError> {
        if limit == 0 {
            return Err(LimitError::ZeroLimit);
        }
        if limit > 1_000_000_000_000 {
            return Err(LimitError::HugeLimit);
        }
        let period_ms = u64::try_from(period.as_millis()).map_err(|_| LimitError::Period)?;
        if !(1_000..=86_400_000).contains(&period_ms) {
            return Err(LimitError::Period);
        }
        if buckets == 0 || buckets > 600 || period_ms / u64::from(buckets) == 0 {
            return Err(LimitError::Buckets);
        }
        Ok(Self {
            limit,
            period_ms,
            buckets,
        })
    }

    /// The cost allowed per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// Slices the period is counted in.
    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// The length of one slice, in milliseconds.
    pub fn slice_ms(&self) -> u64 {
        self.period_ms / u64::from(self.buckets)
    }

    /// The period, in milliseconds.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the cost was admitted (and counted).
    pub allowed: bool,
    /// The limit per period.
    pub limit: u64,
    /// The period.
    pub period: Duration,
    /// Cost still admissible now, after this decision.
    pub remaining: u64,
    /// When everything counted now will have left the window.
    pub reset_after: Duration,
    /// For a refusal: the wait after which this cost would be admitted
    /// (zero when allowed; `None` when the cost exceeds the limit itself).
    pub retry_after: Option<Duration>,
}

/// The counts of one subject under one limit. Times are milliseconds on
/// any monotonic scale the caller chooses.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// The slice length the slices were counted with; a different limit
    /// starts afresh.
    slice_ms: u64,
    /// (slice index, cost counted in it), oldest first.
    slices: VecDeque<(u64, u64)>,
    /// From this time on every slice has left the window.
    idle_at_ms: u64,
}

impl Window {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing counted is still in the window at `now_ms`: the
    /// window may be forgotten.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        now_ms >= self.idle_at_ms
    }

    /// Checks `cost` at `now_ms`, counting it when admitted.
    pub fn check(&mut self, limit: &Limit, now_ms: u64, cost: u64) -> Decision {
        let slice_ms = limit.slice_ms();
        if self.slice_ms != slice_ms {
            self.slices.clear();
            self.slice_ms = slice_ms;
        }
        let current = now_ms / slice_ms;
        // Slice i covers [i·s, (i+1)·s); it overlaps (now − period, now]
        // when (i+1)·s > now − period, that is when i ≥ ⌊(now − period)/s⌋.
        let oldest_kept = now_ms.saturating_sub(limit.period_ms) / slice_ms;
        while self.slices.front().is_some_and(|(i, _)| *i < oldest_kept) {
            self.slices.pop_front();
        }
        let used: u64 = self.slices.iter().map(|(_, c)| c).sum();
        let fits = used
            .checked_add(cost)
            .is_some_and(|total| total <= limit.limit);
        if fits {
            match self.slices.back_mut() {
                Some((i, c)) if *i == current => *c += cost,
                _ => self.slices.push_back((current, cost)),
            }
        }
        let used_now = if fits { used + cost } else { used };
        self.idle_at_ms = self
            .slices
            .back()
            .map_or(0, |(i, _)| (i + 1) * slice_ms + limit.period_ms);
        let reset_after = Duration::from_millis(self.idle_at_ms.saturating_sub(now_ms));
        let retry_after = if fits {
            Some(Duration::ZERO)
        } else if cost > limit.limit {
            None
        } else {
            // Forget slices oldest first until the cost fits. `used` may be
            // above the limit when the subject's limit was lowered while
            // its window held more.
            let needed = used.saturating_add(cost).saturating_sub(limit.limit);
            let mut freed = 0u64;
            let mut wait = None;
            for (i, c) in &self.slices {
                freed = freed.saturating_add(*c);
                if freed >= needed {
                    let free_at = (i + 1) * slice_ms + limit.period_ms;
                    wait = Some(Duration::from_millis(free_at.saturating_sub(now_ms)));
                    break;
                }
            }
            wait
        };
        Decision {
            allowed: fits,
            limit: limit.limit,
            period: limit.period(),
            remaining: limit.limit.saturating_sub(used_now),
            reset_after,
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn per_minute(n: u64) -> Limit {
        Limit::new(n, Duration::from_secs(60), 60).unwrap()
    }

    #[test]
    fn the_101st_request_of_a_minute_is_refused() {
        let limit = per_minute(100);
        let mut w = Window::new();
        for i in 0..100 {
            let d = w.check(&limit, 1_000 + i, 1);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 99 - i);
        }
        let refused = w.check(&limit, 1_500, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        let wait = refused.retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(59) && wait <= Duration::from_secs(61),
            "{wait:?}"
        );
        // After the wait, it is admitted.
        assert!(w.check(&limit, 1_500 + wait.as_millis() as u64, 1).allowed);
    }

    #[test]
    fn a_limit_lowered_below_what_the_window_holds_refuses_until_enough_has_left() {
        let mut w = Window::new();
        for t in 0..50 {
            assert!(w.check(&per_minute(1_000), t * 1_000, 10).allowed);
        }
        // 500 counted in the last 50 s; the limit drops to 100.
        let lowered = per_minute(100);
        let refused = w.check(&lowered, 50_000, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // 401 units must leave the window: the slices of seconds 0..=40.
        assert_eq!(refused.retry_after, Some(Duration::from_secs(101 - 50)));
        assert!(!w.check(&lowered, 100_999, 1).allowed);
        assert!(w.check(&lowered, 101_000, 1).allowed);
    }

    #[test]
    fn no_burst_across_a_minute_boundary() {
        let limit = per_minute(100);
        let mut w = Window::new();
        for _ in 0..100 {
            assert!(w.check(&limit, 59_900, 1).allowed);
        }
        // Just after the boundary a fixed window would start afresh.
        for t in [60_100, 61_000, 90_000, 119_000] {
            assert!(!w.check(&limit, t, 1).allowed, "at {t} ms");
        }
        assert!(w.check(&limit, 120_000, 1).allowed);
    }

    #[test]
    fn cost_weighs_and_oversized_costs_never_fit() {
        let limit = per_minute(1_000);
        let mut w = Window::new();
        assert!(w.check(&limit, 0, 600).allowed);
        let d = w.check(&limit, 10, 600);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 400);
        assert!(w.check(&limit, 20, 400).allowed);
        let huge = w.check(&limit, 30, 1_001);
        assert!(!huge.allowed);
        assert_eq!(huge.retry_after, None);
        assert!(!w.check(&limit, 40, u64::MAX).allowed, "no overflow");
    }

    #[test]
    fn absurd_limits_are_refused() {
        assert_eq!(
            Limit::new(0, Duration::from_secs(60), 60),
            Err(LimitError::ZeroLimit)
        );
        assert_eq!(
            Limit::new(u64::MAX, Duration::from_secs(60), 60),
            Err(LimitError::HugeLimit)
        );
        assert_eq!(
            Limit::new(10, Duration::from_millis(10), 1),
            Err(LimitError::Period)
        );
        assert_eq!(
            Limit::new(10, Duration::from_secs(86_401), 60),
            Err(LimitError::Period)
        );
        assert_eq!(
            Limit::new(10, Duration::from_secs(60), 0),
            Err(LimitError::Buckets)
        );
        assert_eq!(
            Limit::new(10, Duration::from_secs(1), 601),
            Err(LimitError::Buckets)
        );
    }

    proptest! {
        /// Whatever the arrival times and costs, no window of one period
        /// ever holds more admitted cost than the limit.
        #[test]
        fn never_more_than_the_limit_in_any_window(
            steps in proptest::collection::vec((0u64..3_000, 1u64..5), 1..400),
            limit in 1u64..50,
            buckets in 1u32..20,
        ) {
            let limit = Limit::new(limit, Duration::from_secs(10), buckets).unwrap();
            let mut w = Window::new();
            let mut now = 0u64;
            let mut admitted: Vec<(u64, u64)> = Vec::new();
            for (gap, cost) in steps {
                now += gap;
                if w.check(&limit, now, cost).allowed {
                    admitted.push((now, cost));
                }
            }
            for &(start, _) in &admitted {
                let in_window: u64 = admitted
                    .iter()
                    .filter(|(t, _)| *t >= start && *t < start + 10_000)
                    .map(|(_, c)| c)
                    .sum();
                prop_assert!(in_window <= limit.limit(), "{in_window} in the window from {start}");
            }
        }

        /// A refused cost waits at most one period plus one slice.
        #[test]
        fn retry_after_is_honest(steps in proptest::collection::vec(0u64..500, 1..200)) {
            let limit = Limit::new(20, Duration::from_secs(10), 10).unwrap();
            let mut w = Window::new();
            let mut now = 0;
            for gap in steps {
                now += gap;
                let d = w.check(&limit, now, 1);
                if !d.allowed {
                    let wait = d.retry_after.unwrap();
                    prop_assert!(wait <= Duration::from_millis(11_000));
                    let mut probe = w.clone();
                    prop_assert!(probe.check(&limit, now + wait.as_millis() as u64, 1).allowed);
                }
            }
        }
    }
}
