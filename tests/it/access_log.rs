//! The access log in its own file (issue 15): buffered, reopened on
//! SIGUSR1 with no line lost or torn, rotated by the real logrotate with the
//! shipped configuration, dropping and counting lines rather than holding a
//! response when the disk stalls, and kept open when a reload names a path
//! that cannot be opened.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{
    fixture, free_local_addr, pipelined_empty_gets, scrape_value, ConfigFile, Daemon, TestServer,
};

/// A daemon serving `root` (with an empty `e.txt`) whose access log goes to
/// `log`, flushed every 100 ms; its metrics listener at the returned address.
fn daemon_logging_to(
    root: &Path,
    log: &Path,
    extra: &[(&str, &str)],
) -> (Daemon, std::net::SocketAddr) {
    std::fs::write(root.join("e.txt"), b"").unwrap();
    let metrics = free_local_addr();
    let metrics_s = metrics.to_string();
    let log_s = log.to_str().unwrap().to_string();
    let mut env = vec![
        ("RUCHY_SERVE_METRICS__ADDRESS", metrics_s.as_str()),
        ("RUCHY_SERVE_LOG__ACCESS_LOG_PATH", log_s.as_str()),
        ("RUCHY_SERVE_LOG__ACCESS_LOG_FLUSH", "100ms"),
    ];
    env.extend_from_slice(extra);
    (Daemon::serving(root, &env), metrics)
}

/// `n` requests `/e.txt?id=<tag>-<i>` from each of `threads` connections.
fn load(
    addr: std::net::SocketAddr,
    tag: &'static str,
    threads: usize,
    n: usize,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                std::thread::spawn(move || {
                    let paths: Vec<String> =
                        (0..n).map(|i| format!("/e.txt?id={tag}-{t}-{i}")).collect();
                    pipelined_empty_gets(addr, &paths)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

/// Every line of every file in `dir` whose name starts with `prefix`: each
/// must be a whole combined line; returns the ids and how many files had lines.
fn ids_in(dir: &Path, prefix: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name} ends mid-line"
        );
        let mut here = 0;
        for line in text.lines() {
            assert!(
                line.starts_with("127.0.0.1 - - [")
                    && line.ends_with("us")
                    && line.contains("\" 200 0 \"-\" \"-\" "),
                "torn or foreign line in {name}: {line:?}"
            );
            let id = line
                .split("?id=")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or_else(|| panic!("no id in {line:?}"));
            ids.push(id.to_string());
            here += 1;
        }
        files += usize::from(here > 0);
    }
    (ids, files)
}

fn assert_each_once(ids: &[String], want: usize) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a line was written twice");
    assert_eq!(ids.len(), want, "lines lost");
}

/// Rename and SIGUSR1 every 10 ms for as long as 2 x 20,000 requests run:
/// every line lands whole in exactly one file.
#[test]
fn reopening_under_load_loses_and_tears_no_line() {
    let root = fixture();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let (mut d, metrics) = daemon_logging_to(root.path(), &log, &[]);
    let running = load(d.addr, "r", 2, 20_000);
    let mut i = 0;
    while !running.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
        i += 1;
        if log.exists() {
            std::fs::rename(&log, logs.path().join(format!("access.log.{i}"))).unwrap();
        }
        d.signal("USR1");
    }
    assert_eq!(running.join().unwrap(), 40_000);
    assert_eq!(
        scrape_value(
            metrics,
            "ruchy_serve_access_log_dropped_total{reason=\"buffer_full\"}"
        ),
        0
    );
    d.signal("TERM");
    assert!(d.wait_exit(20).is_some_and(|s| s.success()));
    let (ids, files) = ids_in(logs.path(), "access.log");
    assert_each_once(&ids, 40_000);
    assert!(
        files >= 3,
        "the reopens moved lines to new files ({files} files had lines)"
    );
    assert!(
        d.log_text().contains("access log reopened"),
        "{}",
        d.log_text()
    );
}

/// The shipped logrotate configuration, run by the real logrotate (forced,
/// with its own state file) with only the path and the signal command
/// replaced: lines before the rotation are in the rotated file, lines after
/// it in the new one, none lost or split.
#[test]
fn the_shipped_logrotate_config_rotates_without_losing_a_line() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/logrotate/ruchy-serve"
    ))
    .unwrap();
    assert!(shipped.contains("/var/log/ruchy-serve/*.log"), "{shipped}");
    assert!(
        shipped.contains("systemctl kill --kill-whom=main --signal=USR1 ruchy-serve.service"),
        "{shipped}"
    );
    let root = fixture();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let (mut d, _) = daemon_logging_to(root.path(), &log, &[]);
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("ruchy-serve");
    std::fs::write(
        &conf,
        shipped
            .replace(
                "/var/log/ruchy-serve/*.log",
                &format!("{}/*.log", logs.path().display()),
            )
            .replace(
                "systemctl kill --kill-whom=main --signal=USR1 ruchy-serve.service",
                &format!("kill -USR1 {}", d.child.id()),
            ),
    )
    .unwrap();
    let before = load(d.addr, "a", 2, 3000);
    std::thread::sleep(Duration::from_millis(200));
    let out = std::process::Command::new("logrotate")
        .args(["-f", "-s"])
        .arg(conf_dir.path().join("state"))
        .arg(&conf)
        .output()
        .expect("logrotate is installed (tests/run installs it)");
    assert!(
        out.status.success(),
        "logrotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(before.join().unwrap(), 6000);
    // Give the signal time to arrive, then write lines that must go to the new file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("access log reopened") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let paths: Vec<String> = (0..500).map(|i| format!("/e.txt?id=after-{i}")).collect();
    assert_eq!(pipelined_empty_gets(d.addr, &paths), 500);
    d.signal("TERM");
    assert!(d.wait_exit(20).is_some_and(|s| s.success()));
    let rotated = logs.path().join("access.log.1");
    assert!(
        rotated.exists(),
        "delaycompress leaves the first rotation as access.log.1"
    );
    let (ids, files) = ids_in(logs.path(), "access.log");
    assert_each_once(&ids, 6500);
    assert_eq!(files, 2);
    let new = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        new.lines().filter(|l| l.contains("id=after-")).count(),
        500,
        "the new file has every later line"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("id=after-"));
}

/// A disk that stops taking writes: the log is a FIFO nobody reads, so the
/// writer blocks once the pipe is full. Responses keep coming, lines past
/// the bound are dropped and counted, and logging resumes when the reader
/// does.
#[test]
fn a_stalled_log_drops_and_counts_lines_and_never_holds_a_response() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let root = fixture();
    let logs = tempfile::tempdir().unwrap();
    let fifo = logs.path().join("stalled.log");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    // The reader end, held and not read: the server can open the FIFO for
    // writing, and its writes stop once the pipe holds 64 KiB.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)
        .unwrap();
    let (d, metrics) = daemon_logging_to(
        root.path(),
        &fifo,
        &[("RUCHY_SERVE_LOG__ACCESS_LOG_BUFFER", "4KiB")],
    );
    // About 2 MB of lines against 64 KiB of pipe and 256 KiB of buffers.
    let started = Instant::now();
    assert_eq!(load(d.addr, "s", 2, 10_000).join().unwrap(), 20_000);
    let took = started.elapsed();
    let dropped = scrape_value(
        metrics,
        "ruchy_serve_access_log_dropped_total{reason=\"buffer_full\"}",
    );
    assert!(dropped > 10_000, "dropped {dropped} of 20,000 ({took:?})");
    // The reader comes back: what was held is written, then new lines again.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent_marker = false;
    while Instant::now() < deadline {
        let mut chunk = [0u8; 65536];
        match reader.read(&mut chunk) {
            Ok(n) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
        if !sent_marker && seen.len() > 64 << 10 {
            let paths = vec!["/e.txt?id=after-the-stall".to_string()];
            assert_eq!(pipelined_empty_gets(d.addr, &paths), 1);
            sent_marker = true;
        }
        if String::from_utf8_lossy(&seen).contains("id=after-the-stall") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("id=after-the-stall"), "logging resumed");
    assert!(
        text.lines().all(|l| l.starts_with("127.0.0.1 - - [")),
        "whole lines only"
    );
}

/// A reload that names an access-log path that cannot be opened fails
/// (nothing changes); lines keep going to the file open before.
#[tokio::test]
async fn a_reload_with_a_bad_log_path_keeps_the_old_file() {
    let root = fixture();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let s = TestServer::start(
        root.path(),
        &format!("[log]\naccess_log_path = {log:?}\naccess_log_flush = \"100ms\"\n"),
    )
    .await;
    assert_eq!(s.get("/hello.txt?one").await.status, 200);
    let bad = logs.path().join("missing-dir/access.log");
    s.reload(Some(&format!(
        "[log]\naccess_log_path = {bad:?}\n[[listen]]\naddress = \"{}\"\n",
        s.addr
    )))
    .await;
    assert_eq!(
        s.state
            .reloads
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(s.get("/hello.txt?two").await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("/hello.txt?one") && text.contains("/hello.txt?two"),
        "{text}"
    );
    assert!(!bad.parent().unwrap().exists());
    s.stop().await;
}

/// `check` names the file, line and key of a log path in a missing directory.
#[test]
fn check_names_the_line_of_a_bad_log_path() {
    let cfg = ConfigFile::raw(
        "root = \"/tmp\"\n[log]\naccess_log_path = \"/nonexistent-dir/access.log\"\n",
    );
    let out = crate::common::command()
        .args(["check", "--config", cfg.arg()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains(&format!("{}:3", cfg.arg())), "{err}");
    assert!(err.contains("key `log.access_log_path`"), "{err}");
    assert!(err.contains("/nonexistent-dir"), "{err}");
}

/// A disk that refuses every write (/dev/full answers ENOSPC): serving goes
/// on, every lost line is counted, and the error is logged once, not once
/// per write.
#[test]
fn a_full_disk_loses_lines_counted_and_logs_once() {
    let root = fixture();
    let (d, metrics) = daemon_logging_to(
        root.path(),
        Path::new("/dev/full"),
        &[("RUCHY_SERVE_LOG__ACCESS_LOG_BUFFER", "4KiB")],
    );
    assert_eq!(load(d.addr, "f", 2, 2000).join().unwrap(), 4000);
    let deadline = Instant::now() + Duration::from_secs(10);
    let lost = || {
        scrape_value(
            metrics,
            "ruchy_serve_access_log_dropped_total{reason=\"write_error\"}",
        )
    };
    while lost() < 4000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lost(), 4000, "every line counted as lost");
    assert!(scrape_value(metrics, "ruchy_serve_access_log_write_errors_total") >= 10);
    assert_eq!(
        scrape_value(
            metrics,
            "ruchy_serve_access_log_dropped_total{reason=\"buffer_full\"}"
        ),
        0
    );
    let errors = d.log_text().matches("cannot write the access log").count();
    assert_eq!(errors, 1, "{}", d.log_text());
}
