//! Fan-out of "forget this" messages between replicas.
//!
//! When a key is revoked on one replica, every replica must drop its cached
//! answer within a second. [`Fanout`] carries such messages over Redis
//! pub/sub (channel `<prefix><topic>`); without Redis (one replica) it
//! delivers them in-process only.
//!
//! Subscribers receive [`Event::Message`]s, and [`Event::Resync`] whenever
//! the subscription (re)connects: messages may have been missed while it
//! was down, so caches must then drop everything. While it is down, the
//! caches' answers are believed for at most a second ([`Freshness`]).

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;

mod freshness;

pub use freshness::{Freshness, OUTAGE_BOUND};

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message published on `topic`.
    Message {
        /// The topic, without the prefix.
        topic: String,
        /// The payload.
        payload: String,
    },
    /// The subscription (re)connected; anything may have been missed.
    Resync,
}

/// The fan-out channel. Cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    events: broadcast::Sender<Event>,
    redis: Option<Redis>,
    freshness: Freshness,
}

#[derive(Clone)]
struct Redis {
    prefix: String,
    client: redis::Client,
    /// Re-opened after a failure (a multiplexed connection does not
    /// recover once its socket is gone).
    publisher: std::sync::Arc<tokio::sync::Mutex<redis::aio::MultiplexedConnection>>,
}

impl Fanout {
    /// In-process only: for a single replica.
    pub fn local() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            events,
            redis: None,
            freshness: Freshness::always(),
        }
    }

    /// Over Redis at `url`, on channels named `<prefix><topic>`. Fails when
    /// Redis cannot be reached now; later outages are retried in the
    /// background (and end with a [`Event::Resync`]).
    pub async fn redis(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let publisher = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("Redis at the configured URL did not answer within 5 s"))??;
        let (events, _) = broadcast::channel(1024);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let freshness = Freshness::down();
        tokio::spawn(subscribe_forever(
            client.clone(),
            prefix.to_string(),
            events.clone(),
            freshness.clone(),
            Some(ready_tx),
        ));
        tokio::time::timeout(Duration::from_secs(5), ready_rx)
            .await
            .map_err(|_| anyhow::anyhow!("could not subscribe to Redis within 5 s"))???;
        Ok(Self {
            events,
            redis: Some(Redis {
                prefix: prefix.to_string(),
                client,
                publisher: std::sync::Arc::new(tokio::sync::Mutex::new(publisher)),
            }),
            freshness,
        })
    }

    /// Whether announcements are arriving: caches ask it how long their
    /// answers may be believed.
    pub fn freshness(&self) -> Freshness {
        self.freshness.clone()
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Sends `payload` on `topic` to every replica, this one included.
    /// A Redis failure is logged and counted, not returned: the caches'
    /// lifetimes still bound how stale another replica can be.
    pub async fn publish(&self, topic: &str, payload: &str) {
        match &self.redis {
            None => {
                let _ = self.events.send(Event::Message {
                    topic: topic.to_string(),
                    payload: payload.to_string(),
                });
            }
            Some(r) => {
                let channel = format!("{}{topic}", r.prefix);
                let publish = |mut conn: redis::aio::MultiplexedConnection| {
                    let channel = channel.clone();
                    async move {
                        redis::cmd("PUBLISH")
                            .arg(&channel)
                            .arg(payload)
                            .query_async::<i64>(&mut conn)
                            .await
                    }
                };
                let current = r.publisher.lock().await.clone();
                let mut sent = publish(current).await.map(|_| ());
                if sent.is_err() {
                    // Once more on a fresh connection.
                    sent = match tokio::time::timeout(
                        Duration::from_secs(1),
                        r.client.get_multiplexed_async_connection(),
                    )
                    .await
                    {
                        Ok(Ok(fresh)) => {
                            *r.publisher.lock().await = fresh.clone();
                            publish(fresh).await.map(|_| ())
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => sent,
                    };
                }
                if let Err(e) = sent {
                    metrics::counter!("twig_fanout_publish_errors_total").increment(1);
                    tracing::warn!(error = %e, %topic, "could not publish to Redis");
                    // This replica at least forgets at once.
                    let _ = self.events.send(Event::Message {
                        topic: topic.to_string(),
                        payload: payload.to_string(),
                    });
                }
            }
        }
    }
}

/// How often the subscription asks Redis whether it is still there, and
/// how long the answer may take: a connection lost without a word (a
/// frozen server, a network cut) is noticed within about two seconds.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

async fn subscribe_forever(
    client: redis::Client,
    prefix: String,
    events: broadcast::Sender<Event>,
    freshness: Freshness,
    mut ready: Option<tokio::sync::oneshot::Sender<anyhow::Result<()>>>,
) {
    let pattern = format!("{prefix}*");
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                freshness.set_live();
                let _ = events.send(Event::Resync);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
                let why = deliver(pubsub, &prefix, &events).await;
                freshness.set_down();
                tracing::warn!(
                    why,
                    "Redis subscription lost; cached answers are believed for at most 1 s until it is back"
                );
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => anyhow::Error::from(e),
                    _ => anyhow::anyhow!("Redis did not accept the subscription within 5 s"),
                };
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(error));
                    return;
                }
                metrics::counter!("twig_fanout_reconnects_total").increment(1);
                tracing::warn!(error = %error, "cannot subscribe to Redis; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Passes the subscription's messages on until it ends or stops answering
/// pings; says which.
async fn deliver(
    pubsub: redis::aio::PubSub,
    prefix: &str,
    events: &broadcast::Sender<Event>,
) -> &'static str {
    let (mut sink, mut stream) = pubsub.split();
    let mut ticks = tokio::time::interval(PING_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "the connection closed";
                };
                let Some(topic) = message.get_channel_name().strip_prefix(prefix) else {
                    continue;
                };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                let _ = events.send(Event::Message {
                    topic: topic.to_string(),
                    payload,
                });
            }
            _ = ticks.tick() => {
                let pong = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return "Redis did not answer a ping in time";
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_delivers_in_process() {
        let f = Fanout::local();
        let mut rx = f.subscribe();
        f.publish("apikeys.invalidate", "k1").await;
        assert_eq!(
            rx.recv().await.unwrap(),
            Event::Message {
                topic: "apikeys.invalidate".into(),
                payload: "k1".into()
            }
        );
    }

    /// Waits until `freshness` says `live`; panics after `limit`.
    async fn until_live(freshness: &Freshness, live: bool, limit: Duration) -> Duration {
        let start = std::time::Instant::now();
        while freshness.is_live() != live {
            assert!(
                start.elapsed() < limit,
                "the subscription was not seen {} within {limit:?}",
                if live { "up" } else { "down" }
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    /// A Redis that dies, or freezes without closing its connections, is
    /// noticed (the caches then fall back to the short bound), and the
    /// subscription comes back with a resync when Redis does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_subscription_is_noticed_and_resumed() {
        let mut redis = twig_testkit::PrivateRedis::start();
        let fanout = Fanout::redis(&redis.url(), "twig-test:")
            .await
            .expect("the private Redis answers");
        let freshness = fanout.freshness();
        let mut events = fanout.subscribe();
        assert!(freshness.is_live());

        // Frozen: the connection stays open, pings go unanswered.
        redis.pause();
        let took = until_live(&freshness, false, Duration::from_secs(5)).await;
        println!("a frozen Redis was noticed after {took:?}");
        redis.resume();
        until_live(&freshness, true, Duration::from_secs(10)).await;

        // Killed: the connection closes.
        redis.stop();
        until_live(&freshness, false, Duration::from_secs(2)).await;
        redis.restart();
        until_live(&freshness, true, Duration::from_secs(10)).await;
        let resynced = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if events.recv().await == Ok(Event::Resync) {
                    return;
                }
            }
        })
        .await;
        assert!(resynced.is_ok(), "a reconnect announces a resync");
    }

    /// Two fan-outs on one Redis: a message published on one reaches the
    /// other. Needs Redis at TWIG_TEST_REDIS_URL (default 127.0.0.1:6379).
    #[tokio::test]
    async fn redis_reaches_other_replicas() {
        let url = std::env::var("TWIG_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("twig-test:{}:", std::process::id());
        let a = Fanout::redis(&url, &prefix).await.expect("Redis is needed");
        let b = Fanout::redis(&url, &prefix).await.expect("Redis is needed");
        let mut rx = b.subscribe();
        a.publish("apikeys.invalidate", "k2").await;
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Event::Message { topic, payload } = rx.recv().await.unwrap() {
                    return (topic, payload);
                }
            }
        })
        .await
        .expect("message within 2 s");
        assert_eq!(got, ("apikeys.invalidate".into(), "k2".into()));
    }
}
