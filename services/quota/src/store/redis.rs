//! Counts in Redis, shared by every replica.
//!
//! Every count changes inside `check.lua` — the rule of [`crate::window`]
//! over one hash of slice counts per subject — atomically, so N replicas
//! never admit more than the limit between them. Three things keep a
//! replica from paying a round trip per check without giving that up:
//!
//! - **Leases.** A replica checking a subject often asks Redis to count a
//!   few more units than the check needs (about what it used in the last
//!   slice, at most 1/8 of what is left) and admits later checks from that
//!   lease itself, *within the same slice only*. The units are counted in
//!   Redis before they are used, in the slice they are used in, so every
//!   window Redis computes holds them: the bound is unchanged. What is left
//!   of a lease when its slice ends is given back, so other replicas get
//!   it; a replica that dies holds at most its leases until they leave the
//!   window.
//! - **Batching.** Checks that arrive while a script call is in flight go
//!   together in the next one: one round trip for many checks, each still
//!   decided in order, atomically.
//! - **Remembered refusals.** A refusal is remembered for the same limit
//!   and cost until its retry time or the end of its slice, whichever comes
//!   first; until then counts in the window can only grow (give-backs come
//!   at slice ends), so a client hammering past its limit costs one round
//!   trip per slice.
//!
//! When Redis cannot be reached the check fails with [`Unreachable`] (the
//! service applies the configured policy). The connection is the
//! process's [`RedisHandle`], which re-opens it by itself (with backoff)
//! and names the keys under the configured prefix.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Mutex, mpsc, oneshot};
use twig_redis::{Key, RedisError, RedisHandle, RedisOptions, Script};

use super::Unreachable;
use crate::subject::Subject;
use crate::window::{Decision, Limit};

/// The script: the window rule over a hash per subject.
const SCRIPT: &str = include_str!("check.lua");
/// Entries in one script call at most.
const MAX_BATCH: usize = 256;
/// Batches in flight at once.
const WORKERS: usize = 2;
/// Entries waiting for a batch at most; more wait to enqueue.
const QUEUE: usize = 16_384;

/// Counts in Redis; cheap to share.
pub struct RedisStore {
    queue: mpsc::Sender<Entry>,
    redis: RedisHandle,
    timeout: Duration,
    refusals: DashMap<Subject, Refusal>,
    /// None: every check goes to Redis.
    leases: Option<DashMap<Subject, Lease>>,
}

/// One entry of a batch.
enum Entry {
    Check {
        key: Key,
        limit: Limit,
        now_ms: u64,
        cost: u64,
        /// Units to lease beyond the cost, if they fit.
        want: u64,
        reply: oneshot::Sender<Result<Answer, Unreachable>>,
    },
    GiveBack {
        key: Key,
        limit: Limit,
        slice: u64,
        units: u64,
    },
}

struct Answer {
    decision: Decision,
    leased: u64,
}

/// A refusal remembered for the pre-check.
#[derive(Clone, Copy)]
struct Refusal {
    limit: Limit,
    cost: u64,
    at_ms: u64,
    until_ms: u64,
    decision: Decision,
}

/// Units this replica may admit itself for one subject within one slice.
#[derive(Clone, Copy)]
struct Lease {
    limit: Limit,
    /// The slice the units were counted in; usable only during it.
    slice: u64,
    /// Units still usable.
    left: u64,
    /// Cost this replica admitted for the subject during `slice`.
    used: u64,
    /// What the limit had left beyond this lease when it was granted.
    elsewhere: u64,
}

impl Lease {
    fn empty(limit: Limit, slice: u64) -> Self {
        Self {
            limit,
            slice,
            left: 0,
            used: 0,
            elsewhere: 0,
        }
    }
}

fn key(redis: &RedisHandle, limit: &Limit, subject: &Subject) -> Key {
    redis.key(&format!("quota:{}:{}", limit.slice_ms(), subject.as_str()))
}

fn unreachable(e: &RedisError) -> Unreachable {
    Unreachable(e.detail())
}

impl RedisStore {
    /// Connects to Redis at `url` with a handle of its own; keys are named
    /// `<prefix>quota:…`. Each Redis call gets `timeout`. Fails when Redis
    /// cannot be reached now. (A process shares one handle: see
    /// [`RedisStore::on`].)
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, Unreachable> {
        let options = RedisOptions {
            command_timeout: timeout,
            connect_timeout: timeout,
        };
        let redis = RedisHandle::connect(url, prefix, options)
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(Self::on(redis))
    }

    /// Counts through `redis` (keys `<prefix>quota:…`); each Redis call
    /// gets the handle's timeout.
    pub fn on(redis: RedisHandle) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let script = Arc::new(Script::new(SCRIPT));
        for _ in 0..WORKERS {
            tokio::spawn(run_batches(redis.clone(), script.clone(), rx.clone()));
        }
        metrics::gauge!("twig_quota_store_up").set(1.0);
        Self {
            queue: tx,
            timeout: redis.timeout(),
            redis,
            refusals: DashMap::new(),
            leases: Some(DashMap::new()),
        }
    }

    /// Sends every check to Redis (no leases): each answer is then exactly
    /// the in-memory rule's, `remaining` included.
    pub fn without_leases(mut self) -> Self {
        self.leases = None;
        self
    }

    pub(crate) async fn check(
        &self,
        subject: &Subject,
        limit: &Limit,
        now_ms: u64,
        cost: u64,
    ) -> Result<Decision, Unreachable> {
        // The lease first: its units are counted in Redis already, and a
        // refusal remembered by a concurrent check (answered after this
        // replica's lease was granted) must not strand them.
        let current = now_ms / limit.slice_ms();
        let want = match self.admit_from_lease(subject, limit, now_ms, current, cost) {
            Ok(decision) => return Ok(decision),
            Err(want) => want,
        };
        if let Some(decision) = self.remembered_refusal(subject, limit, now_ms, cost) {
            metrics::counter!("twig_quota_precheck_refusals_total").increment(1);
            return Ok(decision);
        }
        let (reply, answer) = oneshot::channel();
        let entry = Entry::Check {
            key: key(&self.redis, limit, subject),
            limit: *limit,
            now_ms,
            cost,
            want,
            reply,
        };
        let asked = async {
            self.queue
                .send(entry)
                .await
                .map_err(|_| Unreachable("the Redis workers have stopped".into()))?;
            answer
                .await
                .map_err(|_| Unreachable("the Redis workers have stopped".into()))?
        };
        let Answer { decision, leased } = tokio::time::timeout(self.timeout * 2, asked)
            .await
            .map_err(|_| Unreachable(format!("no answer within {:?}", self.timeout * 2)))??;
        if decision.allowed {
            if !self.refusals.is_empty() {
                self.refusals.remove(subject);
            }
            self.add_lease(subject, limit, current, cost, leased, &decision);
        } else if let Some(wait) = decision.retry_after.filter(|w| !w.is_zero()) {
            // Until the retry time, but not past this slice: leases given
            // back when it ends may make room sooner.
            let retry_at = now_ms + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            let slice_end = (current + 1) * limit.slice_ms();
            self.refusals.insert(
                subject.clone(),
                Refusal {
                    limit: *limit,
                    cost,
                    at_ms: now_ms,
                    until_ms: retry_at.min(slice_end),
                    decision,
                },
            );
        }
        Ok(decision)
    }

    /// Admits `cost` from this slice's lease, or says how many units to
    /// lease with the Redis check.
    fn admit_from_lease(
        &self,
        subject: &Subject,
        limit: &Limit,
        now_ms: u64,
        current: u64,
        cost: u64,
    ) -> Result<Decision, u64> {
        let Some(leases) = &self.leases else {
            return Err(0);
        };
        let Some(mut lease) = leases.get_mut(subject) else {
            return Err(0);
        };
        if lease.limit == *limit && lease.slice == current {
            if lease.left >= cost {
                lease.left -= cost;
                lease.used += cost;
                let idle_at = (current + 1) * limit.slice_ms() + limit.period_ms();
                return Ok(Decision {
                    allowed: true,
                    limit: limit.limit(),
                    period: limit.period(),
                    remaining: lease.elsewhere + lease.left,
                    reset_after: Duration::from_millis(idle_at.saturating_sub(now_ms)),
                    retry_after: Some(Duration::ZERO),
                });
            }
            // Running out within the slice: about as much again.
            return Err(lease.used.max(cost));
        }
        // A new slice: what is left of the old lease goes back, and the
        // last slice's use sizes the next one.
        let want = if lease.limit == *limit && lease.slice + 1 == current {
            lease.used
        } else {
            0
        };
        self.give_back(subject, &lease);
        *lease = Lease::empty(*limit, current);
        Err(want)
    }

    fn add_lease(
        &self,
        subject: &Subject,
        limit: &Limit,
        current: u64,
        cost: u64,
        leased: u64,
        decision: &Decision,
    ) {
        let Some(leases) = &self.leases else {
            return;
        };
        let mut lease = leases
            .entry(subject.clone())
            .or_insert_with(|| Lease::empty(*limit, current));
        if lease.limit != *limit || lease.slice != current {
            self.give_back(subject, &lease);
            *lease = Lease::empty(*limit, current);
        }
        lease.left += leased;
        lease.used += cost;
        lease.elsewhere = decision.remaining.saturating_sub(leased);
    }

    /// Returns what is left of `lease` to Redis, without waiting. If the
    /// queue is full the units stay counted until their slice leaves the
    /// window: fewer admitted, never more.
    fn give_back(&self, subject: &Subject, lease: &Lease) {
        if lease.left == 0 {
            return;
        }
        let _ = self.queue.try_send(Entry::GiveBack {
            key: key(&self.redis, &lease.limit, subject),
            limit: lease.limit,
            slice: lease.slice,
            units: lease.left,
        });
    }

    fn remembered_refusal(
        &self,
        subject: &Subject,
        limit: &Limit,
        now_ms: u64,
        cost: u64,
    ) -> Option<Decision> {
        if self.refusals.is_empty() {
            return None;
        }
        let r = *self.refusals.get(subject)?;
        if r.limit != *limit || r.cost != cost || now_ms >= r.until_ms || now_ms < r.at_ms {
            return None;
        }
        let elapsed = Duration::from_millis(now_ms - r.at_ms);
        let mut d = r.decision;
        d.reset_after = d.reset_after.saturating_sub(elapsed);
        d.retry_after = d.retry_after.map(|w| w.saturating_sub(elapsed));
        Some(d)
    }

    /// Units leased to this replica and not used yet.
    pub fn leased_units(&self) -> u64 {
        self.leases
            .as_ref()
            .map_or(0, |l| l.iter().map(|e| e.left).sum())
    }

    /// Forgets expired refusals; gives back leases whose slice has ended
    /// and forgets those no longer needed for sizing.
    pub(crate) fn sweep(&self, now_ms: u64) {
        self.refusals.retain(|_, r| now_ms < r.until_ms);
        if let Some(leases) = &self.leases {
            leases.retain(|subject, lease| {
                let current = now_ms / lease.limit.slice_ms();
                if lease.slice < current {
                    self.give_back(subject, lease);
                    lease.left = 0;
                }
                lease.slice + 1 >= current
            });
        }
    }
}

/// One worker: takes whatever is waiting, sends it as one script call,
/// answers each check.
async fn run_batches(
    redis: RedisHandle,
    script: Arc<Script>,
    queue: Arc<Mutex<mpsc::Receiver<Entry>>>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(entry) => batch.push(entry),
                    Err(_) => break,
                }
            }
            batch
        };
        metrics::histogram!("twig_quota_redis_batch_size").record(batch.len() as f64);
        match run_batch(&redis, &script, &batch).await {
            Ok(values) => {
                metrics::gauge!("twig_quota_store_up").set(1.0);
                for (entry, v) in batch.into_iter().zip(values.chunks_exact(5)) {
                    if let Entry::Check { limit, reply, .. } = entry {
                        let _ = reply.send(Ok(answer(&limit, v)));
                    }
                }
            }
            Err(e) => {
                metrics::gauge!("twig_quota_store_up").set(0.0);
                metrics::counter!("twig_quota_store_errors_total").increment(1);
                for entry in batch {
                    if let Entry::Check { reply, .. } = entry {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

async fn run_batch(
    redis: &RedisHandle,
    script: &Script,
    batch: &[Entry],
) -> Result<Vec<i64>, Unreachable> {
    let now = batch
        .iter()
        .map(|e| match e {
            Entry::Check { now_ms, .. } => *now_ms,
            Entry::GiveBack { .. } => 0,
        })
        .max()
        .unwrap_or(0);
    let mut call = script.call();
    call.arg(now);
    for entry in batch {
        let (op, key, limit, amount, extra) = match entry {
            Entry::Check {
                key,
                limit,
                cost,
                want,
                ..
            } => ("c", key, limit, *cost, *want),
            Entry::GiveBack {
                key,
                limit,
                slice,
                units,
            } => ("g", key, limit, *units, *slice),
        };
        call.key(key)
            .arg(op)
            .arg(limit.slice_ms())
            .arg(limit.period_ms())
            .arg(limit.limit())
            .arg(amount)
            .arg(extra);
    }
    let values: Vec<i64> = redis.invoke(&call).await.map_err(|e| unreachable(&e))?;
    if values.len() != batch.len() * 5 {
        return Err(Unreachable(format!(
            "the script answered {} values for {} entries",
            values.len(),
            batch.len()
        )));
    }
    Ok(values)
}

fn answer(limit: &Limit, v: &[i64]) -> Answer {
    let millis = |x: i64| Duration::from_millis(u64::try_from(x).unwrap_or(0));
    let allowed = v[0] == 1;
    let used = u64::try_from(v[1]).unwrap_or(0);
    Answer {
        decision: Decision {
            allowed,
            limit: limit.limit(),
            period: limit.period(),
            remaining: limit.limit().saturating_sub(used),
            reset_after: millis(v[2]),
            retry_after: if allowed {
                Some(Duration::ZERO)
            } else if v[3] < 0 {
                None
            } else {
                Some(millis(v[3]))
            },
        },
        leased: u64::try_from(v[4]).unwrap_or(0),
    }
}
