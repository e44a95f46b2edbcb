//! `[plans]`: what each plan gives the organisations on it — the request
//! limit their keys get by default, the largest limit their admins may set
//! themselves, and the features they may use.
//!
//! Typed here, beside the other shared sections, because more than one
//! service gates on a plan: quota (custom limits), api-keys (IP
//! allowlists), and single sign-on. Which organisation is on which plan is
//! the quota service's to keep and to answer (the `Plans` port of
//! `twig-module`); every service reads what a plan means from this one
//! type.
//!
//! ```toml
//! [plans]
//! default_plan = "free"          # organisations the operator never moved
//!
//! [plans.enterprise]             # a built-in plan, changed
//! max_custom_limit = { requests = 5000000, period = "1m" }
//!
//! [plans.gold]                   # a plan of your own
//! default_limit = { requests = 1000, period = "1m" }
//! max_custom_limit = { requests = 100000, period = "1m" }
//! features = ["ip_allowlists", "custom_limits"]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Something a plan may include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Organisation and per-key IP allowlists (api-keys).
    IpAllowlists,
    /// Single sign-on for the organisation (sso-federation).
    Sso,
    /// Limits of their own, set by the organisation's admins up to the
    /// plan's `max_custom_limit` (quota).
    CustomLimits,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Feature; 3] = [Feature::IpAllowlists, Feature::Sso, Feature::CustomLimits];

    /// Its name in the configuration and on the wire (`ip_allowlists`).
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::IpAllowlists => "ip_allowlists",
            Feature::Sso => "sso",
            Feature::CustomLimits => "custom_limits",
        }
    }

    /// The feature named `name` (as [`Feature::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// What it is, for people (`IP allowlists`).
    pub fn describe(self) -> &'static str {
        match self {
            Feature::IpAllowlists => "IP allowlists",
            Feature::Sso => "single sign-on",
            Feature::CustomLimits => "custom rate limits",
        }
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `requests` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimit {
    /// Requests (cost units) per period, 1 to 10^12.
    pub requests: u64,
    /// 1 s to 1 day.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

impl PlanLimit {
    /// The most requests per period a limit may count.
    pub const MAX_REQUESTS: u64 = 1_000_000_000_000;

    /// `requests` per minute.
    pub const fn per_minute(requests: u64) -> Self {
        Self {
            requests,
            period: Duration::from_secs(60),
        }
    }

    /// Whether a limit of `requests` per `period` stays within this one:
    /// never a higher rate, and never more in one period than this allows
    /// in its own — so a long period cannot buy a burst above it. (With
    /// `p` = the shorter of the two periods: `requests / p ≤ self.requests
    /// / self.period`.) The one rule of "within the plan".
    pub fn admits(&self, requests: u64, period: Duration) -> bool {
        let own = self.period.as_millis();
        let compared = period.as_millis().min(own);
        u128::from(requests) * own <= u128::from(self.requests) * compared
    }

    /// Why it breaks the bounds every limit keeps, if it does.
    fn problem(&self) -> Option<&'static str> {
        if !(1..=Self::MAX_REQUESTS).contains(&self.requests) {
            return Some("requests must be between 1 and 10^12");
        }
        if self.period < Duration::from_secs(1)
            || self.period > Duration::from_secs(86_400)
            || !self.period.subsec_nanos().is_multiple_of(1_000_000)
        {
            return Some("period must be between 1s and 1 day, in whole milliseconds");
        }
        None
    }
}

impl std::fmt::Display for PlanLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.period.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{} requests per {} s", self.requests, ms / 1000)
        } else {
            write!(f, "{} requests per {} ms", self.requests, ms)
        }
    }
}

/// One plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanConfig {
    /// The limit each key of an organisation on this plan gets (counted
    /// per key) while neither the key nor the organisation has a limit of
    /// its own.
    pub default_limit: PlanLimit,
    /// The largest limit the organisation's admins may set themselves
    /// (with the `custom_limits` feature). Unset: custom limits are off.
    /// Only the platform operator sets limits above it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_custom_limit: Option<PlanLimit>,
    /// What the plan includes.
    pub features: Vec<Feature>,
}

impl Default for PlanConfig {
    /// The least a plan gives: 100 requests a minute, nothing else.
    fn default() -> Self {
        Self {
            default_limit: PlanLimit::per_minute(100),
            max_custom_limit: None,
            features: Vec::new(),
        }
    }
}

impl PlanConfig {
    /// Whether the plan includes `feature`.
    pub fn has(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    /// The largest limit admins may set: `None` when custom limits are off
    /// (no `custom_limits` feature).
    pub fn custom_limit_max(&self) -> Option<PlanLimit> {
        self.max_custom_limit
            .filter(|_| self.has(Feature::CustomLimits))
    }
}

/// The `[plans]` section: the plans by name, and the plan of every
/// organisation the operator has not moved. The built-in plans (`free`,
/// `team`, `enterprise`) are always there; a plan named in the
/// configuration changes the built-in of that name (field by field) or
/// adds one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlansConfig {
    /// The plan of organisations without one of their own (new ones, and
    /// every one the operator has not moved).
    pub default_plan: String,
    /// The plans, by name.
    #[serde(flatten)]
    pub plans: BTreeMap<String, PlanConfig>,
}

impl Default for PlansConfig {
    fn default() -> Self {
        let plans = BTreeMap::from([
            ("free".to_string(), PlanConfig::default()),
            (
                "team".to_string(),
                PlanConfig {
                    default_limit: PlanLimit::per_minute(100),
                    max_custom_limit: Some(PlanLimit::per_minute(10_000)),
                    features: vec![Feature::IpAllowlists, Feature::CustomLimits],
                },
            ),
            (
                "enterprise".to_string(),
                PlanConfig {
                    default_limit: PlanLimit::per_minute(100),
                    max_custom_limit: Some(PlanLimit::per_minute(1_000_000)),
                    features: Feature::ALL.to_vec(),
                },
            ),
        ]);
        Self {
            default_plan: "free".into(),
            plans,
        }
    }
}

/// Read as a map (not with `#[serde(flatten)]`, which would buffer the
/// plans and lose the key of a mistake in one): `default_plan`, and every
/// other key a plan, given over the built-in of that name.
impl<'de> Deserialize<'de> for PlansConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Plans;

        impl<'de> serde::de::Visitor<'de> for Plans {
            type Value = PlansConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [plans] section: default_plan and plans by name")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<PlansConfig, A::Error> {
                let mut plans = PlansConfig::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "default_plan" {
                        plans.default_plan = map.next_value()?;
                    } else {
                        let plan: PlanConfig = map.next_value()?;
                        plans.plans.insert(key, plan);
                    }
                }
                Ok(plans)
            }
        }

        deserializer.deserialize_map(Plans)
    }
}

/// The longest plan name.
pub const MAX_PLAN_NAME: usize = 32;

/// Why `name` cannot name a plan, if it cannot: 1 to 32 of `a-z`, `0-9`,
/// `-`, `_`, starting with a letter (names travel in the CLI, the API and
/// the audit log).
pub fn plan_name_problem(name: &str) -> Option<&'static str> {
    let valid = !name.is_empty()
        && name.len() <= MAX_PLAN_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    (!valid).then_some("a plan's name is 1 to 32 of a-z, 0-9, '-', '_', starting with a letter")
}

impl PlansConfig {
    /// The plan named `name`.
    pub fn plan(&self, name: &str) -> Option<&PlanConfig> {
        self.plans.get(name)
    }

    /// The plan named `name`, to change (tests, tools).
    pub fn plan_mut(&mut self, name: &str) -> Option<&mut PlanConfig> {
        self.plans.get_mut(name)
    }

    /// The default plan, to change (tests, tools).
    ///
    /// # Panics
    /// When `default_plan` names no plan (the configuration is invalid).
    pub fn default_plan_mut(&mut self) -> &mut PlanConfig {
        let name = self.default_plan.clone();
        self.plans
            .get_mut(&name)
            .expect("default_plan names a plan")
    }

    /// The names of the plans, sorted, for messages.
    pub fn names(&self) -> String {
        self.plans.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The rules no type can express, each naming its setting
    /// (`plans.free.max_custom_limit: …`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.plans.contains_key(&self.default_plan) {
            problems.push(format!(
                "plans.default_plan {:?} is not a plan; plans: {}",
                self.default_plan,
                self.names()
            ));
        }
        for (name, plan) in &self.plans {
            if let Some(problem) = plan_name_problem(name) {
                problems.push(format!("plans.{name:?}: {problem}"));
                continue;
            }
            if let Some(problem) = plan.default_limit.problem() {
                problems.push(format!("plans.{name}.default_limit: {problem}"));
            }
            if let Some(max) = &plan.max_custom_limit {
                if let Some(problem) = max.problem() {
                    problems.push(format!("plans.{name}.max_custom_limit: {problem}"));
                } else if !max.admits(plan.default_limit.requests, plan.default_limit.period) {
                    problems.push(format!(
                        "plans.{name}.max_custom_limit ({max}) is below its default_limit \
                         ({}): raise it, or leave it unset to turn custom limits off",
                        plan.default_limit
                    ));
                }
            }
            if plan.has(Feature::CustomLimits) && plan.max_custom_limit.is_none() {
                problems.push(format!(
                    "plans.{name}: features include custom_limits but max_custom_limit is not \
                     set (the largest limit the organisation's admins may set)"
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(problems: Vec<String>, needle: &str) {
        assert!(
            problems.len() == 1 && problems[0].contains(needle),
            "expected one problem with {needle:?}: {problems:?}"
        );
    }

    #[test]
    fn the_built_in_plans_are_valid() {
        let plans = PlansConfig::default();
        assert!(plans.problems().is_empty(), "{:?}", plans.problems());
        assert_eq!(plans.default_plan, "free");
        let free = plans.plan("free").unwrap();
        assert_eq!(free.default_limit, PlanLimit::per_minute(100));
        assert_eq!(free.custom_limit_max(), None);
        assert!(Feature::ALL.iter().all(|f| !free.has(*f)));
        let enterprise = plans.plan("enterprise").unwrap();
        assert!(Feature::ALL.iter().all(|f| enterprise.has(*f)));
        assert!(enterprise.custom_limit_max().unwrap().requests >= 1_000_000);
    }

    #[test]
    fn an_unknown_default_plan_is_refused_naming_the_plans() {
        let plans = PlansConfig {
            default_plan: "gold".into(),
            ..PlansConfig::default()
        };
        only(
            plans.problems(),
            "plans.default_plan \"gold\" is not a plan; plans: enterprise, free, team",
        );
    }

    #[test]
    fn a_maximum_below_the_default_is_refused() {
        let mut plans = PlansConfig::default();
        plans.plan_mut("team").unwrap().max_custom_limit = Some(PlanLimit::per_minute(50));
        only(
            plans.problems(),
            "plans.team.max_custom_limit (50 requests per 60 s) is below its default_limit \
             (100 requests per 60 s)",
        );
        // The same rate over a longer period is a burst above it.
        let team = plans.plan_mut("team").unwrap();
        team.max_custom_limit = Some(PlanLimit::per_minute(100));
        team.default_limit = PlanLimit {
            requests: 200,
            period: Duration::from_secs(120),
        };
        only(plans.problems(), "plans.team.max_custom_limit");
        // A shorter period at a lower rate is within it.
        plans.plan_mut("team").unwrap().default_limit = PlanLimit {
            requests: 50,
            period: Duration::from_secs(30),
        };
        assert!(plans.problems().is_empty(), "{:?}", plans.problems());
    }

    #[test]
    fn custom_limits_need_a_maximum_and_a_maximum_alone_turns_nothing_on() {
        let mut plans = PlansConfig::default();
        plans.plan_mut("free").unwrap().features = vec![Feature::CustomLimits];
        only(
            plans.problems(),
            "plans.free: features include custom_limits but max_custom_limit is not set",
        );
        let free = plans.plan_mut("free").unwrap();
        free.features.clear();
        free.max_custom_limit = Some(PlanLimit::per_minute(1_000));
        assert!(plans.problems().is_empty());
        assert_eq!(plans.plan("free").unwrap().custom_limit_max(), None);
    }

    #[test]
    fn limits_and_names_are_bounded() {
        let mut plans = PlansConfig::default();
        plans.plan_mut("free").unwrap().default_limit.requests = 0;
        only(plans.problems(), "plans.free.default_limit: requests");
        plans.plan_mut("free").unwrap().default_limit = PlanLimit {
            requests: 10,
            period: Duration::from_millis(500),
        };
        only(plans.problems(), "plans.free.default_limit: period");
        let mut plans = PlansConfig::default();
        plans.plan_mut("team").unwrap().max_custom_limit = Some(PlanLimit {
            requests: PlanLimit::MAX_REQUESTS + 1,
            period: Duration::from_secs(60),
        });
        only(plans.problems(), "plans.team.max_custom_limit: requests");
        for bad in [
            "",
            "Gold",
            "1gold",
            "go ld",
            "gold\u{200b}",
            &"g".repeat(33),
        ] {
            let mut plans = PlansConfig::default();
            plans.plans.insert(bad.to_string(), PlanConfig::default());
            only(plans.problems(), "a plan's name is 1 to 32");
        }
    }

    #[test]
    fn within_a_limit_means_no_higher_rate_and_no_bigger_burst() {
        let max = PlanLimit::per_minute(600);
        assert!(max.admits(600, Duration::from_secs(60)));
        assert!(!max.admits(601, Duration::from_secs(60)));
        // 10 a second is the same rate.
        assert!(max.admits(10, Duration::from_secs(1)));
        assert!(!max.admits(11, Duration::from_secs(1)));
        // A longer period may not hold more than the maximum's own period.
        assert!(max.admits(600, Duration::from_secs(3600)));
        assert!(!max.admits(601, Duration::from_secs(3600)));
        assert!(!max.admits(36_000, Duration::from_secs(3600)));
        // No overflow at the bounds.
        let top = PlanLimit {
            requests: PlanLimit::MAX_REQUESTS,
            period: Duration::from_secs(1),
        };
        assert!(top.admits(PlanLimit::MAX_REQUESTS, Duration::from_secs(86_400)));
        assert!(!PlanLimit::per_minute(1).admits(PlanLimit::MAX_REQUESTS, Duration::from_secs(1)));
    }

    #[test]
    fn features_have_one_name_each() {
        for f in Feature::ALL {
            assert_eq!(Feature::parse(f.as_str()), Some(f));
            let json = serde_json_like(f);
            assert_eq!(json, f.as_str());
        }
        assert_eq!(Feature::parse("IP_ALLOWLISTS"), None);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn plans_from_a_file_and_the_environment_change_the_built_ins_field_by_field() {
        use crate::{Config, Owners};
        use std::path::Path;
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "twig.toml",
                "[plans]\ndefault_plan = \"gold\"\n\
                 [plans.enterprise]\nmax_custom_limit = { requests = 5000000, period = \"1m\" }\n\
                 [plans.gold]\ndefault_limit = { requests = 1000, period = \"1m\" }\n\
                 max_custom_limit = { requests = 100000, period = \"1m\" }\n\
                 features = [\"ip_allowlists\", \"custom_limits\"]\n",
            )?;
            jail.set_env("TWIG__PLANS__TEAM__DEFAULT_LIMIT__REQUESTS", "200");
            let config = Config::load(Some(Path::new("twig.toml")), &Owners::default()).unwrap();
            let plans = &config.plans;
            assert_eq!(plans.default_plan, "gold");
            let enterprise = plans.plan("enterprise").unwrap();
            assert_eq!(
                enterprise.max_custom_limit,
                Some(PlanLimit::per_minute(5_000_000))
            );
            assert!(enterprise.has(Feature::Sso), "the rest stays built in");
            assert_eq!(plans.plan("team").unwrap().default_limit.requests, 200);
            let gold = plans.plan("gold").unwrap();
            assert_eq!(gold.default_limit, PlanLimit::per_minute(1_000));
            assert!(gold.has(Feature::IpAllowlists) && !gold.has(Feature::Sso));
            assert!(plans.plan("free").is_some());

            // Mistakes are refused before anything starts, naming the key.
            jail.set_env("TWIG__PLANS__TEAM__FEATURES", r#"["ip_allowlist"]"#);
            let err = Config::load(None, &Owners::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("ip_allowlist") && err.to_lowercase().contains("plans.team.features"),
                "{err}"
            );
            jail.set_env("TWIG__PLANS__TEAM__FEATURES", "[]");
            jail.set_env("TWIG__PLANS__TEAM__MAX_LIMIT", "5");
            let err = Config::load(None, &Owners::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("max_limit"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TWIG__PLANS__DEFAULT_PLAN", "platinum");
            let err = Config::load(None, &Owners::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("plans.default_plan \"platinum\" is not a plan"),
                "{err}"
            );
            Ok(())
        });
    }

    /// The name serde writes (through figment's value type).
    fn serde_json_like(f: Feature) -> String {
        match figment::value::Value::serialize(f).unwrap() {
            figment::value::Value::String(_, s) => s,
            other => panic!("{other:?}"),
        }
    }
}
