//! Verification answers kept in memory: the hot path of every request.
//!
//! Positive entries live `ttl`, negative ones (unknown keys) `negative_ttl`;
//! neither outlives the key. Revocation, rotation and scope changes in this
//! process drop the key's entries at once; on other replicas the fan-out's
//! announcement does, and while it may be missed a positive answer is
//! believed for at most a second ([`Freshness`]).

use std::time::{Duration, Instant};

use std::sync::Arc;

use dashmap::DashMap;
use ipnet::IpNet;
use twig_auth::{Credential, Principal};
use twig_crypto::TokenHash;
use twig_fanout::Freshness;
use uuid::Uuid;

const MAX_ENTRIES: usize = 500_000;

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
    entries: DashMap<TokenHash, Entry>,
}

#[derive(Debug)]
struct Entry {
    answer: Answer,
    stored: Instant,
    until: Instant,
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
        Self {
            ttl,
            negative_ttl,
            freshness,
            entries: DashMap::new(),
        }
    }

    /// Looks a secret up.
    pub fn get(&self, hash: &TokenHash) -> Cached {
        let Some(entry) = self.entries.get(hash) else {
            return Cached::Miss;
        };
        let believed = match &entry.answer {
            Answer::Valid(_) => self.freshness.believes(entry.stored, "apikeys"),
            // A new secret is random, never one looked up before: no
            // announcement concerns unknown ones.
            Answer::Unknown => true,
        };
        if entry.until <= Instant::now() || !believed {
            drop(entry);
            self.entries.remove(hash);
            return Cached::Miss;
        }
        match &entry.answer {
            Answer::Valid(p) => Cached::Valid(p.clone()),
            Answer::Unknown => Cached::Unknown,
        }
    }

    /// Remembers a valid key for at most `ttl` and `valid_for`.
    pub fn put_valid(&self, hash: TokenHash, verified: Arc<Verified>, valid_for: Duration) {
        self.put(hash, Answer::Valid(verified), self.ttl.min(valid_for));
    }

    /// Remembers that a secret does not exist.
    pub fn put_unknown(&self, hash: TokenHash) {
        self.put(hash, Answer::Unknown, self.negative_ttl);
    }

    fn put(&self, hash: TokenHash, answer: Answer, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, e| e.until > now);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(
            hash,
            Entry {
                answer,
                stored: now,
                until: now + ttl,
            },
        );
    }

    /// Forgets everything (after fan-out messages may have been missed).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// Forgets every answer about `key_id`. (Negative answers need no
    /// forgetting: a new secret is random, never one looked up before.)
    pub fn forget_key(&self, key_id: Uuid) {
        self.entries.retain(|_, e| match &e.answer {
            Answer::Valid(v) => v.principal.credential != Credential::ApiKey { key_id },
            Answer::Unknown => true,
        });
    }

    /// Forgets every answer about keys of `org_id` (its allowlist changed).
    pub fn forget_org(&self, org_id: Uuid) {
        self.entries.retain(|_, e| match &e.answer {
            Answer::Valid(v) => v.principal.org_id != org_id,
            Answer::Unknown => true,
        });
    }
}
