//! How long a cached answer may be believed, given what the fan-out can
//! tell us.
//!
//! Caches of verification answers (API keys, sessions, the edge's kept
//! answers) may keep an answer for longer than a second only because a
//! change on any replica is announced on the fan-out and drops it. While
//! the subscription is down, announcements are lost, so an answer is
//! believed for at most [`OUTAGE_BOUND`] from when it was stored: the
//! same bound a single replica without Redis has. An answer stored before
//! the subscription last came back is held to that bound too, until the
//! reconnect's [`crate::Event::Resync`] clears it.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest an answer is believed while announcements may be missed.
pub const OUTAGE_BOUND: Duration = Duration::from_secs(1);

/// "Not live" in [`Freshness::live_since`].
const DOWN: u64 = u64::MAX;

/// Whether announcements are arriving, shared by the fan-out and the
/// caches that rely on it. Cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// Nanoseconds after [`base`] since which the subscription has been
    /// up, or [`DOWN`].
    live_since: Arc<AtomicU64>,
}

/// The process's reference instant for [`Freshness::live_since`].
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn nanos_since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_nanos()).unwrap_or(DOWN - 1)
}

impl Freshness {
    /// Announcements always arrive (in-process delivery, one replica).
    pub fn always() -> Self {
        Self {
            live_since: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Not live until [`Freshness::set_live`] is called.
    pub(crate) fn down() -> Self {
        let _ = base();
        Self {
            live_since: Arc::new(AtomicU64::new(DOWN)),
        }
    }

    /// The subscription is up from now on.
    pub(crate) fn set_live(&self) {
        self.live_since
            .store(nanos_since_base(Instant::now()), Ordering::Release);
        metrics::gauge!("twig_fanout_connected").set(1.0);
    }

    /// The subscription is down: announcements may be missed from now on.
    pub(crate) fn set_down(&self) {
        self.live_since.store(DOWN, Ordering::Release);
        metrics::gauge!("twig_fanout_connected").set(0.0);
    }

    /// True while the subscription is up.
    pub fn is_live(&self) -> bool {
        self.live_since.load(Ordering::Acquire) != DOWN
    }

    /// May an answer stored at `stored`, whose own lifetime has not run
    /// out, still be believed? Always within [`OUTAGE_BOUND`]; beyond it
    /// only if the subscription has been up since before it was stored.
    /// `cache` names the cache in the metric of answers dropped early.
    pub fn believes(&self, stored: Instant, cache: &'static str) -> bool {
        if stored.elapsed() < OUTAGE_BOUND {
            return true;
        }
        let since = self.live_since.load(Ordering::Acquire);
        let believed = since != DOWN && nanos_since_base(stored) >= since;
        if !believed {
            metrics::counter!("twig_cache_outage_dropped_total", "cache" => cache).increment(1);
        }
        believed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_ago() -> Instant {
        Instant::now() - Duration::from_secs(5)
    }

    #[test]
    fn always_believes_within_the_lifetime() {
        let f = Freshness::always();
        assert!(f.is_live());
        assert!(f.believes(long_ago(), "test"));
    }

    #[test]
    fn down_holds_old_answers_to_the_outage_bound() {
        let f = Freshness::down();
        assert!(!f.is_live());
        assert!(f.believes(Instant::now(), "test"), "a fresh answer");
        assert!(!f.believes(long_ago(), "test"), "an old answer");
    }

    #[test]
    fn answers_from_before_a_reconnect_stay_bounded() {
        let f = Freshness::down();
        let before = long_ago();
        f.set_live();
        assert!(
            !f.believes(before, "test"),
            "stored before the reconnect: announcements may have been missed"
        );
        // Stored after the reconnect (simulated: live since five seconds
        // ago, stored three seconds ago).
        f.live_since.store(
            nanos_since_base(Instant::now() - Duration::from_secs(5)),
            Ordering::Release,
        );
        assert!(f.believes(Instant::now() - Duration::from_secs(3), "test"));
        f.set_down();
        assert!(!f.believes(Instant::now() - Duration::from_secs(3), "test"));
    }
}
