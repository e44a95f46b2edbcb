//! The `[secrets_vault]` section of the configuration, owned and checked
//! here.

use serde::{Deserialize, Serialize};
use twig_config::{Config, Secret, Section};

/// The secrets vault. Master keys are checked when the service is built,
/// before any port is bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// Master keys by version (`1`, `2`, …), each base64 of 32 random
    /// bytes; e.g. `TWIG__SECRETS_VAULT__MASTER_KEYS__1=…`. The newest encrypts.
    pub master_keys: std::collections::BTreeMap<String, Secret>,
    /// A folder with one file per version, named by the version number
    /// (a mounted Kubernetes Secret); merged with `master_keys`.
    pub master_keys_dir: Option<std::path::PathBuf>,
    /// Stored data keys moved to a new master key per transaction.
    pub rewrap_batch: u32,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            master_keys: std::collections::BTreeMap::new(),
            master_keys_dir: None,
            rewrap_batch: 500,
        }
    }
}

impl Section for VaultConfig {
    const KEY: &'static str = "secrets_vault";

    fn problems(&self, _config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000).contains(&self.rewrap_batch) {
            problems.push("rewrap_batch must be between 1 and 10000".into());
        }
        problems
    }
}
