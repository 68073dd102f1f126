//! End to end: validators, conditional requests (RFC 9110 section 13), ranges
//! (section 14), precompressed twins and Cache-Control rules.

use std::time::{Duration, SystemTime};

use crate::common::{fixture, get, get_h2, request, TestServer};

#[tokio::test]
async fn etag_is_strong_content_hash_and_equal_across_servers() {
    let a = fixture();
    let b = fixture();
    // Same bytes, different mtimes: the ETag must still agree.
    let old = SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(b.path().join("hello.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let sa = TestServer::start(a.path(), "").await;
    let sb = TestServer::start(b.path(), "").await;
    let (ra, rb) = (sa.get("/hello.txt").await, sb.get("/hello.txt").await);
    let etag = ra.header("etag").unwrap();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    assert_eq!(ra.header("etag"), rb.header("etag"));
    assert_ne!(ra.header("last-modified"), rb.header("last-modified"));
    assert_ne!(etag, sa.get("/digits.txt").await.header("etag").unwrap());
}

#[tokio::test]
async fn etag_changes_when_the_file_changes_with_the_cache_off() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[files]\ncache_max_bytes = \"0\"").await;
    let before = s
        .get("/hello.txt")
        .await
        .header("etag")
        .unwrap()
        .to_string();
    std::fs::write(dir.path().join("hello.txt"), b"hello again\n").unwrap();
    let r = s.get("/hello.txt").await;
    assert_eq!(r.body.as_ref(), b"hello again\n");
    assert_ne!(r.header("etag").unwrap(), before);
}

#[tokio::test]
async fn cached_file_is_served_fresh_within_the_revalidate_interval() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[files]\ncache_revalidate = \"300ms\"").await;
    let before = s.get("/hello.txt").await;
    // Now cached: the next request is a hit.
    assert_eq!(
        s.get("/hello.txt").await.header("etag"),
        before.header("etag")
    );
    std::fs::write(dir.path().join("hello.txt"), b"hello again\n").unwrap();
    let changed = std::time::Instant::now();
    loop {
        let r = s.get("/hello.txt").await;
        if r.body.as_ref() == b"hello again\n" {
            assert_ne!(r.header("etag"), before.header("etag"));
            assert_eq!(r.header("content-length"), Some("12"));
            break;
        }
        // Until then the old bytes, whole and consistent with the old ETag.
        assert_eq!(r.body.as_ref(), b"hello world\n");
        assert_eq!(r.header("etag"), before.header("etag"));
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "stale for more than the interval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cache_hits_serve_ranges_conditionals_and_twins_like_the_file_path() {
    let dir = fixture();
    let cached = TestServer::start(dir.path(), "").await;
    let uncached = TestServer::start(dir.path(), "[files]\ncache_max_bytes = \"0\"").await;
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("range", "bytes=0-2, 10-12")],
        &[("range", "bytes=-3")],
        &[("accept-encoding", "gzip")],
        &[("accept-encoding", "br"), ("range", "bytes=1-3")],
    ];
    for path in ["/digits.txt", "/assets/app.js"] {
        for headers in cases {
            // Twice on the cached server: a fill, then a hit.
            for _ in 0..2 {
                let a = cached.get_with(path, headers).await;
                let b = uncached.get_with(path, headers).await;
                assert_eq!(a.status, b.status, "{path} {headers:?}");
                assert_eq!(a.header("etag"), b.header("etag"), "{path} {headers:?}");
                assert_eq!(a.header("content-range"), b.header("content-range"));
                assert_eq!(a.header("content-encoding"), b.header("content-encoding"));
                if a.header("content-type")
                    .is_some_and(|c| c.starts_with("multipart/"))
                {
                    assert_eq!(a.body.len(), b.body.len());
                } else {
                    assert_eq!(a.body, b.body, "{path} {headers:?}");
                }
            }
        }
    }
}

#[tokio::test]
async fn last_modified_matches_file_mtime() {
    let dir = fixture();
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("hello.txt"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let s = TestServer::start(dir.path(), "").await;
    assert_eq!(
        s.get("/hello.txt").await.header("last-modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
}

#[tokio::test]
async fn if_none_match_gives_304_with_validators_and_no_body() {
    let dir = fixture();
    let s = TestServer::start(
        dir.path(),
        "[[cache.rules]]\nglob = \"*.txt\"\nvalue = \"public, max-age=60\"",
    )
    .await;
    let first = s.get("/hello.txt").await;
    let etag = first.header("etag").unwrap();
    for inm in [
        etag.to_string(),
        format!("\"zzz\", {etag}"),
        format!("W/{etag}"),
        "*".into(),
    ] {
        let r = s.get_with("/hello.txt", &[("if-none-match", &inm)]).await;
        assert_eq!(r.status, 304, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag));
        assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    }
    let r = s
        .get_with("/hello.txt", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn if_modified_since_gives_304_unless_newer() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let lm = s
        .get("/hello.txt")
        .await
        .header("last-modified")
        .unwrap()
        .to_string();
    assert_eq!(
        s.get_with("/hello.txt", &[("if-modified-since", &lm)])
            .await
            .status,
        304
    );
    let earlier =
        httpdate::fmt_http_date(httpdate::parse_http_date(&lm).unwrap() - Duration::from_secs(10));
    assert_eq!(
        s.get_with("/hello.txt", &[("if-modified-since", &earlier)])
            .await
            .status,
        200
    );
    // If-None-Match present: If-Modified-Since is ignored (RFC 9110 13.2.2).
    let r = s
        .get_with(
            "/hello.txt",
            &[("if-modified-since", &lm), ("if-none-match", "\"x\"")],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn if_match_and_if_unmodified_since_give_412() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let first = s.get("/hello.txt").await;
    let etag = first.header("etag").unwrap();
    assert_eq!(
        s.get_with("/hello.txt", &[("if-match", "\"nope\"")])
            .await
            .status,
        412
    );
    assert_eq!(
        s.get_with("/hello.txt", &[("if-match", etag)]).await.status,
        200
    );
    assert_eq!(
        s.get_with("/hello.txt", &[("if-match", "*")]).await.status,
        200
    );
    // If-Match uses the strong comparison: a weak tag fails.
    assert_eq!(
        s.get_with("/hello.txt", &[("if-match", &format!("W/{etag}"))])
            .await
            .status,
        412
    );
    let long_ago = "Sat, 01 Jan 2000 00:00:00 GMT";
    assert_eq!(
        s.get_with("/hello.txt", &[("if-unmodified-since", long_ago)])
            .await
            .status,
        412
    );
    // If-Match passing makes If-Unmodified-Since irrelevant.
    assert_eq!(
        s.get_with(
            "/hello.txt",
            &[("if-match", etag), ("if-unmodified-since", long_ago)]
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn single_ranges_answer_206_with_content_range() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let cases = [
        ("bytes=0-9", "0123456789", "bytes 0-9/36"),
        ("bytes=30-", "uvwxyz", "bytes 30-35/36"),
        ("bytes=-3", "xyz", "bytes 33-35/36"),
        ("bytes=34-100", "yz", "bytes 34-35/36"),
    ];
    for (range, body, cr) in cases {
        let r = s.get_with("/digits.txt", &[("range", range)]).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.text(), body, "{range}");
        assert_eq!(r.header("content-range"), Some(cr), "{range}");
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
}

#[tokio::test]
async fn unsatisfiable_range_answers_416_with_length() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s.get_with("/digits.txt", &[("range", "bytes=36-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */36"));
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn malformed_range_is_ignored() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s.get_with("/digits.txt", &[("range", "bytes=9-2")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 36);
}

#[tokio::test]
async fn if_range_with_etag_or_date() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let full = s.get("/digits.txt").await;
    let etag = full.header("etag").unwrap();
    let lm = full.header("last-modified").unwrap();
    let r = s
        .get_with("/digits.txt", &[("range", "bytes=0-1"), ("if-range", etag)])
        .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (206, "01"));
    let r = s
        .get_with("/digits.txt", &[("range", "bytes=0-1"), ("if-range", lm)])
        .await;
    assert_eq!(r.status, 206);
    let r = s
        .get_with(
            "/digits.txt",
            &[("range", "bytes=0-1"), ("if-range", "\"stale\"")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 36);
    let r = s
        .get_with(
            "/digits.txt",
            &[
                ("range", "bytes=0-1"),
                ("if-range", "Sat, 01 Jan 2000 00:00:00 GMT"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn several_ranges_answer_multipart_byteranges() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s
        .get_with("/digits.txt", &[("range", "bytes=0-2, 10-12")])
        .await;
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(ct);
    let expected = format!(
        "--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-2/36\r\n\r\n012\r\n\
         --{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 10-12/36\r\n\r\nabc\r\n--{b}--\r\n",
        b = boundary
    );
    assert_eq!(r.text(), expected);
    assert_eq!(
        r.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
}

#[tokio::test]
async fn too_many_or_overlapping_ranges_get_full_200() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[files]\nmax_ranges = 3").await;
    let r = s
        .get_with("/digits.txt", &[("range", "bytes=0-0,2-2,4-4,6-6")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 36);
    let r = s
        .get_with("/digits.txt", &[("range", "bytes=0-10,5-15")])
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn head_ignores_range() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = request(s.addr, "HEAD", "/digits.txt", &[("range", "bytes=0-1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("36"));
}

#[tokio::test]
async fn precompressed_twin_follows_accept_encoding() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let plain = s.get("/assets/app.js").await;
    assert_eq!(plain.body.as_ref(), b"console.log('app');\n");
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));

    let (gz, br, zst) = (
        crate::common::twin("gzip"),
        crate::common::twin("br"),
        crate::common::twin("zstd"),
    );
    let cases = [
        ("gzip", Some("gzip"), &gz[..]),
        ("gzip, deflate, br, zstd", Some("br"), &br[..]),
        ("gzip;q=1, br;q=0.5", Some("gzip"), &gz[..]),
        ("br;q=0, zstd", Some("zstd"), &zst[..]),
        ("deflate", None, crate::common::APP_JS),
        ("*;q=0", None, crate::common::APP_JS),
    ];
    let mut etags = std::collections::HashSet::new();
    for (accept, enc, body) in cases {
        let r = s
            .get_with("/assets/app.js", &[("accept-encoding", accept)])
            .await;
        assert_eq!(r.status, 200, "{accept}");
        assert_eq!(r.header("content-encoding"), enc, "{accept}");
        assert_eq!(r.body.as_ref(), body, "{accept}");
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(r.header("vary"), Some("accept-encoding"));
        etags.insert(r.header("etag").unwrap().to_string());
    }
    // identity, gzip, br and zstd: each variant has its own ETag.
    assert_eq!(etags.len(), 4);
}

#[tokio::test]
async fn twin_304_and_ranges_use_the_twin() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let gz = s
        .get_with("/assets/app.js", &[("accept-encoding", "gzip")])
        .await;
    let etag = gz.header("etag").unwrap();
    let r = s
        .get_with(
            "/assets/app.js",
            &[("accept-encoding", "gzip"), ("if-none-match", etag)],
        )
        .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    let r = s
        .get_with(
            "/assets/app.js",
            &[("accept-encoding", "gzip"), ("range", "bytes=0-3")],
        )
        .await;
    assert_eq!(r.status, 206);
    let gz = crate::common::twin("gzip");
    assert_eq!(r.body.as_ref(), &gz[..4]);
    let whole = format!("bytes 0-3/{}", gz.len());
    assert_eq!(r.header("content-range"), Some(whole.as_str()));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
}

#[tokio::test]
async fn files_without_twins_do_not_vary() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s
        .get_with("/hello.txt", &[("accept-encoding", "gzip, br")])
        .await;
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.header("content-encoding"), None);
}

#[tokio::test]
async fn cache_control_rules_first_match_wins_then_default() {
    let dir = fixture();
    let s = TestServer::start(
        dir.path(),
        r#"
[cache]
default = "public, max-age=300"

[[cache.rules]]
glob = "*.html"
value = "no-cache"

[[cache.rules]]
glob = "assets/**"
value = "public, max-age=31536000, immutable"

[[cache.rules]]
glob = "assets/*.js"
value = "never used: the rule above matches first"
"#,
    )
    .await;
    assert_eq!(
        s.get("/docs/page.html").await.header("cache-control"),
        Some("no-cache")
    );
    assert_eq!(s.get("/").await.header("cache-control"), Some("no-cache"));
    assert_eq!(
        s.get("/assets/app.js").await.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        s.get("/hello.txt").await.header("cache-control"),
        Some("public, max-age=300")
    );
}

#[tokio::test]
async fn etag_is_the_same_over_http2() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let etag = get(s.addr, "/hello.txt", &[])
        .await
        .header("etag")
        .unwrap()
        .to_string();
    let r = get_h2(s.addr, &["/hello.txt"]).await;
    assert_eq!(r[0].header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn file_created_after_a_cached_404_is_served_within_the_interval() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[files]\ncache_revalidate = \"300ms\"").await;
    assert_eq!(s.get("/new.txt").await.status, 404);
    assert_eq!(s.get("/new.txt").await.status, 404);
    std::fs::write(dir.path().join("new.txt"), b"fresh\n").unwrap();
    let created = std::time::Instant::now();
    loop {
        let r = s.get("/new.txt").await;
        if r.status == 200 {
            assert_eq!(r.body.as_ref(), b"fresh\n");
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(1),
            "404 cached past the interval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bytes of an in-memory body, and where they live.
fn memory_body(resp: http::Response<ruchy_serve::serve::body::Body>) -> (usize, bytes::Bytes) {
    match resp.into_body() {
        ruchy_serve::serve::body::Body::Full(Some(b)) => (b.as_ptr() as usize, b),
        // Past 64 KiB, handed on in frames from the same buffer.
        ruchy_serve::serve::body::Body::Framed { rest, .. } => (rest.as_ptr() as usize, rest),
        other => panic!("not an in-memory body: {other:?}"),
    }
}

/// A cached file past `cache_revalidate` whose file kept its identity is
/// kept, not read again (a stat, not a copy): the next answer is the same
/// buffer. A change of content is read again.
#[tokio::test]
async fn a_revalidation_of_an_unchanged_file_keeps_its_bytes() {
    use ruchy_serve::serve::{answer, body::Budget, fields::Fields};
    let dir = fixture();
    let path = dir.path().join("page.bin");
    std::fs::write(&path, vec![b'a'; 100_000]).unwrap();
    // The file was written just now: trust its identity at once.
    let s = TestServer::start(
        dir.path(),
        "[files]\ncache_revalidate = \"50ms\"\nsettle_time = \"0s\"",
    )
    .await;
    let site = std::sync::Arc::clone(s.state.sites().default_site().unwrap());
    let req = http::Request::get("/page.bin").body(()).unwrap();
    let budget = Budget::default();
    let fields = Fields::of(req.headers());
    let ask = || answer(std::sync::Arc::clone(&site), &req, &fields, &budget);
    let (first, _) = memory_body(ask().await);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (again, bytes) = memory_body(ask().await);
    assert_eq!(
        first, again,
        "the revalidated file was read into a new buffer"
    );
    assert_eq!(bytes.len(), 100_000);
    drop(bytes);
    std::fs::write(&path, vec![b'b'; 100_000]).unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (_, changed) = memory_body(ask().await);
    assert!(
        changed.iter().all(|&b| b == b'b'),
        "new content after a change"
    );
}

/// Several ranges of a precompressed twin: the multipart body carries no
/// Content-Encoding (it is not encoded; its parts are ranges of the
/// encoded bytes), where one range keeps it.
#[tokio::test]
async fn multipart_ranges_of_an_encoded_representation_carry_no_content_encoding() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s
        .get_with(
            "/assets/app.js",
            &[("accept-encoding", "br"), ("range", "bytes=0-2, 5-7")],
        )
        .await;
    assert_eq!(r.status, 206);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("multipart/byteranges"));
    assert_eq!(r.header("content-encoding"), None);
    let br = crate::common::twin("br");
    let mut part = b"\r\n\r\n".to_vec();
    part.extend_from_slice(&br[..3]);
    part.extend_from_slice(b"\r\n");
    assert!(
        r.body.windows(part.len()).any(|w| w == part),
        "{:?}",
        r.body
    );
    let one = s
        .get_with(
            "/assets/app.js",
            &[("accept-encoding", "br"), ("range", "bytes=0-2")],
        )
        .await;
    assert_eq!(one.status, 206);
    assert_eq!(one.header("content-encoding"), Some("br"));
}
