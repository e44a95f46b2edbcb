//! The services' background work, stopped cleanly.
//!
//! Two kinds of worker:
//! - a **listener** ([`Workers::listen`]) reacts to events (announcements
//!   of revoked credentials, changed limits) and writes nothing of its own
//!   that a cut could leave half done; at shutdown it is dropped at its
//!   next await;
//! - a **periodic writer** ([`Workers::periodic`]) moves what the service
//!   gathered in memory (usage counts, last-seen times) to the database
//!   every period, and once more at shutdown ([`Run::Last`]). A run is
//!   never cut: shutdown waits for the run in progress, then asks for the
//!   last one, so every count is written exactly once.
//!
//! [`Workers::stop`] signals every worker and waits for them up to a
//! deadline; one still running then is aborted and named in a warning.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Which run of a periodic writer this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// A regular run, every period.
    Tick,
    /// The last run, at shutdown: write everything still held.
    Last,
}

/// The background workers of one process.
#[derive(Debug, Default)]
pub struct Workers {
    stopping: CancellationToken,
    tasks: JoinSet<&'static str>,
}

impl Workers {
    /// No workers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `listener` until shutdown. Only for work a cut at any await
    /// cannot leave half done.
    pub fn listen(
        &mut self,
        name: &'static str,
        listener: impl Future<Output = ()> + Send + 'static,
    ) {
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = listener => {}
                () = stopping.cancelled() => {}
            }
            name
        });
    }

    /// Runs `work(Run::Tick)` every `period` (the first after one period)
    /// and `work(Run::Last)` once at shutdown; no run is cut.
    pub fn periodic<F, Fut>(&mut self, name: &'static str, period: Duration, mut work: F)
    where
        F: FnMut(Run) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stopping.cancelled() => break,
                }
                // Outside the select: shutdown waits for this run.
                work(Run::Tick).await;
            }
            work(Run::Last).await;
            name
        });
    }

    /// Signals every worker to stop and waits up to `deadline` for them
    /// (periodic writers finish their run and make their last one); any
    /// still running then is aborted, with a warning naming it.
    pub async fn stop(mut self, deadline: Duration) {
        self.stopping.cancel();
        let joined = tokio::time::timeout(deadline, async {
            while let Some(joined) = self.tasks.join_next().await {
                if let Err(error) = joined {
                    tracing::warn!(%error, "a background worker failed");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                ?deadline,
                workers = self.tasks.len(),
                "background workers still running at the deadline; aborting them \
                 (what they held in memory is not written)"
            );
            self.tasks.abort_all();
            while let Some(joined) = self.tasks.join_next().await {
                if let Ok(name) = joined {
                    tracing::warn!(worker = name, "finished while being aborted");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::sync::Notify;

    use super::*;

    /// A writer that takes what was gathered, then (after an await, where
    /// an abort would cut it) adds it to what was written.
    #[derive(Default)]
    struct Store {
        gathered: AtomicU64,
        written: AtomicU64,
        lasts: AtomicU64,
    }

    impl Store {
        async fn flush(&self, run: Run, in_write: &Notify, slow: Duration) {
            let taken = self.gathered.swap(0, Ordering::SeqCst);
            in_write.notify_one();
            tokio::time::sleep(slow).await;
            self.written.fetch_add(taken, Ordering::SeqCst);
            if run == Run::Last {
                self.lasts.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[tokio::test]
    async fn a_stop_in_the_middle_of_a_write_loses_and_repeats_nothing() {
        let store = Arc::new(Store::default());
        let in_write = Arc::new(Notify::new());
        let mut workers = Workers::new();
        let (s, w) = (store.clone(), in_write.clone());
        workers.periodic("flush", Duration::from_millis(20), move |run| {
            let (s, w) = (s.clone(), w.clone());
            async move { s.flush(run, &w, Duration::from_millis(200)).await }
        });
        store.gathered.fetch_add(100, Ordering::SeqCst);
        // Stop while the first run is between taking and writing.
        in_write.notified().await;
        store.gathered.fetch_add(7, Ordering::SeqCst);
        workers.stop(Duration::from_secs(5)).await;
        assert_eq!(store.written.load(Ordering::SeqCst), 107);
        assert_eq!(store.gathered.load(Ordering::SeqCst), 0);
        assert_eq!(store.lasts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn listeners_end_at_stop_and_a_stuck_worker_is_aborted_at_the_deadline() {
        let mut workers = Workers::new();
        workers.listen("listener", std::future::pending());
        let started = std::time::Instant::now();
        workers.stop(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));

        let mut workers = Workers::new();
        let finished = Arc::new(AtomicU64::new(0));
        let f = finished.clone();
        workers.periodic("stuck", Duration::from_secs(3600), move |_| {
            let f = f.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                f.fetch_add(1, Ordering::SeqCst);
            }
        });
        let started = std::time::Instant::now();
        workers.stop(Duration::from_millis(100)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }
}
