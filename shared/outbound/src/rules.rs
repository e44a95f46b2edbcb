//! The rules on URLs (scheme, credentials, literal addresses), redirect
//! hops, backoff and `Retry-After`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use reqwest::Url;
use url::Host;

use crate::address::AddressPolicy;
use crate::config::RetryConfig;
use crate::error::OutboundError;

/// The URL of `uri`, parsed the way reqwest parses it (WHATWG: so
/// `http://2130706433/` and `http://0x7f.1/` are 127.0.0.1).
pub(crate) fn parse(uri: &http::Uri) -> Result<Url, OutboundError> {
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(OutboundError::InvalidRequest {
            reason: "the URI must be absolute (scheme://host/…)".into(),
        });
    }
    Url::parse(&uri.to_string()).map_err(|error| OutboundError::InvalidRequest {
        reason: format!("the URI is not a valid URL: {error}"),
    })
}

/// A URL may be fetched: http or https, no credentials, and a literal
/// address (which reqwest connects to without asking the resolver) that
/// the policy allows. Names are checked by the resolver, after DNS.
pub(crate) fn check_url(url: &Url, policy: &AddressPolicy) -> Result<(), OutboundError> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(OutboundError::ForbiddenScheme {
                scheme: other.to_owned(),
            });
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutboundError::CredentialsInUrl);
    }
    let address = match url.host() {
        None => {
            return Err(OutboundError::InvalidRequest {
                reason: "the URL has no host".into(),
            });
        }
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(ip)) => ip.into(),
        Some(Host::Ipv6(ip)) => ip.into(),
    };
    policy
        .check(address)
        .map_err(|class| OutboundError::ForbiddenAddress {
            host: url.host_str().unwrap_or_default().to_owned(),
            address,
            class,
        })
}

/// Why the hop `from` → `to` may not be followed, if it may not (the
/// address and scheme rules are [`check_url`]'s).
pub(crate) fn hop_problem(from: &Url, to: &Url) -> Option<&'static str> {
    (from.scheme() == "https" && to.scheme() == "http")
        .then_some("it would go from https to http (downgrade)")
}

/// Whether two URLs share scheme, host and port.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

/// `url` without credentials, query or fragment: safe for messages.
pub(crate) fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

/// The wait before retry number `retry` (1 for the second attempt):
/// `first_backoff` doubled each time, at most `max_backoff`; with jitter,
/// drawn between half of that and all of it.
pub(crate) fn backoff(config: &RetryConfig, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1));
    let wait = config
        .first_backoff
        .saturating_mul(factor)
        .min(config.max_backoff);
    if !config.jitter {
        return wait;
    }
    let half = wait / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let random = getrandom::u64().unwrap_or(0);
    half + Duration::from_nanos(random % span.saturating_add(1))
}

/// The wait a `Retry-After` header asks for (seconds or an HTTP date),
/// if there is one that can be read.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        parse(&s.parse().unwrap()).unwrap()
    }

    #[test]
    fn numeric_hosts_are_addresses() {
        for s in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
        ] {
            let u = url(s);
            assert_eq!(u.host(), Some(Host::Ipv4([127, 0, 0, 1].into())), "{s}");
            assert!(matches!(
                check_url(&u, &AddressPolicy::default()),
                Err(OutboundError::ForbiddenAddress { .. })
            ));
        }
    }

    #[test]
    fn relative_and_schemeless_uris_are_invalid() {
        for s in ["/path", "example.com"] {
            let uri: http::Uri = s.parse().unwrap();
            assert!(matches!(
                parse(&uri),
                Err(OutboundError::InvalidRequest { .. })
            ));
        }
    }

    #[test]
    fn https_to_http_is_a_downgrade() {
        let https = url("https://idp.example.com/a");
        let http = url("http://idp.example.com/b");
        assert!(hop_problem(&https, &http).is_some());
        assert!(hop_problem(&http, &https).is_none());
        assert!(hop_problem(&https, &url("https://other.example.com/")).is_none());
        assert!(hop_problem(&http, &url("http://other.example.com/")).is_none());
    }

    #[test]
    fn origins() {
        let a = url("https://idp.example.com/a");
        assert!(same_origin(&a, &url("https://idp.example.com:443/b?x")));
        assert!(!same_origin(&a, &url("https://idp.example.com:8443/a")));
        assert!(!same_origin(&a, &url("http://idp.example.com/a")));
        assert!(!same_origin(&a, &url("https://evil.example.com/a")));
    }

    #[test]
    fn redacted_drops_secrets() {
        let u = Url::parse("https://u:p@idp.example.com/cb?code=secret#frag").unwrap();
        assert_eq!(redacted(&u), "https://idp.example.com/cb");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let config = RetryConfig {
            attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            jitter: false,
        };
        let waits: Vec<_> = (1..=4).map(|r| backoff(&config, r).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        let jittered = RetryConfig {
            jitter: true,
            ..config
        };
        for retry in 1..=4 {
            let full = backoff(&config, retry);
            for _ in 0..50 {
                let wait = backoff(&jittered, retry);
                assert!(wait >= full / 2 && wait <= full, "{wait:?} vs {full:?}");
            }
        }
        // Enormous retry counts saturate instead of overflowing.
        assert_eq!(backoff(&config, u32::MAX), Duration::from_millis(350));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        headers.insert(http::header::RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        headers.insert(http::header::RETRY_AFTER, earlier.parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, now), None);
    }
}
