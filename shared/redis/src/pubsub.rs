//! The pub/sub subscription: a dedicated connection (a subscribed
//! connection can send nothing else), re-opened by itself, watched with
//! pings, and every (re)connection and loss reported to the subscriber.

use std::time::Duration;

use futures::StreamExt;

use crate::error::RedisError;
use crate::handle::RedisHandle;

/// How often the subscription asks Redis whether it is still there, and
/// how long the answer may take: a connection lost without a word (a
/// frozen server, a network cut) is noticed within about two seconds.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What the subscriber of [`RedisHandle::subscribe_all`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubEvent<'a> {
    /// The subscription is (again) up. Messages may have been missed since
    /// it was last down.
    Up,
    /// The subscription is down (and being re-opened); messages published
    /// from now on may be missed.
    Down {
        /// Why, for the log.
        why: &'a str,
    },
    /// A message.
    Message {
        /// The channel, without the prefix.
        channel: &'a str,
        /// The payload (messages that are not UTF-8 are skipped).
        payload: &'a str,
    },
}

impl RedisHandle {
    /// Subscribes to every channel under the prefix (`<prefix>*`) on a
    /// connection of its own, and calls `on_event` with what happens, from
    /// a task of its own, for the life of the process: [`PubSubEvent::Up`]
    /// first, then messages; [`PubSubEvent::Down`] when the connection
    /// closes or stops answering pings, then `Up` again once it is back
    /// (attempts back off from 100 ms to 5 s).
    ///
    /// Fails when the first subscription cannot be made within the
    /// handle's connect timeout.
    pub async fn subscribe_all<F>(&self, on_event: F) -> Result<(), RedisError>
    where
        F: FnMut(PubSubEvent<'_>) + Send + 'static,
    {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(subscribe_forever(self.clone(), on_event, Some(ready_tx)));
        let timeout = self.connect_timeout();
        match tokio::time::timeout(timeout + Duration::from_millis(100), ready_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(RedisError::Timeout(timeout)),
        }
    }
}

async fn subscribe_forever<F>(
    handle: RedisHandle,
    mut on_event: F,
    mut ready: Option<tokio::sync::oneshot::Sender<Result<(), RedisError>>>,
) where
    F: FnMut(PubSubEvent<'_>) + Send + 'static,
{
    let pattern = handle.key("*");
    let timeout = handle.connect_timeout();
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut pubsub = handle
                .client()
                .get_async_pubsub()
                .await
                .map_err(RedisError::Connect)?;
            pubsub
                .psubscribe(pattern.as_str())
                .await
                .map_err(RedisError::of_command)?;
            Ok::<_, RedisError>(pubsub)
        };
        let failed = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(100);
                on_event(PubSubEvent::Up);
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                }
                let why = deliver(pubsub, &handle, &mut on_event).await;
                on_event(PubSubEvent::Down { why });
                None
            }
            Ok(Err(e)) => Some(e),
            Err(_) => Some(RedisError::Timeout(timeout)),
        };
        if let Some(error) = failed {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(error));
                return;
            }
            metrics::counter!("twig_redis_subscription_retries_total").increment(1);
            tracing::warn!(error = %error.detail(), "cannot subscribe to Redis; retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Passes the subscription's messages on until it ends or stops answering
/// pings; says which.
async fn deliver<F>(
    pubsub: redis::aio::PubSub,
    handle: &RedisHandle,
    on_event: &mut F,
) -> &'static str
where
    F: FnMut(PubSubEvent<'_>),
{
    let (mut sink, mut stream) = pubsub.split();
    let mut ticks = tokio::time::interval(PING_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "the connection closed";
                };
                let Some(channel) = handle.strip_prefix(message.get_channel_name()) else {
                    continue;
                };
                let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
                    continue;
                };
                on_event(PubSubEvent::Message { channel, payload });
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
