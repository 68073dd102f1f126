//! Criterion micro-benchmarks of the per-request pieces: path decoding and
//! resolution, precondition and range evaluation, encoding negotiation, header
//! building, and one whole request answered from the file cache.
//!
//! `cargo bench --bench micro` (add `-- --quick` for a shorter run). These
//! time code, not the network: the end-to-end numbers are `benches/run.py`'s.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use ruchy_serve::config::{self, Encoding, Sources};
use ruchy_serve::metrics::Metrics;
use ruchy_serve::serve::conditional::{self, Preconditions, Validators};
use ruchy_serve::serve::tree::Wait;
use ruchy_serve::serve::{encoding, headers, range, resolve, Site};

/// A small tree and a configuration with cache and header rules, as a
/// production site would have.
fn site() -> (tempfile::TempDir, Arc<Site>) {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("assets")).unwrap();
    std::fs::write(www.join("index.html"), vec![b'x'; 1024]).unwrap();
    std::fs::write(www.join("assets/app.js"), vec![b'y'; 16 * 1024]).unwrap();
    // A real twin: one that does not decode to the original is not served.
    let gz = ruchy_serve::serve::compress::compress(Encoding::Gzip, 6, &[b'y'; 16 * 1024]).unwrap();
    std::fs::write(www.join("assets/app.js.gz"), gz).unwrap();
    let toml = dir.path().join("bench.toml");
    std::fs::write(
        &toml,
        format!(
            r#"root = "{}"
[headers]
cross_origin_isolation = true
[[cache.rules]]
glob = "assets/**"
value = "public, max-age=31536000, immutable"
[[headers.rules]]
glob = "**/*.html"
set = {{ "content-security-policy" = "default-src 'self'" }}
"#,
            www.display()
        ),
    )
    .unwrap();
    let cfg = config::load(&Sources {
        config_file: Some(toml),
        ..Sources::default()
    })
    .expect("bench config");
    let metrics = Metrics::new();
    let site = Arc::new(Site::new(
        Arc::new(cfg),
        metrics.file_cache.clone(),
        Arc::clone(&metrics.compression),
    ));
    (dir, site)
}

fn resolution(c: &mut Criterion) {
    let (_dir, site) = site();
    let mut g = c.benchmark_group("resolve");
    g.bench_function("decode_path", |b| {
        b.iter(|| resolve::decode_path(black_box("/assets/some%20dir/app.min.js")))
    });
    g.bench_function("resolve_file_with_twin", |b| {
        b.iter(|| {
            site.resolve(
                black_box("/assets/app.js"),
                None,
                Some("gzip, deflate, br"),
                Wait::Disk,
            )
            .unwrap()
        })
    });
    g.bench_function("resolve_missing", |b| {
        b.iter(|| {
            site.resolve(black_box("/nope/missing.html"), None, None, Wait::Disk)
                // ENOENT comes back as an error; the caller maps it to 404.
                .is_err_and(|e| resolve::is_not_found(&e))
        })
    });
    g.finish();
}

fn preconditions(c: &mut Criterion) {
    let v = Validators {
        etag: "\"5e0d5280a1b2c3d4e5f60718293a4b5c\"",
        last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
    };
    let mut g = c.benchmark_group("conditional");
    g.bench_function("if_none_match_list_hit", |b| {
        let pre = Preconditions {
            if_none_match: Some("\"aaa\", \"bbb\", W/\"5e0d5280a1b2c3d4e5f60718293a4b5c\""),
            ..Preconditions::default()
        };
        b.iter(|| conditional::evaluate(black_box(&pre), black_box(&v)))
    });
    g.bench_function("if_modified_since", |b| {
        let pre = Preconditions {
            if_modified_since: Some("Sun, 28 May 2026 12:00:00 GMT"),
            ..Preconditions::default()
        };
        b.iter(|| conditional::evaluate(black_box(&pre), black_box(&v)))
    });
    g.finish();
}

fn ranges(c: &mut Criterion) {
    let mut g = c.benchmark_group("range");
    g.bench_function("single", |b| {
        b.iter(|| range::evaluate(black_box("bytes=1000-1999"), 1 << 20, 16))
    });
    g.bench_function("multi_4", |b| {
        b.iter(|| range::evaluate(black_box("bytes=0-99, 200-299, 400-499, -100"), 1 << 20, 16))
    });
    g.finish();
}

fn negotiation_and_headers(c: &mut Criterion) {
    let (_dir, site) = site();
    let cfg = &site.config.headers;
    let mut g = c.benchmark_group("headers");
    g.bench_function("negotiate_accept_encoding", |b| {
        b.iter(|| {
            encoding::negotiate(
                black_box(Some("gzip;q=0.8, br;q=1.0, *;q=0.1")),
                &[Encoding::Brotli, Encoding::Gzip],
            )
        })
    });
    g.bench_function("content_type", |b| {
        let overrides = Default::default();
        b.iter(|| headers::content_type(black_box("assets/app.min.js"), &overrides))
    });
    g.bench_function("build_header_block", |b| {
        b.iter(|| {
            let mut h = HeaderMap::new();
            headers::apply_common(cfg, &mut h);
            if let Some(v) = headers::cache_control(cfg, black_box("assets/app.js")) {
                h.insert(http::header::CACHE_CONTROL, v.clone());
            }
            headers::apply_rules(cfg, black_box("index.html"), &mut h);
            h
        })
    });
    g.finish();
}

/// A whole GET answered from the file cache: what a hot keep-alive request
/// costs above hyper.
fn cached_request(c: &mut Criterion) {
    let (_dir, site) = site();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let req = http::Request::get("/index.html")
        .header("accept-encoding", "gzip, br")
        .body(())
        .unwrap();
    let budget = ruchy_serve::serve::body::Budget::default();
    let fields = ruchy_serve::serve::fields::Fields::of(req.headers());
    // Fill the cache first.
    let first = rt.block_on(ruchy_serve::serve::answer(
        Arc::clone(&site),
        &req,
        &fields,
        &budget,
    ));
    assert_eq!(first.status(), 200);
    c.bench_function("respond_cached_hit", |b| {
        b.iter(|| {
            let resp = rt.block_on(ruchy_serve::serve::answer(
                Arc::clone(&site),
                &req,
                &fields,
                &budget,
            ));
            debug_assert_eq!(resp.status(), 200);
            resp
        })
    });
}

criterion_group!(
    benches,
    resolution,
    preconditions,
    ranges,
    negotiation_and_headers,
    cached_request
);
criterion_main!(benches);
