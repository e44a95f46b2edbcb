//! The `[sessions]` section of the configuration, owned and checked here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use twig_config::{Config, Section};

/// The sessions service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Lifetime of an access (session) token.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// A session not refreshed for this long ends.
    #[serde(with = "humantime_serde")]
    pub refresh_idle_ttl: Duration,
    /// A session ends this long after login, however often it is refreshed.
    #[serde(with = "humantime_serde")]
    pub refresh_absolute_ttl: Duration,
    /// Two refreshes with the same token this close together are a race of
    /// one client (the loser is refused); further apart, the second one is
    /// reuse of a stolen token and ends the session.
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// How long a verified access token is answered from memory.
    #[serde(with = "humantime_serde")]
    pub verify_cache_ttl: Duration,
    /// Shortest password, in Unicode scalar values.
    pub password_min_chars: usize,
    /// Longest password, in UTF-8 bytes; longer ones are refused unhashed.
    pub password_max_bytes: usize,
    /// Failed logins per account before the growing delay starts.
    pub login_delay_after_failures: u32,
    /// First delay; it doubles with each further failure.
    #[serde(with = "humantime_serde")]
    pub login_delay_base: Duration,
    /// Largest delay.
    #[serde(with = "humantime_serde")]
    pub login_delay_max: Duration,
    /// Failures are forgotten this long after the last one.
    #[serde(with = "humantime_serde")]
    pub login_failure_window: Duration,
    /// Failed logins one IP address may make per minute.
    pub failed_logins_per_ip_per_minute: u32,
    /// How long a sign-up or email-verification link works.
    #[serde(with = "humantime_serde")]
    pub verification_link_ttl: Duration,
    /// How long a password-reset link works.
    #[serde(with = "humantime_serde")]
    pub reset_link_ttl: Duration,
    /// How long an invitation's link works (a resend starts it again).
    #[serde(with = "humantime_serde")]
    pub invitation_ttl: Duration,
    /// Pending invitations one organisation may have at once.
    pub max_pending_invitations: u64,
    /// Brakes on public requests, per client address and per email,
    /// counted by the quota service (shared by replicas through Redis).
    pub brakes: BrakesConfig,
    /// Sign-ups and reset requests worked on at once in the background
    /// (each sign-up hashes a password); the others wait their turn.
    pub background_jobs: usize,
    /// Sign-ups and reset requests admitted and not yet finished, at
    /// most; past it a request still gets the same answer but is shed
    /// (no mail is sent; `twig_sessions_background_shed_total` counts
    /// them). The brakes keep any one client far below it.
    pub background_queue: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(15 * 60),
            refresh_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            refresh_absolute_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(2),
            verify_cache_ttl: Duration::from_secs(2),
            password_min_chars: 12,
            password_max_bytes: 1024,
            login_delay_after_failures: 3,
            login_delay_base: Duration::from_millis(500),
            login_delay_max: Duration::from_secs(10),
            login_failure_window: Duration::from_secs(15 * 60),
            failed_logins_per_ip_per_minute: 30,
            verification_link_ttl: Duration::from_secs(24 * 3600),
            reset_link_ttl: Duration::from_secs(30 * 60),
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            max_pending_invitations: 500,
            background_jobs: 64,
            background_queue: 10_000,
            brakes: BrakesConfig::default(),
        }
    }
}

/// So many requests per period.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PerPeriod {
    /// Requests admitted per period.
    pub count: u64,
    /// The period (1 s to 1 day).
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

impl PerPeriod {
    const fn per(count: u64, secs: u64) -> Self {
        Self {
            count,
            period: Duration::from_secs(secs),
        }
    }
}

/// `[sessions.brakes]`: how many public requests of each kind one client
/// address (IPv6: its /64) or one email may make. Over a brake the
/// request is RESOURCE_EXHAUSTED with the retry delay — the same answer
/// whether or not the email has an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrakesConfig {
    /// `SignUp` per client address.
    pub sign_ups_per_address: PerPeriod,
    /// `SignUp` per email.
    pub sign_ups_per_email: PerPeriod,
    /// `RequestPasswordReset` per client address.
    pub resets_per_address: PerPeriod,
    /// `RequestPasswordReset` per email.
    pub resets_per_email: PerPeriod,
    /// `CreateInvitation` and `ResendInvitation` per client address.
    pub invitations_per_address: PerPeriod,
    /// Invitations mailed to one email, from any organisation.
    pub invitations_per_email: PerPeriod,
    /// `Refresh` per client address.
    pub refreshes_per_address: PerPeriod,
    /// Links followed (`VerifyEmail`, `ResetPassword`, accepting or
    /// signing up through an invitation) per client address: bounds token
    /// guessing.
    pub link_attempts_per_address: PerPeriod,
}

impl Default for BrakesConfig {
    fn default() -> Self {
        Self {
            sign_ups_per_address: PerPeriod::per(20, 3600),
            sign_ups_per_email: PerPeriod::per(5, 3600),
            resets_per_address: PerPeriod::per(20, 3600),
            resets_per_email: PerPeriod::per(5, 3600),
            invitations_per_address: PerPeriod::per(200, 3600),
            invitations_per_email: PerPeriod::per(10, 86_400),
            refreshes_per_address: PerPeriod::per(600, 60),
            link_attempts_per_address: PerPeriod::per(60, 3600),
        }
    }
}

impl BrakesConfig {
    /// Every brake with its name.
    pub fn all(&self) -> [(&'static str, PerPeriod); 8] {
        [
            ("sign_ups_per_address", self.sign_ups_per_address),
            ("sign_ups_per_email", self.sign_ups_per_email),
            ("resets_per_address", self.resets_per_address),
            ("resets_per_email", self.resets_per_email),
            ("invitations_per_address", self.invitations_per_address),
            ("invitations_per_email", self.invitations_per_email),
            ("refreshes_per_address", self.refreshes_per_address),
            ("link_attempts_per_address", self.link_attempts_per_address),
        ]
    }
}

impl Section for SessionsConfig {
    const KEY: &'static str = "sessions";

    fn problems(&self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        if self.access_ttl.is_zero() {
            problems.push("access_ttl must be more than 0".into());
        }
        if self.refresh_idle_ttl < self.access_ttl {
            problems.push("refresh_idle_ttl must be at least access_ttl".into());
        }
        if self.refresh_absolute_ttl < self.refresh_idle_ttl {
            problems.push("refresh_absolute_ttl must be at least refresh_idle_ttl".into());
        }
        if self.password_min_chars < 8 {
            problems.push("password_min_chars must be at least 8".into());
        }
        if self.password_max_bytes < self.password_min_chars * 4
            || self.password_max_bytes > 64 * 1024
        {
            problems
                .push("password_max_bytes must be between 4 × password_min_chars and 65536".into());
        }
        if self.login_delay_max < self.login_delay_base {
            problems.push("login_delay_max must be at least login_delay_base".into());
        }
        // Without Redis, the cache bounds how long an ended session still
        // passes on another replica.
        let limit = if config.redis.url.is_some() { 60 } else { 5 };
        if self.verify_cache_ttl > Duration::from_secs(limit) {
            problems.push(format!(
                "verify_cache_ttl must be at most {limit}s \
                 (without Redis it bounds how long an ended session passes on another replica)"
            ));
        }
        if self.failed_logins_per_ip_per_minute == 0 {
            problems.push("failed_logins_per_ip_per_minute must be at least 1".into());
        }
        for (name, ttl, max) in [
            (
                "verification_link_ttl",
                self.verification_link_ttl,
                7 * 24 * 3600,
            ),
            ("reset_link_ttl", self.reset_link_ttl, 24 * 3600),
            ("invitation_ttl", self.invitation_ttl, 30 * 24 * 3600),
        ] {
            if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(max) {
                problems.push(format!("{name} must be between 1m and {}h", max / 3600));
            }
        }
        if self.max_pending_invitations == 0 {
            problems.push("max_pending_invitations must be at least 1".into());
        }
        if self.background_jobs == 0 {
            problems.push("background_jobs must be at least 1".into());
        }
        if self.background_queue < self.background_jobs || self.background_queue > 1_000_000 {
            problems.push("background_queue must be from background_jobs to 1000000".into());
        }
        for (name, rule) in self.brakes.all() {
            if rule.count == 0 || rule.count > 1_000_000_000 {
                problems.push(format!("brakes.{name}.count must be 1 to 1000000000"));
            }
            if rule.period < Duration::from_secs(1) || rule.period > Duration::from_secs(86_400) {
                problems.push(format!("brakes.{name}.period must be between 1s and 1d"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(change: impl FnOnce(&mut SessionsConfig)) -> Vec<String> {
        let mut config = Config::default();
        config.edit::<SessionsConfig>(change);
        config
            .section::<SessionsConfig>()
            .unwrap()
            .problems(&config)
    }

    #[test]
    fn defaults_hold_every_rule() {
        assert!(problems_of(|_| {}).is_empty());
    }

    #[test]
    fn each_rule_names_its_setting() {
        for (change, setting) in [
            (
                (|s: &mut SessionsConfig| s.access_ttl = Duration::ZERO) as fn(&mut SessionsConfig),
                "access_ttl",
            ),
            (|s| s.password_min_chars = 3, "password_min_chars"),
            (|s| s.password_max_bytes = 10, "password_max_bytes"),
            (
                |s| s.refresh_idle_ttl = Duration::from_secs(1),
                "refresh_idle_ttl",
            ),
            (
                |s| s.login_delay_base = Duration::from_secs(60),
                "login_delay_max",
            ),
            (
                |s| s.verify_cache_ttl = Duration::from_secs(30),
                "verify_cache_ttl must be at most 5s",
            ),
            (
                |s| s.failed_logins_per_ip_per_minute = 0,
                "failed_logins_per_ip_per_minute",
            ),
            (
                |s| s.reset_link_ttl = Duration::from_secs(2 * 24 * 3600),
                "reset_link_ttl must be between 1m and 24h",
            ),
            (
                |s| s.invitation_ttl = Duration::from_secs(1),
                "invitation_ttl",
            ),
            (|s| s.max_pending_invitations = 0, "max_pending_invitations"),
            (|s| s.background_jobs = 0, "background_jobs"),
            (|s| s.background_queue = 1, "background_queue"),
            (
                |s| s.brakes.resets_per_email.count = 0,
                "brakes.resets_per_email.count",
            ),
            (
                |s| s.brakes.refreshes_per_address.period = Duration::from_secs(2 * 86_400),
                "brakes.refreshes_per_address.period",
            ),
        ] {
            let problems = problems_of(change);
            assert!(
                problems.iter().any(|p| p.contains(setting)),
                "{setting}: {problems:?}"
            );
        }
    }
}
