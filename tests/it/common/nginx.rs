//! The real nginx as a process, for tests that compare with it: started in
//! the foreground (`daemon off;` in its configuration), stopped as nginx is
//! stopped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx master.
pub struct Nginx(Child);

impl Nginx {
    /// Starts nginx on `conf` with prefix `prefix`, and waits until each of
    /// `addrs` accepts connections (10 s at most).
    pub fn start(conf: &Path, prefix: &Path, addrs: &[SocketAddr]) -> Nginx {
        let child = Command::new("nginx")
            .args(["-c", conf.to_str().unwrap(), "-p", prefix.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (tests/run installs it)");
        let nginx = Nginx(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in addrs {
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "nginx did not listen on {addr}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        nginx
    }
}

/// Stopped as nginx is stopped: SIGQUIT to the master, which waits for
/// its workers (SIGKILL to the master alone left a worker listening after
/// the run), SIGKILL only if it has not exited within 10 s.
impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
