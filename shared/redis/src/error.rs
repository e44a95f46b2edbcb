//! The one error type of this crate.

use std::time::Duration;

/// What went wrong talking to Redis (or, for the memory seen-once set,
/// what it refused). The sources are kept: `{:#}`-style reports and
/// [`RedisError::detail`] show the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The configured URL is not a Redis URL.
    #[error("the Redis URL is not valid")]
    Url(#[source] redis::RedisError),
    /// A connection could not be opened.
    #[error("cannot connect to Redis")]
    Connect(#[source] redis::RedisError),
    /// Redis did not answer (or accept a connection) in time.
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    /// The last connection attempt failed moments ago; the next is not due
    /// yet (see [`crate::RedisHandle`]'s backoff).
    #[error("not connected to Redis; reconnecting")]
    Reconnecting,
    /// The connection broke while a command was under way.
    #[error("the connection to Redis broke")]
    Connection(#[source] redis::RedisError),
    /// Redis answered with an error (a bad command, a script error).
    #[error("Redis refused the command")]
    Command(#[source] redis::RedisError),
    /// Redis answered something this crate did not expect.
    #[error("unexpected answer from Redis: {0}")]
    Unexpected(String),
    /// A lock, namespace or id that cannot be used as (part of) a key.
    #[error("not a valid {what}: {value:?}")]
    InvalidName {
        /// What was being named: `lock name`, `namespace`, `id`.
        what: &'static str,
        /// The offending value (cut to 64 characters).
        value: String,
    },
    /// A time to live that Redis cannot keep (zero, or not whole
    /// milliseconds that fit).
    #[error("not a valid time to live: {0:?}")]
    InvalidTtl(Duration),
    /// The memory seen-once set holds its maximum of unexpired entries;
    /// the sighting is not recorded (and must not be accepted).
    #[error("the seen-once set is full ({0} unexpired entries)")]
    Full(usize),
}

impl RedisError {
    /// True when Redis could not be reached or did not answer: the caller's
    /// outage policy applies. False for a refused command, an unexpected
    /// answer or a bad argument.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::Timeout(_) | Self::Reconnecting | Self::Connection(_)
        )
    }

    /// The message and every source's, joined by `: `.
    pub fn detail(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            out.push_str(": ");
            out.push_str(&e.to_string());
            source = e.source();
        }
        out
    }

    /// A failed command: a broken connection or a refusal.
    pub(crate) fn of_command(e: redis::RedisError) -> Self {
        if breaks_connection(&e) {
            Self::Connection(e)
        } else {
            Self::Command(e)
        }
    }

    pub(crate) fn invalid(what: &'static str, value: &str) -> Self {
        Self::InvalidName {
            what,
            value: value.chars().take(64).collect(),
        }
    }
}

/// Does this error mean the connection is gone (so it must be re-opened)?
pub(crate) fn breaks_connection(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// Milliseconds of a time to live, as Redis takes them (`PX`).
pub(crate) fn ttl_millis(ttl: Duration) -> Result<u64, RedisError> {
    let ms = u64::try_from(ttl.as_millis()).map_err(|_| RedisError::InvalidTtl(ttl))?;
    // Redis refuses 0 and anything past i64 milliseconds.
    if ms == 0 || ms > i64::MAX as u64 / 2 {
        return Err(RedisError::InvalidTtl(ttl));
    }
    Ok(ms)
}
