//! The connection handle: one multiplexed connection per process, re-opened
//! by itself, every key under the configured prefix, every command bounded
//! by a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use crate::error::RedisError;

/// The first pause after a failed connection attempt; it doubles on every
/// further failure up to [`MAX_BACKOFF`] and is reset by a success.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How a [`RedisHandle`] connects and how long commands may take.
#[derive(Debug, Clone, Copy)]
pub struct RedisOptions {
    /// The longest a command (with any reconnect it needs) may take.
    pub command_timeout: Duration,
    /// The longest the first connection (in [`RedisHandle::connect`]) and
    /// the pub/sub subscription may take.
    pub connect_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A Redis key: the configured prefix and a name. Only
/// [`RedisHandle::key`] makes one, so every key a command names carries
/// the prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// The whole key, prefix included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A command: its keys are [`Key`]s, its other arguments anything Redis
/// takes.
#[derive(Debug, Clone)]
pub struct Command(redis::Cmd);

impl Command {
    /// The command `name` (`SET`, `INCR`, …) without arguments.
    pub fn new(name: &str) -> Self {
        Self(redis::cmd(name))
    }

    /// Adds a key.
    pub fn key(mut self, key: &Key) -> Self {
        self.0.arg(key.0.as_bytes());
        self
    }

    /// Adds an argument that is not a key.
    pub fn arg<T: redis::ToRedisArgs>(mut self, arg: T) -> Self {
        self.0.arg(arg);
        self
    }
}

/// A Lua script, sent by its hash (and in full when Redis does not know
/// it yet).
#[derive(Debug, Clone)]
pub struct Script(redis::Script);

impl Script {
    /// The script `code`.
    pub fn new(code: &str) -> Self {
        Self(redis::Script::new(code))
    }

    /// A call of this script, without keys or arguments yet.
    pub fn call(&self) -> ScriptCall<'_> {
        ScriptCall {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One call of a [`Script`]: `KEYS` are [`Key`]s, `ARGV` anything.
#[derive(Debug, Clone)]
pub struct ScriptCall<'a> {
    script: &'a Script,
    keys: Vec<Key>,
    args: Vec<Vec<u8>>,
}

impl ScriptCall<'_> {
    /// Adds a key (`KEYS[n]`).
    pub fn key(&mut self, key: &Key) -> &mut Self {
        self.keys.push(key.clone());
        self
    }

    /// Adds an argument (`ARGV[n]`).
    pub fn arg<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// Keys added so far.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// The connection to Redis every part of a process shares: cheap to clone
/// (clones share the connection; [`RedisHandle::with_timeout`] gives one
/// with another command timeout).
///
/// There is one multiplexed connection. A command that finds it broken
/// (an I/O error, a dropped connection, no answer in time) drops it and
/// fails; the next command opens a new one. After a failed attempt,
/// commands fail at once with [`RedisError::Reconnecting`] for a pause
/// that doubles from 100 ms to 1 s, so an outage costs no connection storm
/// and no waiting. A command never waits longer than its timeout, the
/// reconnect included.
#[derive(Clone)]
pub struct RedisHandle {
    shared: Arc<Shared>,
    timeout: Duration,
}

struct Shared {
    client: redis::Client,
    prefix: String,
    connect_timeout: Duration,
    slot: Mutex<Slot>,
}

/// The current connection, or when the next attempt is due.
struct Slot {
    /// The connection and its number (to drop only the one that broke).
    conn: Option<(u64, MultiplexedConnection)>,
    opened: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("prefix", &self.shared.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisHandle {
    /// Connects to Redis at `url`; every key is named `<prefix><name>`.
    /// Fails when Redis cannot be reached now (within
    /// `options.connect_timeout`); later outages are recovered from by
    /// themselves.
    pub async fn connect(
        url: &str,
        prefix: &str,
        options: RedisOptions,
    ) -> Result<Self, RedisError> {
        let client = redis::Client::open(url).map_err(RedisError::Url)?;
        let conn = open(&client, options.connect_timeout).await?;
        metrics::gauge!("twig_redis_connected").set(1.0);
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                prefix: prefix.to_string(),
                connect_timeout: options.connect_timeout,
                slot: Mutex::new(Slot {
                    conn: Some((1, conn)),
                    opened: 1,
                    retry_at: None,
                    backoff: MIN_BACKOFF,
                }),
            }),
            timeout: options.command_timeout,
        })
    }

    /// The same connection, with commands bounded by `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            shared: self.shared.clone(),
            timeout,
        }
    }

    /// The command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The key `<prefix><name>`: the one place the prefix is applied.
    pub fn key(&self, name: &str) -> Key {
        let mut key = String::with_capacity(self.shared.prefix.len() + name.len());
        key.push_str(&self.shared.prefix);
        key.push_str(name);
        Key(key)
    }

    /// `name` of a key or channel of this handle's, without the prefix;
    /// `None` when it is not under the prefix.
    pub fn strip_prefix<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.shared.prefix.as_str())
    }

    /// Runs `command`.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        command: &Command,
    ) -> Result<T, RedisError> {
        self.run(|mut conn| async move { command.0.query_async(&mut conn).await })
            .await
    }

    /// Runs a script call.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &ScriptCall<'_>,
    ) -> Result<T, RedisError> {
        self.run(|mut conn| async move {
            let mut invocation = call.script.0.prepare_invoke();
            for key in &call.keys {
                invocation.key(key.0.as_bytes());
            }
            for arg in &call.args {
                invocation.arg(arg.as_slice());
            }
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    /// Publishes `payload` on the channel `<prefix><channel>`; the number of
    /// subscribers that received it.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<i64, RedisError> {
        let channel = self.key(channel);
        self.query(&Command::new("PUBLISH").key(&channel).arg(payload))
            .await
    }

    /// Runs `f` on the connection (opening one if needed) within the
    /// timeout; drops the connection when it broke.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut used = None;
        let attempt = async {
            let (number, conn) = self.connection().await?;
            used = Some(number);
            f(conn).await.map_err(RedisError::of_command)
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        };
        if let Err(e) = &result
            && matches!(e, RedisError::Timeout(_) | RedisError::Connection(_))
        {
            match used {
                Some(number) => self.drop_connection(number).await,
                // Timed out opening a connection: pause the next attempt
                // as after a failed one.
                None => self.back_off().await,
            }
        }
        if let Err(e) = &result
            && e.is_unavailable()
        {
            metrics::counter!("twig_redis_errors_total").increment(1);
        }
        result
    }

    /// The current connection, or a new one when none is open and an
    /// attempt is due.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let mut slot = self.shared.slot.lock().await;
        if let Some((number, conn)) = &slot.conn {
            return Ok((*number, conn.clone()));
        }
        if slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(RedisError::Reconnecting);
        }
        match open(&self.shared.client, self.shared.connect_timeout).await {
            Ok(conn) => {
                slot.opened += 1;
                let number = slot.opened;
                slot.conn = Some((number, conn.clone()));
                slot.retry_at = None;
                slot.backoff = MIN_BACKOFF;
                metrics::gauge!("twig_redis_connected").set(1.0);
                metrics::counter!("twig_redis_reconnects_total").increment(1);
                tracing::info!("reconnected to Redis");
                Ok((number, conn))
            }
            Err(e) => {
                slot.retry_at = Some(Instant::now() + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
                Err(e)
            }
        }
    }

    /// After an attempt to connect that did not finish: the next is due
    /// after the backoff (unless one is already scheduled or succeeded).
    async fn back_off(&self) {
        let mut slot = self.shared.slot.lock().await;
        if slot.conn.is_none() && slot.retry_at.is_none_or(|at| at <= Instant::now()) {
            slot.retry_at = Some(Instant::now() + slot.backoff);
            slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Forgets connection `number` if it is still the current one.
    async fn drop_connection(&self, number: u64) {
        let mut slot = self.shared.slot.lock().await;
        if slot.conn.as_ref().is_some_and(|(n, _)| *n == number) {
            slot.conn = None;
            metrics::gauge!("twig_redis_connected").set(0.0);
            tracing::warn!("the connection to Redis broke; reconnecting on the next command");
        }
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.shared.client
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.shared.connect_timeout
    }
}

/// Opens a multiplexed connection within `timeout`. Its commands have no
/// timeout of their own: [`RedisHandle`] bounds each with the handle's.
async fn open(
    client: &redis::Client,
    timeout: Duration,
) -> Result<MultiplexedConnection, RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    tokio::time::timeout(
        timeout,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| RedisError::Timeout(timeout))?
    .map_err(RedisError::Connect)
}
