//! The in-memory cache for small hot files: body as `Bytes`, validators and
//! the whole header block prepared once, so a hit costs no file-system call,
//! no blocking-pool trip and no header formatting.
//!
//! Entries are keyed by the raw request path and trusted for
//! `files.cache_revalidate` (1 s by default): after that the next request
//! resolves the path again, so a file changed on disk is served fresh within
//! that interval. Memory is bounded by `files.cache_max_bytes`; past it the
//! whole cache is dropped and refills with what is hot (a scan of many cold
//! paths cannot pin memory). Reload builds a new `Site`, so the cache starts
//! empty under a new configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::SystemTime;

use crate::clock::coarse_now_ms;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};

use super::headers;
use crate::config::{Config, Encoding};

/// Everything about one representation that does not depend on the request.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// ETag, Last-Modified, Cache-Control, Vary, rule and security headers:
    /// what 200, 206 and 304 all carry.
    pub headers: HeaderMap,
    /// `headers` plus what a whole 200 adds (Accept-Ranges,
    /// Content-Encoding, Content-Type, Content-Length): the common answer is
    /// one clone of a finished map.
    pub full: HeaderMap,
    /// Content-Type of the whole representation (ranges may wrap it).
    pub content_type: HeaderValue,
    /// The strong ETag, quotes included.
    pub etag: String,
    /// Last-Modified.
    pub modified: SystemTime,
    /// The content coding of a precompressed twin, `None` for identity.
    pub encoding: Option<Encoding>,
    /// Length of the representation in bytes.
    pub len: u64,
    /// `files.max_ranges` of the configuration this was prepared under.
    pub max_ranges: usize,
    /// An identity representation `[compression]` applies to: compressed
    /// variants may be made of it, and its answers carry `Vary`.
    pub compressible: bool,
}

impl Prepared {
    /// Prepares the headers of `rel_path` under `cfg`.
    pub fn new(
        cfg: &Config,
        rel_path: &str,
        etag: String,
        modified: SystemTime,
        has_twins: bool,
        encoding: Option<Encoding>,
        len: u64,
    ) -> Prepared {
        let hc = &cfg.headers;
        let content_type = headers::content_type(rel_path, &cfg.files.mime_types);
        // Within compression.max_size whether the file cache holds it or
        // not (a larger one is read whole to be compressed).
        let compressible = encoding.is_none() && cfg.compression.applies(&content_type, len);
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            h.insert(header::LAST_MODIFIED, v);
        }
        if let Some(cc) = headers::cache_control(hc, rel_path) {
            h.insert(header::CACHE_CONTROL, cc.clone());
        }
        if has_twins || compressible {
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        headers::apply_rules(hc, rel_path, &mut h);
        headers::apply_common(hc, &mut h);
        let mut full = ranged(&h, encoding);
        full.insert(header::CONTENT_TYPE, content_type.clone());
        full.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        Prepared {
            headers: h,
            full,
            content_type,
            etag,
            modified,
            encoding,
            len,
            max_ranges: cfg.files.max_ranges,
            compressible,
        }
    }

    /// This identity representation's headers for a variant of it in
    /// `encoding`, `len` bytes long, whose ETag is `etag`.
    pub fn encoded(&self, encoding: Encoding, etag: String, len: u64) -> Prepared {
        let mut h = self.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        let mut full = ranged(&h, Some(encoding));
        full.insert(header::CONTENT_TYPE, self.content_type.clone());
        full.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        Prepared {
            headers: h,
            full,
            content_type: self.content_type.clone(),
            etag,
            modified: self.modified,
            encoding: Some(encoding),
            len,
            max_ranges: self.max_ranges,
            compressible: false,
        }
    }
}

/// `headers` plus what every answer with a payload carries: Accept-Ranges,
/// and the twin's Content-Encoding.
pub fn ranged(headers: &HeaderMap, encoding: Option<Encoding>) -> HeaderMap {
    let mut h = headers.clone();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(enc) = encoding {
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(enc.token()),
        );
    }
    h
}

/// A cached representation.
#[derive(Debug)]
pub struct Variant {
    /// Headers and validators.
    pub prepared: Prepared,
    /// The whole body.
    pub body: Bytes,
    /// The version of the file the body was read from (`None`: made, not
    /// read): a revalidation that finds the file still this version keeps
    /// the body instead of reading it again.
    pub file: Option<crate::fileid::FileId>,
}

/// One request path: which twins exist, and each variant once loaded.
#[derive(Debug)]
pub struct Entry {
    /// Its key in the map: a variant kept later is counted only while the
    /// entry is still the one the map holds ([`FileCache::keep_made`]).
    key: Box<str>,
    /// When the entry was made, on the coarse clock (ms): reading it costs
    /// no clock call beyond the coarse one, and a TTL of a second does not
    /// need better.
    created_ms: u64,
    /// When a request last found it (coarse clock, ms): what eviction
    /// orders by, least recently used first.
    used_ms: AtomicU64,
    /// A path that resolved to nothing (nginx's open_file_cache_errors):
    /// scanners hammering missing paths then cost no file-system calls either.
    pub missing: bool,
    /// The twins that exist, in server preference order.
    pub available: Vec<Encoding>,
    /// identity, br, zstd, gzip.
    variants: [OnceLock<Arc<Variant>>; 4],
}

fn slot(encoding: Option<Encoding>) -> usize {
    match encoding {
        None => 0,
        Some(Encoding::Brotli) => 1,
        Some(Encoding::Zstd) => 2,
        Some(Encoding::Gzip) => 3,
    }
}

/// What an entry costs besides its key and variants: the map slot, the
/// `Arc<Entry>` and its fields, the allocator's rounding. Generous, so the
/// byte bound holds for the process's memory and not only for a counter.
const ENTRY_OVERHEAD: u64 = 256;
/// Inserts between two sweeps of inactive entries: often enough to keep
/// dead entries few, rare enough that the walk over the map costs nothing
/// per request.
const SWEEP_EVERY: u64 = 256;
/// An entry no request found for this long is dropped by the sweep
/// (nginx's `open_file_cache inactive=60s`). Expired entries younger than
/// that are kept: their revalidation is a stat, not a read.
const INACTIVE_MS: u64 = 60_000;
/// When the bound is reached, eviction frees this share of it at once (the
/// least recently used entries), so the walk that orders them runs once
/// per many inserts rather than on each.
const EVICT_SHARE: u64 = 8;
/// What a variant costs besides its body and header bytes.
const VARIANT_OVERHEAD: u64 = 512;

impl Variant {
    /// The bytes this variant holds: body, every header name and value, the
    /// validators, and a fixed overhead.
    fn cost(&self) -> u64 {
        let headers: usize = self
            .prepared
            .headers
            .iter()
            .chain(self.prepared.full.iter())
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() as u64
            + headers as u64
            + self.prepared.content_type.len() as u64
            + self.prepared.etag.len() as u64
            + VARIANT_OVERHEAD
    }
}

impl Entry {
    /// The bytes this entry counts against `cache_max_bytes`: its key, a
    /// fixed overhead and every variant loaded (so an empty file or a
    /// missing path is not free).
    fn charge(&self, key: &str) -> u64 {
        key.len() as u64
            + ENTRY_OVERHEAD
            + self
                .variants
                .iter()
                .filter_map(|v| v.get())
                .map(|v| v.cost())
                .sum::<u64>()
    }

    /// The cached variant for `encoding`, if loaded.
    pub fn variant(&self, encoding: Option<Encoding>) -> Option<&Arc<Variant>> {
        self.variants[slot(encoding)].get()
    }

    fn keep_made(&self, encoding: Encoding, made: Arc<Variant>) -> &Arc<Variant> {
        self.variants[slot(Some(encoding))].get_or_init(|| made)
    }
}

/// The cache's Prometheus handles (process-wide; a reload's new cache keeps
/// counting into the same series).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Requests answered from the cache.
    pub hits: prometheus::IntCounter,
    /// Requests that went to the file system.
    pub misses: prometheus::IntCounter,
    /// Entries dropped: least recently used past the bound, or unused for a
    /// minute.
    pub evictions: prometheus::IntCounter,
    /// Bytes charged to the cache now.
    pub bytes: prometheus::IntGauge,
    /// Precompressed twins passed over because their original is newer.
    pub stale_twins: prometheus::IntCounter,
    /// Where file-system work ran: inline or on the blocking pool.
    pub ran: super::body::Ran,
    /// Requests whose Basic credentials a location refused.
    pub auth_failures: prometheus::IntCounter,
    /// Requests answered 429 because the password checks' queue (or the
    /// client's share of it) was full.
    pub auth_busy: prometheus::IntCounter,
}

#[derive(Debug)]
/// Small hot files by normalized request path ([`key`]), bounded by
/// `files.cache_max_bytes` counting everything an entry holds.
pub struct FileCache {
    map: RwLock<HashMap<String, Arc<Entry>>>,
    bytes: AtomicU64,
    max_bytes: u64,
    max_file: u64,
    ttl_ms: u64,
    /// Entries unused this long are swept ([`INACTIVE_MS`]).
    inactive_ms: u64,
    stats: Stats,
    /// Inserts so far, for the periodic sweep.
    inserts: AtomicU64,
}

impl FileCache {
    /// Prepares the headers of `rel_path` under `cfg`.
    pub fn new(cfg: &Config, stats: Stats) -> FileCache {
        stats.bytes.set(0);
        FileCache {
            map: RwLock::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            max_bytes: cfg.files.cache_max_bytes,
            max_file: cfg.files.cache_max_file_size.min(cfg.files.cache_max_bytes),
            ttl_ms: cfg.files.cache_revalidate.as_millis() as u64,
            inactive_ms: INACTIVE_MS,
            stats,
            inserts: AtomicU64::new(0),
        }
    }

    /// Whether a file of `len` bytes may be cached.
    pub fn accepts(&self, len: u64) -> bool {
        self.max_bytes > 0 && len <= self.max_file
    }

    /// A fresh entry for `path`, if any.
    pub fn lookup(&self, path: &str) -> Option<Arc<Entry>> {
        if self.max_bytes == 0 {
            return None;
        }
        let map = self.map.read().expect("file cache lock");
        let entry = map.get(path)?;
        if !self.fresh(entry) {
            return None;
        }
        entry.used_ms.store(coarse_now_ms(), Ordering::Relaxed);
        Some(Arc::clone(entry))
    }

    /// The entry for `path` that is no longer trusted, if one is still
    /// held: what a revalidation compares the file against.
    pub fn expired(&self, path: &str) -> Option<Arc<Entry>> {
        if self.max_bytes == 0 {
            return None;
        }
        let map = self.map.read().expect("file cache lock");
        let entry = map.get(path)?;
        (!entry.missing && !self.fresh(entry)).then(|| Arc::clone(entry))
    }

    /// Whether `entry` is still trusted (younger than `cache_revalidate`).
    fn fresh(&self, entry: &Entry) -> bool {
        coarse_now_ms().saturating_sub(entry.created_ms) < self.ttl_ms
    }

    /// Counts a request answered from the cache.
    pub fn hit(&self) {
        self.stats.hits.inc();
    }

    /// Counts a request that was not.
    pub fn miss(&self) {
        self.stats.misses.inc();
    }

    /// The counters this cache reports into.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes charged now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Sweeps out entries unused for [`INACTIVE_MS`] every [`SWEEP_EVERY`]
    /// inserts (they would otherwise stay until the bound is reached), then,
    /// when `size` more bytes would pass the bound, drops the least recently
    /// used entries until an eighth of the bound is free besides `size`.
    ///
    /// It used to drop everything at the bound, and the sweep dropped every
    /// entry older than `cache_revalidate`: on a site larger than the cache
    /// (w12 in benches/README.md) a 64 MiB cache held about 10 MiB and
    /// counted as many evictions as misses.
    fn make_room(&self, map: &mut HashMap<String, Arc<Entry>>, size: u64) {
        if self.inserts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let now = coarse_now_ms();
            let inactive = self.inactive_ms;
            self.drop_where(map, |e| {
                now.saturating_sub(e.used_ms.load(Ordering::Relaxed)) >= inactive
            });
        }
        let held = self.bytes.load(Ordering::Relaxed);
        if held + size <= self.max_bytes {
            return;
        }
        // Free what `size` needs and an eighth of the bound more: the
        // oldest last uses first, cut at the use time that frees enough.
        let need = held + size - self.max_bytes + self.max_bytes / EVICT_SHARE;
        let mut uses: Vec<(u64, &String, &Arc<Entry>)> = map
            .iter()
            .map(|(k, e)| (e.used_ms.load(Ordering::Relaxed), k, e))
            .collect();
        uses.sort_unstable_by_key(|&(used, _, _)| used);
        let mut freed = 0;
        let mut cut = 0;
        // Only the entries that go are charged up: an eighth of the bound.
        for &(used, k, e) in &uses {
            if freed >= need {
                break;
            }
            freed += e.charge(k);
            cut = used;
        }
        drop(uses);
        self.drop_where(map, |e| e.used_ms.load(Ordering::Relaxed) <= cut);
    }

    /// Drops the entries `doomed` picks, counting them as evictions and
    /// giving back their bytes.
    fn drop_where(&self, map: &mut HashMap<String, Arc<Entry>>, doomed: impl Fn(&Entry) -> bool) {
        let mut freed = 0;
        let mut dropped = 0;
        map.retain(|k, e| {
            let drop = doomed(e);
            if drop {
                freed += e.charge(k);
                dropped += 1;
            }
            !drop
        });
        self.stats.evictions.inc_by(dropped);
        let now = self.bytes.load(Ordering::Relaxed);
        self.bytes
            .store(now.saturating_sub(freed), Ordering::Relaxed);
    }

    /// Keeps `made`, a variant compressed on the fly, in `entry`'s slot for
    /// its coding (left empty when the file has no twin in that coding), so
    /// the path's next requests find it there; the variant already there if
    /// one is. Counted against `cache_max_bytes` like every variant, and
    /// kept only while `entry` is still in the map and there is room (an
    /// entry already replaced would never give its bytes back; it used to
    /// be kept uncounted and subtracted later, and the count drifted low).
    pub fn keep_made(
        &self,
        entry: &Arc<Entry>,
        encoding: Encoding,
        made: Arc<Variant>,
    ) -> Arc<Variant> {
        let cost = made.cost();
        let map = self.map.read().expect("file cache lock");
        let live = map.get(&*entry.key).is_some_and(|e| Arc::ptr_eq(e, entry));
        if !live || self.bytes.load(Ordering::Relaxed) + cost > self.max_bytes {
            return made;
        }
        let kept = Arc::clone(entry.keep_made(encoding, Arc::clone(&made)));
        if Arc::ptr_eq(&kept, &made) {
            let now = self.bytes.fetch_add(cost, Ordering::Relaxed) + cost;
            self.stats.bytes.set(now as i64);
        }
        kept
    }

    /// Remembers that `path` resolved to nothing. The path's length counts
    /// against the byte bound, so a scan of random paths cannot grow memory.
    pub fn insert_missing(&self, path: &str) {
        if self.max_bytes == 0 {
            return;
        }
        let size = path.len() as u64 + ENTRY_OVERHEAD;
        let mut map = self.map.write().expect("file cache lock");
        self.make_room(&mut map, size);
        let entry = Arc::new(Entry {
            key: path.into(),
            created_ms: coarse_now_ms(),
            used_ms: AtomicU64::new(coarse_now_ms()),
            missing: true,
            available: Vec::new(),
            variants: Default::default(),
        });
        if let Some(old) = map.insert(path.to_string(), entry) {
            let freed = old.charge(path).min(self.bytes.load(Ordering::Relaxed));
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.stats
            .bytes
            .set(self.bytes.load(Ordering::Relaxed) as i64);
    }

    /// Stores a freshly resolved variant for `path`. The entry is reused when
    /// it is still fresh and lists the same twins; otherwise it is replaced.
    pub fn insert(&self, path: &str, available: &[Encoding], variant: Variant) -> Arc<Variant> {
        let mut size = variant.cost();
        let encoding = variant.prepared.encoding;
        let variant = Arc::new(variant);
        let mut map = self.map.write().expect("file cache lock");
        self.make_room(&mut map, size);
        let reuse = map
            .get(path)
            // Never a "missing" entry: a file created just after its path
            // was found missing must not land its bytes in an entry that
            // still answers 404.
            .filter(|e| !e.missing && self.fresh(e) && e.available == available)
            .cloned();
        let entry = match reuse {
            Some(e) => e,
            None => {
                let e = Arc::new(Entry {
                    key: path.into(),
                    created_ms: coarse_now_ms(),
                    used_ms: AtomicU64::new(coarse_now_ms()),
                    missing: false,
                    available: available.to_vec(),
                    variants: Default::default(),
                });
                if let Some(old) = map.insert(path.to_string(), Arc::clone(&e)) {
                    let freed: u64 = old.charge(path);
                    self.bytes.fetch_sub(
                        freed.min(self.bytes.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                }
                // A new entry: its key and overhead count too.
                size += path.len() as u64 + ENTRY_OVERHEAD;
                e
            }
        };
        if entry.variants[slot(encoding)]
            .set(Arc::clone(&variant))
            .is_ok()
        {
            self.bytes.fetch_add(size, Ordering::Relaxed);
        }
        self.stats
            .bytes
            .set(self.bytes.load(Ordering::Relaxed) as i64);
        variant
    }
}

/// The cache key for a request path: the path as decoded and normalized
/// (one slash between components, the trailing slash kept), so every
/// spelling of one file (`//a.txt`, `/%61.txt`, `/./a.txt` refused earlier)
/// is one entry. A path that is already in that form is its own key, with
/// no allocation; one that does not decode to UTF-8 is not cached at all
/// (two different byte strings must never share a key).
pub fn key(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    if plain(raw.as_bytes()) {
        return Some(Cow::Borrowed(raw));
    }
    resolved(raw, |c| std::str::from_utf8(c).ok().map(Cow::Borrowed)).map(Cow::Owned)
}

/// The resolved path of a request path whose decoded bytes may not be
/// UTF-8, with U+FFFD for each invalid sequence: what path rules match when
/// [`key`] has none (`None`: not a path at all).
pub fn lossy_key(raw: &str) -> Option<String> {
    resolved(raw, |c| Some(String::from_utf8_lossy(c)))
}

/// `raw` decoded and joined again from its plain components, each made text
/// by `text` (`None` from it: no key).
fn resolved(
    raw: &str,
    text: impl for<'c> Fn(&'c [u8]) -> Option<std::borrow::Cow<'c, str>>,
) -> Option<String> {
    let decoded = super::resolve::decode_path(raw)?;
    let mut out = String::with_capacity(raw.len());
    for c in &decoded.components {
        out.push('/');
        out.push_str(&text(c)?);
    }
    if decoded.trailing_slash || out.is_empty() {
        out.push('/');
    }
    Some(out)
}

/// Whether a path is its own key already: starts with `/`, no `//`, no
/// `%` or `\\`, no `.` or `..` component. One pass over the bytes (this
/// runs on every request).
fn plain(b: &[u8]) -> bool {
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' | b'\\' => return false,
            b'/' => match b.get(i + 1) {
                Some(b'/') => return false,
                Some(b'.') => {
                    let rest = &b[i + 1..];
                    let dots = if rest.starts_with(b"..") { 2 } else { 1 };
                    if matches!(rest.get(dots), None | Some(b'/')) {
                        return false;
                    }
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check says what the checks it replaced said.
    #[test]
    fn plain_agrees_with_the_string_checks() {
        let old = |raw: &str| {
            raw.starts_with('/')
                && !raw.contains("//")
                && !raw.bytes().any(|b| b == b'%' || b == b'\\')
                && !raw.split('/').any(|c| c == "." || c == "..")
        };
        for p in [
            "/",
            "/a",
            "/a/",
            "//a",
            "/a//b",
            "/.",
            "/..",
            "/./a",
            "/../a",
            "/a/.",
            "/a/..",
            "/a/./b",
            "/.a",
            "/..a",
            "/a.",
            "/a..",
            "/.well-known/x",
            "/a/...",
            "/%61",
            "/a\\b",
            "a",
            "",
            "/a/b.txt",
            "/a/.b/c",
            "/...",
            "/.../",
        ] {
            assert_eq!(plain(p.as_bytes()), old(p), "{p:?}");
        }
    }

    fn cache(max: &str) -> FileCache {
        cache_for(max, "0s")
    }

    fn cache_for(max: &str, revalidate: &str) -> FileCache {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                "root = {:?}\n[files]\ncache_max_bytes = \"{max}\"\ncache_revalidate = \"{revalidate}\"\n",
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        let cfg = crate::config::load(&crate::config::Sources {
            config_file: Some(file),
            ..Default::default()
        })
        .unwrap();
        FileCache::new(&cfg, crate::metrics::Metrics::new().file_cache.clone())
    }

    fn variant(cfg_bytes: usize) -> Variant {
        Variant {
            prepared: Prepared {
                headers: HeaderMap::new(),
                full: HeaderMap::new(),
                content_type: HeaderValue::from_static("text/plain"),
                etag: "\"x\"".into(),
                modified: SystemTime::UNIX_EPOCH,
                encoding: None,
                len: cfg_bytes as u64,
                max_ranges: 16,
                compressible: false,
            },
            body: Bytes::from(vec![0u8; cfg_bytes]),
            file: None,
        }
    }

    #[test]
    fn every_spelling_of_a_path_is_one_key() {
        for spelling in [
            "/a/b.txt",
            "//a/b.txt",
            "/a//b.txt",
            "/%61/b.txt",
            "/a%2Fb.txt",
        ] {
            assert_eq!(key(spelling).as_deref(), Some("/a/b.txt"), "{spelling}");
        }
        assert_eq!(key("/docs/").as_deref(), Some("/docs/"));
        assert_eq!(key("//docs//").as_deref(), Some("/docs/"));
        assert_eq!(key("/").as_deref(), Some("/"));
        assert_eq!(key("//").as_deref(), Some("/"));
        assert!(matches!(
            key("/plain.txt"),
            Some(std::borrow::Cow::Borrowed(_))
        ));
        // Not UTF-8 once decoded: not cached rather than sharing a key.
        assert_eq!(key("/%ff.txt"), None);
        assert_eq!(key("/a/../b"), None);
    }

    #[test]
    fn replacing_entries_keeps_the_byte_count_exact() {
        // A revalidate interval of 0 makes every entry stale at once, so each
        // insert replaces the previous entry for the path.
        let c = cache("1MiB");
        let cost = variant(100).cost();
        assert!(cost > 100 + VARIANT_OVERHEAD - 1);
        c.insert_missing("/a");
        assert_eq!(c.bytes(), 2 + ENTRY_OVERHEAD);
        c.insert("/a", &[], variant(100));
        assert_eq!(c.bytes(), 2 + ENTRY_OVERHEAD + cost);
        c.insert_missing("/a");
        assert_eq!(c.bytes(), 2 + ENTRY_OVERHEAD);
        c.insert("/b", &[], variant(100));
        assert_eq!(c.bytes(), 2 * (2 + ENTRY_OVERHEAD) + cost);
    }

    /// A variant made on the fly and kept in an entry is counted when kept
    /// and given back with the entry: the count stays exact (it drifted
    /// low: kept uncounted, subtracted on replace).
    #[test]
    fn variants_kept_later_are_counted_and_given_back() {
        let c = cache_for("1MiB", "60s");
        let v = c.insert("/a", &[], variant(100));
        let entry = c.lookup("/a").unwrap();
        let before = c.bytes();
        let made = Arc::new(variant(300));
        let cost = made.cost();
        let kept = c.keep_made(&entry, Encoding::Gzip, Arc::clone(&made));
        assert!(Arc::ptr_eq(&kept, &made));
        assert_eq!(c.bytes(), before + cost);
        // Kept once: a second one is not counted again.
        c.keep_made(&entry, Encoding::Gzip, Arc::new(variant(300)));
        assert_eq!(c.bytes(), before + cost);
        drop(v);
        c.insert_missing("/a");
        assert_eq!(
            c.bytes(),
            2 + ENTRY_OVERHEAD,
            "the old entry gave back all it held"
        );
        // An entry no longer in the map keeps nothing more.
        c.keep_made(&entry, Encoding::Brotli, Arc::new(variant(300)));
        assert_eq!(c.bytes(), 2 + ENTRY_OVERHEAD);
        assert!(entry.variant(Some(Encoding::Brotli)).is_none());
    }

    #[test]
    fn a_file_found_after_a_miss_does_not_land_in_the_missing_entry() {
        let c = cache_for("1MiB", "60s");
        c.insert_missing("/a");
        assert!(c.lookup("/a").unwrap().missing);
        c.insert("/a", &[], variant(10));
        let e = c.lookup("/a").unwrap();
        assert!(!e.missing, "the file is there now");
        assert!(e.variant(None).is_some());
    }

    /// The sweep drops entries no request used for `inactive_ms`, and
    /// keeps expired ones that are in use: their revalidation is a stat.
    /// (It dropped every expired entry, so a file asked for less than once
    /// per `cache_revalidate` was read whole each time.)
    #[test]
    fn the_sweep_drops_unused_entries_and_keeps_expired_ones_in_use() {
        let mut c = cache("64MiB"); // revalidate 0s: every entry expired at once
        c.inactive_ms = 100;
        c.insert("/used", &[], variant(10));
        c.insert("/unused", &[], variant(10));
        std::thread::sleep(std::time::Duration::from_millis(150));
        // A revalidation of /used makes its entry anew.
        c.insert("/used", &[], variant(10));
        for i in 0..SWEEP_EVERY {
            c.insert_missing(&format!("/missing-{i}"));
        }
        assert!(
            c.expired("/used").is_some(),
            "an expired entry in use was swept"
        );
        assert!(c.expired("/unused").is_none(), "an unused entry was kept");
        let charged: u64 = c.map.read().unwrap().iter().map(|(k, e)| e.charge(k)).sum();
        assert_eq!(c.bytes(), charged, "the count follows the sweep");
    }

    #[test]
    fn an_empty_file_is_not_free() {
        let c = cache("1MiB");
        c.insert("/empty", &[], variant(0));
        assert!(c.bytes() >= ENTRY_OVERHEAD + VARIANT_OVERHEAD);
    }

    /// Past the bound the least recently used entries go, an eighth of the
    /// bound at once; an entry in use stays. (Everything was dropped: on a
    /// site larger than the cache, the hot files went with the cold.)
    #[test]
    fn passing_the_bound_drops_the_least_recently_used() {
        let c = cache_for("20000", "60s");
        c.insert("/hot", &[], variant(600));
        let one = c.bytes();
        for i in 0..40 {
            // The coarse clock moves every few milliseconds.
            std::thread::sleep(std::time::Duration::from_millis(5));
            c.insert(&format!("/c{i}"), &[], variant(600));
            assert!(c.lookup("/hot").is_some(), "the hot entry went at /c{i}");
        }
        assert!(40 * one > 20000, "the bound was passed: {one}");
        assert!(c.bytes() <= 20000);
        assert!(c.lookup("/c39").is_some(), "the newest entry went");
        assert!(c.lookup("/c0").is_none(), "the oldest unused entry stayed");
        let held = c.map.read().unwrap().len() as u64;
        assert!(
            held * one > 20000 / 2,
            "only {held} entries of {one} bytes held"
        );
        let charged: u64 = c.map.read().unwrap().iter().map(|(k, e)| e.charge(k)).sum();
        assert_eq!(c.bytes(), charged);
    }
}
