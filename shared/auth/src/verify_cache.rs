//! Answers of a credential service in another process, kept for a moment:
//! where the edge runs apart from sessions and api-keys, a token seen
//! again within `remote.verify_cache_ttl` is not sent for checking again.
//!
//! Only positive answers are kept, never past the credential's expiry,
//! and per client address (API-key allowlists depend on it). A change
//! announced on the fan-out (a key revoked, a session ended, an allowlist
//! changed) drops the answers it concerns at once; a reconnect drops all.
//! While the fan-out is down, an answer is believed for at most a second
//! ([`Freshness`]), whatever `ttl` says. An answer fetched across a change
//! is not kept.
//!
//! At most [`MAX_KEPT`] answers are kept ([`BoundedCache`], each until its
//! own deadline): when full, a token (or address) seen once does not push
//! out one in use.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use twig_cache::BoundedCache;
use twig_clock::Clock;
use twig_fanout::Freshness;
use uuid::Uuid;

use crate::principal::{AuthFuture, Authenticator, Credential, Principal};

/// Answers kept at most.
pub const MAX_KEPT: u64 = 100_000;

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
    /// By the token's SHA-256 and the client address; every change heard
    /// is an invalidation, so an answer fetched across one is not kept.
    kept: BoundedCache<([u8; 32], Option<IpAddr>), Arc<Kept>>,
    /// Whose now a credential's expiry is compared with.
    clock: Arc<dyn Clock>,
}

/// One kept answer.
struct Kept {
    principal: Principal,
    stored: Instant,
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
        Self::with_capacity(inner, ttl, freshness, clock, MAX_KEPT)
    }

    /// [`VerifyCache::new`] keeping at most `max_kept` answers.
    pub fn with_capacity(
        inner: Arc<dyn Authenticator>,
        ttl: Duration,
        freshness: Freshness,
        clock: Arc<dyn Clock>,
        max_kept: u64,
    ) -> Self {
        Self {
            inner,
            clock,
            ttl,
            freshness,
            kept: BoundedCache::new(max_kept),
        }
    }

    /// Drops the answers a change makes stale.
    pub fn forget(&self, stale: Stale) {
        if stale == Stale::All {
            self.kept.invalidate_all();
        } else {
            self.kept
                .invalidate_if(|_, kept| stale.covers(&kept.principal));
        }
    }

    /// How many answers are kept (approximately: brought up to date as
    /// the cache is used).
    pub fn len(&self) -> usize {
        usize::try_from(self.kept.entry_count()).unwrap_or(usize::MAX)
    }

    /// True when no answer is kept (approximately, as [`VerifyCache::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Authenticator for VerifyCache {
    fn authenticate<'a>(&'a self, bearer: &'a str, client_ip: Option<IpAddr>) -> AuthFuture<'a> {
        Box::pin(async move {
            let key: ([u8; 32], Option<IpAddr>) =
                (Sha256::digest(bearer.as_bytes()).into(), client_ip);
            if let Some(kept) = self.kept.get(&key)
                && self.freshness.believes(kept.stored, "edge")
            {
                return Ok(kept.principal.clone());
            }
            let generation = self.kept.generation();
            let principal = self.inner.authenticate(bearer, client_ip).await?;
            let left = principal
                .expires_at
                .map(|t| (t - self.clock.now()).to_std().unwrap_or_default())
                .unwrap_or(self.ttl);
            let kept = Kept {
                principal: principal.clone(),
                stored: Instant::now(),
            };
            self.kept
                .insert_if_current(generation, key, Arc::new(kept), self.ttl.min(left));
            Ok(principal)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

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

    /// Knows one token, refusing every other; counts the calls.
    #[derive(Default)]
    struct OneValid {
        calls: AtomicU64,
    }

    impl Authenticator for OneValid {
        fn authenticate<'a>(&'a self, bearer: &'a str, _: Option<IpAddr>) -> AuthFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if bearer == "valid" {
                    Ok(principal(Credential::ApiKey {
                        key_id: Uuid::nil(),
                    }))
                } else {
                    Err(twig_errors::ApiError::unauthenticated("unknown"))
                }
            })
        }
    }

    /// A flood past the cap, while a valid token is being used from one
    /// address: distinct unknown tokens (refusals are not kept), then the
    /// valid token from ten times as many other addresses as the cache
    /// holds (each answer kept: what can fill this cache), the last half
    /// with no use between. The token's next use from its address is
    /// still answered from memory.
    #[tokio::test]
    async fn a_flood_past_the_cap_keeps_the_answer_being_used() {
        const CAP: u64 = 100;
        let inner = Arc::new(OneValid::default());
        let cache = VerifyCache::with_capacity(
            inner.clone(),
            Duration::from_secs(60),
            Freshness::always(),
            Arc::new(twig_clock::SystemClock),
            CAP,
        );
        let calls = || inner.calls.load(Ordering::SeqCst);
        let home = Some(IpAddr::from([192, 0, 2, 1]));
        cache.authenticate("valid", home).await.unwrap();

        for n in 0..10 * CAP {
            let unknown = format!("unknown {n}");
            assert!(cache.authenticate(&unknown, home).await.is_err());
            if n % 10 == 0 {
                cache.authenticate("valid", home).await.unwrap();
            }
        }
        assert_eq!(calls(), 1 + 10 * CAP, "only the valid token was kept");

        for n in 0..10 * CAP {
            let n = u16::try_from(n).unwrap();
            let elsewhere = Some(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, n]));
            cache.authenticate("valid", elsewhere).await.unwrap();
            if n < 5 * CAP as u16 && n % 10 == 0 {
                cache.authenticate("valid", home).await.unwrap();
            }
        }
        let before = calls();
        cache.authenticate("valid", home).await.unwrap();
        assert_eq!(calls(), before, "still answered from memory");
        cache.kept.run_pending_tasks();
        assert!(cache.len() <= CAP as usize, "{} kept", cache.len());
    }

    /// A change heard while an answer is fetched: the answer is not kept.
    #[tokio::test]
    async fn an_answer_fetched_across_a_change_is_not_kept() {
        struct ChangeMidway(std::sync::OnceLock<Arc<VerifyCache>>, AtomicU64);
        impl Authenticator for ChangeMidway {
            fn authenticate<'a>(&'a self, _: &'a str, _: Option<IpAddr>) -> AuthFuture<'a> {
                self.1.fetch_add(1, Ordering::SeqCst);
                self.0.get().unwrap().forget(Stale::Key(Uuid::new_v4()));
                Box::pin(async {
                    Ok(principal(Credential::ApiKey {
                        key_id: Uuid::nil(),
                    }))
                })
            }
        }
        let inner = Arc::new(ChangeMidway(Default::default(), AtomicU64::new(0)));
        let cache = Arc::new(VerifyCache::new(
            inner.clone(),
            Duration::from_secs(60),
            Freshness::always(),
            Arc::new(twig_clock::SystemClock),
        ));
        let _ = inner.0.set(cache.clone());
        cache.authenticate("t", None).await.unwrap();
        cache.authenticate("t", None).await.unwrap();
        assert_eq!(inner.1.load(Ordering::SeqCst), 2, "nothing was kept");
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
