//! Listening sockets. Knows addresses and file descriptors, nothing of HTTP or
//! TLS: [`crate::conn`] takes whatever [`Listener::accept`] yields.
//!
//! Three sources, one type: TCP sockets we bind, unix sockets we create, and
//! sockets inherited from systemd (socket activation), which may themselves be
//! TCP or unix. The one accept loop serves them all unchanged.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::addr::ListenAddr;
pub use crate::addr::Peer;

/// Kernel accept queue length; the same as nginx's default on Linux.
const BACKLOG: i32 = 511;

/// Why a listener could not be opened. Each variant's message names the
/// address and, where there is one, the fix; the fields are what it prints.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}{}", hint(source))]
    Bind {
        addr: ListenAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on unix:{}: {reason}", path.display())]
    UnixPath { path: PathBuf, reason: String },
    #[error("listen address systemd:{name}: systemd passed no socket named `{name}` (passed: {passed}) (hint: set FileDescriptorName={name} in the .socket unit and list that unit in the service's Sockets=)")]
    MissingSystemd { name: String, passed: String },
    #[error(
        "listen address systemd:{name}: inherited descriptor {fd} is not a listening stream socket"
    )]
    BadSystemd { name: String, fd: i32 },
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

/// Sockets passed by systemd (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), taken
/// once at start-up. They stay open for the life of the process: listeners get
/// duplicates, so a reload that drops a `systemd:` listener never closes a
/// socket systemd owns, and a later reload can serve it again.
#[derive(Debug, Default)]
pub struct Inherited {
    fds: Vec<(String, OwnedFd)>,
}

impl Inherited {
    /// Takes the sockets systemd passed to this process (none when LISTEN_PID
    /// names another process) and unsets the variables so children do not
    /// inherit them. Call before any thread starts: it edits the environment.
    pub fn from_env() -> io::Result<Inherited> {
        use std::os::fd::FromRawFd;
        let fds = sd_notify::listen_fds_with_names()?;
        let fds = fds
            // SAFETY: sd_listen_fds hands these descriptors to us alone; each
            // is wrapped exactly once, here.
            .map(|(fd, name)| (name, unsafe { OwnedFd::from_raw_fd(fd) }))
            .collect();
        for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        Ok(Inherited { fds })
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.fds.iter().map(|(n, _)| n.as_str()).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }
}

/// A listening socket of any kind.
pub enum Listener {
    /// TCP, bound here or inherited.
    Tcp(TcpListener),
    /// A unix stream socket.
    Unix(UnixSocket),
}

/// A unix listener that removes its socket file when dropped, if the file is
/// still the one it created.
pub struct UnixSocket {
    listener: UnixListener,
    /// Set for sockets we created; inherited ones are systemd's to remove.
    owned: Option<(PathBuf, u64)>,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if let Some((path, ino)) = &self.owned {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Listener {
    /// Binds (or adopts) the sockets for `addr`. A `systemd:` name may stand
    /// for several sockets (one .socket unit with several ListenStream=).
    pub fn open(addr: &ListenAddr, inherited: &Inherited) -> Result<Vec<Listener>, ListenError> {
        let bind_err = |source| ListenError::Bind {
            addr: addr.clone(),
            source,
        };
        match addr {
            ListenAddr::Tcp(sa) => Ok(vec![Listener::Tcp(bind_tcp(*sa).map_err(bind_err)?)]),
            ListenAddr::Unix { path, mode } => Ok(vec![bind_unix(path, *mode)?]),
            ListenAddr::Systemd(name) => {
                let matching: Vec<&OwnedFd> = inherited
                    .fds
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, fd)| fd)
                    .collect();
                if matching.is_empty() {
                    return Err(ListenError::MissingSystemd {
                        name: name.clone(),
                        passed: inherited.names(),
                    });
                }
                matching
                    .into_iter()
                    .map(|fd| adopt(name, fd).map_err(|e| e.unwrap_or_else(bind_err)))
                    .collect()
            }
        }
    }

    /// The address actually bound (port 0 resolved), for logs and tests.
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(u) => {
                let addr = u.listener.local_addr()?;
                Ok(ListenAddr::Unix {
                    path: addr
                        .as_pathname()
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                    mode: None,
                })
            }
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
                Listener::Unix(u) => u
                    .listener
                    .accept()
                    .await
                    .map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
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

/// Wraps a duplicate of an inherited descriptor after checking that it is a
/// listening stream socket. I/O errors come back as `Err(Err(io))` for the
/// caller to attach the address to.
fn adopt(name: &str, fd: &OwnedFd) -> Result<Listener, Result<ListenError, io::Error>> {
    use std::os::fd::AsRawFd;
    let dup = fd.try_clone().map_err(Err)?;
    let socket = socket2::Socket::from(dup);
    let listening = socket.r#type().ok() == Some(socket2::Type::STREAM)
        && socket.is_listener().unwrap_or(false);
    if !listening {
        return Err(Ok(ListenError::BadSystemd {
            name: name.to_string(),
            fd: fd.as_raw_fd(),
        }));
    }
    socket.set_nonblocking(true).map_err(Err)?;
    socket.set_cloexec(true).map_err(Err)?;
    let local = socket.local_addr().map_err(Err)?;
    if local.as_socket().is_some() {
        let std: std::net::TcpListener = socket.into();
        Ok(Listener::Tcp(TcpListener::from_std(std).map_err(Err)?))
    } else {
        let std: std::os::unix::net::UnixListener = OwnedFd::from(socket).into();
        Ok(Listener::Unix(UnixSocket {
            listener: UnixListener::from_std(std).map_err(Err)?,
            owned: None,
        }))
    }
}

/// Creates a unix socket at `path`. A socket file already there is replaced
/// only when it is a socket and nothing accepts on it (left over from a crash);
/// a live socket or any other kind of file is an error.
fn bind_unix(path: &Path, mode: Option<u32>) -> Result<Listener, ListenError> {
    let fail = |reason: String| ListenError::UnixPath {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(fail(
                        "another process is accepting on this socket (hint: stop it, or pick another path)".into(),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "removing stale unix socket");
                    std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove stale socket: {e}")))?;
                }
                Err(e) => return Err(fail(format!("cannot probe existing socket: {e}"))),
            }
        }
        Ok(_) => {
            return Err(fail(
                "a file that is not a socket is in the way (hint: remove it or pick another path)"
                    .into(),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        fail(match e.kind() {
            io::ErrorKind::NotFound => {
                format!("{e} (hint: create the directory, e.g. RuntimeDirectory= in the unit)")
            }
            _ => e.to_string(),
        })
    })?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail(format!("cannot set mode {mode:o}: {e}")))?;
    }
    let ino = std::fs::symlink_metadata(path)
        .map(|m| m.ino())
        .unwrap_or(0);
    Ok(Listener::Unix(UnixSocket {
        listener,
        owned: Some((path.to_path_buf(), ino)),
    }))
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
    /// A TCP connection.
    Tcp(TcpStream),
    /// A unix-socket connection.
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
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
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
