//! "Seen once" sets for replay checks: an assertion id, a nonce, an
//! authorization code may be accepted the first time only.
//!
//! In Redis (`SET <prefix>seen:<namespace>:<id> 1 NX PX <ttl>`) every
//! replica sees every other's sightings; in memory (the embedded mode, no
//! Redis configured: one replica) a bounded map keeps them. Either way an
//! entry lasts `ttl` — make it at least the lifetime of what is checked
//! (an assertion's `NotOnOrAfter`, a code's expiry), after which the thing
//! itself is refused anyway.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{RedisError, ttl_millis};
use crate::handle::{Command, RedisHandle};

/// Ids longer than this are refused ([`RedisError::InvalidName`]): hash
/// longer ones first.
pub const MAX_ID_LEN: usize = 512;

/// A seen-once set. Cheap to clone.
#[derive(Debug, Clone)]
pub enum SeenOnce {
    /// In Redis, shared by every replica.
    Redis(RedisHandle),
    /// In this process (one replica).
    Memory(Arc<MemorySeen>),
}

impl SeenOnce {
    /// In Redis through `redis`.
    pub fn redis(redis: RedisHandle) -> Self {
        Self::Redis(redis)
    }

    /// In this process, holding at most `capacity` unexpired sightings.
    pub fn memory(capacity: usize) -> Self {
        Self::Memory(Arc::new(MemorySeen::new(capacity)))
    }

    /// Records a sighting of `id` in `namespace` for `ttl`: true the first
    /// time (accept), false while an earlier sighting is kept (a replay:
    /// refuse). An error is neither: the caller must refuse (or retry),
    /// never accept.
    ///
    /// `namespace` is lower-case ASCII letters, digits, `.`, `_` and `-`;
    /// `id` is at most [`MAX_ID_LEN`] bytes.
    pub async fn first_sight(
        &self,
        namespace: &str,
        id: &str,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        check_namespace(namespace)?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(RedisError::invalid("id", id));
        }
        let ms = ttl_millis(ttl)?;
        match self {
            Self::Redis(redis) => {
                let key = redis.key(&format!("seen:{namespace}:{id}"));
                let set: Option<String> = redis
                    .query(
                        &Command::new("SET")
                            .key(&key)
                            .arg("1")
                            .arg("NX")
                            .arg("PX")
                            .arg(ms),
                    )
                    .await?;
                Ok(set.is_some())
            }
            Self::Memory(memory) => memory.first_sight(namespace, id, ttl, Instant::now()),
        }
    }
}

fn check_namespace(namespace: &str) -> Result<(), RedisError> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RedisError::invalid("namespace", namespace))
    }
}

/// Sightings in this process: bounded, each until its own deadline.
///
/// When it holds `capacity` unexpired sightings a new one is refused
/// ([`RedisError::Full`]) rather than making room: forgetting a sighting
/// early would let its replay through.
#[derive(Debug)]
pub struct MemorySeen {
    capacity: usize,
    inner: Mutex<Sightings>,
}

#[derive(Debug, Default)]
struct Sightings {
    /// `<namespace>\0<id>` → until when.
    until: HashMap<String, Instant>,
    /// The same deadlines, soonest first, to drop expired entries.
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
}

impl MemorySeen {
    /// An empty set of at most `capacity` unexpired sightings.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Sightings::default()),
        }
    }

    /// Unexpired (and not yet swept) sightings.
    pub fn len(&self) -> usize {
        self.lock().until.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sightings> {
        // A panic while holding the lock leaves the maps consistent (each
        // change is one insert or remove).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn first_sight(
        &self,
        namespace: &str,
        id: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<bool, RedisError> {
        let mut s = self.lock();
        // Drop what expired; every kept entry has exactly one heap entry.
        while let Some(Reverse((at, _))) = s.expiries.peek()
            && *at <= now
        {
            if let Some(Reverse((_, key))) = s.expiries.pop() {
                s.until.remove(&key);
            }
        }
        let key = format!("{namespace}\0{id}");
        if s.until.contains_key(&key) {
            return Ok(false);
        }
        if s.until.len() >= self.capacity {
            metrics::counter!("twig_seen_once_full_total").increment(1);
            return Err(RedisError::Full(self.capacity));
        }
        let at = now + ttl;
        s.until.insert(key.clone(), at);
        s.expiries.push(Reverse((at, key)));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_refuses_the_second_sight_until_it_expires() {
        let m = MemorySeen::new(10);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        assert!(m.first_sight("saml", "a", ttl, t0).unwrap());
        assert!(!m.first_sight("saml", "a", ttl, t0).unwrap());
        assert!(
            m.first_sight("oidc", "a", ttl, t0).unwrap(),
            "namespaces apart"
        );
        let later = t0 + ttl - Duration::from_millis(1);
        assert!(!m.first_sight("saml", "a", ttl, later).unwrap());
        assert!(
            m.first_sight("saml", "a", ttl, t0 + ttl).unwrap(),
            "expired"
        );
        assert_eq!(m.len(), 1, "the expired entries were swept");
    }

    #[test]
    fn memory_is_bounded_and_refuses_rather_than_forgets() {
        let m = MemorySeen::new(3);
        let t0 = Instant::now();
        let short = Duration::from_secs(1);
        for id in ["a", "b", "c"] {
            assert!(m.first_sight("n", id, short, t0).unwrap());
        }
        assert!(matches!(
            m.first_sight("n", "d", short, t0),
            Err(RedisError::Full(3))
        ));
        assert!(!m.first_sight("n", "a", short, t0).unwrap(), "still kept");
        // Once they expire there is room again.
        assert!(m.first_sight("n", "d", short, t0 + short).unwrap());
        assert_eq!(m.len(), 1);
    }

    #[tokio::test]
    async fn bad_names_and_ttls_are_typed_errors() {
        let s = SeenOnce::memory(10);
        let ttl = Duration::from_secs(1);
        for ns in ["", "Upper", "a:b", "a b"] {
            assert!(matches!(
                s.first_sight(ns, "x", ttl).await,
                Err(RedisError::InvalidName { .. })
            ));
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(matches!(
            s.first_sight("n", &long, ttl).await,
            Err(RedisError::InvalidName { .. })
        ));
        assert!(matches!(
            s.first_sight("n", "x", Duration::ZERO).await,
            Err(RedisError::InvalidTtl(_))
        ));
    }
}
