//! `[[sites]]` (virtual hosts) against real clients: several sites on one
//! listener chosen by Host and `:authority`, exact names and wildcards, the
//! top-level default site or 421 without one, per-site rules and caches,
//! per-site certificates chosen by SNI (rustls and `openssl s_client`),
//! 421 when a TLS connection's certificate is not the request's site's,
//! connections shared by sites that share a certificate, `site` metric
//! labels, and a reload that adds and removes sites under load.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::common::pki::{peer_serial, server_name, Leaf, TestCa};
use crate::common::{blocking_get, daemon, raw, raw_status, ConfigFile, TestServer};

/// A tree of `files` (path, content) in a temp dir of its own.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    dir
}

/// A `[[sites]]` table.
fn site(names: &[&str], root: &Path, extra: &str) -> String {
    format!(
        "\n[[sites]]\nnames = {names:?}\nroot = {:?}\n{extra}\n",
        root.display().to_string()
    )
}

/// The head and body of `path` asked of `addr` with `Host: host`, on a
/// fresh HTTP/1.1 connection.
async fn ask(addr: SocketAddr, host: &str, path: &str) -> (http::response::Parts, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (parts, body) = sender.send_request(req).await.unwrap().into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8_lossy(&body).into_owned())
}

/// The status and body of `path` asked with `Host: host`.
async fn get_host(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let (parts, body) = ask(addr, host, path).await;
    (parts.status.as_u16(), body)
}

/// Three roots, each with its own `index.html` and `same.txt`.
struct Trees {
    main: tempfile::TempDir,
    blog: tempfile::TempDir,
    shop: tempfile::TempDir,
}

fn trees() -> Trees {
    let one = |name: &str| {
        tree(&[
            ("index.html", &format!("{name} home\n")),
            ("same.txt", &format!("{name} same\n")),
        ])
    };
    Trees {
        main: one("main"),
        blog: one("blog"),
        shop: one("shop"),
    }
}

#[tokio::test]
async fn sites_are_chosen_by_host_exact_then_wildcard_then_default() {
    let t = trees();
    let body = format!(
        "{}{}",
        site(&["blog.test", "www.blog.test"], t.blog.path(), ""),
        site(&["*.shop.test"], t.shop.path(), ""),
    );
    let s = TestServer::start(t.main.path(), &body).await;
    let a = s.addr;
    for (host, want) in [
        ("blog.test", "blog home\n"),
        ("www.blog.test", "blog home\n"),
        // Case, a port and a trailing dot do not change the name.
        ("BLOG.Test:8080", "blog home\n"),
        ("blog.test.", "blog home\n"),
        ("eu.shop.test", "shop home\n"),
        // A wildcard covers one label, not the parent, not two.
        ("shop.test", "main home\n"),
        ("a.b.shop.test", "main home\n"),
        ("other.test", "main home\n"),
        ("127.0.0.1", "main home\n"),
    ] {
        assert_eq!(get_host(a, host, "/").await, (200, want.into()), "{host}");
    }
    // A host longer than any name (the lookup lowers it in a fixed buffer)
    // matches no site: the default site answers.
    let long = format!("{}.shop.test", "a".repeat(400));
    assert_eq!(get_host(a, &long, "/").await, (200, "main home\n".into()));
    // The same path in two sites is two files, from the cache as well.
    for _ in 0..3 {
        assert_eq!(get_host(a, "blog.test", "/same.txt").await.1, "blog same\n");
        assert_eq!(
            get_host(a, "eu.shop.test", "/same.txt").await.1,
            "shop same\n"
        );
        assert_eq!(get_host(a, "main.test", "/same.txt").await.1, "main same\n");
    }
    // HTTP/1.0 with no Host: the default site.
    let reply = raw(a, b"GET /same.txt HTTP/1.0\r\n\r\n").await;
    assert!(reply.ends_with("main same\n"), "{reply}");
    // The absolute form's authority names the site (RFC 9112 section 3.2.2).
    let reply = raw(
        a,
        b"GET http://blog.test/same.txt HTTP/1.1\r\nHost: blog.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.ends_with("blog same\n"), "{reply}");
    // HTTP/2's :authority.
    let stream = TcpStream::connect(a).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (authority, want) in [
        ("www.blog.test", "blog"),
        ("x.shop.test", "shop"),
        ("n.test", "main"),
    ] {
        let req = http::Request::get(format!("http://{authority}/same.txt"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("{want} same\n").as_bytes(), "{authority}");
    }
    s.stop().await;
}

#[tokio::test]
async fn each_site_has_its_own_rules() {
    let t = trees();
    std::fs::write(t.blog.path().join("about.html"), "blog about\n").unwrap();
    std::fs::write(t.blog.path().join("missing.html"), "blog's own 404\n").unwrap();
    std::fs::write(t.main.path().join("about.html"), "main about\n").unwrap();
    let blog = r#"
[sites.files]
try = ["{path}", "{path}.html"]
not_found_page = "/missing.html"
[sites.cache]
default = "max-age=600"
[sites.headers]
[[sites.headers.rules]]
glob = "*.txt"
set = { "x-site" = "blog" }
[[sites.redirects]]
from = "/old/{*rest}"
to = "/{rest}"
status = 301
"#;
    let top = "[cache]\ndefault = \"no-store\"\n";
    let body = format!("{top}{}", site(&["blog.test"], t.blog.path(), blog));
    let s = TestServer::start(t.main.path(), &body).await;
    let get = |host: &'static str, path: &'static str| ask(s.addr, host, path);
    // Clean URLs in the blog only.
    let (p, b) = get("blog.test", "/about").await;
    assert_eq!((p.status.as_u16(), b.as_str()), (200, "blog about\n"));
    assert_eq!(p.headers["cache-control"], "max-age=600");
    let (p, _) = get("main.test", "/about").await;
    assert_eq!(p.status, 404);
    // Cache-Control: the blog's own, the top level's elsewhere.
    let (p, _) = get("main.test", "/same.txt").await;
    assert_eq!(p.headers["cache-control"], "no-store");
    assert!(p.headers.get("x-site").is_none());
    let (p, _) = get("blog.test", "/same.txt").await;
    assert_eq!(p.headers["x-site"], "blog");
    // Redirects.
    let (p, _) = get("blog.test", "/old/about?x=1").await;
    assert_eq!(p.status, 301);
    assert_eq!(p.headers["location"], "/about?x=1");
    let (p, _) = get("main.test", "/old/about").await;
    assert_eq!(p.status, 404);
    // Error pages.
    let (p, b) = get("blog.test", "/nothing").await;
    assert_eq!((p.status.as_u16(), b.as_str()), (404, "blog's own 404\n"));
    let (_, b) = get("main.test", "/nothing").await;
    assert!(!b.contains("blog"), "{b}");
    s.stop().await;
}

#[tokio::test]
async fn without_a_default_site_other_names_get_421() {
    let t = trees();
    // No top-level root: the config file is all sites.
    let body = format!(
        "default_site = false\n[[listen]]\naddress = \"127.0.0.1:0\"\n[metrics]\naddress = \"127.0.0.1:0\"\n{}",
        site(&["blog.test"], t.blog.path(), "")
    );
    let cfg = ConfigFile::raw(&body);
    let d = daemon::Daemon::spawn(&["--config", cfg.arg()], &[]);
    assert_eq!(
        get_host(d.addr, "blog.test", "/").await,
        (200, "blog home\n".into())
    );
    let (status, text) = get_host(d.addr, "other.test", "/").await;
    assert_eq!(status, 421, "{text}");
    // No Host at all (HTTP/1.0): no site either.
    let reply = raw(d.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(raw_status(&reply), 421, "{reply}");
    // The ready line says what is served.
    let ready = d.wait_for_line("ready:");
    assert!(ready.contains("no default site"), "{ready}");
    assert!(ready.contains("blog.test"), "{ready}");
}

/// Metrics count each site under its first name, `none` for 421s; JSON
/// access-log lines name the site too.
#[tokio::test]
async fn metrics_and_json_access_lines_name_the_site() {
    let t = trees();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let body = format!(
        "[log]\naccess_log = \"json\"\naccess_log_path = {:?}\naccess_log_flush = \"50ms\"\n{}",
        log.display().to_string(),
        site(&["blog.test", "*.blog.test"], t.blog.path(), "")
    );
    let s = TestServer::start(t.main.path(), &body).await;
    for host in ["blog.test", "x.blog.test", "main.test"] {
        assert_eq!(get_host(s.addr, host, "/").await.0, 200);
    }
    get_host(s.addr, "blog.test", "/nope").await;
    let metrics = s.metrics_addr.unwrap();
    let text = tokio::task::spawn_blocking(move || blocking_get(metrics, "/metrics").unwrap())
        .await
        .unwrap();
    let sum = |needle: &[&str]| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("http_requests_total{") && needle.iter().all(|n| l.contains(n))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(sum(&["site=\"blog.test\"", "code=\"200\""]), 2, "{text}");
    assert_eq!(sum(&["site=\"blog.test\"", "code=\"404\""]), 1, "{text}");
    assert_eq!(sum(&["site=\"default\"", "code=\"200\""]), 1, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("http_response_body_bytes_total{")
                && l.contains("site=\"blog.test\"")),
        "{text}"
    );
    // Labels are configured names only: no series for x.blog.test.
    assert!(!text.contains("x.blog.test"), "{text}");
    s.stop().await;
    let lines = std::fs::read_to_string(&log).unwrap();
    let sites: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", v["site"].as_str().unwrap(), v["http_status"])
        })
        .collect();
    assert_eq!(
        sites,
        [
            "blog.test 200",
            "blog.test 200",
            "default 200",
            "blog.test 404"
        ],
        "{lines}"
    );
}

/// A PKI with a default certificate and one per site.
struct Certs {
    ca: TestCa,
    _dir: tempfile::TempDir,
    top: Leaf,
    blog: Leaf,
    shop: Leaf,
}

fn certs() -> Certs {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    Certs {
        top: ca.issue(dir.path(), "top", &["main.test"], 10, 30),
        blog: ca.issue(dir.path(), "blog", &["blog.test"], 20, 30),
        shop: ca.issue(dir.path(), "shop", &["shop.test", "*.shop.test"], 30, 30),
        ca,
        _dir: dir,
    }
}

fn cert_table(table: &str, leaf: &Leaf) -> String {
    format!(
        "\n[[{table}]]\ncert = {:?}\nkey = {:?}\n",
        leaf.cert.display().to_string(),
        leaf.key.display().to_string()
    )
}

/// A TLS server: the top-level certificate, blog.test and *.shop.test with
/// their own.
async fn tls_server(t: &Trees, c: &Certs) -> TestServer {
    let body = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n{}{}{}{}{}",
        cert_table("tls.certificates", &c.top),
        site(&["blog.test"], t.blog.path(), ""),
        cert_table("sites.certificates", &c.blog),
        site(&["shop.test", "*.shop.test"], t.shop.path(), ""),
        cert_table("sites.certificates", &c.shop),
    );
    TestServer::start_raw(t.main.path(), &body).await
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(ca: &TestCa, addr: SocketAddr, sni: &str, alpn: &[&str]) -> Tls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    ca.client(alpn, &[])
        .connect(server_name(sni), tcp)
        .await
        .unwrap()
}

/// Requests for each host in turn on one TLS connection (HTTP/1.1 or
/// HTTP/2 by `alpn`): statuses and bodies.
async fn on_one_connection(tls: Tls, h2: bool, hosts: &[&str]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        for h in hosts {
            let req = http::Request::get(format!("https://{h}/same.txt"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            out.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        for h in hosts {
            let req = http::Request::get("/same.txt")
                .header("host", *h)
                .body(Empty::<Bytes>::new())
                .unwrap();
            sender
                .ready()
                .await
                .expect("the connection stays open after a 421");
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) => panic!("{h} after {out:?}: {e:?}"),
            };
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            out.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_site_shows_its_own_certificate_and_serves_only_itself() {
    let t = trees();
    let c = certs();
    let s = tls_server(&t, &c).await;
    for (sni, serial) in [
        ("blog.test", 20),
        ("shop.test", 30),
        ("eu.shop.test", 30),
        ("main.test", 10),
    ] {
        let tls = tls_connect(&c.ca, s.addr, sni, &["http/1.1"]).await;
        assert_eq!(peer_serial(&tls), serial, "{sni}");
    }
    // (SNI, hosts asked on that one connection, statuses, the body of the
    // first 200): a site's connection serves that site only; the default
    // site's (its certificate) serves it and names no site has; a wildcard
    // site any name it covers.
    let cases: [(&str, &[&str], &[u16], &str); 3] = [
        (
            "blog.test",
            &["blog.test", "shop.test", "main.test", "blog.test"],
            &[200, 421, 421, 200],
            "blog same\n",
        ),
        (
            "main.test",
            &["other.test", "main.test", "blog.test", "x.shop.test"],
            &[200, 200, 421, 421],
            "main same\n",
        ),
        (
            "a.shop.test",
            &["b.shop.test", "shop.test", "blog.test"],
            &[200, 200, 421],
            "shop same\n",
        ),
    ];
    for h2 in [false, true] {
        let alpn: &[&str] = if h2 { &["h2"] } else { &["http/1.1"] };
        for (sni, hosts, statuses, body) in cases {
            let tls = tls_connect(&c.ca, s.addr, sni, alpn).await;
            let got = on_one_connection(tls, h2, hosts).await;
            let got_statuses: Vec<u16> = got.iter().map(|(s, _)| *s).collect();
            assert_eq!(got_statuses, statuses, "{sni}, h2 {h2}: {got:?}");
            assert_eq!(got[0].1, body, "{sni}, h2 {h2}");
        }
    }
    // openssl s_client: each name gets its own site's certificate.
    let addr = s.addr;
    let subjects = tokio::task::spawn_blocking(move || {
        ["blog.test", "x.shop.test", "main.test"].map(|sni| openssl_san(addr, Some(sni)))
    })
    .await
    .unwrap();
    assert!(subjects[0].contains("DNS:blog.test"), "{}", subjects[0]);
    assert!(subjects[1].contains("DNS:*.shop.test"), "{}", subjects[1]);
    assert!(subjects[2].contains("DNS:main.test"), "{}", subjects[2]);
    s.stop().await;
}

/// Sites that share a `[tls]` certificate share connections: a browser
/// reuses one HTTP/2 connection for every name the certificate covers, and
/// each request is answered by its own site (no 421 and retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_sharing_a_certificate_share_connections() {
    let t = trees();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let shared =
        c.ca.issue(dir.path(), "shared", &["blog.test", "shop.test"], 40, 30);
    let body = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n{}{}{}{}",
        cert_table("tls.certificates", &shared),
        site(&["blog.test"], t.blog.path(), ""),
        site(&["shop.test"], t.shop.path(), ""),
        site(
            &["own.test"],
            t.main.path(),
            &cert_table("sites.certificates", &c.top)
        ),
    );
    let s = TestServer::start_raw(t.main.path(), &body).await;
    for h2 in [false, true] {
        let alpn: &[&str] = if h2 { &["h2"] } else { &["http/1.1"] };
        let tls = tls_connect(&c.ca, s.addr, "blog.test", alpn).await;
        assert_eq!(peer_serial(&tls), 40);
        let got = on_one_connection(tls, h2, &["shop.test", "blog.test", "own.test"]).await;
        assert_eq!(
            got,
            [
                (200, "shop same\n".to_string()),
                (200, "blog same\n".to_string()),
                // A site with a certificate of its own is not served under
                // the shared one.
                (421, "421 Misdirected Request\n".to_string()),
            ],
            "h2 {h2}"
        );
    }
    s.stop().await;
}

/// A client sending no SNI gets the first certificate; when that is a
/// site's own, the connection serves that site only (not the default site,
/// whose names the certificate would also be shown for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sni_gets_the_first_certificate_and_only_its_site() {
    let t = trees();
    let c = certs();
    let body = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n{}{}",
        site(&["blog.test"], t.blog.path(), ""),
        cert_table("sites.certificates", &c.blog),
    );
    let s = TestServer::start_raw(t.main.path(), &body).await;
    let addr = s.addr;
    let (san, replies) = tokio::task::spawn_blocking(move || {
        let san = openssl_san(addr, None);
        let replies = ["blog.test", "main.test"].map(|host| openssl_get(addr, None, host));
        (san, replies)
    })
    .await
    .unwrap();
    assert!(san.contains("DNS:blog.test"), "{san}");
    // The only certificate is the blog's, so the connection is the blog's:
    // the default site is not served under it.
    assert!(replies[0].starts_with("HTTP/1.1 200"), "{}", replies[0]);
    assert!(replies[0].ends_with("blog same\n"), "{}", replies[0]);
    assert!(replies[1].starts_with("HTTP/1.1 421"), "{}", replies[1]);
    s.stop().await;
}

/// The subjectAltName of the certificate `openssl s_client` is shown.
fn openssl_san(addr: SocketAddr, sni: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    match sni {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed by tests/run");
    let pem = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One request through `openssl s_client` (with `sni`, or none), the reply.
fn openssl_get(addr: SocketAddr, sni: Option<&str>, host: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-connect", &addr.to_string()]);
    match sni {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    let request = format!("GET /same.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).unwrap();
    // Keep stdin open until the server closes: s_client quits at EOF.
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reload adds a site and removes another while clients keep asking every
/// site: no request fails, each answer is its site's (or, for a removed
/// site, the default's), and the new site answers once the reload is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_sites_under_load() {
    let t = trees();
    let before = site(&["blog.test"], t.blog.path(), "");
    let after = format!(
        "{}\n[[listen]]\naddress = \"127.0.0.1:0\"\n",
        site(&["shop.test"], t.shop.path(), "")
    );
    let s = TestServer::start(t.main.path(), &before).await;
    let addr = s.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for host in ["main.test", "blog.test", "shop.test"] {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            // Keep-alive connections, renewed now and then, at most 3,000
            // requests each.
            'outer: for _ in 0..100 {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                for _ in 0..30 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break 'outer;
                    }
                    let req = http::Request::get("/same.txt")
                        .header("host", host)
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    sender.ready().await.expect("the connection stays open");
                    let resp = sender.send_request(req).await.expect("no request fails");
                    let status = resp.status().as_u16();
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    let text = String::from_utf8_lossy(&body).into_owned();
                    assert_eq!(status, 200, "{host}: {text}");
                    if seen.last() != Some(&text) {
                        seen.push(text);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            (host, seen)
        }));
    }
    while done.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.reload(Some(&after)).await;
    assert_eq!(s.state.reloads.succeeded.load(Ordering::Relaxed), 1);
    let at_reload = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < at_reload + 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    // A bad site (its root is gone) is refused whole: the sites in use go on.
    let bad = format!(
        "{after}{}",
        site(&["new.test"], Path::new("/nonexistent/ruchy-site"), "")
    );
    s.reload(Some(&bad)).await;
    assert_eq!(s.state.reloads.failed.load(Ordering::Relaxed), 1);
    assert_eq!(
        get_host(addr, "shop.test", "/same.txt").await.1,
        "shop same\n"
    );
    assert_eq!(
        get_host(addr, "new.test", "/same.txt").await.1,
        "main same\n"
    );
    for w in workers {
        let (host, seen) = w.await.unwrap();
        let want: &[&str] = match host {
            "main.test" => &["main same\n"],
            "blog.test" => &["blog same\n", "main same\n"],
            _ => &["main same\n", "shop same\n"],
        };
        assert_eq!(seen, want, "{host}: each answer its site's, switched once");
    }
    s.stop().await;
}

/// `check` lists each site, `config` shows their keys and where they came
/// from.
#[test]
fn check_and_config_show_the_sites() {
    let t = trees();
    let c = certs();
    let body = format!(
        "{}{}",
        site(
            &["blog.test", "www.blog.test"],
            t.blog.path(),
            "[sites.files]\ntry = [\"{path}.html\"]\n"
        ),
        cert_table("sites.certificates", &c.blog),
    );
    let cfg = ConfigFile::new(t.main.path(), &body);
    let out = daemon::command()
        .args(["check", "--config", cfg.arg()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "sites: blog.test,www.blog.test {}",
            t.blog.path().canonicalize().unwrap().display()
        )),
        "{text}"
    );
    assert!(
        text.contains("(site blog.test) for blog.test, www.blog.test"),
        "{text}"
    );
    let out = daemon::command()
        .args(["config", "--config", cfg.arg()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("sites[0].files.try = "))
        .expect(&text);
    assert!(line.contains("c.toml:"), "{line}");
    assert!(
        text.contains("sites[0].names = [\"blog.test\", \"www.blog.test\"]"),
        "{text}"
    );
}

/// Site choice and certificate choice read a host the same way (one
/// trailing dot dropped, at most 255 bytes, no empty label): a host that is
/// no site's name is the default site's, and on a connection shown another
/// certificate that is a 421, however it is spelled. (Before, `blog.test..`
/// and a 300-byte name under a wildcard matched the shared certificate but
/// no site, and got the default site's content on blog.test's connection.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_spellings_of_a_host_are_chosen_alike_by_site_and_certificate() {
    let t = trees();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let shared = c.ca.issue(
        dir.path(),
        "shared",
        &["blog.test", "*.blog.test", "shop.test"],
        40,
        30,
    );
    let body = format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n{}{}{}{}",
        cert_table("tls.certificates", &c.top),
        cert_table("tls.certificates", &shared),
        site(&["blog.test", "*.blog.test"], t.blog.path(), ""),
        site(&["shop.test"], t.shop.path(), ""),
    );
    let s = TestServer::start_raw(t.main.path(), &body).await;
    let long = format!("{}.blog.test", "x".repeat(300));
    let tls = tls_connect(&c.ca, s.addr, "blog.test", &["http/1.1"]).await;
    assert_eq!(peer_serial(&tls), 40);
    let got = on_one_connection(
        tls,
        false,
        &[
            "blog.test.",
            "blog.test..",
            &long,
            "a.blog.test",
            "zzz.test",
        ],
    )
    .await;
    let statuses: Vec<u16> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 421, 421, 200, 421], "{got:?}");
    assert_eq!(got[0].1, "blog same\n");
    s.stop().await;
}
