use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;

use super::*;

type Key = [u8; 32];

fn key(n: u64) -> Key {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k
}

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(60);

/// Sleeps until `cond` holds, at most three seconds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(3), "{what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn each_entry_expires_at_its_own_deadline() {
    let cache = BoundedCache::new(100);
    let inserted = Instant::now();
    cache.insert(key(1), "short", SHORT);
    cache.insert(key(2), "long", LONG);
    assert_eq!(cache.get(&key(1)), Some("short"));
    wait_until("the short entry expires", || cache.get(&key(1)).is_none());
    assert!(
        inserted.elapsed() >= SHORT,
        "gone only after its own deadline"
    );
    assert_eq!(cache.get(&key(2)), Some("long"), "the long one stays");
    // Upkeep removes expired entries by moka's timer wheel, whose finest
    // slots are about a second wide.
    wait_until("upkeep removes the expired entry", || {
        cache.run_pending_tasks();
        cache.entry_count() == 1
    });
}

#[test]
fn a_replaced_entry_takes_the_new_deadline() {
    let cache = BoundedCache::new(100);
    cache.insert(key(1), 1, LONG);
    cache.insert(key(1), 2, SHORT);
    cache.insert(key(2), 1, SHORT);
    cache.insert(key(2), 2, LONG);
    assert_eq!(cache.get(&key(1)), Some(2));
    wait_until("the shortened entry expires", || {
        cache.get(&key(1)).is_none()
    });
    assert_eq!(cache.get(&key(2)), Some(2), "the lengthened one stays");
}

#[test]
fn a_zero_lifetime_keeps_nothing() {
    let cache = BoundedCache::new(100);
    cache.insert(key(1), 1, Duration::ZERO);
    assert!(!cache.insert_if_current(cache.generation(), key(2), 2, Duration::ZERO));
    assert_eq!(cache.get(&key(1)), None);
    assert_eq!(cache.get(&key(2)), None);
}

#[test]
fn the_bound_holds() {
    const CAP: u64 = 1_000;
    let cache = BoundedCache::new(CAP);
    for n in 0..10 * CAP {
        cache.insert(key(n), n, LONG);
    }
    cache.run_pending_tasks();
    let count = cache.entry_count();
    assert!(count <= CAP, "{count} entries kept, at most {CAP}");
    assert!(count >= CAP / 2, "{count} entries: the cache is used");
}

/// The regression a cache that starts afresh when full had: a flood of
/// keys seen once emptied it, so the one key every request reads was
/// fetched again. Here the hot key stays through a flood of ten times
/// the capacity, read between the keys of the first half only (the
/// second half alone would have emptied the old cache more than once).
#[test]
fn a_flood_of_new_keys_does_not_evict_a_hot_key() {
    const CAP: u64 = 1_000;
    let cache = BoundedCache::new(CAP);
    let hot = key(u64::MAX);
    cache.insert(hot, "hot", LONG);
    let mut misses = 0;
    for n in 0..10 * CAP {
        // As the callers do: look up, miss, fetch, insert.
        assert_eq!(cache.get(&key(n)), None);
        cache.insert(key(n), "flood", LONG);
        if n < 5 * CAP && n % 10 == 0 && cache.get(&hot).is_none() {
            misses += 1;
            cache.insert(hot, "hot", LONG);
        }
    }
    cache.run_pending_tasks();
    assert_eq!(misses, 0, "the hot key was evicted during the flood");
    assert_eq!(cache.get(&hot), Some("hot"));
    assert!(cache.entry_count() <= CAP);
}

#[test]
fn invalidation_forgets_what_it_names() {
    let cache = BoundedCache::new(100);
    for n in 0..10 {
        cache.insert(key(n), n, LONG);
    }
    cache.invalidate(&key(0));
    assert_eq!(cache.get(&key(0)), None);
    cache.invalidate_if(|_, v| v % 2 == 1);
    for n in 1..10 {
        let expected = (n % 2 == 0).then_some(n);
        assert_eq!(cache.get(&key(n)), expected, "entry {n}");
    }
    cache.invalidate_all();
    for n in 0..10 {
        assert_eq!(cache.get(&key(n)), None, "entry {n}");
    }
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 0);
    cache.insert(key(1), 1, LONG);
    assert_eq!(cache.get(&key(1)), Some(1), "usable after invalidate_all");
}

/// The map `invalidate_if` walks follows every removal moka makes, and
/// a replaced entry's removal leaves the new one tracked.
#[test]
fn the_walked_map_follows_the_cache() {
    const CAP: u64 = 100;
    let cache = BoundedCache::new(CAP);
    for n in 0..10 * CAP {
        cache.insert(key(n), n, LONG);
    }
    cache.run_pending_tasks();
    assert_eq!(cache.tracked.len() as u64, cache.entry_count(), "evictions");

    cache.insert(key(0), 1, SHORT);
    cache.insert(key(0), 2, LONG);
    cache.run_pending_tasks();
    cache.invalidate_if(|_, v| *v == 2);
    assert_eq!(cache.get(&key(0)), None, "the replacement was tracked");

    cache.insert(key(1), 1, SHORT);
    wait_until("expired entries are untracked", || {
        cache.run_pending_tasks();
        !cache.tracked.contains_key(&key(1))
    });

    cache.invalidate_all();
    cache.run_pending_tasks();
    assert_eq!(cache.tracked.len(), 0, "invalidate_all");
}

/// Two racing inserts of one key (two requests with the same new
/// token), in the worst order: both tracked, then kept in the opposite
/// order. Whichever version moka keeps is still found by `invalidate_if`,
/// and every version is untracked in the end.
#[test]
fn racing_inserts_of_one_key_stay_invalidatable() {
    let cache = BoundedCache::<Key, u64>::new(100);
    let a = cache.track(&key(1), &1, LONG);
    let b = cache.track(&key(1), &2, LONG);
    cache.keep(key(1), 2, LONG, b);
    cache.keep(key(1), 1, LONG, a);
    cache.run_pending_tasks();
    assert_eq!(cache.get(&key(1)), Some(1));
    cache.invalidate_if(|_, v| *v == 1);
    assert_eq!(cache.get(&key(1)), None, "the version moka kept was found");
    cache.run_pending_tasks();
    assert!(cache.tracked.is_empty(), "every version untracked");

    // And for real, with threads.
    for round in 0..20 {
        let cache = Arc::new(BoundedCache::<Key, u64>::new(100));
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let cache = cache.clone();
                thread::spawn(move || {
                    for n in 0..2_000 {
                        cache.insert(key(1), t * 10_000 + n, LONG);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        cache.invalidate_if(|_, _| true);
        assert_eq!(cache.get(&key(1)), None, "round {round}");
        cache.run_pending_tasks();
        assert!(cache.tracked.is_empty(), "round {round}: all untracked");
    }
}

#[test]
fn an_answer_fetched_across_an_invalidation_is_not_kept() {
    let cache = BoundedCache::new(100);
    for kind in 0..3 {
        let fetched = cache.generation();
        match kind {
            0 => cache.invalidate(&key(9)),
            1 => cache.invalidate_if(|_, _| false),
            _ => cache.invalidate_all(),
        }
        assert!(!cache.insert_if_current(fetched, key(kind), 1, LONG));
        assert_eq!(cache.get(&key(kind)), None);
        assert!(cache.insert_if_current(cache.generation(), key(kind), 2, LONG));
        assert_eq!(cache.get(&key(kind)), Some(2));
    }
}

/// One thread changes the truth and invalidates; another fetches the
/// truth and keeps it. Whatever the interleaving, no value older than
/// the last change is left behind.
#[test]
fn no_stale_answer_survives_a_racing_invalidation() {
    for round in 0..20 {
        let cache = Arc::new(BoundedCache::<Key, u64>::new(100));
        let truth = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let fetcher = {
            let (cache, truth, done) = (cache.clone(), truth.clone(), done.clone());
            thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let fetched = cache.generation();
                    let answer = truth.load(Ordering::SeqCst);
                    cache.insert_if_current(fetched, key(1), answer, LONG);
                }
            })
        };
        for version in 1..=2_000 {
            truth.store(version, Ordering::SeqCst);
            match version % 3 {
                0 => cache.invalidate(&key(1)),
                1 => cache.invalidate_if(|_, _| true),
                _ => cache.invalidate_all(),
            }
        }
        done.store(true, Ordering::SeqCst);
        fetcher.join().unwrap();
        let last = truth.load(Ordering::SeqCst);
        let kept = cache.get(&key(1));
        assert!(
            kept.is_none_or(|v| v == last),
            "round {round}: kept {kept:?}, the truth is {last}"
        );
    }
}
