//! The threads that hash passwords.
//!
//! Password hashing is slow on purpose, and a burst of logins must not
//! slow down everything else on the machine (token verification above
//! all). Hashes therefore run on a fixed set of threads — as many as the
//! concurrency bound — at the lowest CPU priority: when the CPU is free
//! they use all of it, and when requests need it, requests come first.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of low-priority threads. Threads end when the last clone
/// is dropped.
#[derive(Clone)]
pub(crate) struct HashPool {
    jobs: mpsc::Sender<Job>,
    threads: usize,
}

impl HashPool {
    /// Starts `threads` workers.
    pub(crate) fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("twig-hash-{i}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // every sender dropped
                        }
                    }
                })
                .expect("start a password hashing thread");
        }
        Self { jobs, threads }
    }

    /// How many hashes run at once at most.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work` on the pool and waits for its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }
}

/// Gives the calling thread the lowest scheduling priority (nice 19). On
/// Linux, nice applies to the thread, not the whole process.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_this_threads_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of
    // ours; `who = 0` means the calling thread on Linux.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if result != 0 {
        // Not fatal: hashing still works at normal priority.
        eprintln!("twig: could not lower the priority of a password hashing thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_returns_results() {
        let pool = HashPool::new(2);
        let results = futures_lite(pool.clone()).await;
        assert_eq!(results, (0..8).map(|i| i * i).collect::<Vec<_>>());
    }

    async fn futures_lite(pool: HashPool) -> Vec<u64> {
        let mut handles = Vec::new();
        for i in 0..8u64 {
            let pool = pool.clone();
            handles.push(tokio::spawn(async move {
                pool.run(move || i * i).await.unwrap()
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn worker_threads_run_at_nice_19() {
        let pool = HashPool::new(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        #[allow(unsafe_code)]
        // SAFETY: getpriority reads the calling thread's nice value only.
        let nice = rt.block_on(pool.run(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }));
        assert_eq!(nice, Some(19));
    }
}
