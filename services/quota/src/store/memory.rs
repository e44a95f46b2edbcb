//! Counts in this process: one replica.

use dashmap::DashMap;

use crate::subject::Subject;
use crate::window::{Decision, Limit, Window};

/// One [`Window`] per subject, in memory.
#[derive(Default)]
pub struct MemoryStore {
    windows: DashMap<Subject, Window>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn check(
        &self,
        subject: &Subject,
        limit: &Limit,
        now_ms: u64,
        cost: u64,
    ) -> Decision {
        if let Some(mut w) = self.windows.get_mut(subject) {
            return w.check(limit, now_ms, cost);
        }
        self.windows
            .entry(subject.clone())
            .or_default()
            .check(limit, now_ms, cost)
    }

    pub(crate) fn sweep(&self, now_ms: u64) {
        self.windows.retain(|_, w| !w.is_idle(now_ms));
    }

    /// Subjects with counts still held.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}
