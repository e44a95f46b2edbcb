//! Answers of a credential service in another process, kept for a moment:
//! where the edge runs apart from sessions and api-keys, a token seen
//! again within `remote.verify_cache_ttl` is not sent for checking again.
//!
//! Only positive answers are kept, never past the credential's expiry,
//! and per client address (API-key allowlists depend on it). A change
//! announced on the fan-out (a key revoked, a session ended, an allowlist
//! changed) drops the answers it concerns at once; a reconnect drops all.
//! While the fan-out is down, an answer is believed for at most a second
//! ([`Freshness`]), whatever `ttl` says.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use twig_clock::Clock;
use twig_fanout::Freshness;
use uuid::Uuid;

use crate::principal::{AuthFuture, Authenticator, Credential, Principal};

/// Answers kept at most; beyond, the cache starts afresh.
const MAX_KEPT: usize = 100_000;

/// What a change announced by a credential service makes stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// One API key.
    Key(Uuid),
    /// Every credential of an organisation (its allowlist changed).
    Org(Uuid),
    /// One session.
    Session(Uuid),
    /// Every session of a user.
    UserSessions(Uuid),
    /// Everything (announcements may have been missed).
    All,
}

impl Stale {
    fn covers(self, p: &Principal) -> bool {
        match (self, p.credential) {
            (Self::All, _) => true,
            (Self::Key(id), Credential::ApiKey { key_id }) => id == key_id,
            (Self::Org(id), _) => id == p.org_id,
            (Self::Session(id), Credential::Session { session_id }) => id == session_id,
            (Self::UserSessions(id), Credential::Session { .. }) => id == p.user_id,
            _ => false,
        }
    }
}

/// An [`Authenticator`] that keeps another's positive answers for `ttl`.
pub struct VerifyCache {
    inner: Arc<dyn Authenticator>,
    ttl: Duration,
    freshness: Freshness,
    kept: DashMap<([u8; 32], Option<IpAddr>), Kept>,
    /// Whose now a credential's expiry is compared with.
    clock: Arc<dyn Clock>,
    /// Bumped by every change heard, so an answer fetched across a change
    /// is not kept.
    generation: AtomicU64,
}

/// One kept answer.
struct Kept {
    principal: Principal,
    stored: Instant,
    until: Instant,
}

impl VerifyCache {
    /// Keeps `inner`'s answers for `ttl`, past a second only while
    /// `freshness` says announcements arrive, and never past a
    /// credential's expiry by `clock`.
    pub fn new(
        inner: Arc<dyn Authenticator>,
        ttl: Duration,
        freshness: Freshness,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner,
            clock,
            ttl,
            freshness,
            kept: DashMap::new(),
            generation: AtomicU64::new(0),
        }
    }

    /// Drops the answers a change makes stale.
    pub fn forget(&self, stale: Stale) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if stale == Stale::All {
            self.kept.clear();
        } else {
            self.kept.retain(|_, kept| !stale.covers(&kept.principal));
        }
    }

    /// How many answers are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// True when no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

impl Authenticator for VerifyCache {
    fn authenticate<'a>(&'a self, bearer: &'a str, client_ip: Option<IpAddr>) -> AuthFuture<'a> {
        Box::pin(async move {
            let key: ([u8; 32], Option<IpAddr>) =
                (Sha256::digest(bearer.as_bytes()).into(), client_ip);
            let now = Instant::now();
            if let Some(entry) = self.kept.get(&key)
                && entry.until > now
                && self.freshness.believes(entry.stored, "edge")
            {
                return Ok(entry.principal.clone());
            }
            let generation = self.generation.load(Ordering::Acquire);
            let principal = self.inner.authenticate(bearer, client_ip).await?;
            let left = principal
                .expires_at
                .map(|t| (t - self.clock.now()).to_std().unwrap_or_default())
                .unwrap_or(self.ttl);
            let keep = self.ttl.min(left);
            if !keep.is_zero() && self.generation.load(Ordering::Acquire) == generation {
                if self.kept.len() >= MAX_KEPT {
                    self.kept.clear();
                }
                let stored = Instant::now();
                self.kept.insert(
                    key,
                    Kept {
                        principal: principal.clone(),
                        stored,
                        until: stored + keep,
                    },
                );
            }
            Ok(principal)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(credential: Credential) -> Principal {
        Principal {
            user_id: Uuid::new_v4(),
            org_id: Uuid::new_v4(),
            roles: Vec::new(),
            scopes: Vec::new(),
            credential,
            expires_at: None,
        }
    }

    /// Answers every token with one principal, counting the calls.
    #[derive(Default)]
    struct Counting {
        calls: AtomicU64,
    }

    impl Authenticator for Counting {
        fn authenticate<'a>(&'a self, _: &'a str, _: Option<IpAddr>) -> AuthFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                Ok(principal(Credential::ApiKey {
                    key_id: Uuid::nil(),
                }))
            })
        }
    }

    /// With the fan-out's Redis gone, an answer kept for a minute is asked
    /// again after a second.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kept_answers_last_a_second_while_announcements_may_be_missed() {
        let mut redis = twig_testkit::PrivateRedis::start();
        let fanout = twig_fanout::Fanout::redis(&redis.url(), &twig_testkit::redis_prefix())
            .await
            .expect("the private Redis answers");
        let inner = Arc::new(Counting::default());
        let cache = VerifyCache::new(
            inner.clone(),
            Duration::from_secs(60),
            fanout.freshness(),
            Arc::new(twig_clock::SystemClock),
        );
        let calls = || inner.calls.load(Ordering::SeqCst);

        cache.authenticate("token", None).await.unwrap();
        tokio::time::sleep(twig_fanout::OUTAGE_BOUND).await;
        cache.authenticate("token", None).await.unwrap();
        assert_eq!(calls(), 1, "kept while Redis is up, past the outage bound");

        redis.stop();
        let noticed = Instant::now();
        while fanout.freshness().is_live() {
            assert!(
                noticed.elapsed() < Duration::from_secs(5),
                "the fan-out did not notice Redis stopping"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cache.authenticate("token", None).await.unwrap();
        assert_eq!(calls(), 2, "an answer older than a second is asked again");
        cache.authenticate("token", None).await.unwrap();
        assert_eq!(calls(), 2, "a fresh answer is still kept for a second");
    }

    #[test]
    fn a_change_covers_exactly_what_it_names() {
        let key = Uuid::new_v4();
        let session = Uuid::new_v4();
        let k = principal(Credential::ApiKey { key_id: key });
        let s = principal(Credential::Session {
            session_id: session,
        });
        assert!(Stale::Key(key).covers(&k) && !Stale::Key(key).covers(&s));
        assert!(Stale::Session(session).covers(&s) && !Stale::Session(session).covers(&k));
        assert!(Stale::UserSessions(s.user_id).covers(&s));
        assert!(
            !Stale::UserSessions(k.user_id).covers(&k),
            "keys outlive sessions"
        );
        assert!(Stale::Org(k.org_id).covers(&k) && !Stale::Org(k.org_id).covers(&s));
        assert!(Stale::All.covers(&k) && Stale::All.covers(&s));
    }
}
