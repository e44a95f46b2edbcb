//! What a hit of [`BoundedCache`] costs, against the `DashMap` the verify
//! caches used before, for a few working sets (one hot key; keys that fit
//! the CPU's caches; a hundred thousand), and what a walk
//! (`invalidate_if`, "this session ended") of a full sessions cache costs:
//!
//!     cargo bench -p twig-cache --bench hit_cost
//!
//! Figures of one run on a shared machine: compare the two columns of the
//! same run, not runs of different days.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use twig_cache::BoundedCache;

type Key = [u8; 32];

fn key(n: u64) -> Key {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&n.to_le_bytes());
    k
}

const LONG: Duration = Duration::from_secs(60);

fn main() {
    use dashmap::DashMap;

    const READS: u64 = 2_000_000;
    let value = Arc::new([0u8; 64]);
    let time = |threads: u64, keys: u64, read: Arc<dyn Fn(&Key) -> bool + Send + Sync>| {
        let start = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let read = read.clone();
                thread::spawn(move || {
                    let mut hits = 0u64;
                    for i in 0..READS / threads {
                        // A spread of keys, different per thread.
                        let n = (i * 7919 + t * 104_729) % keys;
                        hits += u64::from(read(&key(n)));
                    }
                    hits
                })
            })
            .collect();
        let hits: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(hits, READS / threads * threads);
        start.elapsed().as_nanos() as f64 / (READS / threads) as f64
    };
    for keys in [1, 1_000, 100_000] {
        let moka = Arc::new(BoundedCache::new(200_000));
        let dash = Arc::new(DashMap::<Key, (Arc<[u8; 64]>, Instant)>::default());
        let now = Instant::now();
        for n in 0..keys {
            moka.insert(key(n), value.clone(), LONG);
            dash.insert(key(n), (value.clone(), now + LONG));
        }
        moka.run_pending_tasks();
        for threads in [1, 2] {
            let m = moka.clone();
            let moka_ns = time(threads, keys, Arc::new(move |k| m.get(k).is_some()));
            let d = dash.clone();
            let dash_ns = time(
                threads,
                keys,
                Arc::new(move |k| {
                    // As the callers did: look up, check the deadline, clone.
                    d.get(k)
                        .filter(|e| e.1 > Instant::now())
                        .map(|e| e.0.clone())
                        .is_some()
                }),
            );
            println!(
                "{keys} keys, {threads} thread(s): moka {moka_ns:.0} ns per hit, \
                 dashmap {dash_ns:.0} ns per hit"
            );
        }
    }

    // A walk ("this session ended") of a full sessions cache.
    const FULL: u64 = 200_000;
    let cache = BoundedCache::new(FULL);
    let dash = DashMap::<Key, Arc<[u8; 64]>>::default();
    for n in 0..FULL {
        cache.insert(key(n), value.clone(), LONG);
        dash.insert(key(n), value.clone());
    }
    cache.run_pending_tasks();
    for _ in 0..3 {
        let start = Instant::now();
        cache.invalidate_if(|k, _| std::hint::black_box(k[31]) == 1);
        let ours = start.elapsed();
        let start = Instant::now();
        dash.retain(|k, _| std::hint::black_box(k[31]) != 1);
        println!(
            "a walk of {FULL}: invalidate_if {ours:?}, dashmap retain {:?}",
            start.elapsed()
        );
    }
}
