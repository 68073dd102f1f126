//! TLS with real handshakes: a rustls client (and the openssl command line for
//! the versions rustls cannot speak), certificates from a CA made at test
//! time, ALPN, SNI, rotation on reload and by file watch, the handshake
//! timeout, the https redirect and HSTS.

use crate::common;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::pki::{peer_serial, server_name, write_atomic, TestCa};
use crate::common::{fixture, raw, raw_status, TestServer};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// TLS config body: one TLS listener plus `extra`, with the given leaves.
fn body(leaves: &[&common::pki::Leaf], extra: &str) -> String {
    let mut s = String::from("[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n");
    s.push_str(extra);
    for l in leaves {
        s.push_str(&format!(
            "\n[[tls.certificates]]\ncert = {:?}\nkey = {:?}\n",
            l.cert.display().to_string(),
            l.key.display().to_string()
        ));
    }
    s
}

async fn connect(ca: &TestCa, addr: std::net::SocketAddr, sni: &str, alpn: &[&str]) -> Tls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    ca.client(alpn, &[])
        .connect(server_name(sni), tcp)
        .await
        .unwrap()
}

/// GET over an HTTP/1.1 connection on `tls`; returns status, body, headers.
async fn h1_get(tls: Tls, path: &str) -> (u16, Bytes, http::HeaderMap) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(path)
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status.as_u16(),
        body.collect().await.unwrap().to_bytes(),
        parts.headers,
    )
}

struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
}

fn pki() -> Pki {
    Pki {
        ca: TestCa::new(),
        dir: tempfile::tempdir().unwrap(),
    }
}

#[tokio::test]
async fn tls13_and_tls12_handshakes_both_serve() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(root.path(), &body(&[&leaf], "")).await;
    for (version, expect) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        let tls =
            p.ca.client(&["http/1.1"], &[version])
                .connect(server_name("a.test"), tcp)
                .await
                .unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expect));
        let (status, body, _) = h1_get(tls, "/hello.txt").await;
        assert_eq!(status, 200);
        assert_eq!(body.as_ref(), b"hello world\n");
    }
}

#[tokio::test]
async fn alpn_selects_h2_or_http11_and_both_serve() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(root.path(), &body(&[&leaf], "")).await;

    let tls = connect(&p.ca, s.addr, "a.test", &["h2", "http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("https://a.test/hello.txt")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .as_ref(),
        b"hello world\n"
    );

    // An HTTP/1.1-only client keeps working while h2 is offered.
    let tls = connect(&p.ca, s.addr, "a.test", &["http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(h1_get(tls, "/hello.txt").await.0, 200);
    // No ALPN at all: HTTP/1.1.
    let tls = connect(&p.ca, s.addr, "a.test", &[]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    assert_eq!(h1_get(tls, "/hello.txt").await.0, 200);
}

#[tokio::test]
async fn sni_picks_exact_then_wildcard_and_no_sni_gets_default() {
    let p = pki();
    let default =
        p.ca.issue(p.dir.path(), "default", &["default.test"], 10, 30);
    let exact = p.ca.issue(p.dir.path(), "exact", &["a.test"], 20, 30);
    let wild = p.ca.issue(p.dir.path(), "wild", &["*.wild.test"], 30, 30);
    let root = fixture();
    let s = TestServer::start_raw(root.path(), &body(&[&default, &exact, &wild], "")).await;
    assert_eq!(
        peer_serial(&connect(&p.ca, s.addr, "a.test", &[]).await),
        20
    );
    assert_eq!(
        peer_serial(&connect(&p.ca, s.addr, "x.wild.test", &[]).await),
        30
    );
    assert_eq!(
        peer_serial(&connect(&p.ca, s.addr, "default.test", &[]).await),
        10
    );
    // An IP address as server name: rustls sends no SNI; the default answers.
    // (The client would reject the name mismatch, so accept any certificate.)
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let tls = crate::common::pki::insecure_client(&[])
        .connect(server_name("127.0.0.1"), tcp)
        .await
        .unwrap();
    assert_eq!(peer_serial(&tls), 10);
}

/// `openssl s_client` with one protocol version; true if the handshake worked.
fn openssl_handshake(addr: std::net::SocketAddr, version_flag: &str) -> bool {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "a.test",
            version_flag,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed by tests/run");
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)")
}

/// The cipher `openssl s_client` ended up with when offering `args`.
fn openssl_cipher(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "a.test",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed by tests/run");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split("Cipher is ").nth(1))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// testssl.sh's "Has server cipher order? no (NOT ok)": a client that lists
/// a weaker suite first still gets the server's first choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_cipher_order_wins() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(root.path(), &body(&[&leaf], "")).await;
    let addr = s.addr;
    let (tls12, tls13) = tokio::task::spawn_blocking(move || {
        (
            openssl_cipher(
                addr,
                &[
                    "-tls1_2",
                    "-cipher",
                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
                ],
            ),
            openssl_cipher(
                addr,
                &[
                    "-tls1_3",
                    "-ciphersuites",
                    "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
                ],
            ),
        )
    })
    .await
    .unwrap();
    assert_eq!(tls12, "ECDHE-ECDSA-AES256-GCM-SHA384");
    assert_eq!(tls13, "TLS_AES_256_GCM_SHA384");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_sees_tls13_and_tls12_accepted_and_tls11_tls10_refused() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(root.path(), &body(&[&leaf], "")).await;
    let addr = s.addr;
    let results = tokio::task::spawn_blocking(move || {
        ["-tls1_3", "-tls1_2", "-tls1_1", "-tls1"].map(|v| (v, openssl_handshake(addr, v)))
    })
    .await
    .unwrap();
    assert_eq!(
        results,
        [
            ("-tls1_3", true),
            ("-tls1_2", true),
            ("-tls1_1", false),
            ("-tls1", false)
        ]
    );
}

#[tokio::test]
async fn reload_rotates_certificate_while_open_connections_continue() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(
        root.path(),
        &body(&[&leaf], "\n[tls]\nwatch_interval = \"0s\"\n"),
    )
    .await;
    // A keep-alive connection opened before the rotation.
    let old = connect(&p.ca, s.addr, "a.test", &["http/1.1"]).await;
    assert_eq!(peer_serial(&old), 1);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old))
        .await
        .unwrap();
    tokio::spawn(conn);

    p.ca.issue(p.dir.path(), "a", &["a.test"], 2, 30);
    s.reload(None).await;
    assert_eq!(peer_serial(&connect(&p.ca, s.addr, "a.test", &[]).await), 2);
    for _ in 0..3 {
        let req = http::Request::builder()
            .uri("/hello.txt")
            .header("host", "a.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender
            .send_request(req)
            .await
            .expect("old connection still serves");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
}

async fn wait_for_serial(ca: &TestCa, addr: std::net::SocketAddr, serial: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if peer_serial(&connect(ca, addr, "a.test", &[]).await) == serial {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn file_watch_rotates_without_a_signal_and_keeps_old_on_corrupt_files() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(
        root.path(),
        &body(&[&leaf], "\n[tls]\nwatch_interval = \"100ms\"\n"),
    )
    .await;
    assert_eq!(peer_serial(&connect(&p.ca, s.addr, "a.test", &[]).await), 1);
    p.ca.issue(p.dir.path(), "a", &["a.test"], 2, 30);
    assert!(
        wait_for_serial(&p.ca, s.addr, 2).await,
        "file change not picked up"
    );

    // A corrupt certificate: the old one (serial 2) keeps serving.
    write_atomic(
        &leaf.cert,
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(peer_serial(&connect(&p.ca, s.addr, "a.test", &[]).await), 2);
    // A key that belongs to another certificate: still serial 2.
    let other = p.ca.issue(p.dir.path(), "other", &["a.test"], 9, 30);
    p.ca.issue(p.dir.path(), "a", &["a.test"], 3, 30);
    std::fs::copy(&other.key, &leaf.key).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(peer_serial(&connect(&p.ca, s.addr, "a.test", &[]).await), 2);
    // Repaired: picked up.
    p.ca.issue(p.dir.path(), "a", &["a.test"], 4, 30);
    assert!(wait_for_serial(&p.ca, s.addr, 4).await);
}

#[tokio::test]
async fn reload_with_broken_certificate_keeps_the_old_one() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(
        root.path(),
        &body(&[&leaf], "\n[tls]\nwatch_interval = \"0s\"\n"),
    )
    .await;
    std::fs::write(&leaf.key, b"garbage").unwrap();
    s.reload(None).await;
    // The reload takes effect (other sites' changes apply), the broken
    // file does not: the certificate loaded before keeps serving.
    assert_eq!(
        s.state
            .reloads
            .succeeded
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(peer_serial(&connect(&p.ca, s.addr, "a.test", &[]).await), 1);
}

#[tokio::test]
async fn silent_client_is_dropped_at_handshake_timeout_while_others_are_served() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(
        root.path(),
        &body(&[&leaf], "\n[tls]\nhandshake_timeout = \"1s\"\n"),
    )
    .await;
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    // Others are served while the silent one waits.
    let tls = connect(&p.ca, s.addr, "a.test", &[]).await;
    assert_eq!(h1_get(tls, "/hello.txt").await.0, 200);
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "silent client not dropped: {closed:?}"
    );
}

#[tokio::test]
async fn plain_listener_redirects_to_https_and_tls_responses_carry_hsts() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let extra = "\n[[listen]]\naddress = \"127.0.0.2:0\"\nredirect_https = true\n\n[tls]\nhsts = \"max-age=63072000\"\nhttps_port = 8443\n";
    let s = TestServer::start_raw(root.path(), &body(&[&leaf], extra)).await;
    let (tls_addr, plain) = (s.addrs[0], s.addrs[1]);
    let reply = raw(
        plain,
        b"GET /docs/page.html?x=1 HTTP/1.1\r\nHost: example.test:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&reply), 308, "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("location: https://example.test:8443/docs/page.html?x=1"),
        "{reply}"
    );
    assert!(!reply
        .to_ascii_lowercase()
        .contains("strict-transport-security"));
    // A hostile Host is refused, not echoed into a Location.
    let reply = raw(
        plain,
        b"GET / HTTP/1.1\r\nHost: evil.test/@x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&reply), 400, "{reply}");

    let (status, _, headers) =
        h1_get(connect(&p.ca, tls_addr, "a.test", &[]).await, "/hello.txt").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("strict-transport-security").unwrap(),
        "max-age=63072000"
    );
}

fn check(dir: &Path, body: &str) -> std::process::Output {
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, body).unwrap();
    common::command()
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn check_reports_expiry_warns_under_14_days_and_names_bad_files() {
    let p = pki();
    let root = fixture();
    let head = format!("root = {:?}\n", root.path().display().to_string());
    let fresh = p.ca.issue(p.dir.path(), "fresh", &["a.test"], 1, 90);
    let out = check(p.dir.path(), &(head.clone() + &body(&[&fresh], "")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("certificate {} for a.test", fresh.cert.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("(89 days)") || stdout.contains("(90 days)"),
        "{stdout}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));

    let soon = p.ca.issue(p.dir.path(), "soon", &["a.test"], 2, 10);
    let out = check(p.dir.path(), &(head.clone() + &body(&[&soon], "")));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: certificate") && stderr.contains("expires in"),
        "{stderr}"
    );

    let expired = p.ca.issue(p.dir.path(), "expired", &["a.test"], 3, -1);
    // A certificate that cannot serve does not stop the server (only its
    // names fail), so `check` passes and says so.
    let out = check(p.dir.path(), &(head.clone() + &body(&[&expired], "")));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: certificate for a.test unusable")
            && stderr.contains(&expired.cert.display().to_string())
            && stderr.contains("expired"),
        "{stderr}"
    );

    let other = p.ca.issue(p.dir.path(), "other", &["a.test"], 4, 30);
    std::fs::copy(&other.key, &fresh.key).unwrap();
    let out = check(p.dir.path(), &(head.clone() + &body(&[&fresh], "")));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&fresh.key.display().to_string()) && stderr.contains("does not match"),
        "{stderr}"
    );

    let out = check(
        p.dir.path(),
        &(head + "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n"),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a TLS listener needs a certificate"));
}

/// A connection that negotiated http/1.1 (or no ALPN) speaks HTTP/1 only: an
/// HTTP/2 preface there is a bad request, not a protocol switch.
#[tokio::test]
async fn http2_preface_on_http1_only_tls_connection_is_refused() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let dir = fixture();
    let s = TestServer::start_raw(dir.path(), &body(&[&leaf], "")).await;
    for alpn in [&["http/1.1"][..], &[]] {
        let mut tls = connect(&p.ca, s.addr, "a.test", alpn).await;
        tokio::io::AsyncWriteExt::write_all(
            &mut tls,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        let reply = String::from_utf8_lossy(&out);
        let status = raw_status(&reply);
        assert!(status == 0 || status == 400, "{alpn:?}: {reply}");
        assert!(!reply.contains("hello world"));
    }
    // And the listener goes on serving.
    let tls = connect(&p.ca, s.addr, "a.test", &["http/1.1"]).await;
    assert_eq!(h1_get(tls, "/hello.txt").await.0, 200);
}

/// A client's stream that holds back its writes after the first (the
/// ClientHello) until `open` fires: the server has chosen its certificate
/// and waits for the client's Finished.
struct Gate {
    inner: TcpStream,
    writes: usize,
    open: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl tokio::io::AsyncRead for Gate {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Gate {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.writes >= 1 {
            if let Some(open) = self.open.as_mut() {
                if std::future::Future::poll(std::pin::Pin::new(open), cx).is_pending() {
                    return std::task::Poll::Pending;
                }
                self.open = None;
            }
        }
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, std::task::Poll::Ready(Ok(_))) {
            self.writes += 1;
        }
        poll
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A reload that swaps the certificates while a handshake is half done:
/// the server cannot tell which set the client was shown, so it closes
/// that connection rather than record a certificate from the new set (it
/// used to record the new set's and serve). Connections made after are
/// served with the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_spans_a_certificate_swap_is_closed() {
    use tokio::io::AsyncWriteExt;
    let p = pki();
    let first = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let s = TestServer::start_raw(
        root.path(),
        &body(&[&first], "\n[tls]\nwatch_interval = \"0s\"\n"),
    )
    .await;
    let (open, gate) = tokio::sync::oneshot::channel();
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let gated = Gate {
        inner: tcp,
        writes: 0,
        open: Some(gate),
    };
    let connector = p.ca.client(&["http/1.1"], &[&rustls::version::TLS13]);
    let handshake =
        tokio::spawn(async move { connector.connect(server_name("a.test"), gated).await });
    // The server's flight is out (certificate 1 chosen); swap the set.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = p.ca.issue(p.dir.path(), "b", &["a.test"], 2, 30);
    s.reload(Some(&body(
        &[&second],
        "\n[tls]\nwatch_interval = \"0s\"\n",
    )))
    .await;
    open.send(()).unwrap();
    let mut tls = handshake
        .await
        .unwrap()
        .expect("the client's side completes");
    assert_eq!(
        tls.get_ref().1.peer_certificates().map(|c| c.len()),
        Some(1)
    );
    let _ = tls
        .write_all(b"GET /hello.txt HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(!reply.contains(" 200 "), "served: {reply}");
    assert_eq!(peer_serial(&connect(&p.ca, s.addr, "a.test", &[]).await), 2);
}

/// The ready line shows a TLS listener as the URL a browser would use:
/// `https://` (it said `http://`).
#[test]
fn the_ready_line_shows_tls_listeners_as_https() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let root = fixture();
    let body = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n{}",
        body(&[&leaf], "")
    );
    let cfg = common::ConfigFile::new(root.path(), &body);
    let d = common::Daemon::spawn(&["--config", cfg.arg()], &[]);
    let log = d.log_text();
    let ready = log.lines().find(|l| l.contains("ready:")).unwrap();
    let urls: Vec<&str> = ready
        .split_whitespace()
        .filter(|w| w.contains("://"))
        .collect();
    assert_eq!(urls.len(), 2, "{ready}");
    assert!(urls[0].starts_with("http://127.0.0.1:"), "{ready}");
    assert!(urls[1].starts_with("https://127.0.0.1:"), "{ready}");
}

/// A rotation of one certificate logs that one: the others were read
/// again with it, but unchanged (each used to be logged as reloaded).
#[test]
fn only_the_certificate_that_changed_is_logged_as_reloaded() {
    let p = pki();
    let a = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 30);
    let b = p.ca.issue(p.dir.path(), "b", &["b.test"], 2, 30);
    let root = fixture();
    let body = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\n{}",
        body(&[&a, &b], "\n[tls]\nwatch_interval = \"200ms\"\n")
    );
    let cfg = common::ConfigFile::new(root.path(), &body);
    let d = common::Daemon::spawn(&["--config", cfg.arg()], &[]);
    std::thread::sleep(Duration::from_millis(300));
    p.ca.issue(p.dir.path(), "b", &["b.test"], 3, 30);
    let line = d.wait_for_line("certificate reloaded from disk");
    std::thread::sleep(Duration::from_millis(600));
    let log = d.log_text();
    let reloaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("certificate reloaded from disk"))
        .collect();
    assert_eq!(reloaded.len(), 1, "{log}");
    assert!(line.contains("b.pem"), "{line}");
    // Rewritten with the same certificate (a deploy tool that copies
    // every file every time): read again, not logged.
    for f in [&a.cert, &a.key] {
        let same = std::fs::read(f).unwrap();
        common::pki::write_atomic(f, &same);
    }
    std::thread::sleep(Duration::from_millis(800));
    let log = d.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("certificate reloaded from disk"))
            .count(),
        1,
        "{log}"
    );
}

/// `check` warns when a certificate is answered for a name its
/// subjectAltName does not cover: a site's own certificate whose names
/// default to the site's, one of which it lacks (it said nothing).
#[test]
fn check_warns_when_a_certificate_does_not_cover_its_names() {
    let p = pki();
    let root = fixture();
    let head = format!("root = {:?}\n", root.path().display().to_string());
    let leaf =
        p.ca.issue(p.dir.path(), "shop", &["shop.test", "*.shop.test"], 1, 90);
    let site = |names: &str| {
        format!(
            "{head}[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n\
             [[sites]]\nnames = [{names}]\nroot = {:?}\n\
             [[sites.certificates]]\ncert = {:?}\nkey = {:?}\n",
            root.path().display().to_string(),
            leaf.cert.display().to_string(),
            leaf.key.display().to_string()
        )
    };
    let out = check(p.dir.path(), &site("\"shop.test\", \"eu.shop.test\""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    let out = check(p.dir.path(), &site("\"shop.test\", \"shop.example\""));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: certificate")
            && stderr.contains("shop.example")
            && stderr.contains("does not cover"),
        "{stderr}"
    );
    assert!(!stderr.contains("for shop.test,"), "{stderr}");
}

/// The handshake for `sni`, or its error (no unwrap: a failing name is the
/// point).
async fn try_connect(ca: &TestCa, addr: std::net::SocketAddr, sni: &str) -> Result<u64, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    match ca.client(&[], &[]).connect(server_name(sni), tcp).await {
        Ok(t) => Ok(peer_serial(&t)),
        Err(e) => Err(e.to_string()),
    }
}

/// Three sites' certificates: one expired, one whose key belongs to
/// another certificate, one good. The server starts (it refused to,
/// before); the good site serves; the bad sites' names fail their
/// handshakes instead of being shown another site's certificate; each
/// problem is a metric. Fixing a file on disk brings its site back without
/// a reload.
#[tokio::test]
async fn one_bad_certificate_fails_only_its_own_names() {
    let p = pki();
    let good = p.ca.issue(p.dir.path(), "good", &["good.test"], 1, 30);
    let expired = p.ca.issue(p.dir.path(), "old", &["old.test"], 2, -1);
    let wrong = p.ca.issue(p.dir.path(), "wrong", &["wrong.test"], 3, 30);
    let other = p.ca.issue(p.dir.path(), "other", &["x.test"], 4, 30);
    std::fs::copy(&other.key, &wrong.key).unwrap();
    let root = fixture();
    let site = |name: &str, leaf: &common::pki::Leaf| {
        format!(
            "\n[[sites]]\nnames = [\"{name}\"]\nroot = {:?}\n[[sites.certificates]]\ncert = {:?}\nkey = {:?}\n",
            root.path().display().to_string(),
            leaf.cert.display().to_string(),
            leaf.key.display().to_string()
        )
    };
    let s = TestServer::start_raw(
        root.path(),
        &format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n[tls]\nwatch_interval = \"100ms\"\n{}{}{}",
            site("old.test", &expired),
            site("good.test", &good),
            site("wrong.test", &wrong)
        ),
    )
    .await;
    assert_eq!(try_connect(&p.ca, s.addr, "good.test").await, Ok(1));
    for bad in ["old.test", "wrong.test"] {
        let e = try_connect(&p.ca, s.addr, bad).await.unwrap_err();
        assert!(
            !e.contains("NotValidForName"),
            "{bad} was shown another certificate: {e}"
        );
    }
    let metrics = String::from_utf8(s.state.metrics.render()).unwrap();
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ruchy_serve_tls_certificate_errors{"))
        .collect();
    assert_eq!(errors.len(), 2, "{metrics}");
    assert!(
        errors
            .iter()
            .any(|l| l.contains("site=\"old.test\"") && l.ends_with(" 1")),
        "{errors:?}"
    );
    // Renewed on disk: served at the next file check.
    p.ca.issue(p.dir.path(), "old", &["old.test"], 5, 30);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while try_connect(&p.ca, s.addr, "old.test").await != Ok(5) {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed file was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(try_connect(&p.ca, s.addr, "good.test").await, Ok(1));
    s.state
        .metrics
        .set_certificates(&s.state.tls_resolver.store());
    let metrics = String::from_utf8(s.state.metrics.render()).unwrap();
    assert!(!metrics.contains("site=\"old.test\",cert"), "{metrics}");
}

/// A name a certificate does not cover fails its handshake (no client
/// would accept the certificate for it) while the names it covers serve.
#[tokio::test]
async fn a_name_the_certificate_does_not_cover_fails_alone() {
    let p = pki();
    let leaf = p.ca.issue(p.dir.path(), "shop", &["shop.test"], 1, 30);
    let fallback =
        p.ca.issue(p.dir.path(), "default", &["default.test"], 2, 30);
    let root = fixture();
    let s = TestServer::start_raw(
        root.path(),
        &format!(
            "{}\n[[sites]]\nnames = [\"shop.test\", \"shop.example\"]\nroot = {:?}\n[[sites.certificates]]\ncert = {:?}\nkey = {:?}\n",
            body(&[&fallback], ""),
            root.path().display().to_string(),
            leaf.cert.display().to_string(),
            leaf.key.display().to_string()
        ),
    )
    .await;
    assert_eq!(try_connect(&p.ca, s.addr, "shop.test").await, Ok(1));
    // Not the default certificate either: the handshake fails.
    let e = try_connect(&p.ca, s.addr, "shop.example")
        .await
        .unwrap_err();
    assert!(!e.contains("NotValidForName"), "{e}");
    assert_eq!(try_connect(&p.ca, s.addr, "default.test").await, Ok(2));
}

/// `explain` models the TLS server name: a request for one site's host
/// on a connection shown another site's own certificate is 421, as the
/// server answers (it used to predict 200).
#[test]
fn explain_models_the_server_name() {
    let p = pki();
    let root = fixture();
    let a = p.ca.issue(p.dir.path(), "a", &["a.test"], 1, 90);
    let b = p.ca.issue(p.dir.path(), "b", &["b.test"], 2, 90);
    let mut body = format!(
        "root = {:?}\n[[listen]]\naddress = \"127.0.0.1:8443\"\ntls = true\n",
        root.path().display().to_string()
    );
    for (name, leaf) in [("a.test", &a), ("b.test", &b)] {
        body.push_str(&format!(
            "[[sites]]\nnames = [\"{name}\"]\nroot = {:?}\n[[sites.certificates]]\ncert = {:?}\nkey = {:?}\n",
            root.path().display().to_string(),
            leaf.cert.display().to_string(),
            leaf.key.display().to_string()
        ));
    }
    let cfg = p.dir.path().join("c.toml");
    std::fs::write(&cfg, body).unwrap();
    let explain = |args: &[&str]| {
        let out = common::command()
            .args(["explain", "--config", cfg.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let same = explain(&["https://a.test:8443/hello.txt"]);
    assert!(same.contains("=> 200"), "{same}");
    let other = explain(&["https://a.test:8443/hello.txt", "--sni", "b.test"]);
    assert!(other.contains("=> 421"), "{other}");
    assert!(other.contains("tls       server name `b.test`"), "{other}");
    assert!(other.contains("another certificate's"), "{other}");
}

/// The "does not cover" warning of a certificate with IP addresses only
/// says it has no DNS names (it printed an empty subjectAltName).
#[test]
fn an_ip_only_certificate_is_said_to_have_no_dns_names() {
    let p = pki();
    let root = fixture();
    let leaf = p.ca.issue(p.dir.path(), "ip", &["127.0.0.1"], 1, 90);
    let body = format!(
        "root = {:?}\n[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n\
         [[sites]]\nnames = [\"shop.test\"]\nroot = {:?}\n\
         [[sites.certificates]]\ncert = {:?}\nkey = {:?}\n",
        root.path().display().to_string(),
        root.path().display().to_string(),
        leaf.cert.display().to_string(),
        leaf.key.display().to_string()
    );
    let out = check(p.dir.path(), &body);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not cover shop.test (its subjectAltName: no DNS names)"),
        "{stderr}"
    );
}
