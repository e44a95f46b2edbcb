//! The `[quota]` section of the configuration, owned and checked here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use twig_config::{Config, Section};

/// The quota service. The limit's rules (at least 1, period 1 s to 1 day,
/// 1 to 600 buckets) are checked when the service is built, before any
/// port is bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests (cost units) per period for every subject.
    pub default_limit: u64,
    /// The period of the default limit.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Slices the period is counted in; capacity comes back up to one
    /// slice late.
    pub buckets: u32,
    /// The default limit only computes, counts and logs its refusals.
    pub shadow: bool,
    /// Where counts live: `memory` (one replica) or `redis` (replicas
    /// share one count; needs `redis.url`).
    pub store: QuotaStore,
    /// When Redis cannot be reached: `open` admits uncounted, `closed`
    /// refuses with UNAVAILABLE.
    pub on_store_error: OnStoreError,
    /// How long one Redis call may take before the policy applies.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            default_limit: 100,
            period: Duration::from_secs(60),
            buckets: 60,
            shadow: false,
            store: QuotaStore::Memory,
            on_store_error: OnStoreError::Open,
            redis_timeout: Duration::from_millis(100),
        }
    }
}

/// Where quota counts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaStore {
    /// In this process: one replica.
    Memory,
    /// In Redis: every replica shares one count.
    Redis,
}

/// What a quota check does when its store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Admit, uncounted (logged and counted in metrics).
    Open,
    /// Refuse with UNAVAILABLE.
    Closed,
}

impl Section for QuotaConfig {
    const KEY: &'static str = "quota";

    fn problems(&self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        if self.store == QuotaStore::Redis && config.redis.url.is_none() {
            problems.push("store = redis needs redis.url (or REDIS_URL)".into());
        }
        if self.redis_timeout < Duration::from_millis(1)
            || self.redis_timeout > Duration::from_secs(10)
        {
            problems.push("redis_timeout must be between 1ms and 10s".into());
        }
        if let Err(e) = crate::Limit::new(self.default_limit, self.period, self.buckets) {
            problems.push(format!("default_limit, period, buckets: {e}"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_settings_are_checked() {
        let mut config = Config::default();
        config.edit::<QuotaConfig>(|q| {
            q.store = QuotaStore::Redis;
            q.redis_timeout = Duration::ZERO;
        });
        let problems = config.section::<QuotaConfig>().unwrap().problems(&config);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("store = redis needs redis.url")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("redis_timeout")),
            "{problems:?}"
        );
        config.redis.url = Some(twig_config::Secret::new("redis://127.0.0.1:6379"));
        config.edit::<QuotaConfig>(|q| q.redis_timeout = Duration::from_millis(50));
        assert!(
            config
                .section::<QuotaConfig>()
                .unwrap()
                .problems(&config)
                .is_empty()
        );
    }

    #[test]
    fn the_default_limit_must_be_a_valid_rule() {
        let mut config = Config::default();
        config.edit::<QuotaConfig>(|q| q.buckets = 0);
        let problems = config.section::<QuotaConfig>().unwrap().problems(&config);
        assert!(
            problems.iter().any(|p| p.contains("buckets")),
            "{problems:?}"
        );
    }

    #[test]
    fn store_names_are_read() {
        let config: QuotaConfig =
            serde_json::from_str(r#"{"store":"redis","on_store_error":"closed"}"#).unwrap();
        assert_eq!(config.store, QuotaStore::Redis);
        assert_eq!(config.on_store_error, OnStoreError::Closed);
        assert!(serde_json::from_str::<QuotaConfig>(r#"{"on_store_error":"maybe"}"#).is_err());
    }
}
