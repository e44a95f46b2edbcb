//! Password hashing: argon2id with the OWASP parameters (m = 19 456 KiB,
//! t = 2, p = 1), stored as PHC strings.
//!
//! Hashing is CPU-bound and slow by design, so it runs on a fixed pool of
//! low-priority threads ([`crate::pool`]): at most that many hashes run at
//! once, callers queue instead of starving the async runtime, and a burst
//! of logins yields the CPU to everything else.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier, Version,
};
use zeroize::Zeroizing;

use crate::pool::HashPool;

/// Length rules for new and presented passwords.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    /// Shortest new password, in Unicode scalar values.
    pub min_chars: usize,
    /// Longest password, in UTF-8 bytes. Longer input is refused before
    /// any hashing, so it costs an attacker more than it costs us.
    pub max_bytes: usize,
}

/// Why a password was refused or could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than the policy allows.
    #[error("must be at least {0} characters long")]
    TooShort(usize),
    /// Longer than the policy allows.
    #[error("must be at most {0} bytes long")]
    TooLong(usize),
    /// A stored hash could not be parsed.
    #[error("stored password hash is not a valid PHC string")]
    CorruptHash,
    /// The hashing task did not finish.
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl PasswordPolicy {
    /// Checks a new password.
    pub fn check_new(&self, password: &str) -> Result<(), PasswordError> {
        self.check_presented(password)?;
        if password.chars().count() < self.min_chars {
            return Err(PasswordError::TooShort(self.min_chars));
        }
        Ok(())
    }

    /// Checks a password presented at login: only the upper bound.
    pub fn check_presented(&self, password: &str) -> Result<(), PasswordError> {
        if password.len() > self.max_bytes {
            return Err(PasswordError::TooLong(self.max_bytes));
        }
        Ok(())
    }
}

/// The result of checking a password against a stored hash.
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Wrong password.
    Mismatch,
    /// Right password; the hash uses the current parameters.
    Match,
    /// Right password, but the hash uses old parameters: store this new one.
    MatchRehashed(String),
}

/// argon2id hasher with bounded concurrency. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    pool: HashPool,
    /// A hash of a random password, verified against when the user is
    /// unknown so both paths cost one argon2 run.
    decoy: Arc<String>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("threads", &self.pool.threads())
            .finish()
    }
}

impl PasswordHasher {
    /// OWASP parameters; as many concurrent hashes as CPU cores.
    pub fn owasp() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_params(Params::DEFAULT, cores)
    }

    /// Custom parameters (tests of rehashing use weaker ones).
    pub fn with_params(params: Params, max_concurrent: usize) -> Self {
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut random = Zeroizing::new([0u8; 32]);
        getrandom::fill(random.as_mut()).expect("the OS random number generator failed");
        let decoy = argon
            .hash_password(random.as_ref())
            .expect("argon2 parameters are valid")
            .to_string();
        Self {
            params,
            pool: HashPool::new(max_concurrent),
            decoy: Arc::new(decoy),
        }
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes a password to a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let argon = self.argon();
        self.run(move || {
            argon
                .hash_password(&password)
                .map(|h| h.to_string())
                .map_err(|e| PasswordError::Hashing(e.to_string()))
        })
        .await
    }

    /// Checks `password` against `stored`; with `None` (unknown user)
    /// verifies against the decoy so the answer takes as long and always
    /// says [`VerifyOutcome::Mismatch`].
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<VerifyOutcome, PasswordError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.decoy).to_string();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        let current = self.argon();
        let params = self.params.clone();
        self.run(move || {
            let parsed = PasswordHash::new(&stored).map_err(|_| PasswordError::CorruptHash)?;
            let stored_params =
                Params::try_from(&parsed).map_err(|_| PasswordError::CorruptHash)?;
            let stored_argon =
                Argon2::new(Algorithm::Argon2id, Version::V0x13, stored_params.clone());
            if stored_argon.verify_password(&password, &parsed).is_err() || !known {
                return Ok(VerifyOutcome::Mismatch);
            }
            let same = parsed.algorithm.as_str() == "argon2id"
                && stored_params.m_cost() == params.m_cost()
                && stored_params.t_cost() == params.t_cost()
                && stored_params.p_cost() == params.p_cost();
            if same {
                Ok(VerifyOutcome::Match)
            } else {
                current
                    .hash_password(&password)
                    .map(|h| VerifyOutcome::MatchRehashed(h.to_string()))
                    .map_err(|e| PasswordError::Hashing(e.to_string()))
            }
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        self.pool
            .run(work)
            .await
            .ok_or_else(|| PasswordError::Hashing("the hashing thread stopped".into()))?
    }
}

/// Builds argon2 parameters, for callers that configure them.
pub fn params(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Option<Params> {
    Params::new(m_cost_kib, t_cost, p_cost, None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weak() -> PasswordHasher {
        PasswordHasher::with_params(params(64, 1, 1).unwrap(), 2)
    }

    #[tokio::test]
    async fn owasp_hash_is_a_phc_argon2id_string() {
        let h = PasswordHasher::owasp();
        let phc = h.hash("correct horse battery").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            h.verify("correct horse battery", Some(&phc)).await.unwrap(),
            VerifyOutcome::Match
        );
        assert_eq!(
            h.verify("correct horse batterY", Some(&phc)).await.unwrap(),
            VerifyOutcome::Mismatch
        );
    }

    #[tokio::test]
    async fn unknown_user_never_matches() {
        let h = weak();
        assert_eq!(
            h.verify("anything", None).await.unwrap(),
            VerifyOutcome::Mismatch
        );
    }

    #[tokio::test]
    async fn old_parameters_are_rehashed_on_match() {
        let old = weak().hash("a long enough password").await.unwrap();
        let outcome = PasswordHasher::owasp()
            .verify("a long enough password", Some(&old))
            .await
            .unwrap();
        match outcome {
            VerifyOutcome::MatchRehashed(new) => assert!(new.contains("m=19456,t=2,p=1")),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn corrupt_stored_hash_is_an_error_not_a_match() {
        assert!(matches!(
            weak().verify("x", Some("not a phc string")).await,
            Err(PasswordError::CorruptHash)
        ));
    }

    #[test]
    fn policy_counts_characters_and_bytes() {
        let p = PasswordPolicy {
            min_chars: 12,
            max_bytes: 1024,
        };
        assert!(p.check_new("ééééééééééé").is_err()); // 11 chars, 22 bytes
        p.check_new("éééééééééééé").unwrap(); // 12 chars
        assert!(matches!(
            p.check_new(&"a".repeat(1025)),
            Err(PasswordError::TooLong(1024))
        ));
        assert!(p.check_presented(&"a".repeat(1 << 20)).is_err());
    }
}
