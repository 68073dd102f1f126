//! Idle HTTP/1 connections hand hyper's state (its read and write buffers)
//! back after `RELEASE_AFTER` with nothing in flight, holding only the
//! socket until the client sends again, and nothing the client sent is lost
//! or answered out of order across that hand-over: a request arriving just
//! as it happens, pipelined requests, bytes hyper had read but not yet used.

use std::time::{Duration, Instant};

use ruchy_serve::conn::timers::RELEASE_AFTER;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::pki::{server_name, TestCa};
use crate::common::{fixture, TestServer};

/// `http_connections_waiting`, summed over listeners.
fn waiting(s: &TestServer) -> u64 {
    let text = String::from_utf8(s.state.metrics.render()).unwrap();
    text.lines()
        .filter(|l| l.starts_with("http_connections_waiting{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits (at most 5 s) for the gauge to read `want`.
async fn waiting_becomes(s: &TestServer, want: u64) {
    let until = Instant::now() + Duration::from_secs(5);
    while waiting(s) != want {
        assert!(
            Instant::now() < until,
            "http_connections_waiting stayed {} (want {want})",
            waiting(s)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads HTTP/1.1 responses (Content-Length framed) off one connection,
/// keeping what follows a response for the next.
struct Responses<S> {
    io: S,
    buf: Vec<u8>,
}

impl<S: tokio::io::AsyncRead + Unpin> Responses<S> {
    fn new(io: S) -> Self {
        Responses {
            io,
            buf: Vec::new(),
        }
    }

    /// The next response's status and body.
    async fn next(&mut self) -> (u16, Vec<u8>) {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .expect("content-length");
        while self.buf.len() < head_end + len {
            self.fill().await;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        (status, body)
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed with a response outstanding");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// A connection that sends nothing waits without HTTP state; one that has
/// been answered and stays quiet hands its state back, serves its next
/// request as before, and leaves the gauge when it closes.
#[tokio::test]
async fn a_quiet_connection_waits_without_state_and_serves_its_next_request() {
    let root = fixture();
    let s = TestServer::start(root.path(), "").await;
    assert_eq!(waiting(&s), 0);

    let silent = TcpStream::connect(s.addr).await.unwrap();
    waiting_becomes(&s, 1).await;

    let c = TcpStream::connect(s.addr).await.unwrap();
    let (r, mut w) = c.into_split();
    let mut resp = Responses::new(r);
    waiting_becomes(&s, 2).await;
    for round in 0..3 {
        w.write_all(get("/hello.txt").as_bytes()).await.unwrap();
        assert_eq!(
            resp.next().await,
            (200, b"hello world\n".to_vec()),
            "round {round}"
        );
        // Answered and quiet: back to waiting after RELEASE_AFTER.
        waiting_becomes(&s, 2).await;
    }
    drop(silent);
    waiting_becomes(&s, 1).await;
    drop((resp, w));
    waiting_becomes(&s, 0).await;
}

/// A request and the first bytes of the next in one write: the second head
/// sits unparsed in hyper's buffer when the connection goes quiet, and must
/// be handed over with the socket.
#[tokio::test]
async fn bytes_read_but_not_yet_parsed_survive_the_hand_over() {
    let root = fixture();
    let s = TestServer::start(root.path(), "").await;
    let c = TcpStream::connect(s.addr).await.unwrap();
    let (r, mut w) = c.into_split();
    let mut resp = Responses::new(r);
    let second = get("/digits.txt");
    let (head, tail) = second.split_at(9);
    w.write_all(format!("{}{head}", get("/hello.txt")).as_bytes())
        .await
        .unwrap();
    assert_eq!(resp.next().await, (200, b"hello world\n".to_vec()));
    tokio::time::sleep(RELEASE_AFTER * 4).await;
    w.write_all(tail.as_bytes()).await.unwrap();
    assert_eq!(
        resp.next().await,
        (200, b"0123456789abcdefghijklmnopqrstuvwxyz".to_vec())
    );
}

/// Many connections, each a fixed sequence of pauses around `RELEASE_AFTER`
/// (so requests arrive before, during and after the hand-over), pipelined
/// bursts and heads split across a pause: every request is answered, in
/// order, with its own file.
#[tokio::test]
async fn no_request_is_lost_or_reordered_across_hand_overs() {
    let root = fixture();
    let s = TestServer::start(root.path(), "").await;
    let files: [(&str, &[u8]); 3] = [
        ("/hello.txt", b"hello world\n"),
        ("/digits.txt", b"0123456789abcdefghijklmnopqrstuvwxyz"),
        ("/data.json", b"{\"a\":1}\n"),
    ];
    let spell = RELEASE_AFTER.as_micros() as u64;
    let mut tasks = Vec::new();
    for conn in 0..8u64 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let c = TcpStream::connect(addr).await.unwrap();
            c.set_nodelay(true).unwrap();
            let (r, mut w) = c.into_split();
            let mut resp = Responses::new(r);
            let mut answered = 0;
            for step in 0..40u64 {
                let k = conn * 7 + step;
                // 0, 0.5, 0.9, 1.0, 1.1, 1.5 and 3 times the spell.
                let tenths = [0, 5, 9, 10, 11, 15, 30][(k % 7) as usize];
                tokio::time::sleep(Duration::from_micros(spell * tenths / 10)).await;
                let burst = 1 + (k % 3) as usize;
                let wanted: Vec<usize> = (0..burst).map(|i| ((k as usize) + i) % 3).collect();
                let bytes: String = wanted.iter().map(|&f| get(files[f].0)).collect();
                if k % 5 == 0 {
                    // A head split across a pause longer than the spell.
                    let (a, b) = bytes.split_at(7);
                    w.write_all(a.as_bytes()).await.unwrap();
                    tokio::time::sleep(RELEASE_AFTER * 2).await;
                    w.write_all(b.as_bytes()).await.unwrap();
                } else {
                    w.write_all(bytes.as_bytes()).await.unwrap();
                }
                for f in wanted {
                    let (status, body) = resp.next().await;
                    assert_eq!(
                        (status, body.as_slice()),
                        (200, files[f].1),
                        "connection {conn}, step {step}"
                    );
                    answered += 1;
                }
            }
            answered
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(
        total,
        (0..8u64)
            .map(|c| (0..40u64).map(|s| 1 + ((c * 7 + s) % 3)).sum::<u64>())
            .sum::<u64>()
    );
}

/// Over TLS the hand-over is above the TLS layer: a kept connection that
/// went quiet past the spell is still the same TLS session and answers.
#[tokio::test]
async fn a_quiet_tls_connection_hands_over_and_answers() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca.issue(dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let body = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n\n[[tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
        leaf.cert.display().to_string(),
        leaf.key.display().to_string()
    );
    let s = TestServer::start_raw(root.path(), &body).await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let tls = ca
        .client(&["http/1.1"], &[])
        .connect(server_name("a.test"), tcp)
        .await
        .unwrap();
    let (r, mut w) = tokio::io::split(tls);
    let mut resp = Responses::new(r);
    for _ in 0..3 {
        w.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(resp.next().await, (200, b"hello world\n".to_vec()));
        waiting_becomes(&s, 1).await;
    }
}

/// A request whose small body arrives in its own packet, after the head:
/// those bytes are the body, not the start of the next head, so the
/// connection is not cut at the head timeout as `header_timeout` (it was,
/// 1 s after the answer), and it is handed back once a request without a
/// body has been answered. The answer is a large file, so the body arrives
/// while it is being sent.
#[tokio::test]
async fn a_body_in_its_own_packet_is_not_the_start_of_a_head() {
    let root = fixture();
    std::fs::write(root.path().join("big.bin"), vec![3u8; 4 << 20]).unwrap();
    let s = TestServer::start(
        root.path(),
        "[limits]\nheader_read_timeout = \"1s\"\nkeep_alive_timeout = \"30s\"",
    )
    .await;
    let c = TcpStream::connect(s.addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let (r, mut w) = c.into_split();
    let mut resp = Responses::new(r);
    waiting_becomes(&s, 1).await;
    w.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    w.write_all(b"hello").await.unwrap();
    assert_eq!(resp.next().await.0, 200);
    // Past the head timeout, still open and still serving.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.write_all(get("/digits.txt").as_bytes()).await.unwrap();
    assert_eq!(resp.next().await.0, 200);
    waiting_becomes(&s, 1).await;
    let text = String::from_utf8(s.state.metrics.render()).unwrap();
    assert!(
        !text
            .lines()
            .any(|l| l.contains("reason=\"header_timeout\"") && !l.ends_with(" 0")),
        "{text}"
    );
}
