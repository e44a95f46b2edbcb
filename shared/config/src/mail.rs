//! `[mail]`: outbound email (`twig-mail`). With `[mail.smtp]` messages go
//! to that relay; without it they are written as `.eml` files into an
//! outbox folder (by default beside the embedded SQLite database).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Largest `queue_capacity` accepted.
pub const MAX_QUEUE_CAPACITY: usize = 100_000;
/// Largest `attempts` accepted.
pub const MAX_ATTEMPTS: u32 = 10;

/// Outbound email.
///
/// ```toml
/// [mail]
/// from = "Acme <no-reply@acme.example>"
/// product_name = "Acme"
/// link_base = "https://app.acme.example"
///
/// [mail.smtp]
/// host = "smtp.acme.example"
/// tls = "starttls"          # none | starttls | tls
/// ca_file = "/etc/twig/relay-ca.pem"   # optional: a private relay's CA
/// username = "twig"
/// password = "…"            # TWIG__MAIL__SMTP__PASSWORD
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// The `From` of every message: `no-reply@example.com` or
    /// `Name <no-reply@example.com>`. Required with `smtp`; without it,
    /// `no-reply@localhost`.
    pub from: Option<String>,
    /// The product named in subjects and bodies.
    pub product_name: String,
    /// The public base URL links in messages start with
    /// (`https://app.example.com`, optionally with a path). Required with
    /// `smtp`; without it, `http://localhost`.
    pub link_base: Option<String>,
    /// Where messages are written when no SMTP relay is configured. Unset:
    /// `outbox/` in the folder of the SQLite database; with PostgreSQL and
    /// neither this nor `smtp`, messages are not sent (a warning at start,
    /// and each one counted as `not_configured`).
    pub outbox_dir: Option<PathBuf>,
    /// Messages waiting to be delivered, at most; a message sent while the
    /// queue is full is dropped (a warning and a metric), never waited for.
    pub queue_capacity: usize,
    /// Delivery attempts per message (1 = no retry) after transient
    /// failures: no connection, a timeout, a 4xx answer.
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each next one.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The SMTP relay. Unset: the outbox folder.
    pub smtp: Option<SmtpConfig>,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            from: None,
            product_name: "twig".into(),
            link_base: None,
            outbox_dir: None,
            queue_capacity: 1000,
            attempts: 3,
            retry_backoff: Duration::from_secs(1),
            smtp: None,
        }
    }
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text; only to a loopback host unless `allow_plaintext`.
    None,
    /// Plain connection upgraded with STARTTLS, which is required (port
    /// 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465 by default).
    Tls,
}

/// An SMTP relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Host name or address; the certificate is checked against it.
    pub host: String,
    /// Port. Unset: 25 for `none`, 587 for `starttls`, 465 for `tls`.
    pub port: Option<u16>,
    /// `none`, `starttls` (default) or `tls`.
    pub tls: SmtpTls,
    /// A PEM file of one or more CA certificates trusted for the relay
    /// besides the webpki roots (a private relay with its own CA). Read
    /// when the mailer starts, which fails if the file cannot be read or
    /// holds no certificate.
    pub ca_file: Option<PathBuf>,
    /// Login name, with `password`.
    pub username: Option<String>,
    /// Password, with `username`.
    pub password: Option<Secret>,
    /// Longest wait for the connection and for each answer of the relay.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Allows `tls = "none"` to a host that is not loopback (messages hold
    /// sign-in links; only for a relay on a trusted network).
    pub allow_plaintext: bool,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: None,
            tls: SmtpTls::default(),
            ca_file: None,
            username: None,
            password: None,
            timeout: Duration::from_secs(10),
            allow_plaintext: false,
        }
    }
}

impl SmtpConfig {
    /// The configured port, or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }

    /// Whether `host` is this machine (`localhost` or a loopback address).
    pub fn host_is_loopback(&self) -> bool {
        let host = self.host_bare();
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The host without the brackets of an IPv6 literal (`[::1]` → `::1`).
    pub fn host_bare(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

impl MailConfig {
    /// The `From` used when none is configured (outbox only).
    pub const DEFAULT_FROM: &'static str = "no-reply@localhost";
    /// The link base used when none is configured (outbox only).
    pub const DEFAULT_LINK_BASE: &'static str = "http://localhost";

    /// The `From` of every message.
    pub fn from_or_default(&self) -> &str {
        self.from.as_deref().unwrap_or(Self::DEFAULT_FROM)
    }

    /// The link base, without a trailing `/`.
    pub fn link_base_or_default(&self) -> &str {
        self.link_base
            .as_deref()
            .unwrap_or(Self::DEFAULT_LINK_BASE)
            .trim_end_matches('/')
    }

    /// The rules of the section, each naming its setting without `mail.`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(from) = &self.from
            && let Some(problem) = mailbox_problem(from)
        {
            problems.push(format!("from: {from:?} {problem}"));
        }
        let name = self.product_name.trim();
        if name.is_empty() || name.chars().count() > 100 || has_control(name) {
            problems.push("product_name must be 1 to 100 characters, none of them control".into());
        }
        if let Some(base) = &self.link_base
            && let Some(problem) = link_base_problem(base)
        {
            problems.push(format!("link_base: {base:?} {problem}"));
        }
        if !(1..=MAX_QUEUE_CAPACITY).contains(&self.queue_capacity) {
            problems.push(format!(
                "queue_capacity must be between 1 and {MAX_QUEUE_CAPACITY}"
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.attempts) {
            problems.push(format!("attempts must be between 1 and {MAX_ATTEMPTS}"));
        }
        if self.retry_backoff > Duration::from_secs(60) {
            problems.push("retry_backoff must be at most 60s".into());
        }
        if let Some(dir) = &self.outbox_dir
            && dir.as_os_str().is_empty()
        {
            problems.push("outbox_dir must not be empty (leave it out for the default)".into());
        }
        let Some(smtp) = &self.smtp else {
            return problems;
        };
        if self.from.is_none() {
            problems.push(
                "from is required with [mail.smtp] (e.g. \"Acme <no-reply@acme.example>\")".into(),
            );
        }
        if self.link_base.is_none() {
            problems.push(
                "link_base is required with [mail.smtp]: the public URL of the app links \
                 in messages open (e.g. \"https://app.acme.example\")"
                    .into(),
            );
        }
        if smtp.host.is_empty() {
            problems.push("smtp.host is required".into());
        } else if smtp.host_bare().parse::<IpAddr>().is_err()
            && !smtp
                .host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            problems.push(format!(
                "smtp.host: {:?} must be a host name or address, without scheme, port or user",
                smtp.host
            ));
        }
        if smtp.port == Some(0) {
            problems.push("smtp.port must be between 1 and 65535".into());
        }
        if smtp.tls == SmtpTls::None && !smtp.allow_plaintext && !smtp.host_is_loopback() {
            problems.push(format!(
                "smtp.tls = \"none\" to {:?}, which is not loopback, sends sign-in links and \
                 any password in plain text: use \"starttls\" or \"tls\", or set \
                 smtp.allow_plaintext = true for a relay on a trusted network",
                smtp.host
            ));
        }
        if let Some(file) = &smtp.ca_file {
            if file.as_os_str().is_empty() {
                problems.push(
                    "smtp.ca_file must not be empty (leave it out to trust the webpki roots only)"
                        .into(),
                );
            } else if smtp.tls == SmtpTls::None {
                problems.push(format!(
                    "smtp.ca_file {:?} is set but smtp.tls = \"none\" uses no TLS: use \
                     \"starttls\" or \"tls\", or leave ca_file out",
                    file.display().to_string()
                ));
            }
        }
        match (&smtp.username, &smtp.password) {
            (Some(_), None) | (None, Some(_)) => {
                problems.push("smtp.username and smtp.password go together".into());
            }
            (Some(user), Some(_)) if user.is_empty() || has_control(user) => {
                problems.push("smtp.username must be non-empty, without control characters".into());
            }
            _ => {}
        }
        if smtp.timeout < Duration::from_secs(1) || smtp.timeout > Duration::from_secs(300) {
            problems.push("smtp.timeout must be between 1s and 5m".into());
        }
        problems
    }
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// Why `text` is not `addr@domain` or `Name <addr@domain>`, if it is not.
fn mailbox_problem(text: &str) -> Option<&'static str> {
    const FORM: &str = "must be an address (no-reply@example.com) or Name <address>";
    if has_control(text) {
        return Some("must not hold control characters");
    }
    let text = text.trim();
    let address = match text.strip_suffix('>') {
        Some(rest) => match rest.rsplit_once('<') {
            Some((_, address)) => address,
            None => return Some(FORM),
        },
        None => text,
    };
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Some(FORM);
    };
    let bad = |part: &str| part.is_empty() || part.contains(['<', '>', ' ', ',', ';', '"', '@']);
    (bad(local) || bad(domain)).then_some(FORM)
}

/// Why `base` is not `http(s)://host[:port][/path]`, if it is not.
fn link_base_problem(base: &str) -> Option<&'static str> {
    let (https, rest) = if let Some(rest) = base.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = base.strip_prefix("http://") {
        (false, rest)
    } else {
        return Some("must start with https:// (or http:// for localhost)");
    };
    if rest.contains(['?', '#', '@', '\\'])
        || rest.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Some("must be scheme://host[:port][/path], without query, fragment or user");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: [::1] or [::1]:3000.
        Some(inner) => match inner.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => (host, Some(after.strip_prefix(':').unwrap_or(after))),
            None => return Some("has a malformed IPv6 address"),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Some("has a bad port");
    }
    if host.is_empty() {
        return Some("has no host");
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback {
        return Some("must use https:// (http:// only for localhost)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(host: &str, tls: SmtpTls) -> MailConfig {
        MailConfig {
            from: Some("Acme <no-reply@acme.example>".into()),
            link_base: Some("https://app.acme.example".into()),
            smtp: Some(SmtpConfig {
                host: host.into(),
                tls,
                ..SmtpConfig::default()
            }),
            ..MailConfig::default()
        }
    }

    fn problems(config: &MailConfig) -> String {
        config.problems().join("\n")
    }

    #[test]
    fn mail_defaults_and_a_full_relay_are_valid() {
        assert!(MailConfig::default().problems().is_empty());
        let mut config = smtp("smtp.acme.example", SmtpTls::Starttls);
        if let Some(s) = config.smtp.as_mut() {
            s.username = Some("twig".into());
            s.password = Some(Secret::new("pw"));
        }
        assert_eq!(problems(&config), "");
        assert_eq!(config.smtp.as_ref().map(SmtpConfig::port), Some(587));
        assert_eq!(smtp("h", SmtpTls::Tls).smtp.unwrap().port(), 465);
    }

    #[test]
    fn mail_plaintext_only_to_loopback_or_when_allowed() {
        for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            assert_eq!(problems(&smtp(host, SmtpTls::None)), "", "{host}");
        }
        let err = problems(&smtp("smtp.acme.example", SmtpTls::None));
        assert!(err.contains("smtp.tls = \"none\""), "{err}");
        assert!(err.contains("allow_plaintext"), "{err}");
        let mut config = smtp("10.0.0.5", SmtpTls::None);
        if let Some(s) = config.smtp.as_mut() {
            s.allow_plaintext = true;
        }
        assert_eq!(problems(&config), "");
    }

    #[test]
    fn mail_relay_needs_from_link_base_and_a_plain_host() {
        let mut config = smtp("smtp.acme.example", SmtpTls::Tls);
        config.from = None;
        config.link_base = None;
        let err = problems(&config);
        assert!(err.contains("from is required"), "{err}");
        assert!(err.contains("link_base is required"), "{err}");
        for host in ["", "smtp://x", "x:25", "u@x", " x"] {
            let err = problems(&smtp(host, SmtpTls::Tls));
            assert!(err.contains("smtp.host"), "{host:?}: {err}");
        }
        let mut config = smtp("x", SmtpTls::Tls);
        if let Some(s) = config.smtp.as_mut() {
            s.username = Some("twig".into());
        }
        assert!(problems(&config).contains("go together"));
    }

    #[test]
    fn mail_ca_file_is_a_path_and_needs_tls() {
        let mut config = smtp("smtp.acme.example", SmtpTls::Tls);
        if let Some(s) = config.smtp.as_mut() {
            s.ca_file = Some("/etc/twig/relay-ca.pem".into());
        }
        assert_eq!(problems(&config), "");
        if let Some(s) = config.smtp.as_mut() {
            s.tls = SmtpTls::Starttls;
        }
        assert_eq!(problems(&config), "");
        if let Some(s) = config.smtp.as_mut() {
            s.ca_file = Some(PathBuf::new());
        }
        let err = problems(&config);
        assert!(err.contains("smtp.ca_file must not be empty"), "{err}");
        let mut config = smtp("127.0.0.1", SmtpTls::None);
        if let Some(s) = config.smtp.as_mut() {
            s.ca_file = Some("/etc/twig/relay-ca.pem".into());
        }
        let err = problems(&config);
        assert!(
            err.contains("smtp.ca_file \"/etc/twig/relay-ca.pem\" is set but smtp.tls = \"none\""),
            "{err}"
        );
    }

    #[test]
    fn mail_values_are_checked() {
        let mut config = MailConfig::default();
        for bad in ["nobody", "a@", "<a@b", "A <a b@c>", "x\r\nBcc: y@z"] {
            config.from = Some(bad.into());
            assert!(problems(&config).contains("from:"), "{bad:?}");
        }
        config.from = Some("no-reply@example.com".into());
        for bad in [
            "app.example.com",
            "http://app.example.com",
            "https://",
            "https://app.example.com/?x=1",
            "https://app.example.com/#x",
            "https://u@app.example.com",
            "ftp://app.example.com",
        ] {
            config.link_base = Some(bad.into());
            assert!(problems(&config).contains("link_base"), "{bad:?}");
        }
        for good in [
            "https://app.example.com",
            "https://app.example.com:8443/console/",
            "http://localhost:5173",
            "http://127.0.0.1:3000",
            "http://[::1]:3000",
        ] {
            config.link_base = Some(good.into());
            assert_eq!(problems(&config), "", "{good:?}");
        }
        config.queue_capacity = 0;
        config.attempts = 0;
        config.product_name = " ".into();
        let err = problems(&config);
        for name in ["queue_capacity", "attempts", "product_name"] {
            assert!(err.contains(name), "{name}: {err}");
        }
    }
}
