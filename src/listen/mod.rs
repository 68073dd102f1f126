//! Listening sockets. Knows addresses and file descriptors, nothing of HTTP or
//! TLS: [`crate::conn`] takes whatever [`Listener::accept`] yields.
//!
//! The enum is the seam for the systemd issue: unix sockets and inherited
//! socket-activation descriptors become further variants of [`Listener`] and
//! [`Stream`], and the one accept loop serves them unchanged.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::config::ListenAddr;

/// Kernel accept queue length; the same as nginx's default on Linux.
const BACKLOG: i32 = 511;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}{}", hint(source))]
    Bind {
        addr: ListenAddr,
        #[source]
        source: io::Error,
    },
}

fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            " (hint: another process holds this port; `ss -ltnp` shows which)"
        }
        io::ErrorKind::PermissionDenied => {
            " (hint: ports below 1024 need CAP_NET_BIND_SERVICE or systemd socket activation)"
        }
        io::ErrorKind::AddrNotAvailable => " (hint: this machine has no such address)",
        _ => "",
    }
}

pub enum Listener {
    Tcp(TcpListener),
}

/// The peer of an accepted connection, as logged.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Tcp(SocketAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{}", a.ip()),
        }
    }
}

impl Listener {
    /// Binds with SO_REUSEADDR (so a restart does not wait for TIME_WAIT) and,
    /// for IPv6, IPV6_V6ONLY, so `[::]:80` and `0.0.0.0:80` can both be listed.
    pub fn bind(addr: &ListenAddr) -> Result<Listener, ListenError> {
        match addr {
            ListenAddr::Tcp(sa) => {
                bind_tcp(*sa)
                    .map(Listener::Tcp)
                    .map_err(|source| ListenError::Bind {
                        addr: addr.clone(),
                        source,
                    })
            }
        }
    }

    /// The address actually bound (port 0 resolved), for logs and tests.
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
        }
    }

    /// Accepts the next connection. Errors that concern one connection
    /// (reset before accept) are skipped; resource errors (EMFILE, ENFILE,
    /// ENOBUFS) back off, doubling from 5 ms to 1 s, so a full fd table does not
    /// turn the accept loop into a busy spin.
    pub async fn accept(&self) -> (Stream, Peer) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let result = match self {
                Listener::Tcp(l) => l.accept().await.map(|(s, a)| {
                    // Small responses must not wait for Nagle's delayed ACK.
                    let _ = s.set_nodelay(true);
                    (Stream::Tcp(s), Peer::Tcp(a))
                }),
            };
            match result {
                Ok(conn) => return conn,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// An accepted byte stream of any listener kind.
pub enum Stream {
    Tcp(TcpStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
