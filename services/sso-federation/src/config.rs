//! The `[sso_federation]` section of the configuration, owned and checked
//! here.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use twig_config::{Config, Section};

use crate::connection::{IssuerUrl, PresetEndpoints};
use crate::return_to::ReturnUrls;

/// A provider of "Sign in with …" for individual accounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocialProviderConfig {
    /// Its issuer (OpenID Connect discovery). Empty for the built-in
    /// `google` (`google_issuer`) and `microsoft` (personal and work
    /// accounts: `<microsoft_authority>/common/v2.0`, whose ID tokens name
    /// their own directory's issuer).
    pub issuer: String,
    /// What the sign-in button says; the name by default.
    pub display_name: String,
    /// Our client there.
    pub client_id: String,
    /// Its secret.
    pub client_secret: Option<twig_config::Secret>,
    /// Scopes besides `openid email profile`.
    pub extra_scopes: Vec<String>,
}

/// Single sign-on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsoConfig {
    /// The DNS servers asked for domain proofs (`"192.0.2.53:53"`); empty:
    /// the system's (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// How long one DNS question may take, per attempt.
    #[serde(with = "humantime_serde")]
    pub dns_timeout: Duration,
    /// Domains one organisation may claim, proved or not.
    pub max_domains_per_org: u32,
    /// Connections one organisation may have.
    pub max_connections_per_org: u32,
    /// This service's address as browsers reach it (`https://id.example.com`):
    /// providers send browsers back to `<public_url>/sso/oidc/callback`.
    /// Default: the first of `server.public_origins`.
    pub public_url: Option<String>,
    /// Where browsers may be sent after signing in: exact URLs, or
    /// prefixes ending in `/`. The first is the default.
    pub return_urls: Vec<String>,
    /// The issuer of the Google Workspace preset.
    pub google_issuer: String,
    /// The authority of the Microsoft Entra ID preset (a tenant's issuer
    /// is `<authority>/<tenant>/v2.0`).
    pub microsoft_authority: String,
    /// How long a provider's discovery document and keys are kept.
    #[serde(with = "humantime_serde")]
    pub metadata_ttl: Duration,
    /// An ID token signed by a key not among the kept ones fetches the
    /// keys again at most this often per provider.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh_gap: Duration,
    /// How long a browser has from the start of a sign-in to its return.
    #[serde(with = "humantime_serde")]
    pub sign_in_timeout: Duration,
    /// Refused sign-ins before authentication are counted and audited
    /// once per this period, per connection and reason.
    #[serde(with = "humantime_serde")]
    pub refusal_audit_period: Duration,
    /// "Sign in with …" providers for individual accounts, by name
    /// (`google`, `microsoft`, or any name of a-z, 0-9, `-`, `_`): each
    /// with a client id and secret; the issuer is needed except for the
    /// built-in two.
    pub social_providers: std::collections::BTreeMap<String, SocialProviderConfig>,
}

impl SsoConfig {
    /// Where the presets' providers are.
    pub fn preset_endpoints(&self) -> Result<PresetEndpoints, String> {
        Ok(PresetEndpoints {
            google_issuer: IssuerUrl::parse(&self.google_issuer)
                .map_err(|why| format!("google_issuer {why}"))?,
            microsoft_authority: IssuerUrl::parse(&self.microsoft_authority)
                .map_err(|why| format!("microsoft_authority {why}"))?,
        })
    }

    /// The issuer of the social provider `name`: its own, else the
    /// built-in one's.
    pub fn social_issuer(
        &self,
        name: &str,
        provider: &SocialProviderConfig,
    ) -> Result<IssuerUrl, String> {
        let raw = match (name, provider.issuer.as_str()) {
            (_, issuer) if !issuer.is_empty() => issuer.to_string(),
            ("google", _) => self.google_issuer.clone(),
            ("microsoft", _) => format!(
                "{}/common/v2.0",
                self.microsoft_authority.trim_end_matches('/')
            ),
            _ => return Err(format!("social_providers.{name}.issuer is required")),
        };
        IssuerUrl::parse(&raw).map_err(|why| format!("social_providers.{name}.issuer {why}"))
    }

    /// The public URL: `public_url`, else the first public origin.
    pub fn public_url(&self, config: &Config) -> Option<String> {
        self.public_url
            .clone()
            .or_else(|| config.server.public_origins.first().cloned())
    }
}

impl Default for SsoConfig {
    fn default() -> Self {
        Self {
            dns_servers: Vec::new(),
            dns_timeout: Duration::from_secs(5),
            max_domains_per_org: 50,
            max_connections_per_org: 20,
            public_url: None,
            return_urls: Vec::new(),
            google_issuer: "https://accounts.google.com".into(),
            microsoft_authority: "https://login.microsoftonline.com".into(),
            metadata_ttl: Duration::from_secs(3600),
            jwks_refresh_gap: Duration::from_secs(30),
            sign_in_timeout: Duration::from_secs(600),
            refusal_audit_period: Duration::from_secs(60),
            social_providers: std::collections::BTreeMap::new(),
        }
    }
}

impl Section for SsoConfig {
    const KEY: &'static str = "sso_federation";

    fn problems(&self, _config: &Config) -> Vec<String> {
        let mut problems = Vec::new();
        if self.dns_timeout < Duration::from_millis(100)
            || self.dns_timeout > Duration::from_secs(30)
        {
            problems.push("dns_timeout must be between 100ms and 30s".into());
        }
        if self.dns_servers.len() > 8 {
            problems.push("dns_servers: at most 8".into());
        }
        if !(1..=1000).contains(&self.max_domains_per_org) {
            problems.push("max_domains_per_org must be between 1 and 1000".into());
        }
        if !(1..=1000).contains(&self.max_connections_per_org) {
            problems.push("max_connections_per_org must be between 1 and 1000".into());
        }
        if let Some(url) = &self.public_url
            && let Err(problem) = crate::return_to::check_entry(url)
        {
            problems.push(format!("public_url: {problem}"));
        }
        if let Err(more) = ReturnUrls::from_config(&self.return_urls) {
            problems.extend(more);
        }
        if let Err(problem) = self.preset_endpoints() {
            problems.push(problem);
        }
        for (name, provider) in &self.social_providers {
            if twig_module::OAuthProvider::new(name).is_err() {
                problems.push(format!(
                    "social_providers.{name}: a name is 1 to 32 of a-z, 0-9, '-', '_', starting \
                     with a letter"
                ));
            }
            if let Err(problem) = self.social_issuer(name, provider) {
                problems.push(problem);
            }
            if provider.client_id.trim().is_empty()
                || provider
                    .client_secret
                    .as_ref()
                    .is_none_or(|s| s.expose().is_empty())
            {
                problems.push(format!(
                    "social_providers.{name}: client_id and client_secret are required"
                ));
            }
        }
        for (name, value, low, high) in [
            ("metadata_ttl", self.metadata_ttl, 1, 86_400),
            ("jwks_refresh_gap", self.jwks_refresh_gap, 1, 3600),
            ("sign_in_timeout", self.sign_in_timeout, 30, 3600),
            ("refusal_audit_period", self.refusal_audit_period, 1, 3600),
        ] {
            if value < Duration::from_secs(low) || value > Duration::from_secs(high) {
                problems.push(format!("{name} must be between {low}s and {high}s"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let config = Config::default();
        assert!(SsoConfig::default().problems(&config).is_empty());
        let bad = SsoConfig {
            dns_servers: vec!["127.0.0.1:53".parse().unwrap(); 9],
            dns_timeout: Duration::from_millis(1),
            max_domains_per_org: 0,
            public_url: Some("//id.example.com".into()),
            return_urls: vec!["javascript:alert(1)".into()],
            google_issuer: "http://accounts.google.com".into(),
            sign_in_timeout: Duration::from_secs(1),
            ..SsoConfig::default()
        };
        assert_eq!(
            bad.problems(&config).len(),
            7,
            "{:?}",
            bad.problems(&config)
        );
    }
}
