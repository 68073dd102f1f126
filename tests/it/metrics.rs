//! The metrics listener: exact counters after known traffic, bounded labels
//! under hostile input, promtool on a real scrape, health and readiness.

use crate::common::{fixture, request, ConfigFile, TestServer};
use ruchy_serve::config::{self, ListenAddr, Sources};
use ruchy_serve::lifecycle::{Event, Server};
use ruchy_serve::listen::Inherited;

/// The metrics listener of a harness server: found through its config.
async fn start(extra: &str) -> (TestServer, std::net::SocketAddr, tempfile::TempDir) {
    let dir = fixture();
    // Bind the metrics port ourselves first to learn a free one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = TestServer::start(
        dir.path(),
        &format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n{extra}"),
    )
    .await;
    (s, format!("127.0.0.1:{port}").parse().unwrap(), dir)
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = request(addr, "GET", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

/// The value of the series whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn known_traffic_gives_exact_counters() {
    let (s, m, _dir) = start("").await;
    for _ in 0..7 {
        assert_eq!(s.get("/hello.txt").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(request(s.addr, "HEAD", "/hello.txt", &[]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(s.get("/missing").await.status, 404);
    }
    assert_eq!(request(s.addr, "POST", "/hello.txt", &[]).await.status, 405);
    // Each response is counted when its body is done; give the last a moment.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let text = scrape(m).await;
    let l = "listener=\"127.0.0.1:0\"";
    assert_eq!(
        value(
            &text,
            &format!("http_requests_total{{code=\"200\",{l},method=\"GET\",site=\"default\"}}")
        ),
        7.0
    );
    assert_eq!(
        value(
            &text,
            &format!("http_requests_total{{code=\"200\",{l},method=\"HEAD\",site=\"default\"}}")
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            &format!("http_requests_total{{code=\"404\",{l},method=\"GET\",site=\"default\"}}")
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            &format!("http_requests_total{{code=\"405\",{l},method=\"POST\",site=\"default\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            &format!("http_request_duration_seconds_count{{{l}}}")
        ),
        13.0
    );
    assert_eq!(
        value(
            &text,
            &format!("http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}}")
        ),
        13.0
    );
    // 7 x 12 bytes of hello.txt, 2 x "404 Not Found\n", 1 x "405 Method Not Allowed\n"; HEAD sends none.
    assert_eq!(
        value(
            &text,
            &format!("http_response_body_bytes_total{{{l},site=\"default\"}}")
        ),
        (7 * 12 + 2 * 14 + 23) as f64
    );
    assert_eq!(
        value(
            &text,
            &format!("http_connections_accepted_total{{{l},protocol=\"http\"}}")
        ),
        13.0
    );
    assert_eq!(value(&text, "ruchy_serve_config_generation"), 1.0);
    assert_eq!(
        value(
            &text,
            "ruchy_serve_config_reloads_total{result=\"success\"}"
        ),
        0.0
    );
    assert!(
        text.contains("process_resident_memory_bytes"),
        "process metrics missing"
    );
    assert!(text.contains("ruchy_serve_build_info{commit="));
    // One miss each fills the cache for hello.txt and for /missing; the
    // other nine GET/HEAD of hello.txt and the second 404 are hits. Each
    // entry is charged its key and a fixed overhead, the file's variant its
    // body, headers and an overhead of its own: at least the bytes held,
    // and not wildly more.
    assert_eq!(value(&text, "ruchy_serve_file_cache_misses_total"), 2.0);
    assert_eq!(value(&text, "ruchy_serve_file_cache_hits_total"), 10.0);
    let charged = value(&text, "ruchy_serve_file_cache_bytes");
    let held = (12 + "/hello.txt".len() + "/missing".len()) as f64;
    assert!(charged > held + 512.0 && charged < 4096.0, "{charged}");
}

#[tokio::test]
async fn hostile_methods_and_paths_do_not_grow_labels() {
    let (s, m, _dir) = start("").await;
    for i in 0..20 {
        let method = format!("X{i}METHOD");
        let path = format!("/{}", "a".repeat(100 + i));
        request(s.addr, &method, &path, &[]).await;
        s.get(&format!("/random/{i}/{}", "z".repeat(i))).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let text = scrape(m).await;
    assert_eq!(
        value(
            &text,
            "http_requests_total{code=\"405\",listener=\"127.0.0.1:0\",method=\"other\",site=\"default\"}"
        ),
        20.0
    );
    assert!(
        !text.contains("X1METHOD") && !text.contains("/random/"),
        "raw input leaked into labels"
    );
    // Exactly: 405 for the odd methods, 404 for the random paths, and the
    // GET 200 series every connection resolves up front (still at 0).
    let mut series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .collect();
    series.sort();
    assert_eq!(
        series,
        vec![
            "http_requests_total{code=\"200\",listener=\"127.0.0.1:0\",method=\"GET\",site=\"default\"} 0",
            "http_requests_total{code=\"404\",listener=\"127.0.0.1:0\",method=\"GET\",site=\"default\"} 20",
            "http_requests_total{code=\"405\",listener=\"127.0.0.1:0\",method=\"other\",site=\"default\"} 20",
        ],
        "{text}"
    );
}

#[tokio::test]
async fn reloads_and_generation_are_exported() {
    let (s, m, _dir) = start("").await;
    s.reload(None).await;
    std::fs::write(&s.config_file, "root = 5\n").unwrap();
    s.reload(None).await;
    let text = scrape(m).await;
    assert_eq!(
        value(
            &text,
            "ruchy_serve_config_reloads_total{result=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "ruchy_serve_config_reloads_total{result=\"failure\"}"
        ),
        1.0
    );
    assert_eq!(value(&text, "ruchy_serve_config_generation"), 2.0);
    assert!(
        value(
            &text,
            "ruchy_serve_config_last_reload_success_timestamp_seconds"
        ) > 1.7e9
    );
}

#[tokio::test]
async fn promtool_accepts_a_real_scrape() {
    let (s, m, _dir) = start("").await;
    s.get("/hello.txt").await;
    s.get("/missing").await;
    let text = scrape(m).await;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by tests/run (Debian package prometheus)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn healthz_and_readyz_on_the_metrics_listener_only_by_default() {
    let (s, m, _dir) = start("").await;
    let r = request(m, "GET", "/healthz", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok\n"));
    let r = request(m, "GET", "/readyz", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ready\n"));
    assert_eq!(request(m, "GET", "/other", &[]).await.status, 404);
    assert_eq!(
        s.get("/readyz").await.status,
        404,
        "main listener must not answer health by default"
    );
    s.stop().await;

    let (s, _m, _dir) = start("main_health_paths = true\n").await;
    assert_eq!(s.get("/healthz").await.status, 200);
    assert_eq!(s.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn readyz_is_503_before_ready_and_while_draining() {
    let dir = fixture();
    let file = ConfigFile::new(
        dir.path(),
        "shutdown_timeout = \"1s\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n[metrics]\naddress = \"127.0.0.1:0\"\n",
    );
    let sources = Sources {
        config_file: Some(file.path.clone()),
        ..Default::default()
    };
    let server = Server::bind(
        config::load(&sources).unwrap(),
        sources,
        Inherited::default(),
    )
    .unwrap();
    let state = server.state();
    // Bound but not yet running: starting.
    let r = ruchy_serve::admin::respond(&state, "/readyz");
    assert_eq!(r.status(), 503);
    let Some(ListenAddr::Tcp(m)) = server.metrics_addr() else {
        panic!()
    };
    let ListenAddr::Tcp(main) = server.local_addrs()[0].clone() else {
        panic!()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let done = tokio::spawn(server.run(rx));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while request(m, "GET", "/readyz", &[]).await.status != 200 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A slow download keeps the drain going while we probe.
    std::fs::write(dir.path().join("big.bin"), vec![0u8; 32 << 20]).unwrap();
    let mut slow = tokio::net::TcpStream::connect(main).await.unwrap();
    use tokio::io::AsyncWriteExt;
    slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    tx.send(Event::Shutdown).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = request(m, "GET", "/readyz", &[]).await;
        if r.status == 503 {
            assert_eq!(r.text(), "draining\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never went 503"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(slow);
    done.await.unwrap();
}

/// Every metric of the server's own carries the `ruchy_serve_` prefix, so
/// it cannot collide with another exporter's on one Prometheus; only the
/// conventional `http_*` and `process_*` families go without.
#[tokio::test]
async fn the_servers_own_metrics_carry_the_application_prefix() {
    let (s, metrics, _dir) = start("").await;
    assert_eq!(s.get("/hello.txt").await.status, 200);
    let text = scrape(metrics).await;
    let names: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() > 20, "{names:?}");
    let bare: Vec<_> = names
        .iter()
        .filter(|n| {
            !n.starts_with("ruchy_serve_") && !n.starts_with("http_") && !n.starts_with("process_")
        })
        .collect();
    assert!(bare.is_empty(), "without the prefix: {bare:?}");
    for family in [
        "file_cache_hits_total",
        "compression_busy_total",
        "config_generation",
    ] {
        assert!(
            names.contains(format!("ruchy_serve_{family}").as_str()),
            "{family}"
        );
    }
}
