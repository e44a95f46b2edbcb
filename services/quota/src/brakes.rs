//! Brakes on public requests ([`twig_module::Brake`]): sign-ups, reset
//! requests, invitations, refreshes, link attempts, counted per client
//! address or email in the same store and by the same window rule as
//! every limit — so replicas sharing Redis share the count. A brake's
//! subject is `brake:<name>:<hash of the key>` (a kind `Check` cannot
//! name), and no usage is recorded: what an attacker sends grows no table.

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use twig_errors::ApiError;
use twig_module::{Brake, Throttling};

use crate::service::Quota;
use crate::subject::Subject;
use crate::window::Limit;

/// Buckets of a brake's window.
const BUCKETS: u32 = 10;

/// The longest brake name, and key.
const MAX_NAME: usize = 64;
const MAX_KEY: usize = 320;

/// Checks a brake's name, key and rule; the subject and window limit it
/// counts under.
pub fn checked(brake: &Brake, key: &str) -> Result<(Subject, Limit), ApiError> {
    checked_parts(brake.name, brake.limit, brake.period, key)
}

/// [`checked`] from its parts (as the `Throttle` RPC carries them).
pub fn checked_parts(
    name: &str,
    limit: u64,
    period: std::time::Duration,
    key: &str,
) -> Result<(Subject, Limit), ApiError> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 64 lower-case letters or _",
        ));
    }
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(ApiError::invalid_field("key", "must be 1 to 320 bytes"));
    }
    let limit = Limit::new(limit, period, BUCKETS)
        .map_err(|e| ApiError::invalid_field("limit", e.to_string()))?;
    let hash = Sha256::digest(key.as_bytes());
    let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
    Ok((Subject::brake(name, &hex), limit))
}

impl Throttling for Quota {
    fn throttle<'a>(
        &'a self,
        brake: &'a Brake,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { self.count_brake(checked(brake, key)?).await })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn brake(name: &'static str) -> Brake {
        Brake {
            name,
            limit: 3,
            period: Duration::from_secs(60),
        }
    }

    #[test]
    fn keys_are_hashed_and_names_checked() {
        let (subject, _) = checked(&brake("sign_up_per_email"), "ada@example.com").unwrap();
        assert!(subject.as_str().starts_with("brake:sign_up_per_email:"));
        assert!(!subject.as_str().contains("ada"));
        assert_eq!(subject.kind(), "brake");
        assert!(
            Subject::parse(subject.as_str()).is_err(),
            "Check cannot name it"
        );
        for bad in ["", "Sign_up", "sign-up", "a b"] {
            assert!(checked(&brake(bad), "k").is_err(), "{bad:?}");
        }
        assert!(checked(&brake("ok"), "").is_err());
        assert!(checked(&brake("ok"), &"k".repeat(321)).is_err());
        let zero = Brake {
            limit: 0,
            ..brake("ok")
        };
        assert!(checked(&zero, "k").is_err());
    }
}
