//! systemd's side of the contract, for real: listening sockets passed as
//! LISTEN_FDS, and a NOTIFY_SOCKET that receives the daemon's sd_notify
//! messages.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::daemon::{binary, DAEMON_ENV};

/// A real NOTIFY_SOCKET: a unix datagram socket the daemon sends sd_notify
/// messages to, as systemd would receive them.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: std::os::unix::net::UnixDatagram,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path,
            socket,
            _dir: dir,
        }
    }

    /// The next message, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_string()),
            Err(_) => None,
        }
    }

    /// The next message that is not a watchdog keep-alive.
    pub fn next_state(&self, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let msg = self.recv(left).expect("no sd_notify message in time");
            if msg != "WATCHDOG=1" {
                return msg;
            }
        }
    }
}

/// Spawns the binary with `fds` placed at 3, 4, ... and LISTEN_FDS,
/// LISTEN_PID and LISTEN_FDNAMES set as systemd does. LISTEN_PID must be the
/// pid of the process that reads it, so a shell sets it to its own pid ($$)
/// and then execs the binary, which keeps that pid.
pub fn spawn_activated(
    fds: &[std::os::fd::RawFd],
    names: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(binary())
        .args(args)
        .env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .envs(DAEMON_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let fds = fds.to_vec();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and
    // exec. dup2 clears FD_CLOEXEC on the copies, so they survive exec. The
    // sources are first moved above the target range so that no dup2 target
    // overwrites a source not yet copied.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = Vec::new();
            for &fd in &fds {
                let h = libc::fcntl(fd, libc::F_DUPFD, 100);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, &h) in high.iter().enumerate() {
                if libc::dup2(h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn activated ruchy-serve")
}
