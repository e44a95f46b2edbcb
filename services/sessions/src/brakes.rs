//! The brakes on public requests (`[sessions.brakes]`), as this service
//! applies them: one count per client address (an IPv6 client by its
//! /64, which one machine usually holds whole) and one per email, each
//! through the quota service's [`Throttles`] port, so replicas sharing
//! Redis share the counts. Over a brake the answer is RESOURCE_EXHAUSTED,
//! the same whether or not the email has an account. With no quota
//! service in the deployment there are no brakes.

use std::net::IpAddr;

use twig_module::{Brake, Throttles};

use crate::config::PerPeriod;
use crate::error::SessionError;
use crate::sessions::{ClientContext, Sessions};
use twig_email::Email;

type Result<T> = std::result::Result<T, SessionError>;

/// The key a client address counts under: an IPv4 address as it is, an
/// IPv6 address by its /64.
pub fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl Sessions {
    /// Counts one request of brake `name` for `key`.
    async fn brake(&self, name: &'static str, rule: PerPeriod, key: &str) -> Result<()> {
        let Some(Throttles(throttles)) = self.throttles().get() else {
            return Ok(());
        };
        let brake = Brake {
            name,
            limit: rule.count,
            period: rule.period,
        };
        throttles.throttle(&brake, key).await.map_err(|e| {
            metrics::counter!("twig_sessions_braked_total", "brake" => name).increment(1);
            SessionError::Remote(e)
        })
    }

    /// Counts one request of brake `name` for the client's address (none
    /// when the address is unknown).
    pub(crate) async fn brake_address(
        &self,
        name: &'static str,
        rule: PerPeriod,
        client: &ClientContext,
    ) -> Result<()> {
        match client.ip {
            Some(ip) => self.brake(name, rule, &address_key(ip)).await,
            None => Ok(()),
        }
    }

    /// Counts one request of brake `name` for `email`.
    pub(crate) async fn brake_email(
        &self,
        name: &'static str,
        rule: PerPeriod,
        email: &Email,
    ) -> Result<()> {
        self.brake(name, rule, email.as_str()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        assert_eq!(address_key("203.0.113.7".parse().unwrap()), "203.0.113.7");
        assert_eq!(
            address_key("::ffff:203.0.113.7".parse().unwrap()),
            "203.0.113.7",
            "an IPv4-mapped address is its IPv4 address"
        );
    }
}
