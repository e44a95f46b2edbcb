//! The `[api_keys]` section of the configuration, owned and checked here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use twig_config::{Config, Section};

/// The api-keys service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// How long a valid key is answered from memory. Revocation reaches
    /// other replicas within this time.
    #[serde(with = "humantime_serde")]
    pub verify_cache_ttl: Duration,
    /// How long an unknown key is answered from memory.
    #[serde(with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// Refused verifications are written to the audit log as one row per
    /// source (client address, or key and address) and period of this
    /// length, with a count, rather than one row per request.
    #[serde(with = "humantime_serde")]
    pub refusal_audit_period: Duration,
    /// Sources tracked per period; refusals from any more are counted in
    /// one overflow row (per key for refusals of a real key).
    pub refusal_audit_max_sources: usize,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            verify_cache_ttl: Duration::from_millis(500),
            negative_cache_ttl: Duration::from_millis(500),
            refusal_audit_period: Duration::from_secs(60),
            refusal_audit_max_sources: 1000,
        }
    }
}

impl Section for ApiKeysConfig {
    const KEY: &'static str = "api_keys";

    fn problems(&self, config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        // Without Redis, the cache bounds how long a revoked key still
        // passes on another replica.
        let limit = if config.redis.url.is_some() { 60 } else { 1 };
        if self.verify_cache_ttl > Duration::from_secs(limit) {
            problems.push(format!(
                "verify_cache_ttl must be at most {limit}s \
                 (without Redis it bounds how long a revoked key passes on another replica)"
            ));
        }
        if self.refusal_audit_period < Duration::from_secs(1)
            || self.refusal_audit_period > Duration::from_secs(3600)
        {
            problems.push("refusal_audit_period must be between 1s and 1h".into());
        }
        if !(1..=100_000).contains(&self.refusal_audit_max_sources) {
            problems.push("refusal_audit_max_sources must be between 1 and 100000".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_allows_longer_key_caches() {
        let mut config = Config::default();
        assert!(
            config
                .section::<ApiKeysConfig>()
                .unwrap()
                .problems(&config)
                .is_empty()
        );
        config.edit::<ApiKeysConfig>(|k| k.verify_cache_ttl = Duration::from_secs(30));
        let problems = config.section::<ApiKeysConfig>().unwrap().problems(&config);
        assert!(
            problems[0].contains("verify_cache_ttl must be at most 1s"),
            "{problems:?}"
        );
        config.redis.url = Some(twig_config::Secret::new("redis://127.0.0.1:6379"));
        assert!(
            config
                .section::<ApiKeysConfig>()
                .unwrap()
                .problems(&config)
                .is_empty()
        );
    }

    #[test]
    fn refusal_audit_bounds_are_checked() {
        let mut config = Config::default();
        config.edit::<ApiKeysConfig>(|k| {
            k.refusal_audit_period = Duration::from_millis(10);
            k.refusal_audit_max_sources = 0;
        });
        let problems = config.section::<ApiKeysConfig>().unwrap().problems(&config);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
