//! HTTP/2 writes coalesced per connection poll.
//!
//! The h2 crate flushes after every DATA frame whose payload it does not
//! copy (over 256 bytes on vectored IO, `CHAIN_THRESHOLD` in its encoder):
//! its write buffer counts as full while a chained payload waits, so each
//! response costs one `writev`, even when ten streams are answered in the
//! same poll (benches/README.md, "HTTP/2 writes"). lighttpd answers every
//! ready stream with one write.
//!
//! [`Coalesce`] is the IO hyper's HTTP/2 connection writes to: it takes
//! writes into its own buffer (up to [`LIMIT`]) and answers h2's flushes at
//! once, and the session writes the buffer out when the connection's poll
//! is done ([`Coalesce::flush_now`]). So every frame one poll produces goes
//! out in one write (one TLS record or a few, on TLS), and no byte waits
//! past the poll that made it. Past [`LIMIT`] writes go to the socket (and
//! wait for it), so a client that does not read still pushes back.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held before writes go to the socket: many small responses' worth,
/// while a large body streams through. The size of h2's own write buffer:
/// like it, a fixed cost per busy connection (bounded by
/// `limits.max_connections`), held only while a poll's writes are out and
/// given back once they are written, so an idle connection holds none.
pub const LIMIT: usize = 16 * 1024;

/// The connection's stream with a write buffer; clones share it (one for
/// hyper, one for the session).
pub struct Coalesce<I>(Arc<Mutex<Inner<I>>>);

struct Inner<I> {
    io: I,
    buf: Vec<u8>,
}

impl<I> Clone for Coalesce<I> {
    fn clone(&self) -> Self {
        Coalesce(Arc::clone(&self.0))
    }
}

impl<I: AsyncWrite + Unpin> Inner<I> {
    /// Writes the buffer out; `Ready(Ok)` once it is empty.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.buf.drain(..n);
        }
        // Written out: an idle connection keeps no buffer.
        self.buf = Vec::new();
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<I: AsyncWrite + Unpin> Coalesce<I> {
    /// `io` with an empty buffer.
    pub fn new(io: I) -> Coalesce<I> {
        Coalesce(Arc::new(Mutex::new(Inner {
            io,
            buf: Vec::new(),
        })))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner<I>> {
        // One task (the connection's) uses both clones, one at a time.
        self.0.lock().expect("coalesce lock")
    }

    /// Writes out what the connection's poll buffered. `Pending` when the
    /// socket is full: its readiness wakes the connection's task, which
    /// calls this again.
    pub fn flush_now(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.inner();
        if inner.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        inner.drain(cx)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Coalesce<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.0.lock().expect("coalesce lock");
        Pin::new(&mut inner.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Coalesce<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.inner();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if inner.buf.len() + len > LIMIT {
            // Full: the socket takes what is held first, and then (with the
            // buffer empty) a large write goes straight through.
            match inner.drain(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            if len > LIMIT {
                return Pin::new(&mut inner.io).poll_write_vectored(cx, bufs);
            }
        }
        if inner.buf.capacity() == 0 {
            inner.buf.reserve(len.max(4096));
        }
        for b in bufs {
            inner.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// h2 flushes after each frame it could not copy: answered at once, the
    /// bytes go out when the connection's poll is done.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.inner();
        match inner.drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Pin::new(&mut inner.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes are held until `flush_now`, then go out in order, whole.
    #[tokio::test]
    async fn writes_are_held_until_the_poll_is_done_then_sent_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let c = Coalesce::new(a);
        let mut w = c.clone();
        w.write_all(b"one ").await.unwrap();
        w.flush().await.unwrap();
        w.write_all(b"two").await.unwrap();
        let mut got = [0u8; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut got)).await;
        assert!(early.is_err(), "nothing before flush_now");
        std::future::poll_fn(|cx| c.flush_now(cx)).await.unwrap();
        let n = b.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"one two");
    }

    /// Past the limit the socket's back-pressure reaches the writer.
    #[tokio::test]
    async fn a_full_socket_pushes_back_past_the_limit() {
        let (a, _b) = tokio::io::duplex(4096);
        let mut w = Coalesce::new(a);
        let big = vec![1u8; LIMIT];
        w.write_all(&big).await.unwrap();
        let more =
            tokio::time::timeout(std::time::Duration::from_millis(100), w.write_all(&big)).await;
        assert!(more.is_err(), "a write past the limit waits for the socket");
    }
}
