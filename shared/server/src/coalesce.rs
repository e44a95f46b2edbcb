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
//! The rule that keeps latency bounded: a flush with data pending wakes the
//! task and returns; the next read or flush of the connection — which the
//! woken task performs straight away — writes everything pending first.
//! Idle connections hold no buffers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes asked of the socket per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Pending bytes beyond which writes wait for the socket (back-pressure).
const PENDING_LIMIT: usize = 256 * 1024;

/// Writes of at least this size skip the buffer when nothing is pending.
const WRITE_THROUGH: usize = 64 * 1024;

/// A connection whose flushes are coalesced; see the module docs.
#[derive(Debug)]
pub struct CoalescingIo<T> {
    inner: T,
    /// Written by the protocol, not yet handed to the socket, from `start`.
    pending: Vec<u8>,
    start: usize,
    /// A flush was deferred and the task woken to complete it.
    deferred: bool,
    /// Read from the socket, not yet taken by the protocol.
    read: BytesMut,
}

impl<T> CoalescingIo<T> {
    /// Wraps a connection.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            start: 0,
            deferred: false,
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

impl<T: AsyncWrite + Unpin> CoalescingIo<T> {
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
        self.deferred = false;
        Poll::Ready(Ok(()))
    }

    /// Makes room under [`PENDING_LIMIT`] before taking `len` more bytes.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.pending_len() > 0 && self.pending_len() + len > PENDING_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for CoalescingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending_len() > 0 {
            // A deferred flush completes before the connection waits for
            // its peer. If the socket is full, its readiness wakes the task
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

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescingIo<T> {
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
            if !this.deferred {
                // More frames usually follow in this pass; the woken task
                // writes them all together.
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for CoalescingIo<T> {
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

    #[tokio::test]
    async fn a_flush_reaches_the_peer_without_further_io() {
        // The task that flushes then only waits to read: the deferred
        // flush must still reach the peer.
        let (a, mut b) = tokio::io::duplex(1024 * 1024);
        let mut io = CoalescingIo::new(a);
        let writer = tokio::spawn(async move {
            io.write_all(b"hello").await.unwrap();
            io.flush().await.unwrap();
            let mut reply = [0u8; 2];
            io.read_exact(&mut reply).await.unwrap();
            reply
        });
        let mut got = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), b.read_exact(&mut got))
            .await
            .expect("the flushed bytes arrive")
            .unwrap();
        assert_eq!(&got, b"hello");
        b.write_all(b"ok").await.unwrap();
        assert_eq!(&writer.await.unwrap(), b"ok");
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
