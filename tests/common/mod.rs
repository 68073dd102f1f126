//! Test harness: a real server on 127.0.0.1:0 (in-process through the library,
//! or the real binary), real HTTP/1.1 and HTTP/2 clients from hyper, and raw
//! TCP for byte-exact requests.
#![allow(dead_code)]

pub mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ruchy_serve::config::{self, ListenAddr, Sources};
use ruchy_serve::lifecycle::{Event, Server, Shared};
use ruchy_serve::listen::Inherited;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// An in-process server; stopped (and drained) when dropped or `stop`ped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    pub root: PathBuf,
    pub config_file: PathBuf,
    pub shared: std::sync::Arc<Shared>,
    stop: Option<mpsc::Sender<Event>>,
    done: Option<tokio::task::JoinHandle<()>>,
    _config_dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server for `root` with `extra` TOML appended to a config file
    /// that sets `root` and an ephemeral listen port.
    pub async fn start(root: &Path, extra: &str) -> TestServer {
        TestServer::start_raw(
            root,
            &format!("{extra}\n[[listen]]\naddress = \"127.0.0.1:0\"\n"),
        )
        .await
    }

    /// Starts a server whose config file is `root = ...` followed by `body`,
    /// which must list its own `[[listen]]` tables. `addrs` are the bound
    /// addresses in order; `reload` re-reads the same file.
    pub async fn start_raw(root: &Path, body: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ruchy-serve.toml");
        std::fs::write(
            &file,
            format!(
                "root = {:?}\n{}{body}\n",
                root.display().to_string(),
                metrics_default(body)
            ),
        )
        .unwrap();
        let sources = Sources {
            config_file: Some(file.clone()),
            ..Default::default()
        };
        let cfg = config::load(&sources).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let server = Server::bind(cfg, sources, Inherited::default()).expect("bind");
        let addrs: Vec<SocketAddr> = server
            .local_addrs()
            .into_iter()
            .filter_map(|a| match a {
                ListenAddr::Tcp(a) => Some(a),
                _ => None,
            })
            .collect();
        let shared = server.shared();
        let (tx, rx) = mpsc::channel(1);
        let done = tokio::spawn(server.run(rx));
        TestServer {
            shared,
            addr: addrs[0],
            addrs,
            root: root.to_path_buf(),
            config_file: file,
            stop: Some(tx),
            done: Some(done),
            _config_dir: dir,
        }
    }

    /// Rewrites the config body (as for `start_raw`) and reloads, as SIGHUP does.
    pub async fn reload(&self, body: Option<&str>) {
        if let Some(body) = body {
            std::fs::write(
                &self.config_file,
                format!(
                    "root = {:?}\n{}{body}\n",
                    self.root.display().to_string(),
                    metrics_default(body)
                ),
            )
            .unwrap();
        }
        let attempts = |s: &Shared| {
            s.reloads.succeeded.load(Ordering::Relaxed) + s.reloads.failed.load(Ordering::Relaxed)
        };
        let before = attempts(&self.shared);
        self.stop
            .as_ref()
            .unwrap()
            .send(Event::Reload)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while attempts(&self.shared) == before {
            assert!(std::time::Instant::now() < deadline, "reload not handled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Begins the drain and waits until the server has finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(Event::Shutdown).await;
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        get(self.addr, path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        get(self.addr, path, headers).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Dropping the sender ends the server's event loop: it drains.
        self.stop.take();
    }
}

/// Tests get an ephemeral metrics port unless they configure one.
fn metrics_default(body: &str) -> &'static str {
    if body.contains("[metrics]") {
        ""
    } else {
        "[metrics]\naddress = \"127.0.0.1:0\"\n"
    }
}

/// A response with its body collected.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", path, headers).await
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    collect(resp).await
}

/// Requests over one HTTP/2 (h2c prior knowledge) connection.
pub async fn get_h2(addr: SocketAddr, paths: &[&str]) -> Vec<Resp> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut out = Vec::new();
    for p in paths {
        let req = Request::builder()
            .uri(format!("http://{addr}{p}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        out.push(collect(resp).await);
    }
    out
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends raw bytes and reads until the server closes (or 5 s pass).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw reply ("HTTP/1.1 404 ...").
pub fn raw_status(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A fixture tree with the files most tests need.
pub fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    w("index.html", b"<h1>home</h1>\n");
    w("hello.txt", b"hello world\n");
    w("digits.txt", b"0123456789abcdefghijklmnopqrstuvwxyz");
    w("docs/index.html", b"<h1>docs</h1>\n");
    w("docs/page.html", b"<h1>page</h1>\n");
    w("empty-dir/readme.md", b"# no index here\n");
    w("assets/app.js", b"console.log('app');\n");
    w("assets/app.js.gz", b"GZIP-TWIN-BYTES");
    w("assets/app.js.br", b"BROTLI-TWIN");
    w("assets/app.js.zst", b"ZSTD-TWIN-DATA!");
    w("module.wasm", b"\0asm\x01\0\0\0");
    w("data.json", b"{\"a\":1}\n");
    w(".env", b"SECRET=1\n");
    w(".git/config", b"[core]\n");
    w(".well-known/security.txt", b"Contact: x\n");
    w("404.html", b"<h1>custom not found</h1>\n");
    w("50x.html", b"<h1>custom error</h1>\n");
    w("with space.txt", b"spaced\n");
    dir
}

/// The built binary, for end-to-end tests that need a real process.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ruchy-serve"))
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
    pub lines: std::sync::mpsc::Receiver<String>,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
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
        use std::io::BufRead;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ruchy-serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                log2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no ready line; log: {:?}", log.lock().unwrap());
            };
            if let Some(pos) = line.find("http://") {
                if line.contains("ready") {
                    let rest = &line[pos + 7..];
                    let addr = rest.split('/').next().unwrap().parse().unwrap();
                    return Daemon {
                        child,
                        addr,
                        lines: rx,
                        log,
                    };
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

/// Collects a child's stderr lines in the background.
pub fn collect_stderr(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    log
}

/// GET over a fresh std TCP connection with `Connection: close`; the whole reply.
pub fn blocking_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    blocking_exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Sends `request` over a new connection and reads until the server closes
/// (or 10 s pass); returns what arrived, as lossy text. Fails only when the
/// connection or the write does: a reset after a partial answer is an answer.
pub fn blocking_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}
