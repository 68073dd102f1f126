//! Property tests (proptest): path decoding never yields a way out of the
//! root, and a single-range 206 body is always the exact slice of the file.
//! The fuzz targets in fuzz/ explore the same functions by coverage.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use http_body_util::BodyExt;
use proptest::prelude::*;
use ruchy_serve::config::{self, Sources};
use ruchy_serve::metrics::Metrics;
use ruchy_serve::serve::{self, range, resolve, Site};

use crate::common::ConfigFile;

/// Request paths built from pieces that attack containment: dot segments in
/// every spelling, separators, NUL, overlong and double encodings.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%252e%252e".to_string()),
        Just(".%2e".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("\\".to_string()),
        Just("%00".to_string()),
        Just("%c0%ae".to_string()),
        Just("etc".to_string()),
        Just("passwd".to_string()),
        Just("".to_string()),
        "[a-zA-Z0-9._~-]{1,8}",
        "(%[0-9a-fA-F]{2}){1,3}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| format!("/{}", v.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// A directory redirect's Location is one path on this host: one leading
    /// slash, never the protocol-relative `//host`, whatever the request
    /// spelled.
    #[test]
    fn redirect_locations_never_leave_the_host(raw in hostile_path()) {
        if let Some(decoded) = resolve::decode_path(&raw) {
            let location = resolve::location_of(&decoded.components);
            prop_assert!(location.starts_with('/'), "{raw} -> {location}");
            prop_assert!(!location.starts_with("//"), "{raw} -> {location}");
            prop_assert!(!location.contains("/./") && !location.contains("/../"), "{raw} -> {location}");
            prop_assert!(location.bytes().all(|b| b.is_ascii_graphic()), "{raw} -> {location}");
        }
    }

    #[test]
    fn decoded_paths_stay_below_the_root(raw in hostile_path()) {
        let root = Path::new("/srv/www");
        if let Some(decoded) = resolve::decode_path(&raw) {
            let mut joined = PathBuf::from(root);
            for c in &decoded.components {
                prop_assert!(!c.is_empty());
                prop_assert!(c.as_slice() != b"." && c.as_slice() != b"..", "{raw}");
                prop_assert!(!c.contains(&b'/') && !c.contains(&0) && !c.contains(&b'\\'), "{raw}");
                joined.push(std::ffi::OsStr::new(std::str::from_utf8(c).unwrap_or("x")));
            }
            prop_assert!(joined.starts_with(root), "{raw} -> {}", joined.display());
            prop_assert!(
                joined.components().all(|c| !matches!(c, Component::ParentDir)),
                "{raw} -> {}", joined.display()
            );
        }
    }

    #[test]
    fn ranges_are_always_inside_the_file(
        header in "bytes=[0-9 ,-]{0,40}",
        len in 0u64..10_000,
    ) {
        if let range::RangeOutcome::Partial(ranges) = range::evaluate(&header, len, 16) {
            prop_assert!(!ranges.is_empty());
            for r in ranges {
                prop_assert!(r.start <= r.end && r.end < len, "{header} len {len}: {r:?}");
            }
        }
    }
}

/// A site serving one file of `content`.
fn site(content: &[u8]) -> (tempfile::TempDir, Arc<Site>) {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("f.bin"), content).unwrap();
    // A tiny cache limit, so both the cached and the streamed path are hit.
    let toml = ConfigFile::new(&www, "[files]\ncache_max_file_size = \"2KiB\"\n");
    let cfg = config::load(&Sources {
        config_file: Some(toml.path.clone()),
        ..Sources::default()
    })
    .unwrap();
    let metrics = Metrics::new();
    let site = Site::new(
        Arc::new(cfg),
        metrics.file_cache.clone(),
        Arc::clone(&metrics.compression),
    );
    (dir, Arc::new(site))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_206_body_is_the_exact_slice(
        content in prop::collection::vec(any::<u8>(), 1..6000),
        a in 0u64..7000,
        span in 0u64..7000,
        suffix in any::<bool>(),
    ) {
        let (_dir, site) = site(&content);
        let len = content.len() as u64;
        let header = if suffix { format!("bytes=-{}", span + 1) } else { format!("bytes={a}-{}", a + span) };
        let req = http::Request::get("/f.bin").header("range", &header).body(()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, headers, body) = rt.block_on(async {
            let resp = serve::answer(Arc::clone(&site), &req, &serve::fields::Fields::of(req.headers()), &Default::default()).await;
            let (parts, body) = resp.into_parts();
            (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
        });
        let expected: Option<(u64, u64)> = if suffix {
            Some((len.saturating_sub(span + 1), len - 1))
        } else if a < len {
            Some((a, (a + span).min(len - 1)))
        } else {
            None
        };
        match expected {
            Some((start, end)) => {
                prop_assert_eq!(status.as_u16(), 206, "{}", header);
                prop_assert_eq!(&body[..], &content[start as usize..=end as usize]);
                let cr = format!("bytes {start}-{end}/{len}");
                prop_assert_eq!(headers["content-range"].to_str().unwrap(), cr.as_str());
                prop_assert_eq!(headers["content-length"].to_str().unwrap(), body.len().to_string());
            }
            None => prop_assert_eq!(status.as_u16(), 416, "{}", header),
        }
    }
}
