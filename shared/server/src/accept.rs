//! Accepting connections without spinning: when `accept` fails (out of
//! descriptors, buffers or memory) the loop waits 5 ms, doubling up to
//! 1 s while the failures go on, and logs and counts each failure.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// First wait after a failed accept.
const FIRST: Duration = Duration::from_millis(5);
/// Longest wait between accepts while they fail.
const LONGEST: Duration = Duration::from_secs(1);

/// The wait before the next accept after consecutive failures.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The wait after one more failure: 5 ms, 10 ms, 20 ms, … up to 1 s.
    pub(crate) fn failed(&mut self) -> Duration {
        let wait = self.next.unwrap_or(FIRST);
        self.next = Some((wait * 2).min(LONGEST));
        wait
    }

    /// An accept worked: the next failure starts again at 5 ms.
    pub(crate) fn succeeded(&mut self) {
        self.next = None;
    }
}

/// What kind of accept failure, as a metric label (a fixed set).
pub(crate) fn error_kind(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => "descriptors",
        Some(libc::ENOBUFS | libc::ENOMEM) => "memory",
        _ => "other",
    }
}

/// Whether a failure means this one connection went away before it was
/// taken (nothing to wait for).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Accepts the next connection, waiting out failures as [`Backoff`] says.
/// `on_exhausted` runs when the process is out of descriptors, so that
/// the caller can free some (by closing idle connections).
pub(crate) async fn accept(
    listener: &TcpListener,
    backoff: &mut Backoff,
    mut on_exhausted: impl FnMut(),
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                return accepted;
            }
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "a connection went away before it was accepted");
            }
            Err(error) => {
                let kind = error_kind(&error);
                ::metrics::counter!("twig_accept_errors_total", "kind" => kind).increment(1);
                if kind == "descriptors" {
                    on_exhausted();
                }
                let wait = backoff.failed();
                tracing::warn!(
                    %error,
                    ?wait,
                    "cannot accept connections; waiting before the next try \
                     (out of descriptors: raise `ulimit -n` or lower server.max_connections)"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_5_ms_to_1_s_and_start_again_after_a_success() {
        let mut backoff = Backoff::default();
        let waits: Vec<u128> = (0..11).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(5));
        assert_eq!(backoff.failed(), Duration::from_millis(10));
    }

    #[test]
    fn failures_are_named_from_a_fixed_set() {
        assert_eq!(
            error_kind(&io::Error::from_raw_os_error(libc::EMFILE)),
            "descriptors"
        );
        assert_eq!(
            error_kind(&io::Error::from_raw_os_error(libc::ENFILE)),
            "descriptors"
        );
        assert_eq!(
            error_kind(&io::Error::from_raw_os_error(libc::ENOBUFS)),
            "memory"
        );
        assert_eq!(
            error_kind(&io::Error::from_raw_os_error(libc::EPERM)),
            "other"
        );
    }
}
