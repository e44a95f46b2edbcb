//! Batched writes: values gathered in memory on the hot path (usage
//! counts, last-seen times) and written to the database in batches by a
//! periodic worker. Every batched writer of every service is a
//! [`BatchedWriter`].
//!
//! - [`BatchedWriter::record`] merges a value into the one pending for its
//!   key ([`Merge`]: [`Sum`] for counts, [`Max`] for times), one map
//!   update per call;
//! - [`BatchedWriter::flush`] takes the pending entries ([`Select::All`],
//!   or only those of periods that have ended: [`Select::Ended`]), writes
//!   them in **one** transaction through the caller's [`Upsert`], and if
//!   anything fails merges them back, so a count is neither lost nor
//!   written twice. Flushes run one at a time (a background flush and a
//!   caller's must not both write the same entries);
//! - reads ([`BatchedWriter::get`], [`BatchedWriter::for_each`]) see
//!   what is pending and what a flush is writing, so a read that adds them
//!   to the table's rows misses nothing while a flush runs (between a
//!   flush's commit and its forgetting what it wrote, a read may count
//!   that batch twice: a moment, for display only);
//! - memory is bounded: at most `max_keys` keys are pending. A value for
//!   a new key beyond that is dropped and counted (the `dropped` method,
//!   `twig_batch_dropped_total{writer}`, a warning at the next flush).
//!   Entries merged back after a failed write are never dropped, so while
//!   the database is down a writer holds at most twice `max_keys` keys.
//!
//! What cannot be guaranteed: a commit whose answer is lost (the
//! connection breaks after the database committed) looks like a failure,
//! and the batch is merged back and written again. Only a write whose
//! outcome the database never reported can do this.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};

/// A value that absorbs another for the same key.
pub trait Merge: Clone + Send + Sync + 'static {
    /// Adds `other` into `self`.
    fn merge(&mut self, other: Self);
}

/// A count: merged by (saturating) addition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sum(pub u64);

impl Merge for Sum {
    fn merge(&mut self, other: Self) {
        self.0 = self.0.saturating_add(other.0);
    }
}

/// A latest value (a time): merged by keeping the larger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Max<T>(pub T);

impl<T: Ord + Clone + Send + Sync + 'static> Merge for Max<T> {
    fn merge(&mut self, other: Self) {
        if other.0 > self.0 {
            self.0 = other.0;
        }
    }
}

/// Writes one batch inside the flush's transaction: typically an upsert
/// per entry (`INSERT … ON CONFLICT DO UPDATE` adding counts, or an
/// `UPDATE … WHERE stored < new` for times). Each key appears once.
pub trait Upsert<K, V>: Send + Sync + 'static {
    /// Writes `batch` through `txn`; the writer commits.
    fn upsert(
        &self,
        txn: &DatabaseTransaction,
        batch: &[(K, V)],
    ) -> impl Future<Output = Result<(), DbErr>> + Send;
}

/// Which pending entries a flush writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Everything (at shutdown, or for a writer without periods).
    All,
    /// Only entries whose period (see [`BatchedWriter::with_periods`]) is
    /// before `current`: the periodic flush of per-period counts, so an
    /// open period is written once, when it has ended. A writer without
    /// periods writes everything.
    Ended {
        /// The period in progress.
        current: i64,
    },
}

/// Values gathered per key, written in batches. See the module docs.
pub struct BatchedWriter<K, V, U> {
    name: &'static str,
    db: DatabaseConnection,
    upsert: U,
    period: Option<fn(&K) -> i64>,
    max_keys: usize,
    pending: DashMap<K, V>,
    /// Keys in `pending` (DashMap's `len` walks every shard).
    keys: AtomicUsize,
    /// Values dropped because `max_keys` keys were pending: in all, and
    /// not yet reported.
    dropped: AtomicU64,
    unreported: AtomicU64,
    /// What the flush in progress is writing (for reads).
    in_flight: Mutex<HashMap<K, V>>,
    /// Held for a whole flush: one at a time.
    flushing: tokio::sync::Mutex<()>,
    #[cfg(any(test, feature = "test-hooks"))]
    pause: Mutex<Option<hooks::Armed>>,
}

impl<K, V, U> std::fmt::Debug for BatchedWriter<K, V, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedWriter")
            .field("name", &self.name)
            .field("max_keys", &self.max_keys)
            .field("pending", &self.keys.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K, V, U> BatchedWriter<K, V, U>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Merge,
    U: Upsert<K, V>,
{
    /// A writer named `name` (in logs and metrics) writing to `db` through
    /// `upsert`, holding at most `max_keys` (at least one) pending keys.
    pub fn new(name: &'static str, db: DatabaseConnection, upsert: U, max_keys: usize) -> Self {
        Self {
            name,
            db,
            upsert,
            period: None,
            max_keys: max_keys.max(1),
            pending: DashMap::new(),
            keys: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
            #[cfg(any(test, feature = "test-hooks"))]
            pause: Mutex::new(None),
        }
    }

    /// Keys count in periods (`period(key)`, e.g. the key's minute), for
    /// [`Select::Ended`].
    #[must_use]
    pub fn with_periods(mut self, period: fn(&K) -> i64) -> Self {
        self.period = Some(period);
        self
    }

    /// Merges `value` into what is pending for `key`. Beyond `max_keys`
    /// pending keys, a value for a new key is dropped and counted.
    pub fn record(&self, key: K, value: V) {
        if let Some(mut held) = self.pending.get_mut(&key) {
            held.merge(value);
            return;
        }
        match self.pending.entry(key) {
            Entry::Occupied(mut held) => held.get_mut().merge(value),
            Entry::Vacant(vacant) => {
                if self.keys.load(Ordering::Relaxed) >= self.max_keys {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    self.unreported.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("twig_batch_dropped_total", "writer" => self.name)
                        .increment(1);
                    return;
                }
                vacant.insert(value);
                self.keys.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// What is not yet written for `key`: pending, and in a flush that has
    /// not yet committed.
    pub fn get(&self, key: &K) -> Option<V> {
        let in_flight = self.in_flight.lock().expect("batch lock");
        let mut value = in_flight.get(key).cloned();
        if let Some(pending) = self.pending.get(key) {
            match &mut value {
                Some(v) => v.merge(pending.clone()),
                None => value = Some(pending.clone()),
            }
        }
        value
    }

    /// Calls `f` with every entry not yet written (pending and in flight;
    /// a key may come twice, once from each).
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        let in_flight = self.in_flight.lock().expect("batch lock");
        for (k, v) in in_flight.iter() {
            f(k, v);
        }
        for entry in &self.pending {
            f(entry.key(), entry.value());
        }
    }

    /// Pending keys (in-flight ones not counted).
    pub fn pending_keys(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// Values dropped since start because `max_keys` keys were pending.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes the selected entries in one transaction; returns how many
    /// keys were written. On failure they are merged back (to be written
    /// by a later flush) and the error returned.
    pub async fn flush(&self, select: Select) -> Result<usize, DbErr> {
        let _one_at_a_time = self.flushing.lock().await;
        let unreported = self.unreported.swap(0, Ordering::Relaxed);
        if unreported > 0 {
            tracing::warn!(
                writer = self.name,
                dropped = unreported,
                max_keys = self.max_keys,
                "batched values dropped: too many keys pending (is the database down?)"
            );
        }
        let batch = self.take(select);
        if batch.is_empty() {
            return Ok(0);
        }
        let mut guard = MergeBackOnDrop {
            writer: self,
            armed: true,
        };
        let written = self.write(&batch).await;
        // Cut before the commit (the transaction rolled back): merge back.
        // Past it, the outcome is reported and handled here.
        guard.armed = false;
        match written {
            Ok(()) => {
                self.in_flight.lock().expect("batch lock").clear();
                Ok(batch.len())
            }
            Err(e) => {
                self.merge_back();
                Err(e)
            }
        }
    }

    async fn write(&self, batch: &[(K, V)]) -> Result<(), DbErr> {
        let txn = crate::begin_write(&self.db).await?;
        self.upsert.upsert(&txn, batch).await?;
        #[cfg(any(test, feature = "test-hooks"))]
        self.paused().await?;
        txn.commit().await
    }

    /// Removes the selected entries from `pending` into `in_flight`.
    fn take(&self, select: Select) -> Vec<(K, V)> {
        let selected = |k: &K| match (select, self.period) {
            (Select::All, _) | (Select::Ended { .. }, None) => true,
            (Select::Ended { current }, Some(period)) => period(k) < current,
        };
        let mut batch = Vec::new();
        // Under the in-flight lock: a read sees an entry in one place or
        // the other, never in neither.
        let mut in_flight = self.in_flight.lock().expect("batch lock");
        self.pending.retain(|k, v| {
            if selected(k) {
                batch.push((k.clone(), v.clone()));
                false
            } else {
                true
            }
        });
        self.keys.fetch_sub(batch.len(), Ordering::Relaxed);
        in_flight.extend(batch.iter().cloned());
        batch
    }

    /// Puts the in-flight batch back into `pending` (never dropped).
    fn merge_back(&self) {
        let mut in_flight = self.in_flight.lock().expect("batch lock");
        for (k, v) in in_flight.drain() {
            match self.pending.entry(k) {
                Entry::Occupied(mut held) => held.get_mut().merge(v),
                Entry::Vacant(vacant) => {
                    vacant.insert(v);
                    self.keys.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Merges the batch back if a flush is dropped (its task aborted) before
/// its commit was reached: the transaction is rolled back then.
struct MergeBackOnDrop<'a, K, V, U>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Merge,
    U: Upsert<K, V>,
{
    writer: &'a BatchedWriter<K, V, U>,
    armed: bool,
}

impl<K, V, U> Drop for MergeBackOnDrop<'_, K, V, U>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Merge,
    U: Upsert<K, V>,
{
    fn drop(&mut self) {
        if self.armed {
            self.writer.merge_back();
        }
    }
}

/// A pause inside a flush, for tests that stop a server in the middle of
/// one. Compiled only for this crate's tests and with the `test-hooks`
/// feature, which production builds do not enable.
#[cfg(any(test, feature = "test-hooks"))]
pub mod hooks {
    use tokio::sync::oneshot;

    pub(super) struct Armed {
        pub(super) reached: oneshot::Sender<()>,
        pub(super) release: oneshot::Receiver<bool>,
    }

    /// The next flush stops after its upsert, before its commit, until
    /// [`Pause::release`] or [`Pause::fail`].
    #[derive(Debug)]
    pub struct Pause {
        pub(super) reached: Option<oneshot::Receiver<()>>,
        pub(super) release: Option<oneshot::Sender<bool>>,
    }

    impl Pause {
        /// Waits until a flush has written its batch (uncommitted) and
        /// stopped.
        pub async fn reached(&mut self) {
            if let Some(reached) = self.reached.take() {
                reached.await.expect("the writer is alive");
            }
        }

        /// Lets the flush commit.
        pub fn release(mut self) {
            if let Some(release) = self.release.take() {
                let _ = release.send(true);
            }
        }

        /// Makes the flush fail there (its transaction rolls back).
        pub fn fail(mut self) {
            if let Some(release) = self.release.take() {
                let _ = release.send(false);
            }
        }
    }

    impl Drop for Pause {
        fn drop(&mut self) {
            if let Some(release) = self.release.take() {
                let _ = release.send(true);
            }
        }
    }
}

#[cfg(any(test, feature = "test-hooks"))]
impl<K, V, U> BatchedWriter<K, V, U>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Merge,
    U: Upsert<K, V>,
{
    /// Arms a pause in the next flush that has something to write.
    pub fn pause_next_flush(&self) -> hooks::Pause {
        let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel();
        *self.pause.lock().expect("batch lock") = Some(hooks::Armed {
            reached: reached_tx,
            release: release_rx,
        });
        hooks::Pause {
            reached: Some(reached_rx),
            release: Some(release_tx),
        }
    }

    async fn paused(&self) -> Result<(), DbErr> {
        let armed = self.pause.lock().expect("batch lock").take();
        let Some(armed) = armed else {
            return Ok(());
        };
        let _ = armed.reached.send(());
        match armed.release.await {
            Ok(false) => Err(DbErr::Custom(format!(
                "{}: a failure injected by a test",
                self.name
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    use super::*;

    /// Adds counts to `t(k, n)`; fails (after writing) when told to.
    struct AddCounts {
        fail: Arc<AtomicBool>,
    }

    impl Upsert<i64, Sum> for AddCounts {
        async fn upsert(
            &self,
            txn: &DatabaseTransaction,
            batch: &[(i64, Sum)],
        ) -> Result<(), DbErr> {
            for (k, Sum(n)) in batch {
                txn.execute_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    format!(
                        "INSERT INTO t (k, n) VALUES ({k}, {n}) \
                         ON CONFLICT (k) DO UPDATE SET n = n + excluded.n"
                    ),
                ))
                .await?;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(DbErr::Custom("the database said no".into()));
            }
            Ok(())
        }
    }

    async fn database() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = crate::connect(&url, 2).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (k INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
            .await
            .unwrap();
        (dir, db)
    }

    async fn stored(db: &DatabaseConnection) -> HashMap<i64, i64> {
        db.query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT k, n FROM t",
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.try_get_by_index(0).unwrap(),
                r.try_get_by_index(1).unwrap(),
            )
        })
        .collect()
    }

    type Writer = BatchedWriter<i64, Sum, AddCounts>;

    fn writer(db: &DatabaseConnection, max_keys: usize) -> (Writer, Arc<AtomicBool>) {
        let fail = Arc::new(AtomicBool::new(false));
        let upsert = AddCounts { fail: fail.clone() };
        (
            BatchedWriter::new("test", db.clone(), upsert, max_keys)
                .with_periods(|k: &i64| k.div_euclid(100)),
            fail,
        )
    }

    #[test]
    fn values_merge_by_sum_and_max() {
        let mut s = Sum(2);
        s.merge(Sum(3));
        assert_eq!(s, Sum(5));
        let mut s = Sum(u64::MAX);
        s.merge(Sum(1));
        assert_eq!(s, Sum(u64::MAX), "saturates");
        let mut m = Max(5);
        m.merge(Max(3));
        assert_eq!(m, Max(5));
        m.merge(Max(9));
        assert_eq!(m, Max(9));
    }

    #[tokio::test]
    async fn records_merge_per_key_and_a_flush_writes_them_once() {
        let (_dir, db) = database().await;
        let (w, _) = writer(&db, 100);
        for _ in 0..5 {
            w.record(1, Sum(1));
        }
        w.record(2, Sum(7));
        assert_eq!(w.get(&1), Some(Sum(5)));
        assert_eq!(w.pending_keys(), 2);
        assert_eq!(w.flush(Select::All).await.unwrap(), 2);
        assert_eq!(w.pending_keys(), 0);
        assert_eq!(w.get(&1), None);
        w.record(1, Sum(1));
        w.flush(Select::All).await.unwrap();
        assert_eq!(w.flush(Select::All).await.unwrap(), 0, "nothing left");
        assert_eq!(stored(&db).await, HashMap::from([(1, 6), (2, 7)]));
    }

    #[tokio::test]
    async fn a_failed_write_is_rolled_back_and_merged_back() {
        let (_dir, db) = database().await;
        let (w, fail) = writer(&db, 100);
        w.record(1, Sum(3));
        w.record(2, Sum(4));
        fail.store(true, Ordering::SeqCst);
        let err = w.flush(Select::All).await.unwrap_err();
        assert!(err.to_string().contains("the database said no"), "{err}");
        assert!(stored(&db).await.is_empty(), "the transaction rolled back");
        // Recorded after the failure: merged with what came back.
        w.record(1, Sum(10));
        assert_eq!(w.get(&1), Some(Sum(13)));
        assert_eq!(w.get(&2), Some(Sum(4)));
        fail.store(false, Ordering::SeqCst);
        assert_eq!(w.flush(Select::All).await.unwrap(), 2);
        assert_eq!(stored(&db).await, HashMap::from([(1, 13), (2, 4)]));
    }

    #[tokio::test]
    async fn ended_only_leaves_the_current_period() {
        let (_dir, db) = database().await;
        let (w, _) = writer(&db, 100);
        // Periods of 100 keys: 1 and 99 in period 0, 150 in 1, 250 in 2.
        for k in [1, 99, 150, 250] {
            w.record(k, Sum(1));
        }
        assert_eq!(w.flush(Select::Ended { current: 2 }).await.unwrap(), 3);
        assert_eq!(stored(&db).await.len(), 3);
        assert_eq!(w.get(&250), Some(Sum(1)), "the current period stays");
        assert_eq!(w.flush(Select::Ended { current: 2 }).await.unwrap(), 0);
        assert_eq!(w.flush(Select::All).await.unwrap(), 1);
        assert_eq!(stored(&db).await.len(), 4);
    }

    #[tokio::test]
    async fn keys_beyond_the_cap_are_dropped_and_counted() {
        let (_dir, db) = database().await;
        let (w, _) = writer(&db, 3);
        for k in 0..10 {
            w.record(k, Sum(1));
        }
        w.record(0, Sum(1)); // a pending key still merges
        assert_eq!(w.pending_keys(), 3);
        assert_eq!(w.dropped(), 7);
        assert_eq!(w.get(&0), Some(Sum(2)));
        // A failed batch comes back whole even when new keys filled the
        // cap meanwhile: at most twice the cap.
        let mut pause = w.pause_next_flush();
        let (flushed, ()) = tokio::join!(w.flush(Select::All), async {
            pause.reached().await;
            for k in 20..30 {
                w.record(k, Sum(1));
            }
            pause.fail();
        });
        assert!(flushed.is_err());
        assert_eq!(w.pending_keys(), 6);
        assert_eq!(w.dropped(), 14);
        w.flush(Select::All).await.unwrap();
        assert_eq!(stored(&db).await.values().sum::<i64>(), 3 + 1 + 3);
    }

    #[tokio::test]
    async fn reads_see_a_batch_being_written_and_a_cut_flush_merges_back() {
        let (_dir, db) = database().await;
        let (w, _) = writer(&db, 100);
        let w = Arc::new(w);
        w.record(1, Sum(5));
        let mut pause = w.pause_next_flush();
        let flush = tokio::spawn({
            let w = w.clone();
            async move { w.flush(Select::All).await }
        });
        pause.reached().await;
        w.record(1, Sum(1));
        assert_eq!(w.get(&1), Some(Sum(6)), "in flight and pending");
        let mut seen = 0;
        w.for_each(|_, v| seen += v.0);
        assert_eq!(seen, 6);
        // The flush's task is aborted before its commit: nothing written,
        // nothing lost.
        flush.abort();
        assert!(flush.await.unwrap_err().is_cancelled());
        drop(pause);
        assert_eq!(w.get(&1), Some(Sum(6)));
        assert_eq!(w.pending_keys(), 1);
        w.flush(Select::All).await.unwrap();
        assert_eq!(stored(&db).await, HashMap::from([(1, 6)]));
    }

    #[tokio::test]
    async fn an_injected_failure_in_the_middle_merges_back() {
        let (_dir, db) = database().await;
        let (w, _) = writer(&db, 100);
        w.record(1, Sum(5));
        let mut pause = w.pause_next_flush();
        let (flushed, ()) = tokio::join!(w.flush(Select::All), async {
            pause.reached().await;
            pause.fail();
        });
        assert!(flushed.unwrap_err().to_string().contains("injected"));
        assert!(stored(&db).await.is_empty());
        w.flush(Select::All).await.unwrap();
        assert_eq!(stored(&db).await, HashMap::from([(1, 5)]));
    }
}
