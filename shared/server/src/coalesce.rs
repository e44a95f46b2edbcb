//! System-call batching for HTTP/2 connections (server and load client).
//!
//! Writes: the HTTP/2 encoder flushes its socket once for every DATA frame
//! larger than 256 bytes, so with many requests in flight on one
//! connection each message of a few hundred bytes or more costs its own
//! `write` system call — and on the peer its own wake-up and read.
//! [`CoalescingIo`] keeps what the protocol writes until the connection's
//! task comes round again (at the latest on its next poll), so every frame
//! produced in one pass over the streams goes out in one write.
//!
//! Reads: the HTTP/2 decoder reads at most 8 KiB at a time, so a batch of
//! 1 KiB messages takes one `read` per eight of them. [`CoalescingIo`]
//! reads up to [`READ_CHUNK`] at once and hands it out from memory.
//!
//! How long a flush is held back is a [`FlushPolicy`] decision, made at
//! every flush ([`Hold`]):
//! - [`Hold::ForThePass`]: the flush wakes the task and returns; the next
//!   read or flush — which the woken task performs once the tasks queued
//!   before it have run — writes everything pending first. Every frame of
//!   the pass goes out in one write. This pays while the process has other
//!   work to do meanwhile (other connections).
//! - [`Hold::WhileBusy`]: the frames wait for later flushes of the same
//!   connection, and at the latest until the scheduler has no other task
//!   to run. With one busy connection, holding for the whole pass would
//!   be a stop-and-wait: the peer idles until every stream is done, then
//!   the process idles while the peer answers. Held only while most of
//!   the burst is still being served, the first part goes out early and
//!   the peer's next requests arrive while the rest is served.
//! - [`Hold::No`]: write now.
//!
//! Idle connections hold no buffers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes asked of the socket per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Pending bytes beyond which writes wait for the socket (back-pressure).
const PENDING_LIMIT: usize = 256 * 1024;

/// Writes of at least this size skip the buffer when nothing is pending.
const WRITE_THROUGH: usize = 64 * 1024;

/// How long to hold a flush back; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Write now.
    No,
    /// Until the task comes round again, after the tasks queued before it.
    ForThePass,
    /// Until a later flush is not held, or the scheduler runs out of tasks.
    WhileBusy,
}

/// Decides at each flush whether to hold it back.
pub trait FlushPolicy {
    /// `held`: flushes held since the last write.
    fn hold(&self, held: usize) -> Hold;
}

/// Always holds flushes for the pass (a client driving many connections).
#[derive(Debug, Clone, Copy, Default)]
pub struct Always;

impl FlushPolicy for Always {
    fn hold(&self, _held: usize) -> Hold {
        Hold::ForThePass
    }
}

/// A wake the scheduler delivers once it has run out of other tasks
/// (`tokio::task::yield_now`'s deferral), marking the held frames due.
#[derive(Debug)]
struct DueWake {
    due: AtomicBool,
    task: Waker,
}

impl Wake for DueWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.due.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// Asks the scheduler for a [`DueWake`] once it has nothing else to run.
fn wake_when_idle(cx: &Context<'_>) -> Arc<DueWake> {
    let wake = Arc::new(DueWake {
        due: AtomicBool::new(false),
        task: cx.waker().clone(),
    });
    let waker = Waker::from(wake.clone());
    let mut deferred = std::pin::pin!(tokio::task::yield_now());
    // The first poll hands the waker to the scheduler and is pending.
    let _ = deferred.as_mut().poll(&mut Context::from_waker(&waker));
    wake
}

/// What a held flush waits for.
#[derive(Debug)]
enum Waiting {
    /// Nothing is held.
    Nothing,
    /// The task was woken: its next read or flush writes.
    Pass,
    /// Later flushes, or the scheduler's idle wake.
    Busy(Arc<DueWake>),
}

/// A connection whose flushes are coalesced; see the module docs.
#[derive(Debug)]
pub struct CoalescingIo<T, P = Always> {
    inner: T,
    policy: P,
    /// Written by the protocol, not yet handed to the socket, from `start`.
    pending: Vec<u8>,
    start: usize,
    /// What the pending frames wait for.
    waiting: Waiting,
    /// Flushes held since the last write.
    held: usize,
    /// Read from the socket, not yet taken by the protocol.
    read: BytesMut,
}

impl<T> CoalescingIo<T> {
    /// Wraps a connection whose flushes are always held back.
    pub fn new(inner: T) -> Self {
        Self::with_policy(inner, Always)
    }
}

impl<T, P> CoalescingIo<T, P> {
    /// Wraps a connection whose flushes `policy` holds back or not.
    pub fn with_policy(inner: T, policy: P) -> Self {
        Self {
            inner,
            policy,
            pending: Vec::new(),
            start: 0,
            waiting: Waiting::Nothing,
            held: 0,
            read: BytesMut::new(),
        }
    }

    fn pending_len(&self) -> usize {
        self.pending.len() - self.start
    }

    fn push(&mut self, buf: &[u8]) {
        if self.start == self.pending.len() {
            self.pending.clear();
            self.start = 0;
        }
        self.pending.extend_from_slice(buf);
    }
}

impl<T: AsyncWrite + Unpin, P> CoalescingIo<T, P> {
    /// Hands everything pending to the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.start < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.start..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.start += n;
        }
        if self.pending.capacity() > PENDING_LIMIT {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        self.start = 0;
        self.waiting = Waiting::Nothing;
        self.held = 0;
        Poll::Ready(Ok(()))
    }

    /// Whether the held frames are to be written now: the task came round
    /// for them, or the scheduler ran out of other work.
    fn due(&self) -> bool {
        match &self.waiting {
            Waiting::Nothing | Waiting::Pass => true,
            Waiting::Busy(wake) => wake.due.load(Ordering::Acquire),
        }
    }

    /// Makes room under [`PENDING_LIMIT`] before taking `len` more bytes.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.pending_len() > 0 && self.pending_len() + len > PENDING_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin, P: Unpin> AsyncRead for CoalescingIo<T, P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending_len() > 0 && this.due() {
            // A held flush completes before the connection waits for its
            // peer. If the socket is full, its readiness wakes the task
            // again and the next read retries.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        if this.read.is_empty() {
            if buf.remaining() >= READ_CHUNK {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.read.reserve(READ_CHUNK);
            let polled =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.read);
            if this.read.is_empty() {
                // Nothing arrived (or the peer closed): hold no buffer
                // while the connection waits.
                this.read = BytesMut::new();
                return polled.map_ok(|_| ());
            }
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin, P: FlushPolicy + Unpin> AsyncWrite for CoalescingIo<T, P> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending_len() == 0 && buf.len() >= WRITE_THROUGH {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        ready!(this.poll_room(cx, buf.len()))?;
        this.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if this.pending_len() == 0 && len >= WRITE_THROUGH {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        ready!(this.poll_room(cx, len))?;
        for buf in bufs {
            this.push(buf);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending_len() > 0 {
            let hold = match this.waiting {
                Waiting::Pass => Hold::No,
                _ if this.due() && this.held > 0 => Hold::No,
                _ => this.policy.hold(this.held),
            };
            match hold {
                Hold::No => ready!(this.poll_drain(cx))?,
                Hold::ForThePass => {
                    this.waiting = Waiting::Pass;
                    this.held += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
                Hold::WhileBusy => {
                    if matches!(this.waiting, Waiting::Nothing) {
                        this.waiting = Waiting::Busy(wake_when_idle(cx));
                    }
                    this.held += 1;
                    return Poll::Ready(Ok(()));
                }
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: Connected, P> Connected for CoalescingIo<T, P> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Writes and flushes "hello" through `io`, whose task then only waits
    /// to read: the bytes must reach `peer` all the same, and the reply
    /// come back.
    async fn flushed_bytes_reach_the_peer<P>(
        mut io: CoalescingIo<tokio::io::DuplexStream, P>,
        mut peer: tokio::io::DuplexStream,
        held: bool,
    ) where
        P: FlushPolicy + Unpin + Send + 'static,
    {
        let writer = tokio::spawn(async move {
            io.write_all(b"hello").await.unwrap();
            io.flush().await.unwrap();
            assert_eq!(io.pending_len(), if held { 5 } else { 0 }, "held: {held}");
            let mut reply = [0u8; 2];
            io.read_exact(&mut reply).await.unwrap();
            reply
        });
        let mut got = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("the flushed bytes arrive")
            .unwrap();
        assert_eq!(&got, b"hello");
        peer.write_all(b"ok").await.unwrap();
        assert_eq!(&writer.await.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn a_flush_reaches_the_peer_without_further_io() {
        // The task that flushes then only waits to read: the deferred
        // flush must still reach the peer.
        let (a, b) = tokio::io::duplex(1024 * 1024);
        flushed_bytes_reach_the_peer(CoalescingIo::new(a), b, true).await;
    }

    #[tokio::test]
    async fn many_writes_arrive_whole_and_in_order() {
        let (a, mut b) = tokio::io::duplex(4 * 1024);
        let mut io = CoalescingIo::new(a);
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(1_000) {
                io.write_all(chunk).await.unwrap();
                io.flush().await.unwrap();
            }
            io.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn reads_larger_than_the_caller_asks_arrive_whole() {
        let (mut a, b) = tokio::io::duplex(256 * 1024);
        let mut io = CoalescingIo::new(b);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
        });
        // Small reads, as the HTTP/2 decoder makes them.
        let mut got = Vec::new();
        let mut chunk = [0u8; 8 * 1024];
        loop {
            let n = io.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, data);
        assert!(
            io.read.is_empty() && io.read.capacity() == 0,
            "no buffer kept"
        );
    }

    /// A policy that never holds a flush back.
    struct Never;

    impl FlushPolicy for Never {
        fn hold(&self, _held: usize) -> Hold {
            Hold::No
        }
    }

    #[tokio::test]
    async fn a_flush_the_policy_does_not_hold_writes_at_once() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = CoalescingIo::with_policy(a, Never);
        io.write_all(b"abc").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(io.pending_len(), 0, "written by the first flush");
        let mut got = [0u8; 3];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abc");

        let mut held = CoalescingIo::new(tokio::io::duplex(1024).0);
        held.write_all(b"abc").await.unwrap();
        held.flush().await.unwrap();
        assert_eq!(held.pending_len(), 3, "held back by the first flush");
    }

    /// Holds while busy until `until` flushes are held.
    struct Busy {
        until: usize,
    }

    impl FlushPolicy for Busy {
        fn hold(&self, held: usize) -> Hold {
            if held < self.until {
                Hold::WhileBusy
            } else {
                Hold::No
            }
        }
    }

    #[tokio::test]
    async fn flushes_held_while_busy_go_out_together_when_the_policy_lets_go() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = CoalescingIo::with_policy(a, Busy { until: 2 });
        for part in [b"ab", b"cd"] {
            io.write_all(part).await.unwrap();
            io.flush().await.unwrap();
        }
        assert_eq!(io.pending_len(), 4, "two flushes held");
        io.write_all(b"ef").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(io.pending_len(), 0, "the third is not held: all written");
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcdef");
    }

    #[tokio::test]
    async fn a_flush_held_while_busy_goes_out_once_the_scheduler_is_idle() {
        // Held with no later flush to let it go, and the task then only
        // waits to read: the scheduler's idle wake must still send it.
        let (a, b) = tokio::io::duplex(1024);
        let io = CoalescingIo::with_policy(a, Busy { until: usize::MAX });
        flushed_bytes_reach_the_peer(io, b, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_flush_held_while_busy_goes_out_on_a_busy_worker_too() {
        // On the multi-thread scheduler, with another task keeping the one
        // worker busy, the held bytes still go out (the scheduler's
        // maintenance delivers the idle wake).
        let spinning = tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        });
        let (a, b) = tokio::io::duplex(1024);
        let io = CoalescingIo::with_policy(a, Busy { until: usize::MAX });
        flushed_bytes_reach_the_peer(io, b, true).await;
        spinning.abort();
    }

    #[tokio::test]
    async fn a_second_flush_writes_at_once() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut io = CoalescingIo::new(a);
        io.write_all(b"abc").await.unwrap();
        io.flush().await.unwrap();
        io.flush().await.unwrap();
        let mut got = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), b.read_exact(&mut got))
            .await
            .expect("written by the second flush")
            .unwrap();
        assert_eq!(&got, b"abc");
    }
}
