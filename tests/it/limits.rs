//! Limits that exist from day one: header read timeout (slowloris), idle
//! keep-alive timeout, header size and count, URI length. Each loop here is
//! bounded in count and time.

use std::time::{Duration, Instant};

use crate::common::{closed_within, fixture, kept_connection, raw, raw_status, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn slowloris_client_is_cut_off_at_header_read_timeout() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[limits]\nheader_read_timeout = \"1s\"").await;
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let request =
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut cut_off = false;
    // One byte every 100 ms: the whole header would take over 6 s.
    for b in request.iter().take(60) {
        if slow.write_all(&[*b]).await.is_err() {
            cut_off = true;
            break;
        }
        let mut probe = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(_)) => {
                cut_off = true; // a 408 or similar before EOF also counts
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        cut_off,
        "slow client still connected after {:?}",
        started.elapsed()
    );
    // Others are served meanwhile and after.
    assert_eq!(s.get("/hello.txt").await.status, 200);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[limits]\nkeep_alive_timeout = \"1s\"").await;
    let mut c = kept_connection(s.addr).await;
    assert!(
        closed_within(&mut c, Duration::from_secs(5))
            .await
            .is_some(),
        "idle connection left open"
    );
}

#[tokio::test]
async fn idle_http2_connection_is_closed() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[limits]\nkeep_alive_timeout = \"1s\"").await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    // The client preface and an empty SETTINGS frame, then silence.
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    assert!(
        closed_within(&mut c, Duration::from_secs(5))
            .await
            .is_some(),
        "idle h2 connection left open"
    );
}

#[tokio::test]
async fn uri_longer_than_limit_gets_414() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[limits]\nmax_uri_length = 100").await;
    let long = format!("/hello.txt?{}", "a".repeat(200));
    let reply = raw(
        s.addr,
        format!("GET {long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&reply), 414, "{reply}");
    assert_eq!(s.get("/hello.txt?short").await.status, 200);
}

#[tokio::test]
async fn oversized_header_block_is_refused() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[limits]\nmax_header_size = \"8KiB\"").await;
    let big = "a".repeat(20_000);
    let reply = raw(
        s.addr,
        format!("GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(!reply.contains("hello world"));
    let status = raw_status(&reply);
    assert_eq!(status, 431, "{reply}");
    assert_eq!(s.get("/hello.txt").await.status, 200);
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[limits]\nmax_headers = 10").await;
    let headers: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = raw(
        s.addr,
        format!("GET /hello.txt HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes(),
    )
    .await;
    assert!(!reply.contains("hello world"), "{reply}");
    let status = raw_status(&reply);
    assert_eq!(status, 431, "{reply}");
}

/// The default (100) takes hyper's own fixed-array path, not the configured
/// one: both must hold the line.
#[tokio::test]
async fn default_header_count_limit_is_100() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let request = |n: usize| {
        let headers: String = (0..n).map(|i| format!("X-H{i}: v\r\n")).collect();
        format!("GET /hello.txt HTTP/1.1\r\n{headers}Host: x\r\nConnection: close\r\n\r\n")
    };
    // 98 + Host + Connection = 100 headers: served.
    let reply = raw(s.addr, request(98).as_bytes()).await;
    assert_eq!(raw_status(&reply), 200, "{reply}");
    let reply = raw(s.addr, request(99).as_bytes()).await;
    assert_eq!(raw_status(&reply), 431, "{reply}");
}

#[tokio::test]
async fn malformed_request_line_gets_400_and_server_lives() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /hello.txt HTTP/9.9\r\n\r\n",
        b"GET  HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let reply = raw(s.addr, bad).await;
        assert!(!reply.contains("hello world"));
        let status = raw_status(&reply);
        assert!(
            status == 400 || status == 505 || reply.is_empty(),
            "{status} {reply}"
        );
    }
    assert_eq!(s.get("/hello.txt").await.status, 200);
}

/// `max_connections_per_client` (nginx's `limit_conn`): a client with that
/// many connections open has its next one closed at once, counted as
/// `per_client_limit`, while its open ones keep serving; closing one frees
/// a slot.
#[tokio::test]
async fn a_client_past_its_connection_limit_is_closed_and_counted() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[limits]\nmax_connections_per_client = 3").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(kept_connection(s.addr).await);
    }
    let mut fourth = TcpStream::connect(s.addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    // The open ones still serve.
    let c = &mut open[0];
    c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let text = String::from_utf8(s.state.metrics.render()).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("reason=\"per_client_limit\"") && l.ends_with(" 1")),
        "{text}"
    );
    drop(open.pop());
    // The slot comes back once the server has seen the close.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = raw(
            s.addr,
            b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if raw_status(&reply) == 200 {
            break;
        }
        assert!(Instant::now() < until, "no slot after a close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
