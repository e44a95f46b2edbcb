//! Verified access tokens, answered from memory for a short time so the
//! hot path (`VerifySession`, the auth layer) does not hit the database on
//! every request.
//!
//! Entries live at most `ttl` and never past the token's expiry. Logout,
//! revocation, refresh and password change in this process remove the
//! session's entries at once; another replica's cache forgets them when
//! the fan-out announces it, and while announcements may be missed an
//! entry is believed for at most a second ([`Freshness`]).
//! Without Redis, `ttl` itself is at most a second.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use twig_auth::Principal;
use twig_crypto::TokenHash;
use twig_fanout::Freshness;
use uuid::Uuid;

const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    stored: Instant,
    until: Instant,
}

/// The cache.
#[derive(Debug)]
pub struct VerifyCache {
    ttl: Duration,
    freshness: Freshness,
    entries: DashMap<TokenHash, Entry>,
}

impl VerifyCache {
    /// A cache keeping entries for `ttl` (zero disables it), past a
    /// second only while `freshness` says announcements arrive.
    pub fn new(ttl: Duration, freshness: Freshness) -> Self {
        Self {
            ttl,
            freshness,
            entries: DashMap::new(),
        }
    }

    /// The cached principal, if fresh.
    pub fn get(&self, hash: &TokenHash) -> Option<Principal> {
        let entry = self.entries.get(hash)?;
        if entry.until > Instant::now() && self.freshness.believes(entry.stored, "sessions") {
            Some(entry.principal.clone())
        } else {
            drop(entry);
            self.entries.remove(hash);
            None
        }
    }

    /// Remembers a verified token for at most `ttl` and at most `valid_for`.
    pub fn put(&self, hash: TokenHash, principal: Principal, valid_for: Duration) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, e| e.until > now);
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        let until = now + self.ttl.min(valid_for);
        self.entries.insert(
            hash,
            Entry {
                principal,
                stored: now,
                until,
            },
        );
    }

    /// Forgets every token of these sessions.
    pub fn forget_sessions(&self, sessions: &[Uuid]) {
        if !sessions.is_empty() {
            self.entries.retain(|_, e| {
                !e.principal
                    .session_id()
                    .is_some_and(|id| sessions.contains(&id))
            });
        }
    }

    /// Forgets everything (after fan-out messages may have been missed).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// Forgets every token of a user.
    pub fn forget_user(&self, user_id: Uuid) {
        self.entries.retain(|_, e| e.principal.user_id != user_id);
    }
}
