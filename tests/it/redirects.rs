//! `[[redirects]]` against a real client: curl follows each rule to the
//! file it leads to; every answer names its status and Location; a bad rule
//! is refused at load with its file, line and key, and at reload the old
//! rules keep answering.

use std::process::Command;

use ruchy_serve::config::{self, Sources};

use crate::common::{fixture, get, ConfigFile, TestServer};

const RULES: &str = r#"
[[redirects]]
from = "/old.html"
to = "/hello.txt"
status = 301

[[redirects]]
from = "/blog/{year}/{slug}"
to = "/docs/{slug}.html"

[[redirects]]
from = "/v1/{*rest}"
to = "/{rest}"
status = 302

[[redirects]]
from = "/elsewhere"
to = "https://example.com/landing"
keep_query = false
"#;

/// `curl -sL` of `path`: the body it ends with and how many redirects it
/// followed.
fn curl_follow(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-L",
            "--max-redirs",
            "5",
            "-w",
            "\n%{num_redirects} %{http_code}",
        ])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    (body.trim_end().to_string(), tail.to_string())
}

#[tokio::test]
async fn curl_follows_each_rule_to_its_file() {
    let root = fixture();
    let s = TestServer::start(root.path(), RULES).await;
    let addr = s.addr;
    let cases = tokio::task::spawn_blocking(move || {
        [
            curl_follow(addr, "/old.html"),
            curl_follow(addr, "/blog/2024/page"),
            curl_follow(addr, "/v1/docs/page.html?x=1"),
            curl_follow(addr, "/v1/with%20space.txt"),
        ]
    })
    .await
    .unwrap();
    assert_eq!(cases[0], ("hello world".into(), "1 200".into()));
    assert_eq!(cases[1], ("<h1>page</h1>".into(), "1 200".into()));
    assert_eq!(cases[2], ("<h1>page</h1>".into(), "1 200".into()));
    assert_eq!(cases[3], ("spaced".into(), "1 200".into()));
}

#[tokio::test]
async fn each_answer_says_its_status_and_location() {
    let root = fixture();
    let s = TestServer::start(root.path(), RULES).await;
    let r = s.get("/old.html?a=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/hello.txt?a=1"));
    let r = s.get("/blog/2024/x").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/docs/x.html"));
    let r = s.get("/v1/a/b").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/a/b"));
    // Matched on the resolved path: another spelling of it is the same path.
    let r = s.get("//blog/%32024/x").await;
    assert_eq!(r.header("location"), Some("/docs/x.html"));
    // A capture cannot carry a line break or a `?` into the Location.
    let r = s.get("/v1/a%0d%0aSet-Cookie:x%3fy").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/a%0D%0ASet-Cookie:x%3Fy"));
    assert!(r.header("set-cookie").is_none());
    let r = s.get("/elsewhere?utm=1").await;
    assert_eq!(r.header("location"), Some("https://example.com/landing"));
    // HEAD agrees; a path no rule matches is served as before.
    let r = crate::common::request(s.addr, "HEAD", "/old.html", &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (301, Some("/hello.txt"))
    );
    assert_eq!(get(s.addr, "/hello.txt", &[]).await.status, 200);
}

#[test]
fn a_bad_rule_names_its_file_line_and_key() {
    let root = fixture();
    let body = "[[redirects]]\nfrom = \"/a/{x}\"\nto = \"/b/{x}\"\n\n[[redirects]]\nfrom = \"/c/{slug}\"\nto = \"/d/{year}\"\n";
    let file = ConfigFile::new(root.path(), body);
    let e = config::load(&Sources {
        config_file: Some(file.path.clone()),
        ..Default::default()
    })
    .unwrap_err();
    let text = e.to_string();
    assert_eq!(e.key(), Some("redirects[1].to"));
    // `root = ...` is line 1, so the second rule's `to` is line 8.
    assert!(
        text.contains(&format!("{}:8:", file.path.display())),
        "{text}"
    );
    assert!(text.contains("{year}"), "{text}");
}

#[tokio::test]
async fn a_reload_with_a_bad_rule_keeps_the_old_rules() {
    let root = fixture();
    let listen = "\n[[listen]]\naddress = \"127.0.0.1:0\"\n";
    let s = TestServer::start_raw(root.path(), &format!("{RULES}{listen}")).await;
    s.reload(Some(&format!(
        "[[redirects]]\nfrom = \"/a\"\nto = \"/a\"\n{listen}"
    )))
    .await;
    assert_eq!(
        s.state
            .reloads
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the reload with a looping rule was refused"
    );
    let r = s.get("/old.html").await;
    assert_eq!(
        (r.status.as_u16(), r.header("location")),
        (301, Some("/hello.txt"))
    );
}

/// `files.try`: `/docs/page` is `docs/page.html`, with that file's type and
/// validators; a directory still gets its redirect and index (so a
/// `{path}/index.html` entry only matters for paths ending in `/`, which
/// the index answers anyway); what matches nothing is still a 404.
#[tokio::test]
async fn clean_urls_serve_the_html_file_with_its_own_validators() {
    let root = fixture();
    let s = TestServer::start(
        root.path(),
        "[files]\ntry = [\"{path}\", \"{path}.html\", \"{path}/index.html\"]\n",
    )
    .await;
    let clean = s.get("/docs/page").await;
    let file = s.get("/docs/page.html").await;
    assert_eq!(clean.status, 200);
    assert_eq!(clean.body, file.body);
    assert_eq!(clean.header("etag"), file.header("etag"));
    assert_eq!(clean.header("last-modified"), file.header("last-modified"));
    assert_eq!(
        clean.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // Conditional requests work on the clean URL with the file's ETag.
    let etag = file.header("etag").unwrap().to_string();
    let again = s.get_with("/docs/page", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    // `/docs` is a directory: redirected to `/docs/` as before.
    assert_eq!(s.get("/docs").await.status, 308);
    // Unless a listed sibling is a file: when `guide.html` and `guide/`
    // both exist, nginx's `try_files $uri $uri.html $uri/` serves
    // `guide.html` for `/docs/guide` (it was a 308 to `/docs/guide/`).
    std::fs::create_dir(root.path().join("docs/guide")).unwrap();
    std::fs::write(root.path().join("docs/guide.html"), "the guide").unwrap();
    let both = s.get("/docs/guide").await;
    assert_eq!(
        (both.status.as_u16(), both.text()),
        (200, "the guide".into())
    );
    assert_eq!(s.get("/nothing").await.status, 404);
    assert_eq!(
        s.get("/hello").await.status,
        404,
        "only the listed suffixes"
    );
}

/// A rule sees every path, UTF-8 or not: `/private/%ff.txt` (a file of
/// that byte name exists) is redirected like `/private/plain.txt`, not
/// served (it was 200).
#[tokio::test]
async fn a_path_that_is_not_utf8_is_still_redirected() {
    use std::os::unix::ffi::OsStrExt;
    let root = crate::common::fixture();
    let private = root.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("plain.txt"), b"p").unwrap();
    std::fs::write(private.join(std::ffi::OsStr::from_bytes(b"\xff.txt")), b"q").unwrap();
    let s = TestServer::start(
        root.path(),
        "[[redirects]]\nfrom = \"/private/{*rest}\"\nto = \"/login\"\nstatus = 302\n",
    )
    .await;
    for path in ["/private/plain.txt", "/private/%ff.txt", "/private/%FF.txt"] {
        let r = s.get(path).await;
        assert_eq!(r.status, 302, "{path}");
        assert_eq!(r.header("location"), Some("/login"), "{path}");
    }
}
