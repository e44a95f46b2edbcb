//! Brute-force brakes for login.
//!
//! - Per account: a growing delay before each attempt once an email has
//!   failed `after` times ([`account_delay`]). The delay applies to every
//!   attempt on that email, right or wrong, so it slows guessing without
//!   letting an attacker lock the owner out: the owner waits at most
//!   `max` seconds. Failures are counted per email whether or not an
//!   account exists, so the delay reveals nothing.
//! - Per IP: a GCRA limiter on failed logins ([`IpLimiter`]); over the
//!   limit, logins from that address get RESOURCE_EXHAUSTED with a retry
//!   time. Kept in memory, per replica.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// The delay before an attempt on an email that has failed `failures`
/// times within the window: none below `after`, then `base`, doubling per
/// further failure, capped at `max`.
pub fn account_delay(failures: u32, after: u32, base: Duration, max: Duration) -> Duration {
    if failures < after {
        return Duration::ZERO;
    }
    let doublings = (failures - after).min(30);
    base.saturating_mul(1u32 << doublings).min(max)
}

/// Failed logins per IP address, as a GCRA: each failure pushes the
/// address's "theoretical arrival time" one interval further; an address
/// more than one minute ahead of now is over its limit.
#[derive(Debug)]
pub struct IpLimiter {
    interval: Duration,
    burst_window: Duration,
    tat: DashMap<IpAddr, Instant>,
}

impl IpLimiter {
    /// `per_minute` failures allowed per address per minute.
    pub fn new(per_minute: u32) -> Self {
        Self {
            interval: Duration::from_secs(60) / per_minute.max(1),
            burst_window: Duration::from_secs(60),
            tat: DashMap::new(),
        }
    }

    /// `Err(retry_after)` when `ip` is over its failure budget.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        match self.tat.get(&ip) {
            Some(tat) if *tat > now + self.burst_window => Err(*tat - (now + self.burst_window)),
            _ => Ok(()),
        }
    }

    /// Records one failure from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let now = Instant::now();
        {
            let mut tat = self.tat.entry(ip).or_insert(now);
            *tat = (*tat).max(now) + self.interval;
        }
        if self.tat.len() > 100_000 {
            self.tat.retain(|_, tat| *tat > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_then_caps() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(10);
        let d = |f| account_delay(f, 3, base, max);
        assert_eq!(d(0), Duration::ZERO);
        assert_eq!(d(2), Duration::ZERO);
        assert_eq!(d(3), base);
        assert_eq!(d(4), base * 2);
        assert_eq!(d(6), base * 8);
        assert_eq!(d(10), max);
        assert_eq!(d(u32::MAX), max);
    }

    #[test]
    fn ip_limiter_allows_the_budget_then_refuses() {
        let limiter = IpLimiter::new(10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..10 {
            assert!(limiter.check(ip).is_ok());
            limiter.record_failure(ip);
        }
        limiter.record_failure(ip);
        let retry = limiter.check(ip).unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(7));
        assert!(limiter.check(other).is_ok());
    }
}
