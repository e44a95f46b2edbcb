//! The one bounded cache behind every verify cache (sessions, api-keys,
//! the edge's kept answers of remote services).
//!
//! A [`BoundedCache`] holds at most `max_entries` entries. When it is
//! full, moka's TinyLFU policy decides what stays: a new key is admitted
//! only if it has been asked for more often than the entry it would push
//! out, so a flood of keys seen once does not evict a key read all the
//! time (a cache that starts afresh when full lets any such flood empty it
//! for everyone). Each entry lives until its own deadline, given with it
//! ([`BoundedCache::insert`]); an expired entry is never returned, and is
//! removed by the cache's upkeep.
//!
//! Every invalidation bumps a [`Generation`]. A caller that reads the
//! generation before fetching an answer and stores it with
//! [`BoundedCache::insert_if_current`] never keeps an answer fetched
//! across an invalidation: one that raced with it is dropped again
//! straight after its insert.
//!
//! Upkeep (evictions, removal of expired entries) runs on the callers'
//! threads in small batches, as moka does; there is no thread of its own.
//! A hit costs a hash, a lock-free lookup, one clone of the value and a
//! slot in a bounded read log: no allocation if cloning `V` allocates
//! nothing, so keep `V` cheap to clone (an `Arc`, small `Copy` data).

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

/// Hashes keys: fast, seeded per cache. The callers' keys are SHA-256
/// digests (with a client address at the edge), not chosen bit by bit.
type Hasher = foldhash::fast::RandomState;

/// A concurrent cache bounded by entry count, with a deadline per entry.
/// See the [crate docs](crate).
pub struct BoundedCache<K, V> {
    entries: Cache<K, Slot<V>, Hasher>,
    generation: AtomicU64,
}

/// A value with its own lifetime.
#[derive(Clone)]
struct Slot<V> {
    value: V,
    ttl: Duration,
}

/// Each entry expires `ttl` after its insert, also when it replaces
/// another (moka's default would keep the replaced entry's deadline).
struct OwnDeadline;

impl<K, V> Expiry<K, Slot<V>> for OwnDeadline {
    fn expire_after_create(&self, _: &K, slot: &Slot<V>, _: Instant) -> Option<Duration> {
        Some(slot.ttl)
    }

    fn expire_after_update(
        &self,
        _: &K,
        slot: &Slot<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.ttl)
    }
}

/// How many invalidations a cache had seen, read before fetching an
/// answer (see [`BoundedCache::insert_if_current`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

impl<K, V> BoundedCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// An empty cache holding at most `max_entries` entries.
    pub fn new(max_entries: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(OwnDeadline)
                .build_with_hasher(Hasher::default()),
            generation: AtomicU64::new(0),
        }
    }

    /// The value kept for `key`, unless it expired or was invalidated.
    #[inline]
    pub fn get(&self, key: &K) -> Option<V> {
        self.entries.get(key).map(|slot| slot.value)
    }

    /// Keeps `value` for `key` for `ttl` from now (replacing what was
    /// kept, deadline included); a zero `ttl` keeps nothing. When the
    /// cache is full, the eviction policy may turn the new entry away.
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if !ttl.is_zero() {
            self.entries.insert(key, Slot { value, ttl });
        }
    }

    /// The generation now: read it before fetching an answer to keep.
    pub fn generation(&self) -> Generation {
        Generation(self.generation.load(Ordering::SeqCst))
    }

    /// [`insert`](Self::insert), unless the cache saw an invalidation
    /// since `fetched` was read: an answer fetched before a change is not
    /// kept after it. True if kept. An insert that races with an
    /// invalidation is removed again at once (it may be seen in between,
    /// like an answer read just before the change).
    pub fn insert_if_current(&self, fetched: Generation, key: K, value: V, ttl: Duration) -> bool {
        if ttl.is_zero() || self.generation() != fetched {
            return false;
        }
        self.entries.insert(key.clone(), Slot { value, ttl });
        // Pairs with the fence in `bump`: either the invalidation's scan
        // sees this insert, or this load sees its generation.
        fence(Ordering::SeqCst);
        if self.generation() != fetched {
            self.entries.invalidate(&key);
            return false;
        }
        true
    }

    /// Forgets `key`.
    pub fn invalidate(&self, key: &K) {
        self.bump();
        self.entries.invalidate(key);
    }

    /// Forgets every entry for which `stale` is true, at once: it walks
    /// the whole cache (time in proportion to the entries kept, cloning
    /// each value), for changes such as "this session ended".
    pub fn invalidate_if(&self, stale: impl Fn(&K, &V) -> bool) {
        self.bump();
        for (key, slot) in self.entries.iter() {
            if stale(&*key, &slot.value) {
                self.entries.invalidate(&*key);
            }
        }
    }

    /// Forgets everything, at once (the memory is given back by upkeep).
    pub fn invalidate_all(&self) {
        self.bump();
        self.entries.invalidate_all();
    }

    /// How many entries are kept, approximately: counts are brought up to
    /// date by upkeep ([`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Runs the upkeep now (evictions, expired and invalidated entries,
    /// counts); otherwise it runs in small batches as the cache is used.
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }
}

impl<K, V> fmt::Debug for BoundedCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedCache")
            .field("max_entries", &self.entries.policy().max_capacity())
            .field("entries", &self.entries.entry_count())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests;
