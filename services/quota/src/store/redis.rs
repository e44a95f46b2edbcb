//! Counts in Redis, shared by every replica.
//!
//! Every check runs `check.lua` — the rule of [`crate::window`] — on the
//! subject's hash of slice counts. The script is atomic, so N replicas
//! never admit more than the limit between them. Two things keep it fast
//! without giving that up:
//!
//! - **Batching.** Checks that arrive while a batch is in flight go
//!   together in the next one: one round trip and one script call for many
//!   checks, each still decided in arrival order, atomically.
//! - **A local pre-check.** A refusal is remembered until its retry time,
//!   for the same limit and cost. Counts in the window can only grow until
//!   then, so refusing locally is exactly what Redis would answer; a
//!   client hammering past its limit costs no round trip.
//!
//! When Redis cannot be reached the check fails with [`Unreachable`] (the
//! service applies the configured policy); the connection is re-opened on
//! a later batch, at most every [`RECONNECT_PAUSE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::Unreachable;
use crate::subject::Subject;
use crate::window::{Decision, Limit};

/// The script: the window rule over a hash per subject.
const SCRIPT: &str = include_str!("check.lua");
/// Checks in one script call at most.
const MAX_BATCH: usize = 256;
/// Batches in flight at once.
const WORKERS: usize = 2;
/// Checks waiting for a batch at most; more wait to enqueue.
const QUEUE: usize = 16_384;
/// After a failed connection attempt, batches fail at once for this long.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Counts in Redis; cheap to share.
pub struct RedisStore {
    queue: mpsc::Sender<Pending>,
    prefix: String,
    timeout: Duration,
    refusals: DashMap<Subject, Refusal>,
}

struct Pending {
    key: String,
    limit: Limit,
    now_ms: u64,
    cost: u64,
    reply: oneshot::Sender<Result<Decision, Unreachable>>,
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

impl RedisStore {
    /// Connects to Redis at `url`; keys are named `<prefix>quota:…`. Each
    /// Redis call gets `timeout`. Fails when Redis cannot be reached now.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, Unreachable> {
        let client = redis::Client::open(url).map_err(|e| Unreachable(e.to_string()))?;
        let first = open(&client, timeout).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            tokio::spawn(run_batches(
                client.clone(),
                rx.clone(),
                timeout,
                Some(first.clone()),
            ));
        }
        metrics::gauge!("twig_quota_store_up").set(1.0);
        Ok(Self {
            queue: tx,
            prefix: prefix.to_string(),
            timeout,
            refusals: DashMap::new(),
        })
    }

    pub(crate) async fn check(
        &self,
        subject: &Subject,
        limit: &Limit,
        now_ms: u64,
        cost: u64,
    ) -> Result<Decision, Unreachable> {
        if let Some(decision) = self.remembered_refusal(subject, limit, now_ms, cost) {
            metrics::counter!("twig_quota_precheck_refusals_total").increment(1);
            return Ok(decision);
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key: format!(
                "{}quota:{}:{}",
                self.prefix,
                limit.slice_ms(),
                subject.as_str()
            ),
            limit: *limit,
            now_ms,
            cost,
            reply,
        };
        let asked = async {
            self.queue
                .send(pending)
                .await
                .map_err(|_| Unreachable("the Redis workers have stopped".into()))?;
            answer
                .await
                .map_err(|_| Unreachable("the Redis workers have stopped".into()))?
        };
        let decision = tokio::time::timeout(self.timeout * 2, asked)
            .await
            .map_err(|_| Unreachable(format!("no answer within {:?}", self.timeout * 2)))??;
        match decision.retry_after {
            Some(wait) if !decision.allowed && !wait.is_zero() => {
                self.refusals.insert(
                    subject.clone(),
                    Refusal {
                        limit: *limit,
                        cost,
                        at_ms: now_ms,
                        until_ms: now_ms + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        decision,
                    },
                );
            }
            _ => {
                if decision.allowed && !self.refusals.is_empty() {
                    self.refusals.remove(subject);
                }
            }
        }
        Ok(decision)
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

    pub(crate) fn sweep(&self, now_ms: u64) {
        self.refusals.retain(|_, r| now_ms < r.until_ms);
    }
}

async fn open(
    client: &redis::Client,
    timeout: Duration,
) -> Result<MultiplexedConnection, Unreachable> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    tokio::time::timeout(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| Unreachable(format!("no connection within {timeout:?}")))?
    .map_err(|e| Unreachable(e.to_string()))
}

/// One worker: takes whatever is waiting, sends it as one script call,
/// answers each check; keeps its own connection and re-opens it.
async fn run_batches(
    client: redis::Client,
    queue: Arc<Mutex<mpsc::Receiver<Pending>>>,
    timeout: Duration,
    mut conn: Option<MultiplexedConnection>,
) {
    let script = redis::Script::new(SCRIPT);
    let mut next_attempt = Instant::now();
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            batch
        };
        metrics::histogram!("twig_quota_redis_batch_size").record(batch.len() as f64);
        if conn.is_none() && Instant::now() >= next_attempt {
            match open(&client, timeout).await {
                Ok(c) => conn = Some(c),
                Err(_) => next_attempt = Instant::now() + RECONNECT_PAUSE,
            }
        }
        let result = match conn.as_mut() {
            Some(c) => run_batch(&script, c, &batch, timeout).await,
            None => Err(Unreachable("not connected; reconnecting".into())),
        };
        match result {
            Ok(values) => {
                metrics::gauge!("twig_quota_store_up").set(1.0);
                for (p, v) in batch.into_iter().zip(values.chunks_exact(4)) {
                    let _ = p.reply.send(Ok(decision(&p.limit, v)));
                }
            }
            Err(e) => {
                metrics::gauge!("twig_quota_store_up").set(0.0);
                metrics::counter!("twig_quota_store_errors_total").increment(1);
                if conn.take().is_some() {
                    // Try again at once on the next batch, then pause.
                    next_attempt = Instant::now();
                }
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn run_batch(
    script: &redis::Script,
    conn: &mut MultiplexedConnection,
    batch: &[Pending],
    timeout: Duration,
) -> Result<Vec<i64>, Unreachable> {
    let now = batch.iter().map(|p| p.now_ms).max().unwrap_or(0);
    let mut call = script.prepare_invoke();
    call.arg(now);
    for p in batch {
        call.key(&p.key)
            .arg(p.limit.slice_ms())
            .arg(p.limit.period_ms())
            .arg(p.limit.limit())
            .arg(p.cost);
    }
    let values: Vec<i64> = tokio::time::timeout(timeout, call.invoke_async(conn))
        .await
        .map_err(|_| Unreachable(format!("no answer within {timeout:?}")))?
        .map_err(|e| Unreachable(e.to_string()))?;
    if values.len() != batch.len() * 4 {
        return Err(Unreachable(format!(
            "the script answered {} values for {} checks",
            values.len(),
            batch.len()
        )));
    }
    Ok(values)
}

fn decision(limit: &Limit, v: &[i64]) -> Decision {
    let millis = |x: i64| Duration::from_millis(u64::try_from(x).unwrap_or(0));
    let allowed = v[0] == 1;
    let used = u64::try_from(v[1]).unwrap_or(0);
    Decision {
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
    }
}
