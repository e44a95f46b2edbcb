//! Verification answers kept in memory: the hot path of every request.
//!
//! Positive entries live `ttl`, negative ones (unknown keys) `negative_ttl`;
//! neither outlives the key. Revocation, rotation and scope changes in this
//! process drop the key's entries at once; on other replicas the fan-out's
//! announcement does, and while it may be missed a positive answer is
//! believed for at most a second ([`Freshness`]). An answer read from the
//! database across such a change is not kept.
//!
//! At most [`MAX_ENTRIES`] answers are kept ([`BoundedCache`], each until
//! its own deadline): when full, a secret seen once (a flood of unknown
//! keys) does not push out a key in use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use twig_auth::{Credential, Principal};
use twig_cache::{BoundedCache, Generation};
use twig_crypto::TokenHash;
use twig_fanout::Freshness;
use uuid::Uuid;

/// Answers kept at most, positive and negative together.
pub const MAX_ENTRIES: u64 = 500_000;

/// A valid key as verification needs it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Who the key acts as.
    pub principal: Principal,
    /// The key's public prefix.
    pub prefix: String,
    /// The key's allowlist (empty = any address).
    pub key_cidrs: Vec<IpNet>,
    /// The organisation's allowlist (empty = any address).
    pub org_cidrs: Vec<IpNet>,
}

#[derive(Debug, Clone)]
enum Answer {
    Valid(Arc<Verified>),
    Unknown,
}

/// The cache.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    negative_ttl: Duration,
    freshness: Freshness,
    entries: BoundedCache<TokenHash, Entry>,
}

/// Cheap to clone (forgetting a key walks the cache, cloning each).
#[derive(Debug, Clone)]
struct Entry {
    answer: Answer,
    stored: Instant,
}

/// What the cache knows of a secret.
#[derive(Debug)]
pub enum Cached {
    /// A valid key.
    Valid(Arc<Verified>),
    /// Known not to exist.
    Unknown,
    /// Not in the cache.
    Miss,
}

impl KeyCache {
    /// A cache with the given lifetimes (zero disables that kind),
    /// believing positive answers past a second only while `freshness`
    /// says announcements arrive.
    pub fn new(ttl: Duration, negative_ttl: Duration, freshness: Freshness) -> Self {
        Self::with_capacity(ttl, negative_ttl, freshness, MAX_ENTRIES)
    }

    /// [`KeyCache::new`] keeping at most `max_entries` answers.
    pub fn with_capacity(
        ttl: Duration,
        negative_ttl: Duration,
        freshness: Freshness,
        max_entries: u64,
    ) -> Self {
        Self {
            ttl,
            negative_ttl,
            freshness,
            entries: BoundedCache::new(max_entries),
        }
    }

    /// Looks a secret up.
    pub fn get(&self, hash: &TokenHash) -> Cached {
        let Some(entry) = self.entries.get(hash) else {
            return Cached::Miss;
        };
        match entry.answer {
            Answer::Valid(v) => {
                if self.freshness.believes(entry.stored, "apikeys") {
                    Cached::Valid(v)
                } else {
                    self.entries.invalidate(hash);
                    Cached::Miss
                }
            }
            // A new secret is random, never one looked up before: no
            // announcement concerns unknown ones.
            Answer::Unknown => Cached::Unknown,
        }
    }

    /// Read before looking a secret up in the database, for
    /// [`KeyCache::put_valid`] and [`KeyCache::put_unknown`].
    pub fn generation(&self) -> Generation {
        self.entries.generation()
    }

    /// Remembers a valid key for at most `ttl` and `valid_for`, unless
    /// the cache forgot anything since `fetched`.
    pub fn put_valid(
        &self,
        fetched: Generation,
        hash: TokenHash,
        verified: Arc<Verified>,
        valid_for: Duration,
    ) {
        self.put(
            fetched,
            hash,
            Answer::Valid(verified),
            self.ttl.min(valid_for),
        );
    }

    /// Remembers that a secret does not exist, unless the cache forgot
    /// anything since `fetched`.
    pub fn put_unknown(&self, fetched: Generation, hash: TokenHash) {
        self.put(fetched, hash, Answer::Unknown, self.negative_ttl);
    }

    fn put(&self, fetched: Generation, hash: TokenHash, answer: Answer, ttl: Duration) {
        let entry = Entry {
            answer,
            stored: Instant::now(),
        };
        self.entries.insert_if_current(fetched, hash, entry, ttl);
    }

    /// Forgets everything (after fan-out messages may have been missed).
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Forgets every answer about `key_id`. (Negative answers need no
    /// forgetting: a new secret is random, never one looked up before.)
    pub fn forget_key(&self, key_id: Uuid) {
        self.entries.invalidate_if(|_, e| match &e.answer {
            Answer::Valid(v) => v.principal.credential == Credential::ApiKey { key_id },
            Answer::Unknown => false,
        });
    }

    /// Forgets every answer about keys of `org_id` (its allowlist changed).
    pub fn forget_org(&self, org_id: Uuid) {
        self.entries.invalidate_if(|_, e| match &e.answer {
            Answer::Valid(v) => v.principal.org_id == org_id,
            Answer::Unknown => false,
        });
    }
}
