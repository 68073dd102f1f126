//! Every phase of a connection has a deadline, and a client that behaves at
//! the request level but not at the connection level cannot hold a socket
//! or memory past it: a silent or trickling client, a slow head on a kept
//! connection, PINGs instead of requests, a client that stops reading, an
//! HTTP/2 client that grants no window. Each test uses short limits and
//! fails with its limit removed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{closed_within, fixture, kept_connection, ConfigFile, Daemon, TestServer};

async fn server(limits: &str) -> (tempfile::TempDir, TestServer) {
    let dir = fixture();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 16 << 20]).unwrap();
    let s = TestServer::start(dir.path(), &format!("[limits]\n{limits}")).await;
    (dir, s)
}

fn closed_total(s: &TestServer, reason: &str) -> u64 {
    let text = String::from_utf8(s.state.metrics.render()).unwrap();
    text.lines()
        .filter(|l| l.starts_with("http_connections_closed_total{"))
        .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_head_timeout_not_the_idle_one() {
    let (_d, s) = server("header_read_timeout = \"1s\"\nkeep_alive_timeout = \"30s\"\n").await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let took = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("a connection that sends nothing is closed");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(closed_total(&s, "first_request_timeout"), 1);
}

/// The HTTP/2 preface one byte every 200 ms: protocol detection is inside
/// the first request's deadline.
#[tokio::test]
async fn a_trickled_http2_preface_is_cut_at_the_head_timeout() {
    let (_d, s) = server("header_read_timeout = \"1s\"\nkeep_alive_timeout = \"30s\"\n").await;
    let c = TcpStream::connect(s.addr).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let writer = tokio::spawn(async move {
        for b in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let end = tokio::time::timeout(Duration::from_secs(4), r.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "still open after 4 s: {end:?}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    writer.abort();
}

/// Behind a balancer the backend must keep idle connections longer than the
/// balancer does: keep-alive is its own timer, not capped by the head one.
#[tokio::test]
async fn http1_keep_alive_outlives_the_head_timeout() {
    let (_d, s) = server("header_read_timeout = \"1s\"\nkeep_alive_timeout = \"3s\"\n").await;
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let get = || {
        http::Request::get("/hello.txt")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let r = sender.send_request(get()).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    // Idle for twice the head timeout: still open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = sender
        .send_request(get())
        .await
        .expect("kept alive past 1 s");
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    // Idle past keep_alive_timeout: closed.
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(ended.is_ok(), "closed after keep_alive_timeout");
    assert!(closed_total(&s, "idle") >= 1);
}

/// On a kept-alive connection, a request head that starts and never ends
/// gets the head timeout, not the idle one.
#[tokio::test]
async fn a_stalled_head_on_a_kept_connection_is_cut_at_the_head_timeout() {
    let (_d, s) = server("header_read_timeout = \"1s\"\nkeep_alive_timeout = \"30s\"\n").await;
    let mut c = kept_connection(s.addr).await;
    c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let took = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("a stalled head is cut");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(closed_total(&s, "header_timeout"), 1);
}

/// PINGs keep nothing in flight: an HTTP/2 connection that only pings is
/// idle, and closes at keep_alive_timeout.
#[tokio::test]
async fn an_http2_connection_that_only_pings_is_closed_at_keep_alive_timeout() {
    let (_d, s) = server("header_read_timeout = \"1s\"\nkeep_alive_timeout = \"2s\"\n").await;
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let (mut client, mut conn) = h2::client::handshake(stream).await.unwrap();
    let mut ping_pong = conn.ping_pong().expect("ping_pong");
    let conn = tokio::spawn(conn);
    let (resp, _) = client
        .send_request(
            http::Request::get("http://localhost/hello.txt")
                .body(())
                .unwrap(),
            true,
        )
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let start = Instant::now();
    let pinger = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if ping_pong.ping(h2::Ping::opaque()).await.is_err() {
                return;
            }
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(ended.is_ok(), "a PING-only connection is closed");
    assert!(
        start.elapsed() < Duration::from_millis(4000),
        "{:?}",
        start.elapsed()
    );
    pinger.abort();
}

/// A client that asks for a large file and never reads: nginx's
/// send_timeout.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_send_timeout() {
    let (_d, s) = server("send_timeout = \"1s\"\n").await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Now read what the socket holds: the server closed, so it ends short.
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("still open"),
        }
    }
    assert!(
        got < 16 << 20,
        "the whole file came after a 3 s stall: {got}"
    );
    assert_eq!(closed_total(&s, "send_timeout"), 1);
}

/// The metrics listener runs the same accept loop with the same deadlines.
#[tokio::test]
async fn the_metrics_listener_has_the_same_deadlines() {
    let (_d, s) = server("header_read_timeout = \"1s\"\nkeep_alive_timeout = \"30s\"\n").await;
    let m = s.metrics_addr.expect("a metrics listener");
    let mut silent = TcpStream::connect(m).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent scrape connection is closed");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let mut trickle = TcpStream::connect(m).await.unwrap();
    let start = Instant::now();
    for b in b"GET /metrics HTTP/1.1\r\n" {
        if trickle.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let took = closed_within(&mut trickle, Duration::from_secs(2))
        .await
        .expect("a trickling scrape connection is closed");
    assert!(start.elapsed() < Duration::from_secs(5), "{took:?}");
}

/// wrk's result for `url`: (requests, errors of any kind).
fn wrk(url: &str, seconds: u32) -> (u64, u64, String) {
    let out = std::process::Command::new("wrk")
        .args(["-t1", "-c4", &format!("-d{seconds}s"), url])
        .output()
        .expect("wrk (tests/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let mut errors = 0;
    for l in text.lines() {
        if let Some(rest) = l.trim().strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        if let Some(rest) = l.trim().strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    (requests, errors, text)
}

/// Long-lived connections rebalance: closed gracefully after a request
/// count or an age, and no request fails for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_count_and_age_close_gracefully_with_no_failed_request() {
    let (_d, s) = server("max_requests_per_connection = 20\n").await;
    let url = format!("http://{}/hello.txt", s.addr);
    let (requests, errors, text) = tokio::task::spawn_blocking(move || wrk(&url, 2))
        .await
        .unwrap();
    assert!(requests > 100, "{text}");
    assert_eq!(errors, 0, "{text}");
    assert!(
        closed_total(&s, "max_requests") >= requests / 20 - 4,
        "{text}"
    );

    let (_d2, s2) = server("max_connection_age = \"300ms\"\n").await;
    let url = format!("http://{}/hello.txt", s2.addr);
    let (requests, errors, text) = tokio::task::spawn_blocking(move || wrk(&url, 2))
        .await
        .unwrap();
    assert!(requests > 100, "{text}");
    assert_eq!(errors, 0, "{text}");
    assert!(closed_total(&s2, "max_age") >= 4, "{text}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// An HTTP/2 client that grants no window and opens 100 streams for a
/// 16 MiB file: the server reads at most its per-connection budget and the
/// connection ends at the send timeout. (Before the budget, each stream held
/// a 1 MiB chunk: about 100 MiB for one connection.)
#[test]
fn a_zero_window_http2_client_cannot_pin_memory() {
    let dir = fixture();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 16 << 20]).unwrap();
    let cfg = ConfigFile::new(
        dir.path(),
        "[[listen]]\naddress = \"127.0.0.1:0\"\n[limits]\nsend_timeout = \"2s\"\n\
         keep_alive_timeout = \"30s\"\n[log]\naccess_log = \"off\"\n",
    );
    let d = Daemon::spawn(&["--config", cfg.arg()], &[]);
    let pid = d.child.id();
    let addr: SocketAddr = d.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = rss_kib(pid);
    let (peak, lasted) = rt.block_on(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(stream)
            .await
            .unwrap();
        let start = Instant::now();
        let conn = tokio::spawn(conn);
        let mut responses = Vec::new();
        for _ in 0..100 {
            let mut c = client.clone();
            c = c.ready().await.unwrap();
            let (resp, _) = c
                .send_request(
                    http::Request::get("http://localhost/big.bin")
                        .body(())
                        .unwrap(),
                    true,
                )
                .unwrap();
            responses.push(resp);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let peak = rss_kib(pid);
        let ended = tokio::time::timeout(Duration::from_secs(8), conn).await;
        assert!(ended.is_ok(), "the stuck connection was not ended");
        drop(responses);
        (peak, start.elapsed())
    });
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "zero-window: RSS {before} KiB -> {peak} KiB (+{growth_mib} MiB), ended after {lasted:?}"
    );
    assert!(growth_mib < 24, "one connection pinned {growth_mib} MiB");
    assert!(lasted < Duration::from_secs(6), "{lasted:?}");
}
