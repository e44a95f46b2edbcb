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
//!
//! [`BoundedCache::invalidate_if`] ("this session ended") walks a plain
//! map of the kept entries beside moka's: walking moka itself costs about
//! 250 ns an entry (a lookup each), the map a few nanoseconds. The map
//! follows moka's removals: it holds every version of a key that moka may
//! hold (each insert is stamped; two racing inserts of one key are both
//! tracked), and moka's eviction listener drops exactly the version moka
//! removed. It is swept by deadline should it ever outgrow the cache.
//!
//! A hit costs a hash, a lock-free lookup, one clone of the value and a
//! slot in a bounded read log: no allocation if cloning `V` allocates
//! nothing, so keep `V` cheap to clone (an `Arc`, small `Copy` data).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use moka::Expiry;
use moka::sync::Cache;

/// Hashes keys: fast, seeded per cache. The callers' keys are SHA-256
/// digests (with a client address at the edge), not chosen bit by bit.
type Hasher = foldhash::fast::RandomState;

/// A concurrent cache bounded by entry count, with a deadline per entry.
/// See the [crate docs](crate).
pub struct BoundedCache<K, V> {
    entries: Cache<K, Slot<V>, Hasher>,
    /// Every entry moka keeps (and, briefly, some it just dropped), for
    /// [`BoundedCache::invalidate_if`].
    tracked: Arc<DashMap<K, Tracked<V>, Hasher>>,
    generation: AtomicU64,
    /// The last insert's stamp.
    stamps: AtomicU64,
    max_entries: u64,
}

/// A value with its own lifetime, and the stamp of its insert.
#[derive(Clone)]
struct Slot<V> {
    value: V,
    ttl: Duration,
    stamp: u64,
}

/// The versions of a key that moka may hold, as
/// [`BoundedCache::invalidate_if`] sees them: almost always one (`more`
/// then allocates nothing); two or more only while inserts of one key race.
struct Tracked<V> {
    first: Version<V>,
    more: Vec<Version<V>>,
}

struct Version<V> {
    value: V,
    stamp: u64,
    /// Past this, moka has surely expired the entry.
    sweep_after: Instant,
}

impl<V> Tracked<V> {
    fn versions(&self) -> impl Iterator<Item = &Version<V>> {
        std::iter::once(&self.first).chain(&self.more)
    }

    /// Keeps the versions `keep` is true of; false if none is left.
    fn retain(&mut self, keep: impl Fn(&Version<V>) -> bool) -> bool {
        self.more.retain(&keep);
        if keep(&self.first) {
            return true;
        }
        match self.more.pop() {
            Some(next) => {
                self.first = next;
                true
            }
            None => false,
        }
    }
}

/// How long past its deadline a tracked version may be swept.
const SWEEP_SLACK: Duration = Duration::from_secs(1);

/// Lifetimes are cut to this (an `Instant` cannot hold any duration).
const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);

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
        let tracked = Arc::new(DashMap::<K, Tracked<V>, Hasher>::with_hasher(
            Hasher::default(),
        ));
        let follow = Arc::clone(&tracked);
        Self {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(OwnDeadline)
                // Every removal (evicted, turned away, expired, invalidated,
                // replaced) untracks exactly the entry removed.
                .eviction_listener(move |key: Arc<K>, slot: Slot<V>, _| {
                    follow.remove_if_mut(&*key, |_, t| !t.retain(|v| v.stamp != slot.stamp));
                })
                .build_with_hasher(Hasher::default()),
            tracked,
            generation: AtomicU64::new(0),
            stamps: AtomicU64::new(0),
            max_entries,
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
            self.store(key, value, ttl);
        }
    }

    /// Tracks, then keeps (so the tracked map always covers moka's).
    fn store(&self, key: K, value: V, ttl: Duration) {
        let ttl = ttl.min(MAX_TTL);
        let stamp = self.track(&key, &value, ttl);
        self.keep(key, value, ttl, stamp);
    }

    /// Adds a version of `key` to the tracked map; returns its stamp.
    fn track(&self, key: &K, value: &V, ttl: Duration) -> u64 {
        let stamp = self.stamps.fetch_add(1, Ordering::Relaxed) + 1;
        let version = Version {
            value: value.clone(),
            stamp,
            sweep_after: Instant::now() + ttl + SWEEP_SLACK,
        };
        match self.tracked.entry(key.clone()) {
            dashmap::Entry::Occupied(mut kept) => kept.get_mut().more.push(version),
            dashmap::Entry::Vacant(empty) => {
                empty.insert(Tracked {
                    first: version,
                    more: Vec::new(),
                });
            }
        }
        stamp
    }

    /// Hands a tracked version to moka.
    fn keep(&self, key: K, value: V, ttl: Duration, stamp: u64) {
        self.entries.insert(key, Slot { value, ttl, stamp });
        if stamp.is_multiple_of(1024) {
            self.sweep();
        }
    }

    /// Drops tracked versions long expired, should removals ever have
    /// been missed (the map outgrew the cache twice over).
    fn sweep(&self) {
        if self.tracked.len() as u64 > self.max_entries.saturating_mul(2) {
            let now = Instant::now();
            self.tracked
                .retain(|_, t| t.retain(|v| v.sweep_after > now));
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
        self.store(key.clone(), value, ttl);
        // Pairs with the fence in `bump`: either the invalidation's walk
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
    /// every kept entry (a few nanoseconds each), for changes such as
    /// "this session ended".
    pub fn invalidate_if(&self, stale: impl Fn(&K, &V) -> bool) {
        self.bump();
        // Collected first: invalidating untracks, which must not wait on
        // the walk's own locks. (`retain` keeping everything walks each
        // shard under one lock; `iter` would count a reference per entry.)
        let mut doomed = Vec::new();
        self.tracked.retain(|key, t| {
            if t.versions().any(|v| stale(key, &v.value)) {
                doomed.push(key.clone());
            }
            true
        });
        for key in &doomed {
            self.entries.invalidate(key);
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
            .field("max_entries", &self.max_entries)
            .field("entries", &self.entries.entry_count())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests;
