//! `[[locations]]` against nginx itself: a typical three-server nginx
//! configuration (port 80 sending everything to one canonical https host,
//! a www redirect, a main site with `try_files`, `expires`, exact and regex
//! returns, `deny all`, `autoindex` for one path, `error_page 404`, HSTS
//! with `always`, and a docs site) runs in the real nginx, its translation
//! in ruchy-serve, over the same document roots; the same requests go to
//! both and their status, Location and named headers are compared. Where
//! ruchy-serve answers otherwise on purpose, the case says so and why
//! (README "Coming from nginx" says the same).
//!
//! "443" is plain HTTP here on both sides: what is compared is the routing,
//! not TLS (tests/it/tls.rs covers that), and nginx's relative redirects
//! are made absolute with its own port, which the comparison strips.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::common::daemon::command;
use crate::common::{free_local_addr, TestServer};

const HSTS: &str = "max-age=63072000";

/// The document roots: the main site and the docs site.
fn roots(dir: &Path) {
    let w = |p: &str, text: &str| {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    w("main/index.html", "main home");
    w("main/about.html", "about page");
    w("main/about/index.html", "about directory");
    w("main/contact.html", "contact page");
    w("main/404.html", "main not found page");
    w("main/assets/app.css", "body{}");
    w("main/private/secret.txt", "secret");
    w("main/downloads/a.zip", "zip");
    w("main/downloads/b.txt", "b");
    w("main/posts/12-hello.html", "post 12");
    w("main/.well-known/acme-challenge/tok", "tok.thumbprint");
    w("docs/index.html", "docs home");
    w("docs/guide.html", "the guide");
    // nginx's workers run as nobody when the test runs as root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn nginx_conf(dir: &Path, p80: SocketAddr, p443: SocketAddr) -> String {
    let (main, docs, nd) = (
        dir.join("main").display().to_string(),
        dir.join("docs").display().to_string(),
        dir.join("nginx").display().to_string(),
    );
    format!(
        r#"worker_processes 1;
daemon off;
pid {nd}/nginx.pid;
error_log {nd}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {nd}/b; proxy_temp_path {nd}/p; fastcgi_temp_path {nd}/f;
    uwsgi_temp_path {nd}/u; scgi_temp_path {nd}/s;
    types {{ text/html html; text/css css; text/plain txt; application/zip zip; }}
    default_type application/octet-stream;

    server {{
        listen {p80};
        server_name example.com www.example.com;
        location /.well-known/acme-challenge/ {{ root {main}; }}
        location / {{ return 301 https://example.com$request_uri; }}
    }}
    server {{
        listen {p443} default_server;
        server_name _;
        return 444;
    }}
    server {{
        listen {p443};
        server_name www.example.com;
        return 301 https://example.com$request_uri;
    }}
    server {{
        listen {p443};
        server_name example.com;
        root {main};
        add_header Strict-Transport-Security "{HSTS}" always;
        error_page 404 /404.html;
        gzip on;
        location / {{ try_files $uri $uri.html $uri/ =404; }}
        location /assets/ {{ expires 1y; }}
        location = /old-page {{ return 301 /new-page; }}
        location ~ ^/blog/(\d+)/(.*)$ {{ return 301 /posts/$1-$2; }}
        location /private/ {{ deny all; }}
        location /downloads/ {{ autoindex on; }}
    }}
    server {{
        listen {p443};
        server_name docs.example.com;
        root {docs};
        location / {{ try_files $uri $uri.html $uri/ =404; }}
    }}
}}
"#
    )
}

/// The same three servers, as README's "Coming from nginx" translates them.
fn ruchy_conf(dir: &Path, p80: SocketAddr, p443: SocketAddr) -> String {
    let (main, docs) = (dir.join("main"), dir.join("docs"));
    format!(
        r#"default_site = false

[[listen]]
address = "{p80}"
redirect_https = true

[[listen]]
address = "{p443}"

[tls]
redirect_host = "example.com"
redirect_status = 301

[log]
access_log = "off"

[metrics]
address = ""

[[sites]]
names = ["example.com"]
root = {main:?}
[sites.files]
try = ["{{path}}", "{{path}}.html", "{{path}}/"]
not_found_page = "/404.html"
[sites.headers.always]
"Strict-Transport-Security" = "{HSTS}"

[[sites.locations]]
prefix = "/assets/"
expires = "365d"

[[sites.locations]]
exact = "/old-page"
return = 301
to = "/new-page"

[[sites.locations]]
regex = '^/blog/(\d+)/(.*)$'
return = 301
to = "/posts/{{1}}-{{2}}"

[[sites.locations]]
prefix = "/private/"
access = ["deny all"]

[[sites.locations]]
prefix = "/downloads/"
files = {{ directory_listing = true }}

[[sites]]
names = ["www.example.com"]
root = {main:?}
[[sites.locations]]
prefix = "/"
return = 301
to = "https://example.com{{path}}"

[[sites]]
names = ["docs.example.com"]
root = {docs:?}
[sites.files]
try = ["{{path}}", "{{path}}.html", "{{path}}/"]
"#
    )
}

/// What is compared of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    /// With nginx's `http://host:port` of its own relative redirects cut.
    location: Option<String>,
    hsts: Option<String>,
    cache_control: Option<String>,
    expires: bool,
    body: String,
}

/// One request on a fresh connection; `None` when the server closed it
/// without an answer (nginx's 444).
async fn ask(addr: SocketAddr, method: &str, host: &str, path: &str) -> Option<Seen> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.ok()?;
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let own = format!("http://{host}:{}", addr.port());
    let location = header("location").map(|l| match l.strip_prefix(&own) {
        Some(rest) => rest.to_string(),
        None => l,
    });
    let (status, hsts, cache_control, expires) = (
        resp.status().as_u16(),
        header("strict-transport-security"),
        header("cache-control"),
        header("expires").is_some(),
    );
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(Seen {
        status,
        location,
        hsts,
        cache_control,
        expires,
        // Bodies are compared for the answers that come from files.
        body: match status {
            200 | 404 => String::from_utf8_lossy(&body).into_owned(),
            _ => String::new(),
        },
    })
}

/// Which listener: the port-80 one, or the "443" one.
#[derive(Clone, Copy)]
enum Port {
    Plain,
    Main,
}

struct Case {
    port: Port,
    host: &'static str,
    path: &'static str,
    /// Checked of both answers beside their equality.
    expect: u16,
    /// `Some(why)`: ruchy-serve answers otherwise on purpose.
    differs: Option<&'static str>,
}

const fn case(port: Port, host: &'static str, path: &'static str, expect: u16) -> Case {
    Case {
        port,
        host,
        path,
        expect,
        differs: None,
    }
}

fn cases() -> Vec<Case> {
    use Port::*;
    vec![
        case(Plain, "example.com", "/", 301),
        case(Plain, "www.example.com", "/a?b=c", 301),
        case(Plain, "unknown.test", "/x", 301),
        case(Plain, "example.com", "/.well-known/acme-challenge/tok", 200),
        case(Main, "www.example.com", "/page?q=1", 301),
        case(Main, "example.com", "/", 200),
        case(Main, "example.com", "/about", 200),
        case(Main, "example.com", "/about/", 200),
        case(Main, "example.com", "/contact", 200),
        case(Main, "example.com", "/assets/app.css", 200),
        case(Main, "example.com", "/old-page", 301),
        case(Main, "example.com", "/blog/12/hello", 301),
        case(Main, "example.com", "/blog/abc/x", 404),
        case(Main, "example.com", "/posts/12-hello", 200),
        case(Main, "example.com", "/private/secret.txt", 403),
        case(Main, "example.com", "/private/", 403),
        case(Main, "example.com", "/private/%73ecret.txt", 403),
        case(Main, "example.com", "/downloads/", 200),
        case(Main, "example.com", "/downloads/a.zip", 200),
        case(Main, "example.com", "/missing", 404),
        case(Main, "docs.example.com", "/", 200),
        case(Main, "docs.example.com", "/guide", 200),
        case(Main, "docs.example.com", "/missing", 404),
        Case {
            differs: Some(
                "a directory with no index and no listing is 404 in ruchy-serve (nginx: 403), \
                 so a client learns nothing of what exists",
            ),
            ..case(Main, "example.com", "/assets/", 404)
        },
        Case {
            differs: Some(
                "a host no site has is answered 421 Misdirected Request (RFC 9110 15.5.20) \
                 where nginx's `return 444` closes the connection without an answer",
            ),
            ..case(Main, "unknown.test", "/", 421)
        },
    ]
}

/// What `ruchy-serve explain` predicts for `host` and `path` on the
/// listener at `port`: the status and Location, and the whole text.
fn explained(config: &Path, port: u16, host: &str, path: &str) -> (u16, Option<String>, String) {
    let url = format!("http://{host}:{port}{path}");
    let out = command()
        .args(["explain", "--config", config.to_str().unwrap(), &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "explain {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines().skip_while(|l| !l.starts_with("=> "));
    let status = lines
        .next()
        .and_then(|l| l[3..].split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("explain {url} names no status:\n{text}"));
    let location = lines
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::to_string);
    (status, location, text)
}

/// Every case, against nginx and ruchy-serve with the translated
/// configuration over the same roots.
#[tokio::test]
async fn a_three_server_nginx_configuration_translates_whole() {
    let dir = tempfile::tempdir().unwrap();
    roots(dir.path());
    std::fs::create_dir(dir.path().join("nginx")).unwrap();
    let (n80, n443) = (free_local_addr(), free_local_addr());
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir.path(), n80, n443)).unwrap();
    let nd = dir.path().join("nginx");
    let nginx = crate::common::nginx::Nginx::start(&conf, &nd, &[n80, n443]);

    let (r80, r443) = (free_local_addr(), free_local_addr());
    let ours = TestServer::start_raw(
        &dir.path().join("main"),
        &format!("\n{}", ruchy_conf(dir.path(), r80, r443)),
    )
    .await;
    assert_eq!(ours.addrs, [r80, r443]);

    let mut report = Vec::new();
    for c in cases() {
        let (n, r) = match c.port {
            Port::Plain => (n80, r80),
            Port::Main => (n443, r443),
        };
        let theirs = ask(n, "GET", c.host, c.path).await;
        let mine = ask(r, "GET", c.host, c.path).await;
        let what = format!("{} {}", c.host, c.path);
        let mine = mine.unwrap_or_else(|| panic!("{what}: ruchy-serve gave no answer"));
        assert_eq!(mine.status, c.expect, "{what}: ruchy-serve {mine:?}");
        // `explain` predicts what the server then sent.
        let (status, location, text) = explained(&ours.config_file, r.port(), c.host, c.path);
        assert_eq!(
            (status, location),
            (mine.status, mine.location.clone()),
            "{what}: explain said\n{text}"
        );
        match c.differs {
            None => {
                let mut theirs = theirs.unwrap_or_else(|| panic!("{what}: nginx gave no answer"));
                assert_eq!(theirs.status, c.expect, "{what}: nginx {theirs:?}");
                // ruchy-serve sends `Cache-Control: no-cache` on files
                // and listings and `no-store` on error pages by default
                // (`[cache]`), nginx nothing; compared where nginx sends
                // one. The docs site has no error page: each server's own
                // text.
                let mut mine = mine.clone();
                if theirs.cache_control.is_none() {
                    mine.cache_control = None;
                }
                if c.host == "docs.example.com" && c.expect == 404 {
                    (mine.body, theirs.body) = (String::new(), String::new());
                }
                if c.path == "/downloads/" {
                    // Both list the files; the pages are each server's own.
                    for seen in [&mine, &theirs] {
                        assert!(
                            seen.body.contains("a.zip") && seen.body.contains("b.txt"),
                            "{what}: {seen:?}"
                        );
                    }
                    let strip = |s: &Seen| Seen {
                        body: String::new(),
                        ..s.clone()
                    };
                    assert_eq!(strip(&mine), strip(&theirs), "{what}");
                } else {
                    assert_eq!(mine, theirs, "{what}: ruchy-serve (left) and nginx (right)");
                }
            }
            Some(why) => {
                let theirs = theirs
                    .map(|s| s.status.to_string())
                    .unwrap_or("closed".into());
                report.push(format!(
                    "{what}: nginx {theirs}, ruchy-serve {} ({why})",
                    mine.status
                ));
                assert_ne!(theirs, mine.status.to_string(), "{what} no longer differs");
            }
        }
    }
    // What the comparison rests on, checked on ruchy-serve's answers.
    let get = |host: &'static str, path: &'static str| ask(r443, "GET", host, path);
    let css = get("example.com", "/assets/app.css").await.unwrap();
    assert_eq!(css.cache_control.as_deref(), Some("max-age=31536000"));
    assert!(css.expires);
    let missing = get("example.com", "/missing").await.unwrap();
    assert_eq!(
        (missing.hsts.as_deref(), missing.body.as_str()),
        (Some(HSTS), "main not found page")
    );
    let about = get("example.com", "/about").await.unwrap();
    assert_eq!(about.body, "about page");
    let blog = get("example.com", "/blog/12/hello").await.unwrap();
    assert_eq!(blog.location.as_deref(), Some("/posts/12-hello"));
    let www = ask(r80, "GET", "www.example.com", "/a?b=c").await.unwrap();
    assert_eq!(www.location.as_deref(), Some("https://example.com/a?b=c"));
    assert_eq!(
        get("docs.example.com", "/missing").await.unwrap().hsts,
        None
    );
    eprintln!("differs on purpose:\n{}", report.join("\n"));

    // And why, in its lines: the site, the location that took the path,
    // and the file.
    let (_, _, text) = explained(&ours.config_file, r443.port(), "example.com", "/about");
    assert!(text.contains("site      example.com (sites[0])"), "{text}");
    assert!(text.contains("main/about.html"), "{text}");
    let (_, _, text) = explained(
        &ours.config_file,
        r443.port(),
        "example.com",
        "/blog/12/hello",
    );
    assert!(
        text.contains("regex = \"^/blog/(\\\\d+)/(.*)$\": <- takes the path"),
        "{text}"
    );
    let (_, _, text) = explained(&ours.config_file, r443.port(), "example.com", "/private/x");
    assert!(text.contains("denied here (403)"), "{text}");

    // nginx stopped leaves nothing listening (its workers went with it).
    drop(nginx);
    for addr in [n80, n443] {
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "nginx still listens on {addr}"
        );
    }
}

/// `basic_auth`: 401 with the realm until a user of the htpasswd file
/// comes with its password; wrong ones are refused and counted; the file
/// is read again on reload (a changed password changes at once, the
/// remembered one is forgotten); a weak entry is refused at load with its
/// file and line.
#[tokio::test]
async fn basic_auth_asks_checks_counts_and_rereads_on_reload() {
    use base64::Engine as _;
    let root = crate::common::fixture();
    std::fs::create_dir(root.path().join("staff")).unwrap();
    std::fs::write(root.path().join("staff/plan.txt"), "the plan").unwrap();
    let users = root.path().join("htpasswd");
    let entry =
        |user: &str, password: &str| format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap());
    std::fs::write(&users, entry("alice", "wonderland")).unwrap();
    let body = format!(
        "[[locations]]\nprefix = \"/staff/\"\nbasic_auth = {users:?}\nrealm = \"Staff only\"\n"
    );
    let s = TestServer::start(root.path(), &body).await;
    let basic = |cred: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(cred)
        )
    };
    let srv = &s;
    let with = |cred: &str| {
        let v = basic(cred);
        async move {
            srv.get_with("/staff/plan.txt", &[("authorization", &v)])
                .await
        }
    };

    let asked = s.get("/staff/plan.txt").await;
    assert_eq!(asked.status, 401);
    assert_eq!(
        asked.header("www-authenticate"),
        Some("Basic realm=\"Staff only\", charset=\"UTF-8\"")
    );
    assert_eq!(
        s.get("/hello.txt").await.status,
        200,
        "outside the location: no password"
    );
    let failures = || {
        let text = String::from_utf8(s.state.metrics.render()).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("ruchy_serve_auth_failures_total "));
        line.and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .expect("ruchy_serve_auth_failures_total")
    };
    assert_eq!(failures(), 0, "asking is not failing");
    for wrong in ["alice:looking-glass", "mallory:wonderland", "alice", ":"] {
        assert_eq!(with(wrong).await.status, 401, "{wrong}");
    }
    assert_eq!(failures(), 4);
    let ok = with("alice:wonderland").await;
    assert_eq!(
        (ok.status.as_u16(), ok.text()),
        (200, "the plan".to_string())
    );
    assert_eq!(with("alice:wonderland").await.status, 200, "remembered");
    // Other spellings of a path in the location are in it.
    for spelling in ["/staff/%70lan.txt", "/staff//plan.txt", "/%73taff/plan.txt"] {
        assert_eq!(s.get(spelling).await.status, 401, "{spelling}");
    }

    // A new password for alice, read at reload.
    std::fs::write(&users, entry("alice", "through")).unwrap();
    s.reload(None).await;
    assert_eq!(
        with("alice:wonderland").await.status,
        401,
        "the old password is gone"
    );
    assert_eq!(with("alice:through").await.status, 200);

    // A weak entry fails its own user only, reported with the file's
    // line; alice still gets in, bob does not.
    std::fs::write(
        &users,
        format!("{}bob:$apr1$abc$def\n", entry("alice", "through")),
    )
    .unwrap();
    let cfg = ruchy_serve::config::load(&ruchy_serve::config::Sources {
        config_file: Some(s.config_file.clone()),
        ..Default::default()
    })
    .expect("a bad line fails its user, not the configuration");
    let warnings = cfg.locations.warnings.join("\n");
    assert!(
        warnings.contains("htpasswd:2") && warnings.contains("MD5"),
        "{warnings}"
    );
    s.reload(None).await;
    assert_eq!(with("alice:through").await.status, 200);
    assert_eq!(with("bob:anything").await.status, 401);
}

/// The review's fail-open: a reload that failed on one bad htpasswd line
/// kept the old file's users, a removed one included, and a changed
/// password waited for a reload. Now the file is read again when it
/// changes (the certificate watch's round), without a reload, and a bad
/// line fails only its user: the removed user is out at once.
#[tokio::test]
async fn a_changed_htpasswd_applies_without_a_reload_and_fails_closed() {
    use base64::Engine as _;
    let root = crate::common::fixture();
    std::fs::create_dir(root.path().join("staff")).unwrap();
    std::fs::write(root.path().join("staff/plan.txt"), "the plan").unwrap();
    let users = root.path().join("htpasswd");
    let entry =
        |user: &str, password: &str| format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap());
    std::fs::write(
        &users,
        format!("{}{}", entry("alice", "a"), entry("mallory", "m")),
    )
    .unwrap();
    let body = format!(
        "[tls]\nwatch_interval = \"200ms\"\n[[locations]]\nprefix = \"/staff/\"\nbasic_auth = {users:?}\n"
    );
    let s = TestServer::start(root.path(), &body).await;
    let with = |cred: &'static str| {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(cred)
        );
        let srv = &s;
        async move {
            srv.get_with("/staff/plan.txt", &[("authorization", &v)])
                .await
                .status
        }
    };
    assert_eq!(with("mallory:m").await, 200);
    assert_eq!(with("alice:a").await, 200);
    // mallory removed, and a typo on another line in the same edit.
    std::fs::write(
        &users,
        format!(
            "{}carol:plaintext\n{}",
            entry("alice", "b"),
            entry("dave", "d")
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while with("mallory:m").await == 200 {
        assert!(Instant::now() < deadline, "the removed user still gets in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(with("alice:a").await, 401, "the old password is forgotten");
    assert_eq!(with("alice:b").await, 200);
    assert_eq!(with("dave:d").await, 200);
    assert_eq!(with("carol:plaintext").await, 401);
    // Emptied, then deleted: nobody gets in (the review: both kept every
    // user in); written again: in again.
    std::fs::write(&users, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while with("dave:d").await == 200 {
        assert!(Instant::now() < deadline, "an emptied file still admits");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(with("alice:b").await, 401);
    std::fs::remove_file(&users).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(with("alice:b").await, 401, "a deleted file admits nobody");
    std::fs::write(&users, entry("alice", "c")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while with("alice:c").await != 200 {
        assert!(Instant::now() < deadline, "a restored file is not read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A location's `headers` reach 2xx and 3xx answers, and every answer with
/// `always` (404s, redirects of directories, 403s); another location's
/// answers get none of them; `files` keys apply to the location's paths
/// only (a listing here, a 404 for the same kind of directory elsewhere).
#[tokio::test]
async fn location_headers_and_files_stay_in_their_location() {
    let root = crate::common::fixture();
    std::fs::create_dir(root.path().join("pub")).unwrap();
    std::fs::write(root.path().join("pub/a.txt"), "a").unwrap();
    let s = TestServer::start(
        root.path(),
        "[[locations]]\nprefix = \"/docs/\"\nheaders = { \"X-Robots-Tag\" = \"noindex\" }\nalways = true\n\
         [[locations]]\nprefix = \"/pub/\"\nheaders = { \"X-Frame-Options\" = \"DENY\" }\nfiles = { directory_listing = true }\n\
         [[locations]]\nglob = \"*.json\"\nreturn = 403\n",
    )
    .await;
    let robots = |r: &crate::common::Resp| r.header("x-robots-tag").map(str::to_string);
    let frame = |r: &crate::common::Resp| r.header("x-frame-options").map(str::to_string);
    let page = s.get("/docs/page.html").await;
    assert_eq!(
        (page.status.as_u16(), robots(&page)),
        (200, Some("noindex".into()))
    );
    let missing = s.get("/docs/nothing").await;
    assert_eq!(
        (missing.status.as_u16(), robots(&missing)),
        (404, Some("noindex".into()))
    );
    let listing = s.get("/pub/").await;
    assert_eq!(
        (listing.status.as_u16(), frame(&listing)),
        (200, Some("DENY".into()))
    );
    assert!(listing.text().contains("a.txt"), "listed here");
    let gone = s.get("/pub/nothing").await;
    assert_eq!(
        (gone.status.as_u16(), frame(&gone)),
        (404, None),
        "not `always`"
    );
    assert_eq!(
        s.get("/empty-dir/").await.status,
        404,
        "no listing outside /pub/"
    );
    let json = s.get("/data.json").await;
    assert_eq!(
        (json.status.as_u16(), robots(&json), frame(&json)),
        (403, None, None)
    );
    assert_eq!(robots(&s.get("/hello.txt").await), None);
}

/// Per site: a `[[sites]]` entry with `access_log_path` writes its lines to
/// its own file, the others to the top level's; `vhost_combined` starts
/// each line with the site; `compression = false` turns on-the-fly
/// compression off for one site; a relative path is refused with its key.
#[tokio::test]
async fn a_site_can_have_its_own_access_log_and_compression() {
    let root = crate::common::fixture();
    std::fs::write(
        root.path().join("big.js"),
        "console.log('x');\n".repeat(200),
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (main_log, b_log) = (logs.path().join("main.log"), logs.path().join("b.log"));
    let body = format!(
        "[log]\naccess_log = \"vhost_combined\"\naccess_log_path = {main_log:?}\naccess_log_flush = \"50ms\"\n\
         [[sites]]\nnames = [\"b.test\"]\nroot = {root:?}\naccess_log_path = {b_log:?}\ncompression = false\n\
         [[sites]]\nnames = [\"c.test\"]\nroot = {root:?}\n",
        root = root.path()
    );
    let s = TestServer::start(root.path(), &body).await;
    for (host, path) in [
        ("b.test", "/hello.txt?b"),
        ("c.test", "/hello.txt?c"),
        ("x.test", "/hello.txt?x"),
    ] {
        assert_eq!(
            ask(s.addr, "GET", host, path).await.unwrap().status,
            200,
            "{host}"
        );
    }
    // The site without compression sends the script as it is.
    let plain = |host: &'static str| {
        let addr = s.addr;
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::get("/big.js")
                .header("host", host)
                .header("accept-encoding", "gzip")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let r = sender.send_request(req).await.unwrap();
            r.headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    assert_eq!(plain("b.test").await, None);
    assert_eq!(plain("c.test").await.as_deref(), Some("gzip"));
    s.stop().await;
    let main = std::fs::read_to_string(&main_log).unwrap();
    let b = std::fs::read_to_string(&b_log).unwrap();
    assert!(
        b.lines()
            .any(|l| l.starts_with("b.test ") && l.contains("/hello.txt?b")),
        "{b}"
    );
    assert!(!b.contains("?c") && !b.contains("?x"), "{b}");
    assert!(
        main.lines()
            .any(|l| l.starts_with("c.test ") && l.contains("/hello.txt?c")),
        "{main}"
    );
    assert!(
        main.lines()
            .any(|l| l.starts_with("default ") && l.contains("/hello.txt?x")),
        "{main}"
    );
    assert!(!main.contains("?b"), "{main}");

    let file = crate::common::ConfigFile::new(
        root.path(),
        "[[sites]]\nnames = [\"b.test\"]\nroot = \"/tmp\"\naccess_log_path = \"b.log\"\n",
    );
    let e = ruchy_serve::config::load(&ruchy_serve::config::Sources {
        config_file: Some(file.path.clone()),
        ..Default::default()
    })
    .expect_err("a relative path is refused");
    assert_eq!(e.key(), Some("sites[0].access_log_path"), "{e}");
}

/// `files.try` serves no file that another location guards: with
/// `exact = "/admin.html"` behind `deny all` (or a password), `/admin`
/// does not answer with `admin.html` through `{path}.html` (nginx's
/// `try_files $uri $uri.html` would), and a file a `return` takes is not
/// served under another name either; unguarded files still are.
#[tokio::test]
async fn try_never_reaches_into_a_guarded_location() {
    let root = crate::common::fixture();
    std::fs::write(root.path().join("admin.html"), "the admin page").unwrap();
    std::fs::write(root.path().join("gone.html"), "old").unwrap();
    std::fs::write(root.path().join("open.html"), "open").unwrap();
    let s = TestServer::start(
        root.path(),
        "[files]\ntry = [\"{path}\", \"{path}.html\"]\n\
         [[locations]]\nexact = \"/admin.html\"\naccess = [\"deny all\"]\n\
         [[locations]]\nglob = \"gone.*\"\nreturn = 410\n",
    )
    .await;
    assert_eq!(s.get("/admin.html").await.status, 403);
    let sneaked = s.get("/admin").await;
    assert_eq!(
        (
            sneaked.status.as_u16(),
            sneaked.text().contains("admin page")
        ),
        (404, false)
    );
    assert_eq!(s.get("/gone").await.status, 404);
    assert_eq!(s.get("/gone.html").await.status, 410);
    assert_eq!(s.get("/open").await.text(), "open");
}

/// nginx's internal redirect: whenever the file that will be served is
/// not the path asked for (a directory's index, `files.fallback`, the 404
/// page, a precompressed twin asked for by its own name), the request
/// meets the locations of the served path too, and every guard it passed
/// applies. Before: `/reports/` served the page `reports/*.html` guards
/// with a password, `/secretdir/` the denied index, `/uc/` came without
/// the regex location's header; over HTTP/2 the same.
#[tokio::test]
async fn what_is_served_meets_its_own_location() {
    let root = crate::common::fixture();
    for (dir, text) in [
        ("reports", "the protected report"),
        ("secretdir", "the secret index"),
        ("uc", "under construction"),
        ("app", "the app shell"),
        ("errors", "custom not found"),
    ] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
        std::fs::write(root.path().join(dir).join("index.html"), text).unwrap();
    }
    std::fs::write(root.path().join("errors/404.html"), "custom not found").unwrap();
    std::fs::write(root.path().join("app.js.map"), "{}").unwrap();
    std::fs::write(
        root.path().join("app.js.map.gz"),
        crate::common::twin("gzip"),
    )
    .unwrap();
    let users = root.path().join("htpasswd");
    std::fs::write(
        &users,
        format!("alice:{}\n", bcrypt::hash("wonderland", 4).unwrap()),
    )
    .unwrap();
    let body = format!(
        "[files]\nnot_found_page = \"/errors/404.html\"\n\
         [[locations]]\nglob = \"reports/*.html\"\nbasic_auth = {users:?}\n\
         [[locations]]\nexact = \"/secretdir/index.html\"\naccess = [\"deny all\"]\n\
         [[locations]]\nregex = '^/uc/.*\\.html$'\nheaders = {{ \"Content-Security-Policy\" = \"default-src 'self'\" }}\n\
         [[locations]]\nglob = \"**/*.map\"\nreturn = 404\n\
         [[locations]]\nprefix = \"/errors/\"\nheaders = {{ \"X-Error-Page\" = \"yes\" }}\nalways = true\n"
    );
    let s = TestServer::start(root.path(), &body).await;
    for path in [
        "/reports/",
        "/reports/%2f",
        "/reports//",
        "/reports/index.html",
    ] {
        let r = s.get(path).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(!r.text().contains("protected"), "{path}");
    }
    for path in ["/secretdir/", "/secretdir/index.html"] {
        let r = s.get(path).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(!r.text().contains("secret"), "{path}");
    }
    let uc = s.get("/uc/").await;
    assert_eq!(uc.status, 200);
    assert_eq!(
        uc.header("content-security-policy"),
        Some("default-src 'self'")
    );
    // A twin asked for by name is the file its original's location guards.
    assert_eq!(s.get("/app.js.map.gz").await.status, 404);
    assert_eq!(s.get("/app.js.map").await.status, 404);
    // The 404 page is served from its own location: its `always` header.
    let missing = s.get("/nothing-here").await;
    assert_eq!(
        (missing.status.as_u16(), missing.header("x-error-page")),
        (404, Some("yes"))
    );
    assert_eq!(missing.text(), "custom not found");
    // The same over HTTP/2.
    let h2 = crate::common::get_h2(s.addr, &["/reports/", "/secretdir/", "/uc/"]).await;
    assert_eq!(h2[0].status, 401);
    assert_eq!(h2[1].status, 403);
    assert_eq!(
        h2[2].header("content-security-policy"),
        Some("default-src 'self'")
    );
    // `explain` walks the same phases: the index placed again.
    let (status, _, text) = explained(&s.config_file, s.addr.port(), "localhost", "/reports/");
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("internal  the file served (an index or files.try): /reports/index.html"),
        "{text}"
    );
    assert!(
        text.contains("glob = \"reports/*.html\": <- takes the path"),
        "{text}"
    );
    let (status, _, text) = explained(&s.config_file, s.addr.port(), "localhost", "/secretdir/");
    assert_eq!(status, 403, "{text}");
    // A decoded newline is shown escaped, never as a line of its own.
    let (_, _, text) = explained(
        &s.config_file,
        s.addr.port(),
        "localhost",
        "/x%0A=%3E%20200%20OK",
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("=> ")).count(),
        1,
        "{text}"
    );
    assert!(text.contains("/x\\n=> 200 OK"), "{text}");
    // Twice, so the answers from the file cache are checked too.
    assert_eq!(s.get("/reports/").await.status, 401);
    assert_eq!(s.get("/secretdir/").await.status, 403);
    assert!(s
        .get("/uc/")
        .await
        .header("content-security-policy")
        .is_some());
}

/// `files.fallback` is an internal redirect too: a fallback file in a
/// denied location is not served for every unknown path.
#[tokio::test]
async fn the_fallback_meets_its_own_location() {
    let root = crate::common::fixture();
    std::fs::create_dir(root.path().join("private")).unwrap();
    std::fs::write(root.path().join("private/shell.html"), "private shell").unwrap();
    let s = TestServer::start(
        root.path(),
        "[files]\nfallback = \"/private/shell.html\"\n\
         [[locations]]\nprefix = \"/private/\"\naccess = [\"deny all\"]\n",
    )
    .await;
    let r = s.get("/some/route").await;
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("private shell"));
    assert_eq!(s.get("/hello.txt").await.status, 200);
}

/// The review's flood: one client's many connections of wrong passwords
/// used to queue bcrypt checks without bound, so another's first login
/// waited behind all of them (10.7 s). Now one address has at most
/// `PER_CLIENT` checks queued or running: the rest are answered 429 with
/// `Retry-After` and counted, and a login from another address is
/// checked among the first.
#[test]
fn a_wrong_password_flood_gets_429_and_others_still_log_in() {
    use base64::Engine as _;
    let root = crate::common::fixture();
    std::fs::create_dir(root.path().join("staff")).unwrap();
    std::fs::write(root.path().join("staff/plan.txt"), "the plan").unwrap();
    let users = root.path().join("htpasswd");
    std::fs::write(
        &users,
        format!(
            "alice:{}\nbob:{}\n",
            bcrypt::hash("wonderland", 10).unwrap(),
            bcrypt::hash("builder", 10).unwrap()
        ),
    )
    .unwrap();
    let metrics = free_local_addr();
    let cfg = crate::common::ConfigFile::new(
        root.path(),
        &format!(
            "[[locations]]\nprefix = \"/staff/\"\nbasic_auth = {users:?}\n\
             [[listen]]\naddress = \"127.0.0.1:0\"\n[log]\naccess_log = \"off\"\n"
        ),
    );
    let d = crate::common::Daemon::spawn(
        &["--config", cfg.arg()],
        &[("RUCHY_SERVE_METRICS__ADDRESS", &metrics.to_string())],
    );
    let addr = d.addr;
    let basic = |cred: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(cred)
        )
    };
    let ask = |from: &'static str, auth: String| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        let req = format!(
            "GET /staff/plan.txt HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        let read = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out);
        let _ = tokio::time::timeout(Duration::from_secs(20), read).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        (crate::common::raw_status(&text), text)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Sixteen more addresses, four wrong passwords each: together they
    // fill what one global queue would hold, yet a newcomer waits only for
    // one check of each (clients take turns).
    let many = rt.block_on(async {
        let flood: Vec<_> = (0..64)
            .map(|i| {
                let from: &'static str =
                    Box::leak(format!("127.0.0.{}", 10 + i / 4).into_boxed_str());
                tokio::spawn(ask(from, basic(&format!("alice:wrong{i}"))))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        let login = ask("127.0.0.3", basic("alice:wonderland")).await;
        let waited = start.elapsed();
        for f in flood {
            f.await.unwrap();
        }
        (login, waited)
    });
    let ((status, text), waited) = many;
    eprintln!("first login during a 16-address flood took {waited:?}");
    assert_eq!(status, 200, "{text}");
    let (flood, login) = rt.block_on(async {
        let flood: Vec<_> = (0..40)
            .map(|i| tokio::spawn(ask("127.0.0.1", basic(&format!("alice:wrong{i}")))))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        let login = ask("127.0.0.2", basic("bob:builder")).await;
        let waited = start.elapsed();
        let mut statuses = Vec::new();
        for f in flood {
            statuses.push(f.await.unwrap());
        }
        (statuses, (login, waited))
    });
    let ((status, text), waited) = login;
    eprintln!("first login during a 40-connection flood took {waited:?}");
    assert_eq!(status, 200, "{text}");
    let busy: Vec<_> = flood.iter().filter(|(s, _)| *s == 429).collect();
    assert!(busy.len() >= 30, "{} of 40 were 429", busy.len());
    assert!(
        busy[0].1.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        busy[0].1
    );
    assert!(flood.iter().all(|(s, _)| *s == 401 || *s == 429));
    assert!(
        crate::common::scrape_value(metrics, "ruchy_serve_auth_busy_total") >= busy.len() as u64
    );
}
