//! Clients: hyper for well-formed HTTP/1.1 and HTTP/2, raw sockets for
//! what no well-behaved client would send, blocking ones for tests that run
//! outside a runtime.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// An HTTP/2 (h2c prior knowledge) connection to `addr`, driven in the
/// background, and `GET path` on it.
async fn h2_connection(addr: SocketAddr) -> impl FnMut(&str) -> Pending {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    move |p: &str| {
        let req = Request::builder()
            .uri(format!("http://{addr}{p}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        Box::pin(sender.send_request(req))
    }
}

/// A response on its way.
type Pending = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
            + Send,
    >,
>;

/// Requests over one HTTP/2 (h2c prior knowledge) connection.
pub async fn get_h2(addr: SocketAddr, paths: &[&str]) -> Vec<Resp> {
    let mut get = h2_connection(addr).await;
    let mut out = Vec::new();
    for p in paths {
        let resp = get(p).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        out.push(collect(resp).await);
    }
    out
}

/// The status of each of `paths` over one HTTP/2 (h2c prior knowledge)
/// connection, asked one after another (0: a stream error).
pub async fn get_h2_statuses(addr: SocketAddr, paths: &[&str]) -> Vec<u16> {
    let mut get = h2_connection(addr).await;
    let mut out = Vec::new();
    for p in paths {
        out.push(match get(p).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let _ = resp.into_body().collect().await;
                status
            }
            Err(_) => 0,
        });
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

/// Waits for the server to close a connection we neither write to nor read
/// from (the bytes it sent are discarded); how long that took.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(start + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// A raw connection that has carried one request for `/hello.txt`, its 200
/// read: a kept-alive connection, for the tests of what happens next.
pub async fn kept_connection(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    c
}

/// Sends `paths` as pipelined HTTP/1.1 GETs on one connection, 100 at a
/// time, and returns how many answers were 200. Every answer must have an
/// empty body (the file asked for is empty), so one blank line ends each.
pub fn pipelined_empty_gets(addr: std::net::SocketAddr, paths: &[String]) -> usize {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut ok = 0;
    let mut buf = Vec::new();
    for batch in paths.chunks(100) {
        let mut out = Vec::new();
        for p in batch {
            write!(out, "GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        }
        s.write_all(&out).unwrap();
        let mut seen = 0;
        while seen < batch.len() {
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).expect("answers within 20 s");
            assert!(n > 0, "closed after {ok} answers");
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                ok += usize::from(buf.starts_with(b"HTTP/1.1 200 "));
                buf.drain(..end + 4);
                seen += 1;
            }
        }
    }
    ok
}

/// One sample's value from a scrape of the metrics listener at `metrics`.
pub fn scrape_value(metrics: std::net::SocketAddr, name: &str) -> u64 {
    let text = blocking_get(metrics, "/metrics").unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name}")) as u64
}
