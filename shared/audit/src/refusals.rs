//! Refused verifications, counted per source and period before they reach
//! the audit log.
//!
//! A flood of forged keys must not become a flood of audit rows: the audit
//! log is append-only, so every row is permanent. Refusals are therefore
//! counted in memory, per period (`api_keys.refusal_audit_period`) and per
//! source (a client address for unknown keys; a key and address for
//! refusals of a real key), and written as one row per source and period
//! with the count and a few sample prefixes.
//!
//! Memory is bounded too: each period tracks at most `max_sources`
//! sources; refusals from any further source are counted under that
//! source's [`Source::overflow`] (one bucket for all unknown-key clients,
//! one per key for refusals of a real key), so the audit rows per period
//! are bounded by the cap plus the overflow buckets, whatever the number
//! of requests or addresses. While summaries cannot be written, at most
//! [`MAX_PENDING_PERIODS`] periods are kept: the oldest one's counts join
//! the next, so nothing is lost and memory stays bounded.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The most sample prefixes one summary keeps.
pub const MAX_SAMPLES: usize = 4;

/// The most periods kept unwritten.
pub const MAX_PENDING_PERIODS: usize = 10;

/// Who a refusal is counted under.
pub trait Source: Clone + Eq + Hash {
    /// The bucket this source's refusals go to once the period already
    /// tracks as many sources as allowed.
    fn overflow(&self) -> Self;
}

/// One source's refusals within one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<S> {
    /// When the period began.
    pub period_start: DateTime<Utc>,
    /// Who was refused.
    pub source: S,
    /// How many times.
    pub count: u64,
    /// The first few distinct prefixes presented (at most [`MAX_SAMPLES`]).
    pub samples: Vec<String>,
}

#[derive(Debug, Default)]
struct Tally {
    count: u64,
    samples: Vec<String>,
}

impl Tally {
    fn add(&mut self, count: u64, sample: &str) {
        self.count = self.count.saturating_add(count);
        if !sample.is_empty()
            && self.samples.len() < MAX_SAMPLES
            && !self.samples.iter().any(|s| s == sample)
        {
            self.samples.push(sample.to_string());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.add(other.count, "");
        for sample in &other.samples {
            self.add(0, sample);
        }
    }
}

/// Counts `tally` under `source` in one period's `sources`, or under its
/// overflow bucket once `max_sources` other sources are tracked.
fn count_in<S: Source>(
    sources: &mut HashMap<S, Tally>,
    max_sources: usize,
    source: S,
    tally: Tally,
) {
    let tracked = sources.len() < max_sources || sources.contains_key(&source);
    let source = if tracked { source } else { source.overflow() };
    sources.entry(source).or_default().merge(tally);
}

/// Keeps at most [`MAX_PENDING_PERIODS`] periods: the oldest one's counts
/// join the next period's.
fn keep_bounded<S: Source>(periods: &mut BTreeMap<i64, HashMap<S, Tally>>, max_sources: usize) {
    while periods.len() > MAX_PENDING_PERIODS {
        let Some((_, oldest)) = periods.pop_first() else {
            return;
        };
        let Some(next) = periods.values_mut().next() else {
            return;
        };
        for (source, tally) in oldest {
            count_in(next, max_sources, source, tally);
        }
    }
}

/// Refusals counted per period and source, not yet written.
#[derive(Debug)]
pub struct Refusals<S: Source> {
    period_secs: i64,
    max_sources: usize,
    periods: Mutex<BTreeMap<i64, HashMap<S, Tally>>>,
}

impl<S: Source> Refusals<S> {
    /// Counts per `period` (at least one second), tracking at most
    /// `max_sources` sources (at least one) besides the overflow buckets.
    pub fn new(period: Duration, max_sources: usize) -> Self {
        Self {
            period_secs: i64::try_from(period.as_secs()).unwrap_or(i64::MAX).max(1),
            max_sources: max_sources.max(1),
            periods: Mutex::new(BTreeMap::new()),
        }
    }

    fn period_of(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(self.period_secs)
    }

    /// Counts one refusal of `source` at `at`; `sample` is the public
    /// prefix of what was presented (kept if the summary has room).
    pub fn record(&self, at: DateTime<Utc>, source: S, sample: &str) {
        let period = self.period_of(at);
        let mut tally = Tally::default();
        tally.add(1, sample);
        let mut periods = self.periods.lock().expect("refusals lock");
        count_in(
            periods.entry(period).or_default(),
            self.max_sources,
            source,
            tally,
        );
        keep_bounded(&mut periods, self.max_sources);
    }

    /// Takes the summaries of the periods that ended before `now`.
    pub fn take_ended(&self, now: DateTime<Utc>) -> Vec<Summary<S>> {
        let current = self.period_of(now);
        let mut periods = self.periods.lock().expect("refusals lock");
        let later = periods.split_off(&current);
        let ended = std::mem::replace(&mut *periods, later);
        drop(periods);
        self.summaries(ended)
    }

    /// Takes every summary, the current period's too.
    pub fn take_all(&self) -> Vec<Summary<S>> {
        let all = std::mem::take(&mut *self.periods.lock().expect("refusals lock"));
        self.summaries(all)
    }

    /// Puts back summaries that could not be written, to try again.
    pub fn restore(&self, summaries: Vec<Summary<S>>) {
        let mut periods = self.periods.lock().expect("refusals lock");
        for s in summaries {
            let period = self.period_of(s.period_start);
            let tally = Tally {
                count: s.count,
                samples: s.samples,
            };
            count_in(
                periods.entry(period).or_default(),
                self.max_sources,
                s.source,
                tally,
            );
        }
        keep_bounded(&mut periods, self.max_sources);
    }

    /// How many sources are tracked, over all pending periods.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        let periods = self.periods.lock().expect("refusals lock");
        periods.values().map(HashMap::len).sum()
    }

    /// The length of a period.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.period_secs).unwrap_or(1))
    }

    fn summaries(&self, periods: BTreeMap<i64, HashMap<S, Tally>>) -> Vec<Summary<S>> {
        let mut out = Vec::new();
        for (period, sources) in periods {
            let period_start = DateTime::from_timestamp(period.saturating_mul(self.period_secs), 0)
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            for (source, tally) in sources {
                out.push(Summary {
                    period_start,
                    source,
                    count: tally.count,
                    samples: tally.samples,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twig_clock::{Clock, ManualClock};

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    enum Client {
        Address(u32),
        Others,
    }

    impl Source for Client {
        fn overflow(&self) -> Self {
            Client::Others
        }
    }

    fn by_source(summaries: &[Summary<Client>]) -> HashMap<Client, (u64, Vec<String>)> {
        summaries
            .iter()
            .map(|s| (s.source.clone(), (s.count, s.samples.clone())))
            .collect()
    }

    #[test]
    fn counts_per_source_with_a_few_distinct_samples() {
        let clock = ManualClock::default();
        let refusals = Refusals::new(Duration::from_secs(60), 10);
        for i in 0..100 {
            refusals.record(
                clock.now(),
                Client::Address(1),
                &format!("twig_sk_{}", i % 7),
            );
        }
        refusals.record(clock.now(), Client::Address(2), "");
        let all = refusals.take_all();
        let by = by_source(&all);
        assert_eq!(by.len(), 2);
        let (count, samples) = &by[&Client::Address(1)];
        assert_eq!(*count, 100);
        assert_eq!(
            samples,
            &["twig_sk_0", "twig_sk_1", "twig_sk_2", "twig_sk_3"]
        );
        assert_eq!(
            by[&Client::Address(2)],
            (1, vec![]),
            "empty samples are not kept"
        );
        assert_eq!(refusals.tracked(), 0, "taken");
        assert!(refusals.take_all().is_empty());
    }

    #[test]
    fn sources_beyond_the_cap_fold_into_the_overflow_bucket() {
        let clock = ManualClock::default();
        let refusals = Refusals::new(Duration::from_secs(60), 3);
        for address in 0..1000 {
            refusals.record(clock.now(), Client::Address(address), "twig_sk_x");
            refusals.record(clock.now(), Client::Address(address), "twig_sk_y");
        }
        // A tracked source keeps its own bucket after the cap is reached.
        refusals.record(clock.now(), Client::Address(0), "twig_sk_z");
        assert_eq!(refusals.tracked(), 4, "three sources and the overflow");
        let by = by_source(&refusals.take_all());
        assert_eq!(by.len(), 4);
        assert_eq!(by[&Client::Address(0)].0, 3);
        assert_eq!(by[&Client::Address(1)].0, 2);
        assert_eq!(by[&Client::Address(2)].0, 2);
        assert_eq!(by[&Client::Others].0, 997 * 2);
        assert_eq!(by[&Client::Others].1, ["twig_sk_x", "twig_sk_y"]);
        let total: u64 = by.values().map(|(c, _)| c).sum();
        assert_eq!(total, 2001, "nothing is lost");
    }

    #[test]
    fn periods_roll_over_and_only_ended_ones_are_taken() {
        let clock = ManualClock::default();
        let refusals = Refusals::new(Duration::from_secs(60), 2);
        let first = clock.now();
        refusals.record(first, Client::Address(1), "a");
        refusals.record(first, Client::Address(2), "b");
        refusals.record(first, Client::Address(3), "c");
        clock.advance(Duration::from_secs(60));
        let second = clock.now();
        // The cap is per period: a new period tracks new sources again.
        refusals.record(second, Client::Address(3), "c");
        refusals.record(second, Client::Address(4), "d");
        assert!(
            refusals.take_ended(first).is_empty(),
            "the first period has not ended at its own time"
        );
        let ended = refusals.take_ended(second);
        let by = by_source(&ended);
        assert_eq!(by.len(), 3);
        assert_eq!(by[&Client::Others], (1, vec!["c".to_string()]));
        let start = first.timestamp().div_euclid(60) * 60;
        assert!(ended.iter().all(|s| s.period_start.timestamp() == start));
        assert_eq!(refusals.tracked(), 2, "the current period stays");
        clock.advance(Duration::from_secs(60));
        let later = refusals.take_ended(clock.now());
        let by = by_source(&later);
        assert_eq!(by.len(), 2);
        assert_eq!(by[&Client::Address(3)].0, 1);
        assert_eq!(by[&Client::Address(4)].0, 1);
        assert!(
            later
                .iter()
                .all(|s| s.period_start.timestamp() == start + 60)
        );
        assert_eq!(refusals.tracked(), 0);
    }

    #[test]
    fn unwritten_periods_are_bounded_and_lose_no_count() {
        let clock = ManualClock::default();
        let refusals = Refusals::new(Duration::from_secs(60), 5);
        let periods = MAX_PENDING_PERIODS as u32 + 5;
        for _ in 0..periods {
            for address in 0..20 {
                refusals.record(clock.now(), Client::Address(address), "p");
            }
            clock.advance(Duration::from_secs(60));
        }
        // Nothing was written (say the database is down): still bounded.
        assert!(refusals.tracked() <= MAX_PENDING_PERIODS * 6);
        let taken = refusals.take_all();
        let starts: std::collections::HashSet<_> = taken.iter().map(|s| s.period_start).collect();
        assert_eq!(starts.len(), MAX_PENDING_PERIODS);
        assert_eq!(
            taken.iter().map(|s| s.count).sum::<u64>(),
            u64::from(periods) * 20
        );
        // Failed writes put back are bounded the same way.
        refusals.restore(taken.clone());
        refusals.restore(taken);
        assert!(refusals.tracked() <= MAX_PENDING_PERIODS * 6);
        assert_eq!(
            refusals.take_all().iter().map(|s| s.count).sum::<u64>(),
            u64::from(periods) * 40
        );
    }

    #[test]
    fn restored_summaries_merge_with_new_refusals() {
        let clock = ManualClock::default();
        let refusals = Refusals::new(Duration::from_secs(60), 10);
        refusals.record(clock.now(), Client::Address(1), "a");
        let taken = refusals.take_all();
        refusals.record(clock.now(), Client::Address(1), "b");
        refusals.restore(taken);
        let by = by_source(&refusals.take_all());
        assert_eq!(by.len(), 1);
        let (count, mut samples) = by[&Client::Address(1)].clone();
        samples.sort();
        assert_eq!((count, samples), (2, vec!["a".into(), "b".into()]));
    }
}
