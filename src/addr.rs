//! Addresses, the lowest layer: where we listen ([`ListenAddr`]) and who is
//! on the other end ([`Peer`]). Configuration parses them, [`crate::listen`]
//! binds them, logs print them; this module imports nothing of ours, so all
//! of those can depend on it without depending on each other.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where to accept connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address we bind.
    Tcp(SocketAddr),
    /// A unix stream socket we create (a stale socket file is replaced).
    Unix {
        /// The socket file.
        path: PathBuf,
        /// Permission bits set on the socket file.
        mode: Option<u32>,
    },
    /// A socket inherited from systemd, by its FileDescriptorName.
    Systemd(String),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix { path, .. } => write!(f, "unix:{}", path.display()),
            ListenAddr::Systemd(name) => write!(f, "systemd:{name}"),
        }
    }
}

impl ListenAddr {
    /// The same socket, ignoring options such as a unix socket's mode: what
    /// reload compares to decide whether a listener is kept.
    pub fn same_socket(&self, other: &ListenAddr) -> bool {
        match (self, other) {
            (ListenAddr::Unix { path: a, .. }, ListenAddr::Unix { path: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }

    /// Two entries that would bind the same socket. Port 0 asks the kernel
    /// for a fresh port each time, so it never conflicts.
    pub fn conflicts(&self, other: &ListenAddr) -> bool {
        let ephemeral = matches!(self, ListenAddr::Tcp(a) if a.port() == 0);
        !ephemeral && self.same_socket(other)
    }
}

/// The peer of an accepted connection, as logged.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A TCP client (or the client a trusted proxy named).
    Tcp(SocketAddr),
    /// A client on a unix socket (no address to log).
    Unix,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d;
            // operators and log tools expect a.b.c.d.
            Peer::Tcp(a) => write!(f, "{}", a.ip().to_canonical()),
            // nginx logs "unix:" for connections on a unix socket.
            Peer::Unix => write!(f, "unix:"),
        }
    }
}

/// Longest host name looked up (DNS allows 253 bytes, a trailing dot one
/// more); a longer one is no name we serve.
pub const MAX_HOST: usize = 255;

/// A host name (no port) as site choice and certificate choice both look
/// it up: one trailing dot dropped (the absolute form names the same
/// host), ASCII lowercased into `buf`. `None` for what can be no
/// configured name: empty, longer than [`MAX_HOST`], an empty label
/// (`a..b`, `.a`, or a second trailing dot), or not UTF-8. One function, so
/// the two choices can never disagree about which name a request is for.
pub fn host_key<'b>(name: &[u8], buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty()
        || name.len() > MAX_HOST
        || name.starts_with(b".")
        || name.ends_with(b".")
        || name.windows(2).any(|w| w == b"..")
    {
        return None;
    }
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    std::str::from_utf8(lower).ok()
}
