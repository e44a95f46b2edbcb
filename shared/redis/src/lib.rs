//! Redis in one place.
//!
//! - [`RedisHandle`]: the one connection a process keeps to Redis —
//!   re-opened by itself with backoff, every key under the configured
//!   prefix ([`RedisHandle::key`] is the only maker of a [`Key`]), every
//!   command bounded by a timeout, failures as [`RedisError`]. It also
//!   keeps the pub/sub subscription ([`RedisHandle::subscribe_all`]) on a
//!   connection of its own.
//! - [`Locks`]: locks with expiry and fencing tokens, for work one replica
//!   at a time should do.
//! - [`SeenOnce`]: "seen once" sets for replay checks, in Redis or (one
//!   replica) in memory.
//!
//! The quota store and the fan-out (`twig-fanout`) run on the handle.

mod error;
mod handle;
mod lock;
mod pubsub;
mod seen;

pub use error::RedisError;
pub use handle::{Command, Key, RedisHandle, RedisOptions, Script, ScriptCall};
pub use lock::{FencingToken, LockGuard, Locks};
pub use pubsub::PubSubEvent;
pub use seen::{MAX_ID_LEN, MemorySeen, SeenOnce};
