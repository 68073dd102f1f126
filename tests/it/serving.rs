//! End to end: methods, resolution, directories, content types, headers,
//! error pages and fallback, over real HTTP/1.1 and HTTP/2 connections.

use crate::common::{fixture, get, get_h2, raw, raw_status, request, TestServer};

#[tokio::test]
async fn get_serves_file_bytes_with_length_and_type() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s.get("/hello.txt").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), b"hello world\n");
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
}

#[tokio::test]
async fn head_sends_get_headers_without_body() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let g = s.get("/hello.txt").await;
    let h = request(s.addr, "HEAD", "/hello.txt", &[]).await;
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    for name in [
        "content-length",
        "content-type",
        "etag",
        "last-modified",
        "cache-control",
    ] {
        assert_eq!(h.header(name), g.header(name), "{name}");
    }
    // Byte-exact: nothing follows the blank line of a HEAD response.
    let reply = raw(
        s.addr,
        b"HEAD /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.ends_with("\r\n\r\n"), "{reply:?}");
    assert!(reply.to_ascii_lowercase().contains("content-length: 12"));
}

#[tokio::test]
async fn options_answers_204_with_allow() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = request(s.addr, "OPTIONS", "/hello.txt", &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    let reply = raw(
        s.addr,
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&reply), 204);
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    for m in ["POST", "PUT", "DELETE", "PATCH", "TRACE", "BREW"] {
        let r = request(s.addr, m, "/hello.txt", &[]).await;
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"), "{m}");
    }
    // The file is untouched.
    assert_eq!(s.get("/hello.txt").await.body.as_ref(), b"hello world\n");
}

#[tokio::test]
async fn query_string_does_not_change_the_file() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s.get("/hello.txt?x=../../etc/passwd&v=2").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), b"hello world\n");
}

#[tokio::test]
async fn percent_encoded_names_are_decoded_once() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    assert_eq!(s.get("/with%20space.txt").await.body.as_ref(), b"spaced\n");
    assert_eq!(s.get("/%68ello.txt").await.status, 200);
}

#[tokio::test]
async fn directory_without_slash_redirects_308_keeping_query() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s.get("/docs?lang=en").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/docs/?lang=en"));
    let r = s.get("/docs/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), b"<h1>docs</h1>\n");
}

#[tokio::test]
async fn root_serves_index() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), b"<h1>home</h1>\n");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
}

#[tokio::test]
async fn index_files_are_tried_in_order() {
    let dir = fixture();
    std::fs::write(dir.path().join("docs/default.htm"), b"default").unwrap();
    let s = TestServer::start(
        dir.path(),
        "[files]\nindex = [\"default.htm\", \"index.html\"]",
    )
    .await;
    assert_eq!(s.get("/docs/").await.body.as_ref(), b"default");
    // Falls through to the second name where the first is missing.
    assert_eq!(s.get("/").await.body.as_ref(), b"<h1>home</h1>\n");
}

#[tokio::test]
async fn directory_without_index_is_404_unless_listing_enabled() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    assert_eq!(s.get("/empty-dir/").await.status, 404);
    s.stop().await;

    std::fs::write(dir.path().join("empty-dir/<b>&x.txt"), b"x").unwrap();
    let s = TestServer::start(dir.path(), "[files]\ndirectory_listing = true").await;
    let r = s.get("/empty-dir/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = r.text();
    assert!(html.contains("readme.md"), "{html}");
    assert!(html.contains("&lt;b&gt;&amp;x.txt"), "{html}");
    assert!(html.contains("href=\"./%3Cb%3E%26x.txt\""), "{html}");
    assert!(!html.contains("<b>&"), "names must be escaped");
}

#[tokio::test]
async fn file_with_trailing_slash_is_404() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    assert_eq!(s.get("/hello.txt/").await.status, 404);
    assert_eq!(s.get("/hello.txt/x").await.status, 404);
}

#[tokio::test]
async fn content_types_from_table_with_overrides() {
    let dir = fixture();
    let s = TestServer::start(
        dir.path(),
        "[files.mime_types]\njson = \"application/vnd.custom+json\"",
    )
    .await;
    assert_eq!(
        s.get("/module.wasm").await.header("content-type"),
        Some("application/wasm")
    );
    assert_eq!(
        s.get("/assets/app.js").await.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        s.get("/data.json").await.header("content-type"),
        Some("application/vnd.custom+json")
    );
}

#[tokio::test]
async fn cross_origin_isolation_preset_sends_three_headers() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[headers]\ncross_origin_isolation = true").await;
    for path in ["/index.html", "/missing"] {
        let r = s.get(path).await;
        assert_eq!(
            r.header("cross-origin-opener-policy"),
            Some("same-origin"),
            "{path}"
        );
        assert_eq!(
            r.header("cross-origin-embedder-policy"),
            Some("require-corp"),
            "{path}"
        );
        assert_eq!(
            r.header("cross-origin-resource-policy"),
            Some("same-origin"),
            "{path}"
        );
    }
    s.stop().await;
    let s = TestServer::start(dir.path(), "").await;
    let r = s.get("/index.html").await;
    assert_eq!(r.header("cross-origin-opener-policy"), None);
    assert_eq!(r.header("cross-origin-embedder-policy"), None);
}

#[tokio::test]
async fn nosniff_can_be_turned_off() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[headers]\nnosniff = false").await;
    assert_eq!(
        s.get("/hello.txt").await.header("x-content-type-options"),
        None
    );
}

#[tokio::test]
async fn custom_404_page_is_served_with_404_status() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[files]\nnot_found_page = \"/404.html\"").await;
    let r = s.get("/no/such/file").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body.as_ref(), b"<h1>custom not found</h1>\n");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let h = request(s.addr, "HEAD", "/no/such/file", &[]).await;
    assert_eq!(h.status, 404);
    assert!(h.body.is_empty());
}

#[tokio::test]
async fn plain_404_without_custom_page() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let r = s.get("/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "404 Not Found\n");
}

#[tokio::test]
async fn custom_5xx_page_for_io_errors() {
    let dir = fixture();
    // Under `always`, a symlink loop makes stat fail with ELOOP: an I/O
    // error that is neither "not found" nor "permission denied", so a 5xx
    // (the other policies refuse it as a link they cannot follow: 403).
    std::os::unix::fs::symlink("loop-b", dir.path().join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", dir.path().join("loop-b")).unwrap();
    let s = TestServer::start(
        dir.path(),
        "[files]\nserver_error_page = \"/50x.html\"\nfollow_symlinks = \"always\"",
    )
    .await;
    let r = s.get("/loop-a").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body.as_ref(), b"<h1>custom error</h1>\n");
}

#[tokio::test]
async fn spa_fallback_serves_index_for_unmatched_paths() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[files]\nfallback = \"/index.html\"").await;
    let r = s.get("/app/route/42").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), b"<h1>home</h1>\n");
    // Real files still win, and dotfiles stay hidden rather than falling back.
    assert_eq!(s.get("/hello.txt").await.body.as_ref(), b"hello world\n");
}

#[tokio::test]
async fn http2_prior_knowledge_serves_the_same_bytes() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let rs = get_h2(s.addr, &["/hello.txt", "/docs/page.html", "/missing"]).await;
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].body.as_ref(), b"hello world\n");
    assert_eq!(
        rs[0].header("etag"),
        s.get("/hello.txt").await.header("etag")
    );
    assert_eq!(rs[1].body.as_ref(), b"<h1>page</h1>\n");
    assert_eq!(rs[2].status, 404);
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let reqs = "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3)
        + "GET /digits.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let reply = raw(s.addr, reqs.as_bytes()).await;
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 4, "{reply}");
    assert!(reply.ends_with("0123456789abcdefghijklmnopqrstuvwxyz"));
}

#[tokio::test]
async fn connection_close_is_echoed() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    let reply = raw(
        s.addr,
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
}

#[tokio::test]
async fn large_file_streams_byte_exact() {
    let dir = fixture();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &data).unwrap();
    let s = TestServer::start(dir.path(), "").await;
    let r = get(s.addr, "/big.bin", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());
    assert!(r.body.as_ref() == data.as_slice());
    let h2 = get_h2(s.addr, &["/big.bin"]).await;
    assert!(h2[0].body.as_ref() == data.as_slice());
}

#[tokio::test]
async fn extra_header_rules_apply_by_glob() {
    let dir = fixture();
    let s = TestServer::start(
        dir.path(),
        r#"
[[headers.rules]]
glob = "assets/**"
set = { "X-Frame-Options" = "DENY", "X-Asset" = "yes" }

[[headers.rules]]
glob = "*.txt"
set = { "X-Text" = "1" }
"#,
    )
    .await;
    let r = s.get("/assets/app.js").await;
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-asset"), Some("yes"));
    assert_eq!(r.header("x-text"), None);
    assert_eq!(s.get("/hello.txt").await.header("x-text"), Some("1"));
}

/// A request followed at once by a half-close (`printf ... | nc -N`, a
/// health-check script) is answered before the connection closes, for
/// HTTP/1.1, HTTP/1.0 and a HEAD of a large file that is not cached.
#[test]
fn a_request_followed_by_a_half_close_is_answered() {
    use std::io::{Read, Write};
    let dir = crate::common::fixture();
    std::fs::write(dir.path().join("big.bin"), vec![1u8; 20 << 20]).unwrap();
    let d = crate::common::Daemon::serving(dir.path(), &[]);
    let requests: [&[u8]; 3] = [
        b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /hello.txt HTTP/1.0\r\n\r\n",
        b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    let mut answered = [0; 3];
    for round in 0..10 {
        for (i, req) in requests.iter().enumerate() {
            let mut c = std::net::TcpStream::connect(d.addr).unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            c.write_all(req).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            let _ = c.read_to_end(&mut reply);
            let reply = String::from_utf8_lossy(&reply);
            if reply.starts_with("HTTP/1.") && reply[8..].starts_with(" 200 ") {
                answered[i] += 1;
            } else {
                eprintln!("round {round}, request {i}: {reply:?}");
            }
        }
    }
    assert_eq!(answered, [10, 10, 10]);
}
