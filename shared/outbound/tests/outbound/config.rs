//! The configuration: defaults, the TOML shape, and what validate()
//! refuses.

use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use twig_outbound::{OutboundClient, OutboundConfig, OutboundConfigError};

fn from_toml(text: &str) -> Result<OutboundConfig, String> {
    Figment::from(Toml::string(text))
        .extract()
        .map_err(|error| error.to_string())
}

fn problems_of(config: &OutboundConfig) -> Vec<String> {
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(OutboundConfigError::Invalid(problems)) => problems,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[test]
fn defaults() {
    let config = OutboundConfig::default();
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.read_timeout, Duration::from_secs(10));
    assert_eq!(config.total_timeout, Duration::from_secs(30));
    assert_eq!(config.max_body_bytes, 1024 * 1024);
    assert_eq!(config.max_redirects, 0);
    assert_eq!(config.retry.attempts, 3);
    assert_eq!(config.retry.first_backoff, Duration::from_millis(200));
    assert_eq!(config.retry.max_backoff, Duration::from_secs(5));
    assert!(config.retry.jitter);
    assert!(config.allow_networks.is_empty());
    assert!(config.user_agent.starts_with("twig-identity/"));
    config.validate().unwrap();
    // An empty file is the defaults.
    assert_eq!(from_toml("").unwrap(), config);
}

#[test]
fn toml_with_durations_and_networks() {
    let config = from_toml(
        r#"
        connect_timeout = "2s"
        read_timeout = "750ms"
        total_timeout = "1m"
        max_body_bytes = 4096
        max_redirects = 2
        allow_networks = ["10.20.0.0/16", "fd00:1::/32", "192.0.2.7"]
        [retry]
        attempts = 1
        jitter = false
        "#,
    )
    .unwrap();
    assert_eq!(config.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.read_timeout, Duration::from_millis(750));
    assert_eq!(config.total_timeout, Duration::from_secs(60));
    assert_eq!(config.max_body_bytes, 4096);
    assert_eq!(config.max_redirects, 2);
    assert_eq!(config.retry.attempts, 1);
    assert_eq!(
        config.retry.first_backoff,
        Duration::from_millis(200),
        "default kept"
    );
    let networks: Vec<String> = config
        .allow_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(networks, ["10.20.0.0/16", "fd00:1::/32", "192.0.2.7/32"]);
    config.validate().unwrap();
}

#[test]
fn unknown_fields_are_refused() {
    let error = from_toml("max_redirect = 1").unwrap_err();
    assert!(error.contains("max_redirect"), "{error}");
    let error = from_toml("[retry]\nattempt = 2").unwrap_err();
    assert!(error.contains("attempt"), "{error}");
}

#[test]
fn a_bad_cidr_is_named() {
    for entry in ["10.0.0.300/8", "10.0.0.0/33", "localhost", ""] {
        let error = from_toml(&format!("allow_networks = [{entry:?}]")).unwrap_err();
        assert!(
            error.contains("allow_networks entry") && error.contains("CIDR"),
            "{entry}: {error}"
        );
    }
}

#[test]
fn zero_timeouts_are_refused() {
    let config = OutboundConfig {
        connect_timeout: Duration::ZERO,
        read_timeout: Duration::ZERO,
        total_timeout: Duration::ZERO,
        ..OutboundConfig::default()
    };
    let problems = problems_of(&config);
    for name in ["connect_timeout", "read_timeout", "total_timeout"] {
        assert!(
            problems.contains(&format!("{name} must be more than 0 (e.g. \"5s\")")),
            "{problems:?}"
        );
    }
    // And the message lists them all.
    let message = config.validate().unwrap_err().to_string();
    assert!(
        message.starts_with("invalid outbound HTTP configuration:\n  - "),
        "{message}"
    );
}

#[test]
fn total_shorter_than_read_or_connect_is_refused() {
    let config = OutboundConfig {
        read_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(20),
        total_timeout: Duration::from_secs(5),
        ..OutboundConfig::default()
    };
    let problems = problems_of(&config);
    assert!(
        problems.contains(&"total_timeout (5s) must be at least read_timeout (10s)".to_owned()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"total_timeout (5s) must be at least connect_timeout (20s)".to_owned()),
        "{problems:?}"
    );
}

#[test]
fn networks_too_wide_or_with_host_bits_are_refused() {
    let config = OutboundConfig {
        allow_networks: vec![
            "10.0.0.1/8".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
            "::/0".parse().unwrap(),
        ],
        ..OutboundConfig::default()
    };
    let problems = problems_of(&config);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("did you mean 10.0.0.0/8?"),
        "{problems:?}"
    );
    assert!(problems[1].contains("allows every address"), "{problems:?}");
}

#[test]
fn other_nonsense_is_refused() {
    let mut config = OutboundConfig {
        max_body_bytes: 0,
        max_redirects: 50,
        user_agent: " ".into(),
        ..OutboundConfig::default()
    };
    config.retry.attempts = 0;
    config.retry.max_backoff = Duration::from_millis(10);
    let problems = problems_of(&config);
    for expected in [
        "max_body_bytes must be at least 1",
        "max_redirects must be at most 10",
        "retry.attempts must be at least 1 (1 = no retries)",
        "retry.max_backoff (10ms) must be at least retry.first_backoff (200ms)",
        "user_agent must not be empty",
    ] {
        assert!(
            problems.iter().any(|p| p == expected),
            "{expected}: {problems:?}"
        );
    }
    let config = OutboundConfig {
        user_agent: "bad\nagent".into(),
        max_body_bytes: u64::MAX,
        ..OutboundConfig::default()
    };
    let problems = problems_of(&config);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("user_agent must be visible ASCII"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("max_body_bytes must be at most"))
    );
}

#[test]
fn the_client_refuses_an_invalid_configuration() {
    let config = OutboundConfig {
        total_timeout: Duration::ZERO,
        ..OutboundConfig::default()
    };
    assert!(matches!(
        OutboundClient::new(&config),
        Err(OutboundConfigError::Invalid(_))
    ));
}
