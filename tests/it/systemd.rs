//! systemd integration with real parts: inherited socket-activation file
//! descriptors, a real NOTIFY_SOCKET, real signals to the real binary, unix
//! sockets, and reloads under load. (A real systemd as PID 1 is exercised by
//! tests/systemd/run-container.sh, which tests/run also runs.)

use crate::common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    binary, blocking_get, collect_stderr, fixture, spawn_activated, ConfigFile, NotifySocket,
};

const SECOND: Duration = Duration::from_secs(1);

fn kill(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A child that is killed when the test ends, passing or not.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unix_get(path: &Path, target: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn socket_activation_serves_named_tcp_and_unix_fds() {
    let dir = fixture();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("backend.sock");
    let unix = UnixListener::bind(&sock_path).unwrap();
    let cfg = ConfigFile::new(
        dir.path(),
        "[[listen]]\naddress = \"systemd:http\"\n[[listen]]\naddress = \"systemd:backend\"\n",
    );
    let notify = NotifySocket::new();
    let mut child = spawn_activated(
        &[tcp.as_raw_fd(), unix.as_raw_fd()],
        &["http", "backend"],
        &["--config", cfg.arg()],
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    let log = collect_stderr(&mut child);
    let mut child = Guard(child);
    let ready = notify.next_state(10 * SECOND);
    assert!(
        ready.starts_with("READY=1"),
        "{ready}; log: {:?}",
        log.lock().unwrap()
    );
    // Our copies are closed: only the daemon holds the sockets now.
    drop(tcp);
    drop(unix);

    let reply = blocking_get(tcp_addr, "/hello.txt").unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello world\n"));
    let reply = unix_get(&sock_path, "/hello.txt");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello world\n"));

    // Reload keeps inherited sockets open and serving.
    kill(&child.0, "HUP");
    assert!(notify.next_state(10 * SECOND).starts_with("RELOADING=1"));
    assert!(notify.next_state(10 * SECOND).starts_with("READY=1"));
    assert!(blocking_get(tcp_addr, "/hello.txt")
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    kill(&child.0, "TERM");
    assert_eq!(wait_exit(&mut child.0, 10).and_then(|s| s.code()), Some(0));
    // systemd's unix socket file is systemd's to remove, not ours.
    assert!(sock_path.exists(), "an inherited socket file was removed");
}

#[test]
fn missing_named_fd_is_a_clear_start_up_error() {
    let dir = fixture();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = ConfigFile::new(dir.path(), "[[listen]]\naddress = \"systemd:https\"\n");
    let mut child = spawn_activated(&[tcp.as_raw_fd()], &["http"], &["--config", cfg.arg()], &[]);
    let log = collect_stderr(&mut child);
    let status = wait_exit(&mut child, 10).expect("exits");
    assert_eq!(status.code(), Some(1));
    // The process has exited; its last lines may still be on their way
    // through the pipe to the reading thread.
    let want = "systemd passed no socket named `https` (passed: http)";
    let deadline = std::time::Instant::now() + 5 * SECOND;
    while !log.lock().unwrap().join("\n").contains(want) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = log.lock().unwrap().join("\n");
    assert!(text.contains(want), "{text}");
    assert!(text.contains("FileDescriptorName=https"), "{text}");
}

#[test]
fn systemd_socket_activate_starts_the_server_on_first_connection() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = fixture();
    let cfg = ConfigFile::new(dir.path(), "[[listen]]\naddress = \"systemd:web\"\n");
    let tool = [
        "systemd-socket-activate",
        "/lib/systemd/systemd-socket-activate",
    ]
    .into_iter()
    .find(|t| Command::new(t).arg("--help").output().is_ok())
    .expect("systemd-socket-activate missing: tests/run installs the systemd package");
    // The tool gives the server only LISTEN_* and what -E names.
    let env: Vec<String> = common::DAEMON_ENV
        .iter()
        .map(|(k, v)| format!("-E{k}={v}"))
        .collect();
    let child = Command::new(tool)
        .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=web"])
        .args(&env)
        .arg(binary())
        .args(["--config", cfg.arg()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = Guard(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The tool listens first; the first connection makes it exec the server,
    // which then accepts that very connection.
    let deadline = Instant::now() + 10 * SECOND;
    let reply = loop {
        match blocking_get(addr, "/hello.txt") {
            Ok(r) if !r.is_empty() => break r,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("no answer: {other:?}"),
        }
    };
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("hello world\n"));
}

#[test]
fn notify_sequence_ready_reloading_ready_stopping() {
    let dir = fixture();
    let cfg = ConfigFile::new(dir.path(), "[[listen]]\naddress = \"127.0.0.1:0\"\n");
    let notify = NotifySocket::new();
    let mut child = common::command()
        .args(["--config", cfg.arg()])
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = notify.next_state(10 * SECOND);
    let mut lines = ready.lines();
    assert_eq!(lines.next(), Some("READY=1"), "{ready}");
    let status = lines.next().unwrap();
    assert!(status.starts_with("STATUS=serving "), "{status}");
    assert!(status.contains("generation 1"), "{status}");

    kill(&child, "HUP");
    let reloading = notify.next_state(10 * SECOND);
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec = lines.next().unwrap();
    let usec: u64 = usec
        .strip_prefix("MONOTONIC_USEC=")
        .expect(usec)
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready = notify.next_state(10 * SECOND);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("generation 2"), "{ready}");

    // A broken config: the reload fails, READY=1 still follows, STATUS names
    // the file, line and key, and the old generation keeps serving.
    std::fs::write(&cfg.path, "root = \"/tmp\"\n[files]\nindex = 5\n").unwrap();
    kill(&child, "HUP");
    assert!(notify.next_state(10 * SECOND).starts_with("RELOADING=1"));
    let ready = notify.next_state(10 * SECOND);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=reload failed"), "{ready}");
    assert!(
        ready.contains(&format!("{}:3", cfg.path.display())),
        "{ready}"
    );
    assert!(ready.contains("files.index"), "{ready}");
    assert!(ready.contains("still serving generation 2"), "{ready}");

    kill(&child, "TERM");
    let stopping = notify.next_state(10 * SECOND);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    assert_eq!(wait_exit(&mut child, 10).and_then(|s| s.code()), Some(0));
}

#[test]
fn watchdog_keepalives_arrive_at_half_the_interval() {
    let dir = fixture();
    let notify = NotifySocket::new();
    let child = common::command()
        .args([
            "--root",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = Guard(child);
    assert!(notify.next_state(10 * SECOND).starts_with("READY=1"));
    let start = Instant::now();
    let mut stamps = Vec::new();
    while stamps.len() < 6 && start.elapsed() < 10 * SECOND {
        if notify.recv(5 * SECOND).as_deref() == Some("WATCHDOG=1") {
            stamps.push(start.elapsed());
        }
    }
    assert_eq!(stamps.len(), 6, "watchdog keep-alives: {stamps:?}");
    // WATCHDOG_USEC = 400 ms: one keep-alive each 200 ms. Five gaps should
    // span about a second; allow scheduling slack on a loaded machine.
    let span = stamps[5] - stamps[0];
    assert!(
        span >= Duration::from_millis(800) && span <= Duration::from_millis(2500),
        "{stamps:?}"
    );
}

#[test]
fn no_watchdog_messages_without_watchdog_usec() {
    let dir = fixture();
    let notify = NotifySocket::new();
    let child = common::command()
        .args([
            "--root",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = Guard(child);
    assert!(notify.next_state(10 * SECOND).starts_with("READY=1"));
    assert_eq!(notify.recv(Duration::from_millis(800)), None);
}

/// Reads one HTTP/1.1 response (Content-Length framed); returns status and
/// the X-Gen header.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String)> {
    let mut status_line = String::new();
    if r.read_line(&mut status_line)? == 0 {
        return Err(std::io::Error::other("closed"));
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let (mut len, mut gen) = (0usize, String::new());
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap_or(0),
            "x-gen" => gen = v.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((status, gen))
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    seen: Mutex<std::collections::BTreeSet<String>>,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, result: std::io::Result<(u16, String)>) {
        match result {
            Ok((200, gen)) if gen == "a" || gen == "b" => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.seen.lock().unwrap().insert(gen);
            }
            other => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.errors.lock().unwrap().push(format!("{other:?}"));
            }
        }
    }
}

#[test]
fn fifty_reloads_under_load_fail_no_request() {
    let dir = fixture();
    let cfg = ConfigFile::new(dir.path(), "");
    // Port 0 in the file: the listener is kept across reloads because its
    // configured address does not change.
    let body = |gen: &str| {
        format!("[[listen]]\naddress = \"127.0.0.1:0\"\n[[headers.rules]]\nglob = \"**\"\nset = {{ \"X-Gen\" = \"{gen}\" }}\n")
    };
    cfg.write(&body("a"));
    let notify = NotifySocket::new();
    let mut child = common::command()
        .args(["--config", cfg.arg()])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("RUCHY_SERVE_LOG__ACCESS_LOG", "off")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _log = collect_stderr(&mut child);
    let child = Guard(child);
    let ready = notify.next_state(10 * SECOND);
    let addr: SocketAddr = ready
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .parse()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let limit = Instant::now() + Duration::from_secs(120);
    let mut clients = Vec::new();
    // Two keep-alive clients and one that opens a fresh connection per request.
    for _ in 0..2 {
        let (stop, tally) = (stop.clone(), tally.clone());
        clients.push(std::thread::spawn(move || {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(10 * SECOND)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < limit && n < 200_000 {
                let sent = writer.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
                let result = sent.and_then(|_| read_response(&mut reader));
                let broken = result.is_err();
                tally.record(result);
                if broken {
                    break;
                }
                n += 1;
            }
        }));
    }
    {
        let (stop, tally) = (stop.clone(), tally.clone());
        clients.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < limit && n < 50_000 {
                let result = TcpStream::connect(addr).and_then(|s| {
                    s.set_read_timeout(Some(10 * SECOND))?;
                    let mut w = s.try_clone()?;
                    w.write_all(
                        b"GET /digits.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    )?;
                    read_response(&mut BufReader::new(s))
                });
                tally.record(result);
                n += 1;
            }
        }));
    }

    let mut reloads = 0;
    for i in 0..50 {
        cfg.write(&body(if i % 2 == 0 { "b" } else { "a" }));
        kill(&child.0, "HUP");
        let reloading = notify.next_state(10 * SECOND);
        assert!(reloading.starts_with("RELOADING=1"), "{reloading}");
        let ready = notify.next_state(10 * SECOND);
        assert!(
            ready.starts_with("READY=1") && !ready.contains("failed"),
            "{ready}"
        );
        reloads += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    eprintln!("reloads: {reloads}, requests ok: {ok}, failed: {failed}");
    assert_eq!(reloads, 50);
    assert_eq!(failed, 0, "failures: {:?}", tally.errors.lock().unwrap());
    assert!(ok > 100, "too little load to mean anything: {ok}");
    let seen = tally.seen.lock().unwrap().clone();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
}

#[test]
fn reload_opens_added_listeners_and_closes_removed_ones() {
    let dir = fixture();
    let a = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = ConfigFile::new(dir.path(), "");
    let listen = |addrs: &[SocketAddr]| -> String {
        addrs
            .iter()
            .map(|a| format!("[[listen]]\naddress = \"{a}\"\n"))
            .collect()
    };
    cfg.write(&listen(&[a]));
    let notify = NotifySocket::new();
    let child = common::command()
        .args(["--config", cfg.arg()])
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Guard(child);
    assert!(notify.next_state(10 * SECOND).starts_with("READY=1"));
    assert!(blocking_get(a, "/hello.txt")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    assert!(TcpStream::connect(b).is_err());

    let reload = |body: String| {
        cfg.write(&body);
        kill(&child.0, "HUP");
        assert!(notify.next_state(10 * SECOND).starts_with("RELOADING=1"));
        let ready = notify.next_state(10 * SECOND);
        assert!(ready.starts_with("READY=1"), "{ready}");
        ready
    };
    reload(listen(&[a, b]));
    assert!(blocking_get(b, "/hello.txt")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    reload(listen(&[b]));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect(a).is_err(),
        "removed listener still accepts"
    );
    assert!(blocking_get(b, "/hello.txt")
        .unwrap()
        .starts_with("HTTP/1.1 200"));

    // A port that cannot be bound fails the whole reload; b keeps serving.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let ready = reload(listen(&[b, taken.local_addr().unwrap()]));
    assert!(ready.contains("reload failed"), "{ready}");
    assert!(ready.contains("cannot listen on"), "{ready}");
    assert!(blocking_get(b, "/hello.txt")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
}

#[test]
fn log_level_changes_on_reload() {
    let dir = fixture();
    let cfg = ConfigFile::new(dir.path(), "");
    let body = |level: &str| {
        format!("[[listen]]\naddress = \"127.0.0.1:0\"\n[log]\nlevel = \"{level}\"\n")
    };
    cfg.write(&body("info"));
    let notify = NotifySocket::new();
    let mut child = common::command()
        .args(["--config", cfg.arg()])
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect_stderr(&mut child);
    let child = Guard(child);
    let ready = notify.next_state(10 * SECOND);
    let addr: SocketAddr = ready
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    blocking_get(addr, "/hello.txt").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("connection accepted")));

    cfg.write(&body("debug"));
    kill(&child.0, "HUP");
    assert!(notify.next_state(10 * SECOND).starts_with("RELOADING=1"));
    assert!(notify.next_state(10 * SECOND).starts_with("READY=1"));
    blocking_get(addr, "/hello.txt").unwrap();
    let deadline = Instant::now() + 5 * SECOND;
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("connection accepted"))
    {
        assert!(
            Instant::now() < deadline,
            "no debug line after reload: {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unix_socket_listener_with_mode_and_stale_file_replacement() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = fixture();
    let sock_dir = tempfile::tempdir().unwrap();
    let path = sock_dir.path().join("http.sock");
    // A stale socket file, as a crash leaves behind: bound, then closed.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let cfg = ConfigFile::new(
        dir.path(),
        &format!(
            "[[listen]]\naddress = \"unix:{}\"\nmode = \"0660\"\n",
            path.display()
        ),
    );
    let notify = NotifySocket::new();
    let mut child = common::command()
        .args(["--config", cfg.arg()])
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(notify.next_state(10 * SECOND).starts_with("READY=1"));
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let reply = unix_get(&path, "/hello.txt");
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello world\n"),
        "{reply}"
    );

    // A second instance must not steal a live socket.
    let out = common::command()
        .args(["--config", cfg.arg()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another process is accepting"));
    assert!(unix_get(&path, "/hello.txt").starts_with("HTTP/1.1 200"));

    kill(&child, "TERM");
    assert_eq!(wait_exit(&mut child, 10).and_then(|s| s.code()), Some(0));
    assert!(!path.exists(), "socket file left behind after a clean exit");

    // A regular file in the way is never deleted.
    std::fs::write(&path, b"precious").unwrap();
    let out = common::command()
        .args(["--config", cfg.arg()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}
