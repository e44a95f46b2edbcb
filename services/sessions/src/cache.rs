//! Verified access tokens, answered from memory for a short time so the
//! hot path (`VerifySession`, the auth layer) does not hit the database on
//! every request.
//!
//! Entries live at most `ttl` and never past the token's expiry, each
//! until its own deadline. Logout, revocation, refresh and password change
//! in this process remove the session's entries at once, and an answer
//! read from the database across such a change is not kept; another
//! replica's cache forgets them when the fan-out announces it, and while
//! announcements may be missed an entry is believed for at most a second
//! ([`Freshness`]). Without Redis, `ttl` itself is at most a second.
//!
//! At most [`MAX_ENTRIES`] tokens are kept ([`BoundedCache`]): when full,
//! a token seen once does not push out one read all the time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use twig_auth::Principal;
use twig_cache::{BoundedCache, Generation};
use twig_crypto::TokenHash;
use twig_fanout::Freshness;
use uuid::Uuid;

/// Tokens kept at most.
pub const MAX_ENTRIES: u64 = 200_000;

#[derive(Debug)]
struct Entry {
    principal: Principal,
    stored: Instant,
}

/// The cache.
#[derive(Debug)]
pub struct VerifyCache {
    ttl: Duration,
    freshness: Freshness,
    /// `Arc`: forgetting a session walks the cache, cloning each entry.
    entries: BoundedCache<TokenHash, Arc<Entry>>,
}

impl VerifyCache {
    /// A cache keeping entries for `ttl` (zero disables it), past a
    /// second only while `freshness` says announcements arrive.
    pub fn new(ttl: Duration, freshness: Freshness) -> Self {
        Self::with_capacity(ttl, freshness, MAX_ENTRIES)
    }

    /// [`VerifyCache::new`] keeping at most `max_entries` tokens.
    pub fn with_capacity(ttl: Duration, freshness: Freshness, max_entries: u64) -> Self {
        Self {
            ttl,
            freshness,
            entries: BoundedCache::new(max_entries),
        }
    }

    /// The cached principal, if fresh.
    pub fn get(&self, hash: &TokenHash) -> Option<Principal> {
        let entry = self.entries.get(hash)?;
        if self.freshness.believes(entry.stored, "sessions") {
            Some(entry.principal.clone())
        } else {
            self.entries.invalidate(hash);
            None
        }
    }

    /// Read before looking a token up in the database, for
    /// [`VerifyCache::put`].
    pub fn generation(&self) -> Generation {
        self.entries.generation()
    }

    /// Remembers a verified token for at most `ttl` and at most
    /// `valid_for`, unless the cache forgot anything since `fetched` (the
    /// answer may predate that change).
    pub fn put(
        &self,
        fetched: Generation,
        hash: TokenHash,
        principal: Principal,
        valid_for: Duration,
    ) {
        let entry = Entry {
            principal,
            stored: Instant::now(),
        };
        self.entries
            .insert_if_current(fetched, hash, Arc::new(entry), self.ttl.min(valid_for));
    }

    /// Forgets every token of these sessions.
    pub fn forget_sessions(&self, sessions: &[Uuid]) {
        if !sessions.is_empty() {
            self.entries.invalidate_if(|_, e| {
                e.principal
                    .session_id()
                    .is_some_and(|id| sessions.contains(&id))
            });
        }
    }

    /// Forgets everything (after fan-out messages may have been missed).
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Forgets every token of a user.
    pub fn forget_user(&self, user_id: Uuid) {
        self.entries
            .invalidate_if(|_, e| e.principal.user_id == user_id);
    }
}

#[cfg(test)]
mod tests {
    use twig_auth::Credential;

    use super::*;

    fn principal() -> Principal {
        Principal {
            user_id: Uuid::new_v4(),
            org_id: Uuid::new_v4(),
            roles: Vec::new(),
            scopes: Vec::new(),
            credential: Credential::Session {
                session_id: Uuid::new_v4(),
            },
            expires_at: None,
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    /// Only valid tokens are kept, so only valid tokens can fill the
    /// cache: ten times its size, while one token is being read, leave
    /// that token in it, even when the last stretch of the flood (longer
    /// than the cache) comes without a read between.
    #[test]
    fn a_flood_of_tokens_past_the_cap_keeps_the_one_being_read() {
        const CAP: u64 = 100;
        let cache = VerifyCache::with_capacity(TTL, Freshness::always(), CAP);
        let hot = TokenHash::of("hot");
        let p = principal();
        cache.put(cache.generation(), hot, p.clone(), TTL);
        for n in 0..10 * CAP {
            let other = TokenHash::of(&format!("flood {n}"));
            assert!(cache.get(&other).is_none());
            cache.put(cache.generation(), other, principal(), TTL);
            if n < 5 * CAP && n % 10 == 0 {
                assert!(cache.get(&hot).is_some(), "evicted after {n} others");
            }
        }
        cache.entries.run_pending_tasks();
        assert_eq!(cache.get(&hot).map(|h| h.user_id), Some(p.user_id));
        assert!(cache.entries.entry_count() <= CAP);
    }

    #[test]
    fn forgets_by_session_by_user_and_all() {
        let cache = VerifyCache::new(TTL, Freshness::always());
        let (a, b, c) = (principal(), principal(), principal());
        let [ha, hb, hc] = ["a", "b", "c"].map(TokenHash::of);
        for (h, p) in [(ha, &a), (hb, &b), (hc, &c)] {
            cache.put(cache.generation(), h, p.clone(), TTL);
        }
        cache.forget_sessions(&[a.session_id().unwrap()]);
        cache.forget_user(b.user_id);
        assert!(cache.get(&ha).is_none() && cache.get(&hb).is_none());
        assert!(cache.get(&hc).is_some());
        cache.clear();
        assert!(cache.get(&hc).is_none());
    }

    #[test]
    fn an_answer_read_across_a_change_is_not_kept() {
        let cache = VerifyCache::new(TTL, Freshness::always());
        let p = principal();
        let fetched = cache.generation();
        cache.forget_user(p.user_id);
        cache.put(fetched, TokenHash::of("t"), p, TTL);
        assert!(cache.get(&TokenHash::of("t")).is_none());
    }

    #[test]
    fn an_entry_lasts_until_the_token_expires() {
        let cache = VerifyCache::new(TTL, Freshness::always());
        let hash = TokenHash::of("t");
        cache.put(
            cache.generation(),
            hash,
            principal(),
            Duration::from_millis(50),
        );
        assert!(cache.get(&hash).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.get(&hash).is_none());
    }
}
