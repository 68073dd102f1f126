//! The real binary: `check`, `config`, every documented configuration error
//! (file, key, line, exit 64), start-up failures, the access log, and the
//! SIGTERM drain.

use crate::common;
use std::io::{Read, Write};
use std::process::Output;
use std::time::Duration;

use crate::common::{blocking_get, fixture, ConfigFile, Daemon};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = common::command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `body` as a config file and runs `check` on it.
fn check_file(body: &str) -> (Output, String) {
    let file = ConfigFile::raw(body);
    let out = run(&["check", "--config", file.arg()], &[]);
    (out, file.arg().to_string())
}

fn assert_config_error(body: &str, location: &str, key: &str, words: &str) {
    let (out, path) = check_file(body);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains(&format!("{path}{location}")),
        "location {location}: {err}"
    );
    assert!(err.contains(&format!("key `{key}`")), "key {key}: {err}");
    assert!(err.contains(words), "{words}: {err}");
    assert!(
        err.contains("hint:") || location.matches(':').count() == 2,
        "no hint: {err}"
    );
}

#[test]
fn check_accepts_the_shipped_reference_config() {
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ruchy-serve.toml");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/demo");
    // The reference names /srv/www and /var/log/ruchy-serve (which the
    // units create); point them at the demo tree and a temporary directory.
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let env = [("RUCHY_SERVE_LOG__ACCESS_LOG_PATH", log.to_str().unwrap())];
    let out = run(&["check", "--config", reference, "--root", demo], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
    // As shipped, on a machine without the units' log directory, `check`
    // says which key and what to do.
    if !std::path::Path::new("/var/log/ruchy-serve").exists() {
        let out = run(&["check", "--config", reference, "--root", demo], &[]);
        assert_eq!(out.status.code(), Some(64));
        let err = stderr(&out);
        assert!(
            err.contains("log.access_log_path") && err.contains("LogsDirectory"),
            "{err}"
        );
    }
}

/// An empty value in the environment turns the file off again (the
/// container test's journal check relies on it).
#[test]
fn an_empty_access_log_path_in_the_environment_means_no_file() {
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ruchy-serve.toml");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/demo");
    let env = [("RUCHY_SERVE_LOG__ACCESS_LOG_PATH", "")];
    let out = run(&["config", "--config", reference, "--root", demo], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("access_log_path"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("\"\""), "{line}");
}

#[test]
fn check_with_no_arguments_validates_the_demo_defaults() {
    let out = run(&["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("built-in defaults is valid"), "{stdout}");
    assert!(stdout.contains("/demo"), "{stdout}");
}

#[test]
fn unknown_key_names_file_line_and_the_valid_keys() {
    assert_config_error(
        "root = \"/tmp\"\n\n[files]\ndirectory_listin = true\n",
        ":4",
        "files.directory_listin",
        "expected one of: index, follow_symlinks",
    );
}

#[test]
fn unknown_top_level_key() {
    assert_config_error(
        "root = \"/tmp\"\nport = 80\n",
        ":2",
        "port",
        "unknown key `port`",
    );
}

#[test]
fn wrong_type_names_expected_type() {
    assert_config_error(
        "root = \"/tmp\"\n[files]\nmax_ranges = \"many\"\n",
        ":3",
        "files.max_ranges",
        "expected usize",
    );
}

#[test]
fn bad_duration() {
    assert_config_error(
        "root = \"/tmp\"\n[limits]\n\nheader_read_timeout = \"soon\"\n",
        ":4",
        "limits.header_read_timeout",
        "is not a duration",
    );
}

#[test]
fn bad_size() {
    assert_config_error(
        "root = \"/tmp\"\n[files]\netag_hash_limit = \"lots\"\n",
        ":3",
        "files.etag_hash_limit",
        "is not a size",
    );
}

#[test]
fn header_size_below_minimum() {
    assert_config_error(
        "root = \"/tmp\"\n[limits]\nmax_header_size = \"1KiB\"\n",
        ":3",
        "limits.max_header_size",
        "below the 8KiB minimum",
    );
}

#[test]
fn glob_that_does_not_compile_names_the_rule_index() {
    assert_config_error(
        "root = \"/tmp\"\n[[cache.rules]]\nglob = \"*.html\"\nvalue = \"no-cache\"\n\n[[cache.rules]]\nglob = \"assets/[**\"\nvalue = \"x\"\n",
        ":7",
        "cache.rules[1].glob",
        "does not compile",
    );
}

#[test]
fn bad_header_rule_name() {
    assert_config_error(
        "root = \"/tmp\"\n[[headers.rules]]\nglob = \"*\"\nset = { \"Bad Name\" = \"v\" }\n",
        ":4",
        "headers.rules[0].set.Bad Name",
        "not a valid header name",
    );
}

#[test]
fn bad_cache_control_value() {
    assert_config_error(
        "root = \"/tmp\"\n[cache]\ndefault = \"bad\\nvalue\"\n",
        ":3",
        "cache.default",
        "not a valid header value",
    );
}

#[test]
fn bad_listen_address() {
    assert_config_error(
        "root = \"/tmp\"\n[[listen]]\naddress = \"localhost\"\n",
        ":3",
        "listen[0].address",
        "is not a listen address",
    );
}

#[test]
fn duplicate_listen_address() {
    assert_config_error(
        "root = \"/tmp\"\n[[listen]]\naddress = \"127.0.0.1:1\"\n[[listen]]\naddress = \"127.0.0.1:1\"\n",
        ":5",
        "listen[1].address",
        "listed twice",
    );
}

#[test]
fn unknown_enum_values() {
    assert_config_error(
        "root = \"/tmp\"\n[files]\nfollow_symlinks = \"sometimes\"\n",
        ":3",
        "files.follow_symlinks",
        "unknown policy",
    );
    assert_config_error(
        "root = \"/tmp\"\n[files]\nprecompressed = [\"br\", \"lzma\"]\n",
        ":3",
        "files.precompressed[1]",
        "unknown encoding `lzma`",
    );
    assert_config_error(
        "root = \"/tmp\"\n[log]\naccess_log = \"apache\"\n",
        ":3",
        "log.access_log",
        "unknown access log format",
    );
    assert_config_error(
        "root = \"/tmp\"\n[log]\nformat = \"xml\"\n",
        ":3",
        "log.format",
        "unknown format",
    );
    assert_config_error(
        "root = \"/tmp\"\n[log]\nlevel = \"loud=[\"\n",
        ":3",
        "log.level",
        "not a log filter",
    );
}

#[test]
fn fallback_must_stay_inside_root() {
    assert_config_error(
        "root = \"/tmp\"\n[files]\nfallback = \"/../etc/passwd\"\n",
        ":3",
        "files.fallback",
        "plain path inside the root",
    );
}

#[test]
fn missing_root_points_at_the_file() {
    assert_config_error("[files]\n", "", "root", "no root directory is set");
}

#[test]
fn root_that_does_not_exist() {
    assert_config_error(
        "root = \"/nonexistent/ruchy\"\n",
        ":1",
        "root",
        "cannot open /nonexistent/ruchy",
    );
}

#[test]
fn root_that_is_a_file() {
    assert_config_error(
        "root = \"/etc/hostname\"\n",
        ":1",
        "root",
        "is not a directory",
    );
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let (out, path) = check_file("root = \"/tmp\"\n[files\nindex = []\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64));
    assert!(err.contains(&format!("{path}:2:")), "{err}");
    assert!(err.contains("TOML syntax error"), "{err}");
}

#[test]
fn unreadable_config_file() {
    let out = run(&["check", "--config", "/nonexistent/ruchy.toml"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        err.contains("cannot read config file /nonexistent/ruchy.toml"),
        "{err}"
    );
}

#[test]
fn bad_environment_value_names_the_variable() {
    let out = run(
        &["check"],
        &[("RUCHY_SERVE_LIMITS__KEEP_ALIVE_TIMEOUT", "forever")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        err.contains("environment variable RUCHY_SERVE_LIMITS__KEEP_ALIVE_TIMEOUT"),
        "{err}"
    );
    assert!(err.contains("key `limits.keep_alive_timeout`"), "{err}");
}

#[test]
fn bad_command_line_root_names_the_flag() {
    let out = run(&["check", "--root", "/nonexistent/dir"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64));
    assert!(err.contains("command line --root"), "{err}");
}

#[test]
fn config_prints_each_value_with_its_origin() {
    let path = ConfigFile::raw("root = \"/tmp\"\n\n[files]\ndirectory_listing = true\n");
    let out = run(
        &[
            "config",
            "--config",
            path.arg(),
            "--listen",
            "127.0.0.1:9999",
        ],
        &[("RUCHY_SERVE_LOG__LEVEL", "debug")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing:\n{text}"))
            .to_string()
    };
    let p = path.arg().to_string();
    assert!(line("root").contains(&format!("# {p}:1")), "{text}");
    assert!(line("files.directory_listing").contains(&format!("# {p}:4")));
    assert!(line("files.directory_listing").contains("= true"));
    assert!(line("log.level").contains("environment variable RUCHY_SERVE_LOG__LEVEL"));
    assert!(line("log.level").contains("\"debug\""));
    assert!(line("listen[0].address").contains("command line --listen"));
    assert!(line("shutdown_timeout").contains("built-in default"));
}

#[test]
fn port_in_use_is_one_clear_line_and_nonzero_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--listen", &addr], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn quick_use_with_root_and_listen_flags() {
    let dir = fixture();
    let d = Daemon::serving(dir.path(), &[]);
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"));
    assert!(reply.ends_with("hello world\n"));
    // --root alone is not the demo: no isolation headers.
    assert!(!reply
        .to_ascii_lowercase()
        .contains("cross-origin-opener-policy"));
}

fn http_get(addr: std::net::SocketAddr, path: &str, ua: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: {ua}\r\nReferer: http://ref/\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn combined_access_log_line() {
    let dir = fixture();
    let d = Daemon::serving(dir.path(), &[]);
    http_get(d.addr, "/hello.txt?q=1", "test-agent/1.0 \"quoted\"");
    let line = d.wait_for_line("/hello.txt?q=1");
    // 127.0.0.1 - - [27/Nov/2026:06:31:31 +0000] "GET /hello.txt?q=1 HTTP/1.1" 200 12 "http://ref/" "test-agent/1.0 \x22quoted\x22" 123us
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("+0000] \"GET /hello.txt?q=1 HTTP/1.1\" 200 12 \"http://ref/\""),
        "{line}"
    );
    assert!(
        line.contains("\"test-agent/1.0 \\x22quoted\\x22\""),
        "{line}"
    );
    assert!(line.ends_with("us"), "{line}");
}

#[test]
fn json_access_log_line_has_every_field() {
    let dir = fixture();
    let d = Daemon::serving(dir.path(), &[("RUCHY_SERVE_LOG__ACCESS_LOG", "json")]);
    http_get(d.addr, "/missing", "json-agent");
    let line = d.wait_for_line("json-agent");
    for field in [
        "\"remote_addr\":\"127.0.0.1\"",
        "\"http_method\":\"GET\"",
        "\"request_path\":\"/missing\"",
        "\"http_status\":404",
        "\"bytes\":14",
        "\"duration_us\":",
        "\"http_user_agent\":\"json-agent\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
}

#[test]
fn access_log_can_be_turned_off() {
    let dir = fixture();
    let d = Daemon::serving(dir.path(), &[("RUCHY_SERVE_LOG__ACCESS_LOG", "off")]);
    http_get(d.addr, "/hello.txt", "silent-agent");
    http_get(d.addr, "/hello.txt", "silent-agent");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!d.log_text().contains("/hello.txt"), "{}", d.log_text());
}

#[test]
fn sigterm_drains_in_flight_download_then_exits_zero() {
    let dir = fixture();
    let data: Vec<u8> = (0..16_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("large.bin"), &data).unwrap();
    let mut d = Daemon::serving(dir.path(), &[]);
    let mut s = d.start_download("/large.bin");
    // Read a little so the response is under way, then stop the server.
    let mut first = vec![0u8; 4096];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0);
    d.signal("TERM");
    d.wait_for_line("draining");
    // New connections are refused once the listener is closed.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        std::net::TcpStream::connect(d.addr).is_err(),
        "still accepting after SIGTERM"
    );
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.read_to_end(&mut rest).unwrap();
    let mut all = first[..n].to_vec();
    all.extend_from_slice(&rest);
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    // read_to_end returned: after the last byte the server closed the
    // keep-alive connection instead of waiting for another request.
    assert!(
        all[split..] == data[..],
        "body differs: {} bytes of {}",
        all.len() - split,
        data.len()
    );
    let status = d.wait_exit(20).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(d.log_text().contains("drained"), "{}", d.log_text());
}

#[test]
fn shutdown_timeout_bounds_the_drain() {
    let dir = fixture();
    let data = vec![1u8; 64_000_000];
    std::fs::write(dir.path().join("large.bin"), &data).unwrap();
    let mut d = Daemon::serving(dir.path(), &[("RUCHY_SERVE_SHUTDOWN_TIMEOUT", "1s")]);
    // A client that never reads: the download cannot finish.
    let _client = d.start_download("/large.bin");
    std::thread::sleep(Duration::from_millis(200));
    d.signal("TERM");
    let status = d.wait_exit(15).expect("exited within the timeout");
    assert_eq!(status.code(), Some(0));
    assert!(
        d.log_text().contains("shutdown_timeout"),
        "{}",
        d.log_text()
    );
}

#[test]
fn second_signal_exits_at_once() {
    let dir = fixture();
    std::fs::write(dir.path().join("large.bin"), vec![1u8; 64_000_000]).unwrap();
    let mut d = Daemon::serving(dir.path(), &[("RUCHY_SERVE_SHUTDOWN_TIMEOUT", "60s")]);
    let _client = d.start_download("/large.bin");
    std::thread::sleep(Duration::from_millis(200));
    d.signal("TERM");
    d.wait_for_line("draining");
    d.signal("INT");
    assert!(
        d.wait_exit(5).is_some(),
        "still running after the second signal"
    );
    assert!(d.log_text().contains("second signal"));
}

#[test]
fn serves_ipv4_and_ipv6_listeners_at_once() {
    let dir = fixture();
    let d = Daemon::spawn(
        &[
            "--root",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
        ],
        &[],
    );
    let ready = d.wait_for_line("ready");
    let addrs: Vec<std::net::SocketAddr> = ready
        .split("http://")
        .skip(1)
        .map(|s| s.split('/').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(addrs.len(), 2, "{ready}");
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "{ready}");
    for addr in addrs {
        let reply = http_get(addr, "/hello.txt", "dual-stack");
        assert!(reply.starts_with("HTTP/1.1 200"), "{addr}: {reply}");
        assert!(reply.ends_with("hello world\n"));
    }
}

/// Names of the daemon's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn workers_sets_the_runtime_threads() {
    let dir = fixture();
    // Counted before the first request: tokio's blocking-pool threads carry
    // the same name and start on first use.
    let d = Daemon::serving(dir.path(), &[("RUCHY_SERVE_WORKERS", "3")]);
    let workers = thread_names(d.child.id())
        .iter()
        .filter(|n| n.as_str() == "tokio-rt-worker")
        .count();
    assert_eq!(workers, 3, "{:?}", thread_names(d.child.id()));
    assert!(blocking_get(d.addr, "/hello.txt")
        .unwrap()
        .contains("hello world"));

    // One worker: the current-thread scheduler on the main thread, and it
    // still serves (files come from the blocking pool).
    let d = Daemon::serving(dir.path(), &[("RUCHY_SERVE_WORKERS", "1")]);
    let names = thread_names(d.child.id());
    assert!(!names.iter().any(|n| n == "tokio-rt-worker"), "{names:?}");
    assert!(blocking_get(d.addr, "/hello.txt")
        .unwrap()
        .contains("hello world"));
}

/// As root (CI runs the suite as root) a configured root is refused unless
/// allow_root says otherwise; the bundled demo is allowed with a warning.
#[test]
fn root_is_refused_unless_allowed() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the refusal cannot be observed here");
        return;
    }
    let dir = fixture();
    let out = common::command()
        .env_remove("RUCHY_SERVE_ALLOW_ROOT")
        .args([
            "--root",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to run as root"), "{err}");
    assert!(err.contains("allow_root = true"), "{err}");
    assert!(err.contains("deploy/"), "{err}");

    // The bundled demo (no --config, no --root) starts, with a warning.
    let d = Daemon::spawn_env_removed(&["--listen", "127.0.0.1:0"], "RUCHY_SERVE_ALLOW_ROOT");
    assert!(blocking_get(d.addr, "/")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    assert!(d.log_text().contains("running as root"), "{}", d.log_text());
}

/// A `compression.types` entry no file is served as compresses nothing:
/// `check` says so, with what the type's extensions are served as. (Issue
/// 25 item 15: `application/javascript` while `.js` is `text/javascript`.)
#[test]
fn check_warns_of_compression_types_no_file_is_served_as() {
    let dir = fixture();
    let (out, _) = check_file(&format!(
        "root = {:?}\n[compression]\ntypes = [\"text/html\", \"application/javascript\", \"image/svg+xml\", \"font/*\"]\n",
        dir.path().display().to_string()
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: compression.types lists application/javascript"),
        "{err}"
    );
    assert!(err.contains("but not text/javascript, which"), "{err}");
    assert!(err.contains(".js,"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    // Served types and patterns are not warned of.
    assert!(!err.contains("image/svg+xml"), "{err}");
    assert!(!err.contains("font/*"), "{err}");

    // A type nothing is served as, until an override serves an extension
    // as it.
    let body = |mime: &str| {
        format!(
            "root = {:?}\n[files.mime_types]\n{mime}[compression]\ntypes = [\"text/javascript\", \"application/javascript\", \"application/x-custom\"]\n",
            dir.path().display().to_string()
        )
    };
    let (out, _) = check_file(&body(""));
    assert!(
        stderr(&out).contains("lists application/x-custom, which no file is served as"),
        "{}",
        stderr(&out)
    );
    let (out, _) = check_file(&body("xc = \"application/x-custom\"\n"));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// A file with mistakes in several sections gets them all in one round,
/// each with its file, line, key and hint (it took one round per mistake).
/// (Issue 25 item 13.)
#[test]
fn check_reports_every_mistake_of_a_file_at_once() {
    let dir = fixture();
    let (out, path) = check_file(&format!(
        "root = {:?}\n\n[limits]\nmax_header_size = \"1KiB\"\n\n[files]\nindex = [\"a/b.html\"]\n\n[compression]\ngzip_level = 42\n",
        dir.path().display().to_string()
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    for (line, key) in [
        (4, "limits.max_header_size"),
        (7, "files.index"),
        (10, "compression.gzip_level"),
    ] {
        assert!(
            err.contains(&format!("{path}:{line}")),
            "line {line}: {err}"
        );
        assert!(err.contains(&format!("key `{key}`")), "{key}: {err}");
    }
    assert_eq!(err.matches("hint:").count(), 3, "{err}");
    assert!(err.contains("3 mistakes"), "{err}");
}

/// Both man pages render with groff without a warning; ruchy-serve(1)
/// documents signals, exit status, environment and files, and names only
/// pages that exist (its subcommands are described in it, not as pages of
/// their own); ruchy-serve.toml(5) documents every key of the reference
/// file. (Issue 25 item 16: it named ruchy-serve-check(1) and five other
/// pages nobody generated, and no key.)
#[test]
fn the_man_pages_exist_render_cleanly_and_name_only_pages_that_exist() {
    let one = run(&["man"], &[]);
    assert!(one.status.success());
    let one = String::from_utf8(one.stdout).unwrap();
    for section in [
        "SIGNALS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "SUBCOMMANDS",
        "SEE ALSO",
    ] {
        assert!(
            one.contains(&format!(".SH \"{section}\"")) || one.contains(&format!(".SH {section}")),
            "{section}"
        );
    }
    assert!(one.contains("SIGHUP") && one.contains("64"), "{one}");
    // Every ruchy-serve page it names.
    let named: Vec<&str> = one
        .match_indices("ruchy\\-serve")
        .filter_map(|(i, _)| one[i..].split_once('(').map(|(name, _)| name))
        .filter(|name| !name.contains(' ') && name.len() < 40)
        .collect();
    for name in &named {
        let name = name.replace("\\fR", "").replace("\\-", "-");
        assert!(
            name == "ruchy-serve" || name == "ruchy-serve.toml",
            "names a page that is not generated: {name}"
        );
    }
    assert!(!one.contains("ruchy\\-serve\\-check(1)"), "{one}");

    let five = run(&["man", "ruchy-serve.toml"], &[]);
    assert!(five.status.success());
    let five = String::from_utf8(five.stdout).unwrap();
    assert!(five.starts_with(".TH ruchy\\-serve.toml 5"), "{five}");
    for key in [
        "files.cache_revalidate",
        "limits.max_connections_per_client",
        "compression.types",
    ] {
        assert!(
            five.contains(&format!("\\fB{}\\fR", key.replace('-', "\\-"))),
            "{key}"
        );
    }
    assert_eq!(run(&["man", "nope"], &[]).status.code(), Some(64));

    for page in [&one, &five] {
        let mut groff = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("groff (tests/run installs it)");
        use std::io::Write;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = groff.wait_with_output().unwrap();
        assert!(out.status.success());
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.is_empty(), "groff: {warnings}");
    }
}

/// Mistakes serde finds (unknown keys, wrong types) are reported for every
/// section at once too, each with its line.
#[test]
fn check_reports_unknown_keys_and_wrong_types_of_every_section_at_once() {
    let dir = fixture();
    let (out, path) = check_file(&format!(
        "root = {:?}\nbogus = 1\n[[listen]]\nadress = \"127.0.0.1:1\"\n[files]\nindex = 7\n[log]\nformat = \"xml\"\n",
        dir.path().display().to_string()
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    for (line, key) in [
        (2, "bogus"),
        (4, "listen[0].adress"),
        (6, "files.index"),
        (8, "log.format"),
    ] {
        assert!(
            err.contains(&format!("{path}:{line}: key `{key}`")),
            "{key}: {err}"
        );
    }
    assert!(err.contains("4 mistakes"), "{err}");
}

/// Top-level `[[locations]]` with `default_site = false` belong to a site
/// that never answers: `check` says so (it used to accept them silently).
#[test]
fn check_warns_of_locations_no_request_can_reach() {
    let root = tempfile::tempdir().unwrap();
    let body = format!(
        "default_site = false\n[[sites]]\nnames = [\"a.test\"]\nroot = {:?}\n\
         [[locations]]\nprefix = \"/admin/\"\naccess = [\"deny all\"]\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n",
        root.path()
    );
    let (out, _) = check_file(&body);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("can never apply"), "{err}");
}

/// `explain` counts the client as the server does: behind a trusted proxy
/// the address X-Forwarded-For names (it printed "allowed" for the peer,
/// then `=> 403`), on a unix socket no address at all, and it names a
/// location's `basic_auth`.
#[test]
fn explain_counts_the_client_as_the_server_does() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.txt"), "a").unwrap();
    let sock = root.path().join("s.sock");
    let users = root.path().join("htpasswd");
    std::fs::write(
        &users,
        "alice:$2y$05$abcdefghijklmnopqrstuuWvBhV7F1zi0hN3YEkBmcJy4cAL5F4HO\n",
    )
    .unwrap();
    let body = format!(
        "root = {:?}\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [[listen]]\naddress = \"127.0.0.1:8080\"\n[[listen]]\naddress = \"unix:{}\"\n\
         [[locations]]\nprefix = \"/\"\naccess = [\"deny 10.0.0.0/8\", \"allow 127.0.0.1\", \"deny all\"]\n\
         [[locations]]\nprefix = \"/staff/\"\nbasic_auth = {users:?}\n",
        root.path(),
        sock.display()
    );
    let file = ConfigFile::raw(&body);
    let explain = |args: &[&str]| {
        let out = run(
            &[&["explain", "--config", file.arg()][..], args].concat(),
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let proxied = explain(&["http://x:8080/a.txt", "-H", "X-Forwarded-For: 10.1.2.3"]);
    assert!(
        proxied.contains("client    10.1.2.3, from X-Forwarded-For"),
        "{proxied}"
    );
    assert!(
        proxied.contains("10.1.2.3 is denied here (403)"),
        "{proxied}"
    );
    assert!(proxied.contains("=> 403"), "{proxied}");
    let unix = explain(&["/a.txt", "--unix"]);
    assert!(
        unix.contains("a unix-socket client is denied here"),
        "{unix}"
    );
    assert!(unix.contains("=> 403"), "{unix}");
    let staff = explain(&["http://x:8080/staff/x"]);
    assert!(staff.contains("auth      basic_auth against"), "{staff}");
    assert!(staff.contains("=> 401"), "{staff}");
}
