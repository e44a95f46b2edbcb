//! One connection from accept to close: the first-byte deadline, HTTP/1
//! or HTTP/2 with every limit set, the idle timeout, the age limit, being
//! shed for a newer connection, and shutdown.
//!
//! A connection closing for idleness, age or shutdown is asked to close
//! gracefully (HTTP/2: GOAWAY, requests in flight finish); once it has had
//! no request in flight for [`LINGER`] after that, or its grace is over,
//! it is closed outright, so a client that never answers the GOAWAY does
//! not keep it open.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::server::Connected;

use crate::in_flight::{InFlight, Stack, Tracked};
use crate::limits::Limits;
use crate::registry::{Conn, Registered};
use crate::{CoalescingIo, FlushPolicy, Hold};

/// How long a closing connection with nothing in flight may take to
/// acknowledge its GOAWAY.
const LINGER: Duration = Duration::from_secs(1);
/// How often a closing connection is looked at.
const CLOSING_CHECK: Duration = Duration::from_millis(100);
/// Far enough to mean never.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Where the server is in its life, as connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepting and serving.
    Serving,
    /// Shutting down: connections close gracefully.
    Draining,
    /// The drain deadline passed: connections close now.
    Closing,
}

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) http: Builder<TokioExecutor>,
    pub(crate) limits: Limits,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) phase: watch::Receiver<Phase>,
}

/// Why a connection was closed: the `reason` label of
/// `twig_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The client closed it, or it ended normally.
    Client,
    /// A protocol error, a header-read timeout or an unanswered ping.
    Error,
    /// Nothing arrived within the first-byte deadline.
    FirstByte,
    /// No request in flight for the idle timeout.
    Idle,
    /// Its maximum age.
    Age,
    /// Closed to make room for a new connection (a cap was reached).
    Shed,
    /// Refused at accept: a cap was reached and nothing was idle.
    Refused,
    /// The server shut down.
    Shutdown,
}

impl Closed {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Error => "error",
            Self::FirstByte => "first_byte",
            Self::Idle => "idle",
            Self::Age => "age",
            Self::Shed => "shed",
            Self::Refused => "refused",
            Self::Shutdown => "shutdown",
        }
    }

    pub(crate) fn count(self) {
        ::metrics::counter!("twig_connections_closed_total", "reason" => self.label()).increment(1);
    }
}

/// The HTTP/1 and HTTP/2 settings, every one from `limits`.
pub(crate) fn http_builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.http1_header_read_timeout)
        .max_headers(limits.http1_max_headers)
        .max_buf_size(limits.http1_max_buf_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_local_error_reset_streams(limits.http2_max_local_error_resets)
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_resets)
        .max_header_list_size(limits.max_header_bytes)
        .max_send_buf_size(limits.http2_max_send_buf_bytes)
        .initial_stream_window_size(limits.http2_initial_stream_window_bytes)
        .initial_connection_window_size(limits.http2_initial_connection_window_bytes)
        .adaptive_window(false)
        .max_frame_size(limits.http2_max_frame_bytes)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    builder
}

/// Serves one admitted connection with `stack` until it closes, and
/// counts why.
pub(crate) async fn run<S: Stack>(
    tcp: TcpStream,
    registered: Registered,
    stack: S,
    shared: Arc<Shared>,
) {
    let closed = serve(tcp, registered.conn(), stack, &shared).await;
    tracing::debug!(reason = closed.label(), "connection closed");
    closed.count();
    drop(registered);
}

async fn serve<S: Stack>(tcp: TcpStream, conn: &Arc<Conn>, stack: S, shared: &Shared) -> Closed {
    let limits = &shared.limits;
    let mut phase = shared.phase.clone();
    let mut probe = [0u8; 1];
    tokio::select! {
        () = conn.shed() => return Closed::Shed,
        _ = phase.wait_for(|p| *p != Phase::Serving) => return Closed::Shutdown,
        first = tokio::time::timeout(limits.first_byte_timeout, tcp.peek(&mut probe)) => {
            match first {
                Err(_) => return Closed::FirstByte,
                Ok(Ok(0)) => return Closed::Client,
                Ok(Err(_)) => return Closed::Error,
                Ok(Ok(_)) => {}
            }
        }
    }

    let io = CoalescingIo::with_policy(
        tcp,
        Batching {
            conn: conn.clone(),
            in_flight: shared.in_flight.clone(),
        },
    );
    let service = Tracked {
        stack,
        conn: conn.clone(),
        in_flight: shared.in_flight.clone(),
        info: io.connect_info(),
    };
    let connection = shared.http.serve_connection(TokioIo::new(io), service);
    let idle_timeout = limits.idle_timeout;
    let age_at = Instant::now() + limits.max_connection_age.map_or(NEVER, jittered);
    // One timer for the idle check, the age limit and, once closing, the
    // closing check: fewer timers to poll on every wake of the connection.
    let check = tokio::time::sleep_until((Instant::now() + idle_timeout).min(age_at));
    tokio::pin!(connection, check);
    // Why and since when the connection is closing, and its grace.
    let mut closing: Option<(Closed, Instant, Duration)> = None;
    loop {
        let close = tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = &result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return match (closing, result) {
                    (Some((reason, _, _)), _) => reason,
                    (None, Ok(())) => Closed::Client,
                    (None, Err(_)) => Closed::Error,
                };
            }
            () = conn.shed() => return Closed::Shed,
            changed = phase.changed() => {
                let now = changed.map(|()| *phase.borrow_and_update());
                match now {
                    Ok(Phase::Serving) => None,
                    Ok(Phase::Draining) if closing.is_none() => Some(Closed::Shutdown),
                    Ok(Phase::Draining) => None,
                    Ok(Phase::Closing) | Err(_) => {
                        return closing.map_or(Closed::Shutdown, |(reason, _, _)| reason);
                    }
                }
            }
            () = &mut check => {
                let now = Instant::now();
                match closing {
                    None if now >= age_at => Some(Closed::Age),
                    None => match conn.idle_for() {
                        Some(idle) if idle >= idle_timeout => Some(Closed::Idle),
                        idle => {
                            let left = idle_timeout - idle.unwrap_or_default();
                            check.as_mut().reset((now + left).min(age_at));
                            None
                        }
                    },
                    Some((reason, since, grace)) => {
                        let waited = now - since;
                        let settled = conn.idle_for().is_some() && waited >= LINGER;
                        if settled || waited >= grace {
                            return reason;
                        }
                        check.as_mut().reset(now + CLOSING_CHECK);
                        None
                    }
                }
            }
        };
        if let Some(reason) = close {
            connection.as_mut().graceful_shutdown();
            // At shutdown the drain deadline bounds the wait instead.
            let grace = match reason {
                Closed::Shutdown => NEVER,
                _ => limits.max_connection_age_grace,
            };
            closing = Some((reason, Instant::now(), grace));
            check.as_mut().reset(Instant::now() + CLOSING_CHECK);
        }
    }
}

/// When a connection's flushes are held back (see [`crate::coalesce`]):
/// for the whole pass while other connections have requests in flight (the
/// process has their work to do meanwhile); while this connection alone is
/// busy, only until about half of its burst has been answered, so that its
/// client is never left waiting for the whole of it.
struct Batching {
    conn: Arc<Conn>,
    in_flight: Arc<InFlight>,
}

impl FlushPolicy for Batching {
    fn hold(&self, held: usize) -> Hold {
        let own = self.conn.in_flight();
        if self.in_flight.count() > own {
            Hold::ForThePass
        } else if own > held {
            Hold::WhileBusy
        } else {
            Hold::No
        }
    }
}

/// `age` ± 10 %, so that connections opened together do not all close
/// together.
fn jittered(age: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let fraction = (random % 10_001) as f64 / 10_000.0;
    age.mul_f64(0.9 + 0.2 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn flushes_are_held_for_the_pass_only_while_other_connections_are_busy() {
        let registry = Registry::new(10, 10);
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (this, other) = (registry.admit(ip).unwrap(), registry.admit(ip).unwrap());
        let in_flight = InFlight::new(100);
        let policy = Batching {
            conn: this.conn().clone(),
            in_flight: in_flight.clone(),
        };
        let start = |registered: &Registered| {
            (
                registered.conn().start_request(),
                in_flight.try_acquire().unwrap(),
            )
        };

        assert_eq!(policy.hold(0), Hold::No, "nothing in flight");
        // This connection alone: held until half of its burst is answered.
        let mine: Vec<_> = (0..4).map(|_| start(&this)).collect();
        assert_eq!(policy.hold(0), Hold::WhileBusy);
        assert_eq!(policy.hold(3), Hold::WhileBusy);
        assert_eq!(policy.hold(4), Hold::No);
        // Another connection busy too: held for the pass.
        let theirs = start(&other);
        assert_eq!(policy.hold(4), Hold::ForThePass);
        drop(theirs);
        assert_eq!(policy.hold(4), Hold::No);
        drop(mine);
        assert_eq!(policy.hold(0), Hold::No);
    }

    #[test]
    fn ages_spread_within_ten_percent() {
        let age = Duration::from_secs(3600);
        let ages: Vec<Duration> = (0..200).map(|_| jittered(age)).collect();
        assert!(
            ages.iter()
                .all(|a| *a >= age.mul_f64(0.9) && *a <= age.mul_f64(1.1))
        );
        let distinct: std::collections::HashSet<_> = ages.iter().collect();
        assert!(distinct.len() > 100, "{} distinct", distinct.len());
    }
}
