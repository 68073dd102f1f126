//! The real binary as a child process, its stderr read line by line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The built binary, for end-to-end tests that need a real process.
/// `RUCHY_TEST_BINARY` points them at another build instead (to
/// check that a test fails against the build before a fix).
pub fn binary() -> PathBuf {
    std::env::var_os("RUCHY_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ruchy-serve")))
}

/// Environment every spawned daemon gets: the metrics listener on an
/// ephemeral port, so parallel tests never fight over the default
/// 127.0.0.1:9898, and root allowed, since CI runs the suite as root (the
/// refusal itself is tested with this removed).
pub const DAEMON_ENV: [(&str, &str); 2] = [
    ("RUCHY_SERVE_METRICS__ADDRESS", "127.0.0.1:0"),
    ("RUCHY_SERVE_ALLOW_ROOT", "true"),
];

/// The binary as a command with [`DAEMON_ENV`].
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    cmd.envs(DAEMON_ENV);
    cmd
}

/// A running `ruchy-serve` process whose stderr is read line by line.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Spawns the binary with `args` (which must make it listen on
    /// 127.0.0.1:0) and waits for its "ready" line to learn the port.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon::from_command(cmd)
    }

    /// The binary with `var` taken out of [`DAEMON_ENV`].
    pub fn spawn_env_removed(args: &[&str], var: &str) -> Daemon {
        let mut cmd = command();
        cmd.args(args).env_remove(var);
        Daemon::from_command(cmd)
    }

    /// The binary started through another program (setpriv, prlimit) that
    /// execs it: `args` name the binary and its own arguments.
    pub fn spawn_program(program: &str, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(program);
        cmd.args(args).envs(DAEMON_ENV);
        Daemon::from_command(cmd)
    }

    fn from_command(mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ruchy-serve");
        let (log, rx) = drain_stderr(&mut child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no ready line; log: {:?}", log.lock().unwrap());
            };
            // The first plain listener, else (a TLS-only server) the first
            // TLS one.
            let found = line
                .find("http://")
                .map(|p| p + 7)
                .or_else(|| line.find("https://").map(|p| p + 8));
            if let Some(pos) = found {
                if line.contains("ready") {
                    let rest = &line[pos..];
                    let addr = rest.split('/').next().unwrap().parse().unwrap();
                    return Daemon { child, addr, log };
                }
            }
        }
    }

    /// The binary serving `root` on an ephemeral port.
    pub fn serving(root: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(
            &["--root", root.to_str().unwrap(), "--listen", "127.0.0.1:0"],
            env,
        )
    }

    /// Opens a connection and asks for `path` without reading the answer.
    pub fn start_download(&self, path: &str) -> std::net::TcpStream {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `secs` for the process to exit.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The first log line containing `needle`, waiting up to 10 s for it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no log line containing {needle:?}; log:\n{}",
            self.log_text()
        );
    }

    /// The process's resident memory now, from /proc, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a child's stderr lines in the background.
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    drain_stderr(child).0
}

/// The one stderr-draining thread: every line is kept in the log and also
/// sent on the channel, for a reader that waits for a particular line.
fn drain_stderr(child: &mut Child) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    use std::io::BufRead;
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (log, rx)
}
