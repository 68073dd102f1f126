//! `[compression]`: a file nobody precompressed is compressed once per
//! version and coding, and every later request is answered from memory;
//! ranges, HEAD and 304 agree with GET; a busy compressor answers
//! uncompressed instead of queueing.

use std::io::Read;
use std::time::Duration;

use crate::common::{fixture, request, Resp, TestServer};

/// Text that compresses, `n` bytes, different for each `seed`.
fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "static", "file", "server", "header", "cache", "request", "bytes", "ruchy",
    ];
    let mut out = Vec::with_capacity(n + 16);
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    while out.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(x >> 33) as usize % words.len()].as_bytes());
        out.push(if (x >> 20) % 7 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(n);
    out
}

fn made(s: &TestServer) -> u64 {
    metric(s, "ruchy_serve_compression_variants_made_total")
}

fn metric(s: &TestServer, name: &str) -> u64 {
    let text = String::from_utf8(s.state.metrics.render()).unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

fn unbrotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(b, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

async fn get(s: &TestServer, path: &str, ae: &str) -> Resp {
    s.get_with(path, &[("accept-encoding", ae)]).await
}

#[tokio::test]
async fn each_version_is_compressed_once_and_served_from_memory() {
    let root = fixture();
    let v1 = text(64 << 10, 1);
    std::fs::write(root.path().join("app.js"), &v1).unwrap();
    let s = TestServer::start(root.path(), "[files]\ncache_revalidate = \"50ms\"\n").await;

    // Ten clients at once: one compression, ten identical answers.
    let answers =
        futures_util::future::join_all((0..10).map(|_| get(&s, "/app.js", "gzip, br"))).await;
    assert_eq!(made(&s), 1, "one compression for ten requests");
    for a in &answers {
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-encoding"), Some("br"));
        assert_eq!(a.header("vary"), Some("accept-encoding"));
        assert_eq!(a.body, answers[0].body);
    }
    assert_eq!(unbrotli(&answers[0].body), v1);
    assert!(
        answers[0].body.len() < v1.len() / 3,
        "{} bytes",
        answers[0].body.len()
    );
    let etag = answers[0].header("etag").unwrap().to_string();
    // Later requests: no new compression, the same bytes and validator.
    for _ in 0..5 {
        let again = get(&s, "/app.js", "br").await;
        assert_eq!(
            (again.header("etag"), &again.body),
            (Some(etag.as_str()), &answers[0].body)
        );
    }
    assert_eq!(made(&s), 1);
    // Each coding once: zstd and gzip decode to the same file.
    let z = get(&s, "/app.js", "zstd").await;
    assert_eq!(z.header("content-encoding"), Some("zstd"));
    assert_eq!(zstd::decode_all(&z.body[..]).unwrap(), v1);
    let g = get(&s, "/app.js", "gzip").await;
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&g.body[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, v1);
    assert_eq!(made(&s), 3);
    // Identity when the client takes none, still with Vary.
    let id = get(&s, "/app.js", "identity").await;
    assert_eq!(
        (id.header("content-encoding"), id.body.len()),
        (None, v1.len())
    );
    assert_eq!(id.header("vary"), Some("accept-encoding"));

    // A new version (rewritten in place): a new variant and validator.
    let v2 = text(64 << 10, 2);
    std::fs::write(root.path().join("app.js"), &v2).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let new = get(&s, "/app.js", "br").await;
    assert_ne!(new.header("etag"), Some(etag.as_str()));
    assert_eq!(unbrotli(&new.body), v2);
    assert_eq!(made(&s), 4);
}

#[tokio::test]
async fn ranges_head_and_304_follow_the_compressed_bytes() {
    let root = fixture();
    std::fs::write(root.path().join("data.txt"), text(20_000, 3)).unwrap();
    let s = TestServer::start(root.path(), "").await;
    let full = get(&s, "/data.txt", "br").await;
    let etag = full.header("etag").unwrap().to_string();
    assert!(etag.ends_with("-br9\""), "{etag}");
    let part = s
        .get_with(
            "/data.txt",
            &[("accept-encoding", "br"), ("range", "bytes=0-99")],
        )
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-encoding"), Some("br"));
    assert_eq!(part.body, full.body.slice(0..100));
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 0-99/{}", full.body.len()).as_str())
    );
    let head = request(s.addr, "HEAD", "/data.txt", &[("accept-encoding", "br")]).await;
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    assert_eq!(
        head.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    let cond = s
        .get_with(
            "/data.txt",
            &[("accept-encoding", "br"), ("if-none-match", &etag)],
        )
        .await;
    assert_eq!(cond.status, 304);
    assert_eq!(cond.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn what_is_not_compressed() {
    let root = fixture();
    std::fs::write(root.path().join("photo.png"), text(10_000, 4)).unwrap();
    std::fs::write(root.path().join("tiny.txt"), "short").unwrap();
    let s = TestServer::start(root.path(), "").await;
    for (path, why) in [
        ("/photo.png", "not a compressible type"),
        ("/tiny.txt", "below min_size"),
    ] {
        let r = get(&s, path, "br, gzip").await;
        assert_eq!(r.header("content-encoding"), None, "{why}");
    }
    // Larger than compression.max_size (8 MiB by default): streamed as it
    // is, and so not varying by Accept-Encoding either.
    std::fs::write(root.path().join("large.txt"), text(9 << 20, 8)).unwrap();
    let large = get(&s, "/large.txt", "br").await;
    assert_eq!(
        (large.header("content-encoding"), large.header("vary")),
        (None, None)
    );
    assert_eq!(large.body.len(), 9 << 20);
    // A twin the client takes wins over compressing the original.
    let r = get(&s, "/assets/app.js", "gzip").await;
    assert_eq!(r.body.as_ref(), crate::common::twin("gzip"));
    assert_eq!(made(&s), 0);
    // Off: nothing is compressed.
    std::fs::write(root.path().join("page.txt"), text(10_000, 5)).unwrap();
    let off = TestServer::start(root.path(), "[compression]\nenabled = false\n").await;
    assert_eq!(
        get(&off, "/page.txt", "br")
            .await
            .header("content-encoding"),
        None
    );
}

/// A text file larger than the file cache keeps (1 MiB by default) but
/// within compression.max_size is compressed once per version too: read
/// whole for the compression only, then answered from the kept variant; a
/// client that takes no coding gets the file streamed.
#[tokio::test]
async fn files_larger_than_the_file_cache_are_compressed_once_too() {
    let root = fixture();
    let v1 = text(3 << 20, 11);
    std::fs::write(root.path().join("big.js"), &v1).unwrap();
    let s = TestServer::start(root.path(), "").await;
    let first = get(&s, "/big.js", "br").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-encoding"), Some("br"));
    assert_eq!(first.header("vary"), Some("accept-encoding"));
    assert!(first.body.len() < v1.len() / 2, "{}", first.body.len());
    assert_eq!(unbrotli(&first.body), v1);
    let etag = first.header("etag").unwrap().to_string();
    assert!(etag.ends_with("-br9\""), "{etag}");
    for _ in 0..3 {
        let again = get(&s, "/big.js", "br").await;
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("etag"), Some(etag.as_str()));
    }
    assert_eq!(made(&s), 1, "compressed once");
    // A range of the compressed bytes.
    let part = s
        .get_with(
            "/big.js",
            &[("accept-encoding", "br"), ("range", "bytes=10-19")],
        )
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, first.body.slice(10..20));
    // Identity, streamed, still with Vary.
    let plain = get(&s, "/big.js", "identity").await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("accept-encoding"));
    assert_eq!(plain.body.len(), v1.len());
    // Rewritten in place: a new version, compressed anew.
    let v2 = text(3 << 20, 12);
    std::fs::write(root.path().join("big.js"), &v2).unwrap();
    let second = get(&s, "/big.js", "br").await;
    assert_eq!(unbrotli(&second.body), v2);
    assert_ne!(second.header("etag"), Some(etag.as_str()));
    assert_eq!(made(&s), 2);
}

/// One compression slot, held by a slow compression: a request for another
/// file is answered at once, uncompressed, and counted; requests for the
/// file being compressed wait for it and get it.
#[tokio::test]
async fn a_busy_compressor_answers_uncompressed_instead_of_queueing() {
    let root = fixture();
    std::fs::write(root.path().join("big.txt"), text(1 << 20, 6)).unwrap();
    std::fs::write(root.path().join("other.txt"), text(10_000, 7)).unwrap();
    let s = TestServer::start(
        root.path(),
        "[files]\ncache_max_file_size = \"8MiB\"\n\
         [compression]\nmax_concurrent = 1\nbrotli_level = 11\n",
    )
    .await;
    let addr = s.addr;
    let slow: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                crate::common::get(addr, "/big.txt", &[("accept-encoding", "br")]).await
            })
        })
        .collect();
    // Once the slow compression holds the slot, another file is answered
    // at once and uncompressed.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&s, "ruchy_serve_compression_running") == 0 {
        assert!(
            std::time::Instant::now() < until,
            "the compression never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = get(&s, "/other.txt", "br").await;
    assert_eq!(
        (other.status.as_u16(), other.header("content-encoding")),
        (200, None)
    );
    assert_eq!(other.body.len(), 10_000);
    assert_eq!(metric(&s, "ruchy_serve_compression_busy_total"), 1);
    for t in slow {
        let r = t.await.unwrap();
        assert_eq!(
            r.header("content-encoding"),
            Some("br"),
            "waited for the variant being made"
        );
    }
    assert_eq!(
        made(&s),
        1,
        "the three requests for big.txt shared one compression"
    );
    // The slot is free again: the other file is compressed now.
    assert_eq!(
        get(&s, "/other.txt", "br").await.header("content-encoding"),
        Some("br")
    );
}

/// `compression.cache_max_bytes` holds however many files are compressed:
/// the oldest variants go first, and a file compressed again still decodes.
#[tokio::test]
async fn the_kept_variants_stay_within_their_budget() {
    let root = fixture();
    for i in 0..12u64 {
        std::fs::write(root.path().join(format!("f{i}.txt")), text(24_000, 100 + i)).unwrap();
    }
    let s = TestServer::start(root.path(), "[compression]\ncache_max_bytes = \"16KiB\"\n").await;
    let mut peak = 0;
    for i in 0..12u64 {
        let r = get(&s, &format!("/f{i}.txt"), "br").await;
        assert_eq!(unbrotli(&r.body), text(24_000, 100 + i));
        peak = peak.max(metric(&s, "ruchy_serve_compression_cache_bytes"));
    }
    assert_eq!(made(&s), 12);
    assert!(peak > 0 && peak <= 16 << 10, "{peak} bytes kept");
}
