//! Fan-out of "forget this" announcements between replicas.
//!
//! When a key is revoked on one replica, every replica must drop its cached
//! answer within a second. [`Fanout`] carries such announcements over Redis
//! pub/sub (channel `<prefix><topic>`, on a [`RedisHandle`]); without Redis
//! (one replica) it delivers them in-process only.
//!
//! An announcement is a value of a type that implements [`Announcement`]:
//! the type alone says on which topic a value is sent and how it is
//! written and read, so a publisher ([`Fanout::announce`]) and a
//! subscriber ([`Fanout::listen`]) cannot disagree. A [`Listener`] yields
//! decoded values ([`Heard::Announced`]), and [`Heard::Resync`] whenever
//! announcements may have been missed — the subscription (re)connected, or
//! the listener fell behind — so caches must then drop everything. While
//! the subscription is down, the caches' answers are believed for at most
//! a second ([`Freshness`]).

use std::marker::PhantomData;

use tokio::sync::broadcast;
use twig_redis::PubSubEvent;
pub use twig_redis::{RedisError, RedisHandle, RedisOptions};

mod freshness;

pub use freshness::{Freshness, OUTAGE_BOUND};

/// A kind of announcement on the fan-out. Each service owns one type (an
/// enum when it announces several things) and its topics, named
/// `<service>.<what>`; nothing else spells them.
pub trait Announcement: Sized + Send + 'static {
    /// The topic this value is sent on.
    fn topic(&self) -> &'static str;
    /// The payload this value is sent as.
    fn payload(&self) -> String;
    /// The value sent as `payload` on `topic`; `None` for a topic of
    /// another type (or a payload that does not read).
    fn decode(topic: &str, payload: &str) -> Option<Self>;
}

/// Either of two kinds of announcement, for one listener of both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOf<A, B> {
    /// The first kind.
    First(A),
    /// The second kind.
    Second(B),
}

impl<A: Announcement, B: Announcement> Announcement for OneOf<A, B> {
    fn topic(&self) -> &'static str {
        match self {
            Self::First(a) => a.topic(),
            Self::Second(b) => b.topic(),
        }
    }

    fn payload(&self) -> String {
        match self {
            Self::First(a) => a.payload(),
            Self::Second(b) => b.payload(),
        }
    }

    fn decode(topic: &str, payload: &str) -> Option<Self> {
        A::decode(topic, payload)
            .map(Self::First)
            .or_else(|| B::decode(topic, payload).map(Self::Second))
    }
}

/// True when `value` reads back as itself from its topic and payload: a
/// check for each [`Announcement`] implementation's tests.
pub fn round_trips<A: Announcement + PartialEq>(value: &A) -> bool {
    A::decode(value.topic(), &value.payload()).as_ref() == Some(value)
}

/// What travels between the fan-out and its listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// A message published on `topic` (without the prefix).
    Message { topic: String, payload: String },
    /// The subscription (re)connected; anything may have been missed.
    Resync,
}

/// What a [`Listener`] hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard<A> {
    /// An announcement of its kind.
    Announced(A),
    /// Announcements may have been missed: drop everything kept.
    Resync,
}

/// Receives one kind of announcement (see [`Fanout::listen`]).
pub struct Listener<A> {
    events: broadcast::Receiver<Event>,
    kind: PhantomData<fn() -> A>,
}

impl<A: Announcement> Listener<A> {
    /// The next announcement of this listener's kind, or
    /// [`Heard::Resync`] when announcements may have been missed (the
    /// subscription reconnected, or this listener fell behind); `None`
    /// once the fan-out is gone.
    pub async fn recv(&mut self) -> Option<Heard<A>> {
        use broadcast::error::RecvError;
        loop {
            match self.events.recv().await {
                Ok(Event::Message { topic, payload }) => {
                    if let Some(value) = A::decode(&topic, &payload) {
                        return Some(Heard::Announced(value));
                    }
                }
                Ok(Event::Resync) | Err(RecvError::Lagged(_)) => return Some(Heard::Resync),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The fan-out channel. Cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    events: broadcast::Sender<Event>,
    redis: Option<RedisHandle>,
    freshness: Freshness,
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

    /// Over Redis at `url`, on channels named `<prefix><topic>`: a
    /// [`RedisHandle`] of its own, then [`Fanout::on`].
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, RedisError> {
        Self::on(RedisHandle::connect(url, prefix, RedisOptions::default()).await?).await
    }

    /// Over Redis through `redis` (channels `<prefix><topic>`). Fails when
    /// the subscription cannot be made now; later outages are retried in
    /// the background (and end with a [`Heard::Resync`]).
    pub async fn on(redis: RedisHandle) -> Result<Self, RedisError> {
        let (events, _) = broadcast::channel(1024);
        let freshness = Freshness::down();
        let (sender, fresh) = (events.clone(), freshness.clone());
        redis
            .subscribe_all(move |event| match event {
                PubSubEvent::Up => {
                    fresh.set_live();
                    let _ = sender.send(Event::Resync);
                }
                PubSubEvent::Down { why } => {
                    fresh.set_down();
                    metrics::counter!("twig_fanout_reconnects_total").increment(1);
                    tracing::warn!(
                        why,
                        "Redis subscription lost; cached answers are believed for at most 1 s until it is back"
                    );
                }
                PubSubEvent::Message { channel, payload } => {
                    let _ = sender.send(Event::Message {
                        topic: channel.to_string(),
                        payload: payload.to_string(),
                    });
                }
            })
            .await?;
        Ok(Self {
            events,
            redis: Some(redis),
            freshness,
        })
    }

    /// The Redis handle announcements travel on, when there is one: other
    /// users of Redis in the process share it.
    pub fn redis_handle(&self) -> Option<&RedisHandle> {
        self.redis.as_ref()
    }

    /// Whether announcements are arriving: caches ask it how long their
    /// answers may be believed.
    pub fn freshness(&self) -> Freshness {
        self.freshness.clone()
    }

    /// Receives every announcement of kind `A` from now on (and every
    /// resync).
    pub fn listen<A: Announcement>(&self) -> Listener<A> {
        Listener {
            events: self.events.subscribe(),
            kind: PhantomData,
        }
    }

    /// Sends `announcement` to every replica, this one included.
    /// A Redis failure is logged and counted, not returned: the caches'
    /// lifetimes still bound how stale another replica can be.
    pub async fn announce<A: Announcement>(&self, announcement: &A) {
        self.publish(announcement.topic(), &announcement.payload())
            .await;
    }

    async fn publish(&self, topic: &str, payload: &str) {
        let local = || Event::Message {
            topic: topic.to_string(),
            payload: payload.to_string(),
        };
        let Some(redis) = &self.redis else {
            let _ = self.events.send(local());
            return;
        };
        let mut sent = redis.publish(topic, payload).await;
        if sent.as_ref().is_err_and(RedisError::is_unavailable) {
            // Once more: the handle re-opens a broken connection.
            sent = redis.publish(topic, payload).await;
        }
        if let Err(e) = sent {
            metrics::counter!("twig_fanout_publish_errors_total").increment(1);
            tracing::warn!(error = %e.detail(), %topic, "could not publish to Redis");
            // This replica at least forgets at once.
            let _ = self.events.send(local());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An announcement kind of the tests'.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Changed {
        Key(String),
        Org(String),
    }

    impl Announcement for Changed {
        fn topic(&self) -> &'static str {
            match self {
                Self::Key(_) => "test.key",
                Self::Org(_) => "test.org",
            }
        }
        fn payload(&self) -> String {
            match self {
                Self::Key(p) | Self::Org(p) => p.clone(),
            }
        }
        fn decode(topic: &str, payload: &str) -> Option<Self> {
            match topic {
                "test.key" => Some(Self::Key(payload.into())),
                "test.org" => Some(Self::Org(payload.into())),
                _ => None,
            }
        }
    }

    /// Another kind, on a topic of its own.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Other(u32);

    impl Announcement for Other {
        fn topic(&self) -> &'static str {
            "test.other"
        }
        fn payload(&self) -> String {
            self.0.to_string()
        }
        fn decode(topic: &str, payload: &str) -> Option<Self> {
            (topic == "test.other").then(|| payload.parse().ok().map(Self))?
        }
    }

    async fn next<A: Announcement>(l: &mut Listener<A>) -> Heard<A> {
        tokio::time::timeout(Duration::from_secs(2), l.recv())
            .await
            .expect("heard within 2 s")
            .expect("the fan-out is open")
    }

    #[test]
    fn announcements_round_trip() {
        assert!(round_trips(&Changed::Key("k".into())));
        assert!(round_trips(&Changed::Org("o".into())));
        assert!(round_trips(&Other(7)));
        assert!(round_trips(&OneOf::<Changed, Other>::Second(Other(7))));
        assert_eq!(Other::decode("test.other", "x"), None, "a bad payload");
    }

    #[tokio::test]
    async fn local_delivers_in_process_to_listeners_of_the_kind() {
        let f = Fanout::local();
        let mut changes = f.listen::<Changed>();
        let mut others = f.listen::<Other>();
        let mut both = f.listen::<OneOf<Changed, Other>>();
        f.announce(&Other(1)).await;
        f.announce(&Changed::Key("k1".into())).await;
        assert_eq!(
            next(&mut changes).await,
            Heard::Announced(Changed::Key("k1".into()))
        );
        assert_eq!(next(&mut others).await, Heard::Announced(Other(1)));
        assert_eq!(
            next(&mut both).await,
            Heard::Announced(OneOf::Second(Other(1)))
        );
        assert_eq!(
            next(&mut both).await,
            Heard::Announced(OneOf::First(Changed::Key("k1".into())))
        );
    }

    #[tokio::test]
    async fn a_listener_that_falls_behind_resyncs() {
        let f = Fanout::local();
        let mut slow = f.listen::<Other>();
        for i in 0..2000 {
            f.announce(&Other(i)).await;
        }
        assert_eq!(next(&mut slow).await, Heard::Resync);
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
        let mut heard = fanout.listen::<Changed>();
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
                if heard.recv().await == Some(Heard::Resync) {
                    return;
                }
            }
        })
        .await;
        assert!(resynced.is_ok(), "a reconnect announces a resync");

        // And announcements travel again, over a re-opened publisher.
        fanout.announce(&Changed::Org("o1".into())).await;
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Some(Heard::Announced(c)) = heard.recv().await {
                    return c;
                }
            }
        })
        .await
        .expect("an announcement after the restart");
        assert_eq!(got, Changed::Org("o1".into()));
    }

    /// Two fan-outs on one Redis: an announcement on one reaches the
    /// other, decoded; another kind's listener does not hear it.
    #[tokio::test]
    async fn redis_reaches_other_replicas() {
        let url = twig_testkit::redis_url();
        let prefix = twig_testkit::redis_prefix();
        let a = Fanout::redis(&url, &prefix).await.expect("Redis is needed");
        let b = Fanout::on(
            RedisHandle::connect(&url, &prefix, RedisOptions::default())
                .await
                .expect("Redis is needed"),
        )
        .await
        .expect("Redis is needed");
        assert!(b.redis_handle().is_some());
        let mut changes = b.listen::<Changed>();
        let mut others = b.listen::<Other>();
        a.announce(&Changed::Key("k2".into())).await;
        a.announce(&Other(3)).await;
        let got = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Some(Heard::Announced(c)) = changes.recv().await {
                    return c;
                }
            }
        })
        .await
        .expect("message within 2 s");
        assert_eq!(got, Changed::Key("k2".into()));
        let other = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Some(Heard::Announced(o)) = others.recv().await {
                    return o;
                }
            }
        })
        .await
        .expect("message within 2 s");
        assert_eq!(other, Other(3), "the first Other it hears, not the Changed");
    }
}
