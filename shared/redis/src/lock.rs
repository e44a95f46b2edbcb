//! Locks with expiry and fencing tokens, for work that one replica at a
//! time should do (one JWKS refresh, one token refresh).
//!
//! A lock is the key `<prefix>lock:<name>`, set with a time to live to
//! `<token>:<holder>`. Acquiring it takes a fencing token from
//! `<prefix>lockfence:<name>` in the same script: larger than any token
//! issued for the name before, and — because it is at least the Redis
//! server's clock in microseconds — larger even after Redis lost its data.
//! Releasing and extending compare the whole value first (in Lua), so a
//! holder whose lock expired cannot release or extend the next holder's.
//!
//! A lock that expires while its holder still works is the hazard every
//! lease has: the holder may be paused past the time to live. The fencing
//! token is the answer: the protected write carries it, and the store
//! refuses a token older than one it has seen — [`Locks::fence`] does that
//! for a resource in Redis; a database row keeps the token in a column and
//! updates `WHERE fence <= $token`. [`Locks::is_current`] tells whether a
//! token still holds the lock (a check before expensive work, not a
//! guarantee for the write after it).

use std::time::Duration;

use crate::error::{RedisError, ttl_millis};
use crate::handle::{Command, Key, RedisHandle, Script};

/// Takes the lock if it is free, with a fresh fencing token.
/// KEYS[1] the lock, KEYS[2] its token counter; ARGV[1] ttl (ms),
/// ARGV[2] the holder. Returns the token, or 0 when the lock is taken.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = math.max(last + 1, floor)
local s = string.format('%.0f', token)
redis.call('SET', KEYS[2], s)
redis.call('SET', KEYS[1], s .. ':' .. ARGV[2], 'PX', ARGV[1])
return token
";

/// Deletes the lock if it still holds ARGV[1]. 1 when deleted.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Sets the lock's time to live to ARGV[2] ms if it still holds ARGV[1].
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Admits token ARGV[1] for the resource KEYS[1] unless a larger one was
/// admitted before; 1 when admitted.
const FENCE: &str = r"
local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token < seen then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// A fencing token: larger for every later acquisition of the same lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// The token as a number, to store beside the protected data.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Locks on one Redis. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Locks {
    redis: RedisHandle,
    scripts: std::sync::Arc<Scripts>,
}

#[derive(Debug)]
struct Scripts {
    acquire: Script,
    release: Script,
    extend: Script,
    fence: Script,
}

/// A lock held. Dropping it without [`LockGuard::release`] releases it in
/// the background (if still held); if the process dies it expires.
#[derive(Debug)]
pub struct LockGuard {
    locks: Locks,
    name: String,
    key: Key,
    /// `<token>:<holder>`: what the lock key holds while this guard holds it.
    value: String,
    token: FencingToken,
    released: bool,
}

/// Lock names: what may follow `lock:` in a key.
fn check_name(what: &'static str, name: &str) -> Result<(), RedisError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?' && b != b'[');
    if ok {
        Ok(())
    } else {
        Err(RedisError::invalid(what, name))
    }
}

impl Locks {
    /// Locks kept in Redis through `redis`.
    pub fn new(redis: RedisHandle) -> Self {
        Self {
            redis,
            scripts: std::sync::Arc::new(Scripts {
                acquire: Script::new(ACQUIRE),
                release: Script::new(RELEASE),
                extend: Script::new(EXTEND),
                fence: Script::new(FENCE),
            }),
        }
    }

    /// Takes the lock `name` for `ttl` if no one holds it: `None` when
    /// someone does. An error (Redis down, no answer) is never a lock:
    /// the caller must not do the work as if it held one.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<LockGuard>, RedisError> {
        check_name("lock name", name)?;
        let ms = ttl_millis(ttl)?;
        let key = self.redis.key(&format!("lock:{name}"));
        let counter = self.redis.key(&format!("lockfence:{name}"));
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let token: i64 = self
            .redis
            .invoke(
                self.scripts
                    .acquire
                    .call()
                    .key(&key)
                    .key(&counter)
                    .arg(ms)
                    .arg(holder.as_str()),
            )
            .await?;
        if token == 0 {
            return Ok(None);
        }
        let token = u64::try_from(token)
            .map_err(|_| RedisError::Unexpected(format!("fencing token {token}")))?;
        Ok(Some(LockGuard {
            locks: self.clone(),
            name: name.to_string(),
            key,
            value: format!("{token}:{holder}"),
            token: FencingToken(token),
            released: false,
        }))
    }

    /// Does `token` still hold the lock `name`?
    pub async fn is_current(&self, name: &str, token: FencingToken) -> Result<bool, RedisError> {
        check_name("lock name", name)?;
        let key = self.redis.key(&format!("lock:{name}"));
        let value: Option<String> = self.redis.query(&Command::new("GET").key(&key)).await?;
        Ok(value
            .as_deref()
            .and_then(|v| v.split_once(':'))
            .is_some_and(|(t, _)| t == token.0.to_string()))
    }

    /// The fence of `resource`: admits `token` (true) unless a larger token
    /// was admitted for it before (false: the caller's lock was lost and
    /// someone newer wrote). The same token may be admitted again.
    pub async fn fence(&self, resource: &str, token: FencingToken) -> Result<bool, RedisError> {
        check_name("resource", resource)?;
        let key = self.redis.key(&format!("fence:{resource}"));
        let admitted: i64 = self
            .redis
            .invoke(self.scripts.fence.call().key(&key).arg(token.0))
            .await?;
        Ok(admitted == 1)
    }

    async fn compare_and(
        &self,
        script: &Script,
        key: &Key,
        value: &str,
        ttl_ms: Option<u64>,
    ) -> Result<bool, RedisError> {
        let mut call = script.call();
        call.key(key).arg(value);
        if let Some(ms) = ttl_ms {
            call.arg(ms);
        }
        let done: i64 = self.redis.invoke(&call).await?;
        Ok(done == 1)
    }
}

impl LockGuard {
    /// This holder's fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the lock's time to live to `ttl` from now, if this guard still
    /// holds it: false when it expired (and perhaps went to someone else).
    pub async fn extend(&self, ttl: Duration) -> Result<bool, RedisError> {
        let ms = ttl_millis(ttl)?;
        self.locks
            .compare_and(&self.locks.scripts.extend, &self.key, &self.value, Some(ms))
            .await
    }

    /// Does this guard still hold the lock?
    pub async fn is_held(&self) -> Result<bool, RedisError> {
        self.locks.is_current(&self.name, self.token).await
    }

    /// Releases the lock if this guard still holds it: false when it had
    /// expired (a newer holder's lock is left alone).
    pub async fn release(mut self) -> Result<bool, RedisError> {
        self.released = true;
        self.locks
            .compare_and(&self.locks.scripts.release, &self.key, &self.value, None)
            .await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let locks = self.locks.clone();
        let key = self.key.clone();
        let value = std::mem::take(&mut self.value);
        runtime.spawn(async move {
            let _ = locks
                .compare_and(&locks.scripts.release, &key, &value, None)
                .await;
        });
    }
}
