//! Files and what is said about them (issue 14, in part): an ETag that
//! follows every change, no stale precompressed twin, redirects that stay on
//! the host, client mistakes that are not server errors, log lines a client
//! cannot bend. Each test failed before its fix.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::common::{fixture, get, pipelined_empty_gets, scrape_value, Daemon, TestServer};

/// `rsync -t --inplace`, `touch -r`, builds pinned with SOURCE_DATE_EPOCH:
/// the same length, the old modification time, new bytes.
fn rewrite_in_place_keeping_mtime(path: &std::path::Path, bytes: &[u8]) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.set_modified(mtime).unwrap();
}

#[tokio::test]
async fn an_in_place_rewrite_with_the_old_mtime_gets_a_new_etag() {
    let dir = fixture();
    let file = dir.path().join("v.txt");
    std::fs::write(&file, b"version-A").unwrap();
    let s = TestServer::start(dir.path(), "[files]\ncache_revalidate = \"100ms\"\n").await;
    let a = s.get("/v.txt").await;
    let old_tag = a.header("etag").unwrap().to_string();
    let old_lm = a.header("last-modified").unwrap().to_string();
    rewrite_in_place_keeping_mtime(&file, b"version-B");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = s.get_with("/v.txt", &[("if-none-match", &old_tag)]).await;
    assert_eq!(b.status, 200, "the old tag must not match the new bytes");
    assert_eq!(b.text(), "version-B");
    assert_ne!(b.header("etag").unwrap(), old_tag);
    assert_eq!(
        b.header("last-modified").unwrap(),
        old_lm,
        "the mtime was put back"
    );
}

#[tokio::test]
async fn a_twin_older_than_its_original_is_not_served() {
    let dir = fixture();
    let js = dir.path().join("assets/app.js");
    // The twin was built from the old file; then the original changed.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&js, b"console.log('NEW');\n").unwrap();
    let s = TestServer::start(dir.path(), "").await;
    let r = s
        .get_with("/assets/app.js", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), "console.log('NEW');\n");
    assert!(
        metric(&s, "ruchy_serve_file_stale_twins_skipped_total") >= 1,
        "counted"
    );
    // A twin rebuilt after the original is served again (a new path, so the
    // file cache has nothing to say).
    std::fs::copy(
        dir.path().join("assets/app.js"),
        dir.path().join("assets/b.js"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let original = std::fs::read(dir.path().join("assets/b.js")).unwrap();
    let gz =
        ruchy_serve::serve::compress::compress(ruchy_serve::config::Encoding::Gzip, 6, &original);
    std::fs::write(dir.path().join("assets/b.js.gz"), gz.unwrap()).unwrap();
    let r = s
        .get_with("/assets/b.js", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
}

/// `GET //evil.com` where a directory named `evil.com` exists answered
/// `Location: //evil.com/`, which a browser follows to another host.
#[tokio::test]
async fn directory_redirects_stay_on_the_host() {
    let dir = fixture();
    std::fs::create_dir(dir.path().join("evil.com")).unwrap();
    std::fs::create_dir(dir.path().join("a b")).unwrap();
    let s = TestServer::start(dir.path(), "").await;
    for (path, want) in [
        ("//evil.com?x=1", "/evil.com/?x=1"),
        ("///evil.com", "/evil.com/"),
        ("//docs", "/docs/"),
        ("/a%20b", "/a%20b/"),
        ("/docs", "/docs/"),
    ] {
        let r = get(s.addr, path, &[]).await;
        assert_eq!(r.status, 308, "{path}");
        assert_eq!(r.header("location"), Some(want), "{path}");
    }
}

/// A name longer than the file system allows is the client's mistake: 404,
/// and no ERROR line (which monitoring would count as a server fault).
#[test]
fn an_overlong_path_component_is_a_404_not_a_server_error() {
    let dir = fixture();
    let d = Daemon::serving(dir.path(), &[]);
    let long = "a".repeat(300);
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    write!(
        s,
        "GET /{long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    d.wait_for_line(&format!("/{long} HTTP/1.1\" 404"));
    assert!(!d.log_text().contains("ERROR"), "{}", d.log_text());
}

/// nginx escapes every byte outside printable ASCII; a right-to-left
/// override in a User-Agent must not reach a terminal that shows the log.
#[test]
fn non_ascii_in_a_user_agent_is_escaped_in_the_access_log() {
    let dir = fixture();
    let d = Daemon::serving(dir.path(), &[]);
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    s.write_all(
        "GET /hello.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: evil\u{202E}txt.exe\u{2028}x\r\nConnection: close\r\n\r\n"
            .as_bytes(),
    )
    .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let line = d.wait_for_line("GET /hello.txt");
    assert!(
        line.contains("\"evil\\xE2\\x80\\xAEtxt.exe\\xE2\\x80\\xA8x\""),
        "{line}"
    );
    assert!(!line.contains('\u{202E}'), "{line}");
}

/// A 416 has no payload, so no Content-Encoding, even when the range was
/// asked of a precompressed twin.
#[tokio::test]
async fn a_416_for_a_twin_announces_no_coding() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s
        .get_with(
            "/assets/app.js",
            &[("accept-encoding", "gzip"), ("range", "bytes=5000-6000")],
        )
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("accept-encoding"));
}

fn metric(s: &TestServer, name: &str) -> u64 {
    let text = String::from_utf8(s.state.metrics.render()).unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Each spelling of one file was its own cache entry with its own copy of
/// the body, and an empty file cost nothing: 1,500 spellings with thousands
/// of slashes grew memory by megabytes while the counter stayed at a few KiB.
/// Now one file is one entry, and what is counted is what is held.
#[tokio::test]
async fn every_spelling_of_a_file_is_one_cache_entry() {
    let dir = fixture();
    std::fs::write(dir.path().join("empty.txt"), b"").unwrap();
    let s = TestServer::start(dir.path(), "[files]\ncache_revalidate = \"60s\"\n").await;
    assert_eq!(s.get("/empty.txt").await.status, 200);
    let one = metric(&s, "ruchy_serve_file_cache_bytes");
    assert!(one > 0, "an empty file is not free");
    for i in 0..2000usize {
        let path = match i % 3 {
            0 => format!("{}empty.txt", "/".repeat(1 + i % 700)),
            1 => format!("/%65mpty.txt{}", "").replace("%65", if i % 2 == 0 { "%65" } else { "e" }),
            _ => format!("{}%65%6dpty.txt", "/".repeat(2 + i % 50)),
        };
        let r = get(s.addr, &path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
    }
    assert_eq!(
        metric(&s, "ruchy_serve_file_cache_bytes"),
        one,
        "one entry for every spelling"
    );
    assert!(metric(&s, "ruchy_serve_file_cache_hits_total") >= 1999);
}

/// Someone who can write in the tree swaps a directory for a symlink to a
/// directory outside the root, back and forth, while requests run. The
/// symlink check and the open were two steps, so a request checked against
/// the real directory could open through the symlink. Every answer must come
/// from inside the root: no outside file's bytes, no outside name in a
/// listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_an_outside_symlink_never_leaks() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = fixture();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("page.txt"), b"OUTSIDE-SECRET").unwrap();
    std::fs::write(outside.path().join("outside-name.txt"), b"x").unwrap();
    let swap = dir.path().join("swap");
    let real = dir.path().join("swap.real");
    std::fs::create_dir(&swap).unwrap();
    std::fs::write(swap.join("page.txt"), b"inside").unwrap();
    for policy in ["within-root", "never"] {
        let s = TestServer::start(
            dir.path(),
            &format!(
                "[files]\ncache_max_bytes = 0\ndirectory_listing = true\nfollow_symlinks = \"{policy}\"\n"
            ),
        )
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (stop, swap, real, target) = (
                stop.clone(),
                swap.clone(),
                real.clone(),
                outside.path().to_path_buf(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::fs::rename(&swap, &real).unwrap();
                    std::os::unix::fs::symlink(&target, &swap).unwrap();
                    std::fs::remove_file(&swap).unwrap();
                    std::fs::rename(&real, &swap).unwrap();
                }
            })
        };
        let started = std::time::Instant::now();
        let (mut inside, mut leaked) = (0, Vec::new());
        for i in 0..3000 {
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
            let path = if i % 2 == 0 {
                "/swap/page.txt"
            } else {
                "/swap/"
            };
            let r = get(s.addr, path, &[]).await;
            let body = r.text();
            if body.contains("OUTSIDE-SECRET") || body.contains("outside-name") {
                leaked.push((path, r.status));
            }
            if body == "inside" {
                inside += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(
            leaked.is_empty(),
            "{policy}: {} leaks, first {:?}",
            leaked.len(),
            leaked.first()
        );
        assert!(inside > 0, "{policy}: the real directory was never served");
        s.stop().await;
    }
}

/// The review's attack at full size against the real binary: 100,000
/// spellings of one empty file, most with hundreds of slashes. Each was its
/// own entry holding its key (up to 8 KiB) while the cache counted nothing,
/// so memory grew by hundreds of megabytes with no eviction. Now the
/// process's memory stays within the configured bound plus a small
/// constant, and `ruchy_serve_file_cache_bytes` stays at what one entry holds.
#[test]
fn a_hundred_thousand_spellings_stay_within_the_bound_in_rss() {
    let dir = fixture();
    std::fs::write(dir.path().join("empty.txt"), b"").unwrap();
    let metrics = crate::common::free_local_addr();
    let d = Daemon::serving(
        dir.path(),
        &[
            ("RUCHY_SERVE_METRICS__ADDRESS", &metrics.to_string()),
            ("RUCHY_SERVE_FILES__CACHE_MAX_BYTES", "1MiB"),
            ("RUCHY_SERVE_FILES__CACHE_REVALIDATE", "600s"),
            ("RUCHY_SERVE_LOG__ACCESS_LOG", "off"),
        ],
    );
    // Every spelling distinct: 1 to 1,000 leading slashes, times a choice
    // of which letters of the name are percent-encoded.
    let spelling = |i: usize| -> String {
        let (slashes, mask) = (1 + i % 1000, i / 1000);
        let mut p = "/".repeat(slashes);
        for (j, b) in "empty.txt".bytes().enumerate() {
            if mask & (1 << j) != 0 {
                p.push_str(&format!("%{b:02X}"));
            } else {
                p.push(b as char);
            }
        }
        p
    };
    // Warm up: the runtime's threads, buffers and the one entry.
    let warm: Vec<String> = (0..2000).map(spelling).collect();
    assert_eq!(pipelined_empty_gets(d.addr, &warm), warm.len());
    let one = scrape_value(metrics, "ruchy_serve_file_cache_bytes");
    assert!(one > 0, "an empty file is not free");
    let before = d.rss();
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = d.addr;
            std::thread::spawn(move || {
                let paths: Vec<String> = (0..25_000)
                    .map(|i| spelling(2000 + t * 25_000 + i))
                    .collect();
                pipelined_empty_gets(addr, &paths)
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 100_000);
    assert!(started.elapsed() < Duration::from_secs(120));
    let grown = d.rss().saturating_sub(before);
    eprintln!(
        "100,000 spellings in {:?}: RSS {} KiB -> +{} KiB",
        started.elapsed(),
        before / 1024,
        grown / 1024
    );
    assert!(
        grown <= (1 << 20) + (8 << 20),
        "RSS grew by {} KiB for spellings of one empty file",
        grown / 1024
    );
    assert_eq!(
        scrape_value(metrics, "ruchy_serve_file_cache_bytes"),
        one,
        "one entry"
    );
    assert_eq!(
        scrape_value(metrics, "ruchy_serve_file_cache_evictions_total"),
        0
    );
}

/// A twin of another version with a modification time no older than its
/// original's (a rollback with `rsync -a` or `cp -p`, or every file pinned
/// to SOURCE_DATE_EPOCH) is not served: it does not decode to the
/// original. Identity clients and gzip clients get the same bytes. (Issue
/// 25 item 9: the gzip twin decoded to `color:blue` beside `color:red`.)
#[tokio::test]
async fn a_twin_of_another_version_is_not_served_whatever_its_mtime() {
    use ruchy_serve::config::Encoding;
    use ruchy_serve::serve::compress::compress;
    let dir = fixture();
    let css = dir.path().join("site.css");
    let pinned = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::write(&css, b"body { color:red }\n").unwrap();
    std::fs::write(
        dir.path().join("site.css.gz"),
        compress(Encoding::Gzip, 6, b"body { color:blue }\n").unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("site.css.br"),
        compress(Encoding::Brotli, 5, b"body { color:red }\n").unwrap(),
    )
    .unwrap();
    for name in ["site.css", "site.css.gz", "site.css.br"] {
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join(name))
            .unwrap();
        f.set_modified(pinned).unwrap();
    }
    let s = TestServer::start(dir.path(), "").await;
    let r = s
        .get_with("/site.css", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-encoding"),
        None,
        "the other version's twin was served"
    );
    assert_eq!(r.text(), "body { color:red }\n");
    assert!(
        metric(&s, "ruchy_serve_file_stale_twins_skipped_total") >= 1,
        "counted"
    );
    // The twin that does decode to it is served.
    let r = s
        .get_with("/site.css", &[("accept-encoding", "br, gzip")])
        .await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    let r = s
        .get_with("/site.css", &[("accept-encoding", "gzip, br;q=0.5")])
        .await;
    assert_eq!(
        r.header("content-encoding"),
        Some("br"),
        "the next coding the client takes"
    );
}
