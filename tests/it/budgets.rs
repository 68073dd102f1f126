//! Every byte a client can make the server hold is charged to a budget, and
//! every deadline counts progress, not traffic. Each test repeats an attack
//! from the outside review against the real binary and fails without its
//! bound (run with `RUCHY_TEST_BINARY` pointing at a build before the fix):
//!
//! - HTTP/2 streams with no window over many distinct cached files: each
//!   stream used to keep its own copy of a whole file outside the
//!   connection's budget (`limits.max_response_buffer`);
//! - many connections, each within its budget, against the process-wide
//!   bound (`limits.max_response_memory`);
//! - PINGs every half second on a stalled download (they used to move the
//!   send deadline, since a PING ACK is a write);
//! - a peer that never answers a graceful close (it used to keep its whole
//!   keep-alive wait, past `max_connection_age` and through a shutdown).
//!
//! Every loop is bounded in count and time; all traffic is on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{free_local_addr, scrape_value, ConfigFile, Daemon};

const MIB: u64 = 1 << 20;

/// The binary serving `root` with `extra` configuration, and its metrics
/// listener's address.
fn daemon(root: &std::path::Path, extra: &str) -> (ConfigFile, Daemon, SocketAddr) {
    let cfg = ConfigFile::new(
        root,
        &format!("{extra}\n[[listen]]\naddress = \"127.0.0.1:0\"\n[log]\naccess_log = \"off\"\n"),
    );
    let metrics = free_local_addr();
    let d = Daemon::spawn(
        &["--config", cfg.arg()],
        &[("RUCHY_SERVE_METRICS__ADDRESS", &metrics.to_string())],
    );
    (cfg, d, metrics)
}

/// [`daemon`] serving a tree with one file, `big.bin`, of `len` bytes.
fn serving_big(len: usize, extra: &str) -> (tempfile::TempDir, ConfigFile, Daemon, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![5u8; len]).unwrap();
    let (cfg, d, metrics) = daemon(dir.path(), extra);
    (dir, cfg, d, metrics)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Opens `paths` as streams on one HTTP/2 connection whose client grants
/// no window at all, and keeps the connection (driven, so PINGs and
/// SETTINGS are answered) and the streams open.
async fn stalled_streams(
    addr: SocketAddr,
    paths: &[String],
) -> (tokio::task::JoinHandle<()>, Vec<h2::client::ResponseFuture>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(stream)
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut responses = Vec::new();
    for p in paths {
        let mut c = client.clone().ready().await.unwrap();
        let (resp, _) = c
            .send_request(
                http::Request::get(format!("http://localhost{p}"))
                    .body(())
                    .unwrap(),
                true,
            )
            .unwrap();
        responses.push(resp);
    }
    (conn, responses)
}

/// Three connections x 128 streams with no window over 384 distinct
/// 1,000,000-byte files that the file cache takes (but cannot hold all of:
/// 16 MiB). Without the charge on in-memory bodies every stream kept its
/// own copy: about 384 MB. With it, what is held is the cache plus three
/// budgets.
#[test]
fn stalled_http2_streams_over_cached_files_stay_within_the_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..384 {
        std::fs::write(dir.path().join(format!("f{i}.bin")), &body).unwrap();
    }
    let (_cfg, d, _) = daemon(
        dir.path(),
        "[files]\ncache_max_bytes = \"16MiB\"\ncache_max_file_size = \"1MiB\"\n\
         [limits]\nmax_response_buffer = \"4MiB\"\nsend_timeout = \"30s\"\n\
         h2_max_concurrent_streams = 128\n",
    );
    let addr = d.addr;
    let before = d.rss();
    let rt = runtime();
    let peak = rt.block_on(async {
        let mut held = Vec::new();
        for c in 0..3 {
            let paths: Vec<String> = (0..128).map(|i| format!("/f{}.bin", c * 128 + i)).collect();
            held.push(stalled_streams(addr, &paths).await);
        }
        // Let every stream be answered as far as it can be.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let peak = d.rss();
        drop(held);
        peak
    });
    let growth = peak.saturating_sub(before);
    eprintln!(
        "3 x 128 stalled streams over cached files: RSS {} -> {} MiB (+{} MiB)",
        before / MIB,
        peak / MIB,
        growth / MIB
    );
    // The cache (16) + three budgets (12) + allocator and h2 slack.
    assert!(
        growth < 60 * MIB,
        "stalled streams held {} MiB over cache and budgets",
        growth / MIB
    );
}

/// 200 connections, each within its own 1 MiB budget, reading a large
/// file with windows open but never reading the socket: 200 MiB of chunks
/// without the process-wide bound, at most `max_response_memory` (24 MiB)
/// with it.
#[test]
fn many_connections_within_their_budgets_stay_within_the_process_bound() {
    let (_dir, _cfg, d, metrics) = serving_big(
        32 << 20,
        "[limits]\nmax_response_buffer = \"1MiB\"\nmax_response_memory = \"24MiB\"\n\
         send_timeout = \"30s\"\n",
    );
    let addr = d.addr;
    let before = d.rss();
    let rt = runtime();
    let peak = rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..200 {
            let stream = TcpStream::connect(addr).await.unwrap();
            // Windows far larger than the budget; the client then stops
            // reading the socket, so what the server sends piles up in its
            // own buffers.
            let (client, mut conn) = h2::client::Builder::new()
                .initial_window_size(16 << 20)
                .initial_connection_window_size(64 << 20)
                .handshake::<_, Bytes>(stream)
                .await
                .unwrap();
            let mut responses = Vec::new();
            for _ in 0..20 {
                let mut c = client.clone();
                let ready = async { c.clone().ready().await };
                c = tokio::select! {
                    r = ready => r.unwrap(),
                    _ = &mut conn => panic!("connection ended"),
                };
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
            // Drive the connection only long enough to send the requests.
            let _ = tokio::time::timeout(Duration::from_millis(20), &mut conn).await;
            held.push((client, conn, responses));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let peak = d.rss();
        drop(held);
        peak
    });
    let growth = peak.saturating_sub(before);
    eprintln!(
        "200 connections x 20 streams, socket unread: RSS {} -> {} MiB (+{} MiB)",
        before / MIB,
        peak / MIB,
        growth / MIB
    );
    assert!(
        growth < 24 * MIB + 40 * MIB,
        "200 connections held {} MiB past a 24 MiB process bound",
        growth / MIB
    );
    let waits = scrape_value(metrics, "ruchy_serve_response_memory_waits_total");
    assert!(waits > 0, "bodies waited for room, and it was counted");
}

/// A download with no window, and a PING every half second: PING ACKs are
/// writes, not progress. The connection ends at the send timeout (2 s); it
/// used to stay open as long as the PINGs came.
#[test]
fn pings_do_not_keep_a_stalled_download_past_the_send_timeout() {
    let (_dir, _cfg, d, _) = serving_big(
        20 << 20,
        "[limits]\nsend_timeout = \"2s\"\nkeep_alive_timeout = \"30s\"\n\
         max_connection_age = \"30s\"\n",
    );
    let addr = d.addr;
    let lasted = runtime().block_on(async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (client, mut conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(stream)
            .await
            .unwrap();
        let mut pings = conn.ping_pong().expect("ping_pong");
        let start = Instant::now();
        let conn = tokio::spawn(conn);
        let mut c = client.ready().await.unwrap();
        let (resp, _) = c
            .send_request(
                http::Request::get("http://localhost/big.bin")
                    .body(())
                    .unwrap(),
                true,
            )
            .unwrap();
        let pinger = tokio::spawn(async move {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if pings.ping(h2::Ping::opaque()).await.is_err() {
                    return;
                }
            }
        });
        let ended = tokio::time::timeout(Duration::from_secs(12), conn).await;
        pinger.abort();
        drop(resp);
        assert!(ended.is_ok(), "a stalled download kept open by PINGs");
        start.elapsed()
    });
    eprintln!("stalled download with PINGs closed after {lasted:?}");
    assert!(lasted < Duration::from_secs(5), "{lasted:?}");
}

/// The HTTP/2 client preface and an empty SETTINGS frame, then nothing: a
/// peer that will never answer GOAWAY's PING.
async fn silent_h2(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    c
}

/// Reads (and drops) what the server sends until it closes; how long that
/// took, or `None` past `limit`.
async fn closed_after(c: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// An idle HTTP/2 connection past `max_connection_age` gets GOAWAY and
/// then its short grace, not a whole keep-alive wait (30 s here).
#[test]
fn an_aged_idle_http2_peer_that_never_answers_is_closed_within_the_grace() {
    let dir = crate::common::fixture();
    let (_cfg, d, _) = daemon(
        dir.path(),
        "[limits]\nmax_connection_age = \"2s\"\nkeep_alive_timeout = \"30s\"\n\
         header_read_timeout = \"30s\"\n",
    );
    let addr = d.addr;
    let took = runtime().block_on(async {
        let mut c = silent_h2(addr).await;
        closed_after(&mut c, Duration::from_secs(12)).await
    });
    eprintln!("aged silent HTTP/2 peer closed after {took:?}");
    let took = took.expect("still open 12 s after a 2 s age");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// SIGTERM with a silent HTTP/2 peer connected: the drain's GOAWAY goes
/// unanswered, and the connection is dropped after its grace, so the
/// shutdown does not wait for `shutdown_timeout` (10 s here).
#[test]
fn a_silent_http2_peer_does_not_hold_a_shutdown() {
    let dir = crate::common::fixture();
    let (_cfg, mut d, _) = daemon(
        dir.path(),
        "shutdown_timeout = \"10s\"\n[limits]\nkeep_alive_timeout = \"30s\"\n\
         header_read_timeout = \"30s\"\n",
    );
    let addr = d.addr;
    let rt = runtime();
    let c = rt.block_on(async {
        let mut c = silent_h2(addr).await;
        // The server's SETTINGS: the connection is in HTTP/2.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        c
    });
    let start = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(15).expect("exited");
    let took = start.elapsed();
    drop(c);
    eprintln!("shutdown with a silent HTTP/2 peer took {took:?}");
    assert!(status.success(), "{status:?}: {}", d.log_text());
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        !d.log_text().contains("shutdown_timeout reached"),
        "{}",
        d.log_text()
    );
}

/// The review's F1: stream windows of one byte over cached 1,000,000-byte
/// files, four streams per connection, and a HEAD every half second so no
/// connection is ever idle. hyper used to hand each whole body to h2's
/// send buffer on that one byte of window: the body counted as finished,
/// so `send_timeout` no longer applied while its bytes stayed charged to
/// the pool; six such connections held a 16 MiB pool whole and a
/// legitimate download got 0 bytes. Now a connection that holds charged
/// bytes and delivers none of them is closed at `send_timeout`, whatever
/// else it sends, and the legitimate download completes.
#[test]
fn held_bytes_that_make_no_progress_are_closed_at_the_send_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..24 {
        std::fs::write(dir.path().join(format!("f{i}.bin")), &body).unwrap();
    }
    std::fs::write(dir.path().join("small.txt"), "hello").unwrap();
    let (_cfg, d, metrics) = daemon(
        dir.path(),
        "[files]\ncache_max_bytes = \"64MiB\"\ncache_max_file_size = \"1MiB\"\n\
         [limits]\nmax_response_buffer = \"4MiB\"\nmax_response_memory = \"16MiB\"\n\
         send_timeout = \"2s\"\nkeep_alive_timeout = \"15s\"\n",
    );
    let addr = d.addr;
    // Every file in the cache first.
    for i in 0..24 {
        let got = crate::common::blocking_get(addr, &format!("/f{i}.bin")).unwrap();
        assert!(got.len() > 1_000_000);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (lasted, legit) = rt.block_on(async {
        let start = Instant::now();
        let mut attackers = Vec::new();
        for c in 0..6 {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (client, conn) = h2::client::Builder::new()
                .initial_window_size(1)
                .handshake::<_, Bytes>(stream)
                .await
                .unwrap();
            let conn = tokio::spawn(conn);
            let mut held = Vec::new();
            for i in 0..4 {
                let mut c2 = client.clone().ready().await.unwrap();
                let path = format!("http://localhost/f{}.bin", c * 4 + i);
                let (resp, _) = c2
                    .send_request(http::Request::get(path).body(()).unwrap(), true)
                    .unwrap();
                held.push(resp);
            }
            // A HEAD every half second: the connection is never idle.
            let heads = tokio::spawn(async move {
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let Ok(mut c2) = client.clone().ready().await else {
                        return;
                    };
                    let req = http::Request::head("http://localhost/small.txt")
                        .body(())
                        .unwrap();
                    if c2.send_request(req, true).is_err() {
                        return;
                    }
                }
            });
            attackers.push((conn, heads, held));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A legitimate download while the attack holds what it can.
        // A legitimate download from another address while the attack
        // holds what it can.
        let legit = tokio::spawn(body_length(addr, "/f23.bin"));
        let mut lasted = Vec::new();
        let mut held_at_5s = None;
        for (conn, heads, held) in attackers {
            if held_at_5s.is_none() {
                let at = start + Duration::from_secs(5);
                tokio::time::sleep_until(at.into()).await;
                held_at_5s = Some(tokio::task::spawn_blocking(move || {
                    scrape_value(metrics, "ruchy_serve_response_memory_bytes")
                }));
            }
            let ended = tokio::time::timeout(Duration::from_secs(25), conn).await;
            lasted.push(ended.map_or(Duration::MAX, |_| start.elapsed()));
            heads.abort();
            drop(held);
        }
        let held = held_at_5s.unwrap().await.unwrap();
        eprintln!("pool held 5 s into the attack: {held} bytes");
        (lasted, legit.await.unwrap())
    });
    eprintln!(
        "six connections holding 1-byte windows closed after {lasted:?}; \
         the download from another address got {legit} bytes"
    );
    assert!(
        lasted.iter().all(|&l| l < Duration::MAX),
        "an attacking connection was kept"
    );
    // The first held bytes from the start: closed at the send timeout (2 s)
    // although its HEADs kept coming. The others waited for the address's
    // share (an eighth of the pool) and were closed in turn.
    assert!(lasted[0] < Duration::from_secs(6), "{lasted:?}");
    assert_eq!(legit, 1_000_000, "the legitimate download's body");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        scrape_value(metrics, "ruchy_serve_response_memory_bytes"),
        0,
        "everything the attack held was given back"
    );
}

/// The length of the body `GET path` gets over a new HTTP/1.1 connection
/// from 127.0.0.2, another client address than the tests' (read until the
/// server closes, or 12 s).
async fn body_length(addr: SocketAddr, path: &str) -> usize {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(12), s.read_to_end(&mut all)).await;
    let head = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(all.len(), |i| i + 4);
    all.len() - head
}

/// Reads `path` over HTTP/2 with a 64 KiB stream window, giving window
/// back 32 KiB at a time, each after `every`: a slow but steady reader.
/// The body length.
async fn paced_h2(addr: SocketAddr, path: &str, every: Duration) -> usize {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(64 << 10)
        .handshake::<_, Bytes>(stream)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut c = client.ready().await.unwrap();
    let req = http::Request::get(format!("http://localhost{path}"))
        .body(())
        .unwrap();
    let (resp, _) = c.send_request(req, true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    let (mut got, mut owed) = (0, 0);
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { break };
        got += chunk.len();
        owed += chunk.len();
        if owed >= 32 << 10 {
            tokio::time::sleep(every).await;
            let _ = body.flow_control().release_capacity(owed);
            owed = 0;
        }
    }
    got
}

/// The second review's high: a steady HTTP/2 reader of a large file was
/// cut at `send_timeout` after the response began, whatever its progress
/// (file chunks given back after they were written did not count as
/// delivered). A reader taking 32 KiB every 60 ms of a 2 MiB file (about
/// 4 s) and of a cached 1,000,000-byte one, with `send_timeout = "1s"`,
/// gets every byte.
#[test]
fn a_slow_steady_http2_reader_is_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 2 << 20]).unwrap();
    std::fs::write(dir.path().join("cached.bin"), vec![8u8; 1_000_000]).unwrap();
    let (_cfg, d, _) = daemon(
        dir.path(),
        "[limits]\nsend_timeout = \"1s\"\nkeep_alive_timeout = \"30s\"\n",
    );
    let addr = d.addr;
    // The cached one in the cache first.
    assert!(
        crate::common::blocking_get(addr, "/cached.bin")
            .unwrap()
            .len()
            > 1_000_000
    );
    let rt = runtime();
    let every = Duration::from_millis(60);
    let start = Instant::now();
    let big = rt.block_on(paced_h2(addr, "/big.bin", every));
    let took = start.elapsed();
    let cached = rt.block_on(paced_h2(addr, "/cached.bin", every));
    eprintln!("a 2 MiB file read at 32 KiB per 60 ms over HTTP/2: {big} bytes in {took:?}");
    assert_eq!(big, 2 << 20, "the streamed file was cut after {took:?}");
    assert!(took > Duration::from_secs(2), "not paced: {took:?}");
    assert_eq!(cached, 1_000_000, "the cached file was cut");
}
