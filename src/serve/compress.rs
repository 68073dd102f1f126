//! On-the-fly compression, once per file version and coding.
//!
//! A file `[compression]` applies to, with no precompressed twin the client
//! takes, is compressed on the blocking pool the first time a client asks
//! for it in a coding; the result is kept, keyed by the file's ETag (a
//! content hash, so two paths with the same bytes share it, and every
//! replica makes the same bytes and the same variant ETag), the coding and
//! its level, within `compression.cache_max_bytes` (oldest out first). The
//! path's cache entry then holds the variant too, so later requests are
//! answered like a cached file.
//!
//! Bounds: at most `compression.max_concurrent` compressions run at once,
//! each of at most `compression.max_size` bytes: a file the file cache
//! holds is compressed from its cached bytes, a larger one is read whole
//! for the compression (so at most `max_concurrent` x `max_size` bytes of
//! input are held at once) and then served from its kept variant. A request that finds its variant being made waits for it
//! instead of compressing again; one that finds every slot busy is answered
//! uncompressed at once rather than queued. Memory: the store keeps at most
//! `compression.cache_max_bytes`; a cache entry holds at most one variant
//! per coding of a file the file cache already holds (each smaller than the
//! file, and gone with the entry), not charged twice.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{watch, Semaphore};

use super::cache::{Prepared, Variant};
use crate::config::{Compression, Encoding};

/// (identity ETag, coding token, level): one compressed variant.
type Key = (String, &'static str, i64);

/// The compressed variants of one configuration generation.
#[derive(Debug)]
pub struct Compressor {
    kept: Mutex<Kept>,
    /// Variants being made, with the channel their waiters listen on.
    making: Mutex<HashMap<Key, watch::Receiver<Option<Bytes>>>>,
    slots: Arc<Semaphore>,
    /// `compression.cache_max_bytes`.
    limit: u64,
    /// Counters across generations.
    pub stats: Arc<Stats>,
}

/// How compression went (process-wide Prometheus handles; a reload's new
/// store counts into the same series).
#[derive(Debug)]
pub struct Stats {
    /// Variants made.
    pub made: prometheus::IntCounter,
    /// Requests answered uncompressed because every slot was busy.
    pub busy: prometheus::IntCounter,
    /// Compressions running now.
    pub running: prometheus::IntGauge,
    /// Bytes kept now.
    pub bytes: prometheus::IntGauge,
}

#[derive(Debug, Default)]
struct Kept {
    bytes: u64,
    by_key: HashMap<Key, Bytes>,
    order: VecDeque<Key>,
}

impl Compressor {
    /// An empty store for a generation configured with `cfg`.
    pub fn new(cfg: &Compression, stats: Arc<Stats>) -> Compressor {
        Compressor {
            kept: Mutex::default(),
            making: Mutex::default(),
            slots: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            limit: cfg.cache_max_bytes,
            stats,
        }
    }

    /// `identity` compressed in `enc`: kept, made now (waiting for it), or
    /// `None` when every compression slot is busy or compression failed.
    pub async fn variant(
        self: &Arc<Self>,
        cfg: &Compression,
        identity: &Variant,
        enc: Encoding,
    ) -> Option<Variant> {
        let body = identity.body.clone();
        self.variant_of(cfg, &identity.prepared, enc, move || Ok(body))
            .await
    }

    /// The representation `prepared` describes, compressed in `enc`, as
    /// [`Compressor::variant`]; `load` reads its bytes (a file the file
    /// cache does not hold), on the blocking pool and only when a
    /// compression starts, so a kept variant or a busy compressor reads
    /// nothing. A load that fails (the file changed under it) makes no
    /// variant.
    pub async fn variant_of<L>(
        self: &Arc<Self>,
        cfg: &Compression,
        prepared: &Prepared,
        enc: Encoding,
        load: L,
    ) -> Option<Variant>
    where
        L: FnOnce() -> std::io::Result<Bytes> + Send + 'static,
    {
        let level = cfg.level(enc);
        let key: Key = (prepared.etag.clone(), enc.token(), level);
        let body = match self.kept(&key) {
            Some(b) => b,
            None => self.make(key, enc, load, level).await?,
        };
        let etag = variant_etag(&prepared.etag, enc, level);
        let prepared = prepared.encoded(enc, etag, body.len() as u64);
        Some(Variant {
            prepared,
            body,
            file: None,
        })
    }

    fn kept(&self, key: &Key) -> Option<Bytes> {
        self.kept
            .lock()
            .expect("not poisoned")
            .by_key
            .get(key)
            .cloned()
    }

    /// Joins the making of `key`, or starts it when a slot is free.
    async fn make<L>(
        self: &Arc<Self>,
        key: Key,
        enc: Encoding,
        load: L,
        level: i64,
    ) -> Option<Bytes>
    where
        L: FnOnce() -> std::io::Result<Bytes> + Send + 'static,
    {
        let mut rx = {
            let mut making = self.making.lock().expect("not poisoned");
            match making.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    // A compression that finished between the caller's look
                    // at the kept store and this lock has kept its result
                    // before leaving `making`: look again, under the lock,
                    // rather than make and count it twice.
                    if let Some(b) = self.kept(&key) {
                        return Some(b);
                    }
                    let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                        self.stats.busy.inc();
                        return None;
                    };
                    let (tx, rx) = watch::channel(None);
                    making.insert(key.clone(), rx.clone());
                    // A task of its own: the request that started it may go
                    // away; the waiters and the store still get the result.
                    let this = Arc::clone(self);
                    let key = key.clone();
                    self.stats.running.inc();
                    tokio::spawn(async move {
                        let made =
                            tokio::task::spawn_blocking(move || compress(enc, level, &load()?))
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .map(Bytes::from);
                        drop(permit);
                        this.stats.running.dec();
                        if let Some(b) = &made {
                            this.keep(key.clone(), b.clone());
                            this.stats.made.inc();
                        }
                        this.making.lock().expect("not poisoned").remove(&key);
                        let _ = tx.send(made);
                    });
                    rx
                }
            }
        };
        // The sender sends once; a closed channel without a value is a
        // failed compression.
        let got = rx.wait_for(Option::is_some).await.ok()?.clone();
        got
    }

    fn keep(&self, key: Key, body: Bytes) {
        let mut k = self.kept.lock().expect("not poisoned");
        let limit = self.limit;
        if body.len() as u64 > limit || k.by_key.contains_key(&key) {
            // Kept already: counting it again would leave its bytes counted
            // after its only copy goes.
            return;
        }
        while k.bytes + body.len() as u64 > limit {
            let Some(old) = k.order.pop_front() else {
                break;
            };
            if let Some(b) = k.by_key.remove(&old) {
                k.bytes -= b.len() as u64;
            }
        }
        k.bytes += body.len() as u64;
        k.order.push_back(key.clone());
        k.by_key.insert(key, body);
        self.stats.bytes.set(k.bytes as i64);
    }
}

/// The ETag of a variant: the identity's (a content hash) with the coding
/// and level, so a change of either is a new validator.
fn variant_etag(identity: &str, enc: Encoding, level: i64) -> String {
    let inner = identity.trim_matches('"');
    format!("\"{inner}-{}{level}\"", enc.token())
}

/// `body` compressed in `enc` at `level`.
pub fn compress(enc: Encoding, level: i64, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match enc {
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::new(level as u32),
            );
            w.write_all(body)?;
            w.finish()
        }
        Encoding::Brotli => {
            let mut out = Vec::with_capacity(body.len() / 3);
            let params = brotli::enc::BrotliEncoderParams {
                quality: level as i32,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
            Ok(out)
        }
        Encoding::Zstd => zstd::bulk::compress(body, level as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compressor() -> Arc<Compressor> {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::load(&crate::config::Sources {
            root: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        let stats = Stats {
            made: prometheus::IntCounter::new("m", "m").unwrap(),
            busy: prometheus::IntCounter::new("b", "b").unwrap(),
            running: prometheus::IntGauge::new("r", "r").unwrap(),
            bytes: prometheus::IntGauge::new("k", "k").unwrap(),
        };
        Arc::new(Compressor::new(&cfg.compression, Arc::new(stats)))
    }

    fn key() -> Key {
        ("\"abc\"".into(), "gzip", 6)
    }

    /// A variant kept twice is counted once: its bytes leave the count
    /// with its only copy (issue 25 item 11).
    #[test]
    fn a_variant_kept_twice_is_counted_once() {
        let c = compressor();
        c.keep(key(), Bytes::from_static(b"0123456789"));
        c.keep(key(), Bytes::from_static(b"0123456789"));
        let k = c.kept.lock().unwrap();
        assert_eq!(k.bytes, 10);
        assert_eq!(k.order.len(), 1);
        assert_eq!(c.stats.bytes.get(), 10);
    }

    /// A request that looked at the kept store just before a compression
    /// finished, and reaches `make` just after it left `making`, gets the
    /// kept variant: nothing is loaded, made or counted again.
    #[tokio::test]
    async fn a_compression_that_finished_meanwhile_is_not_made_again() {
        let c = compressor();
        // What the finished task did: kept, then left `making`.
        c.keep(key(), Bytes::from_static(b"made once"));
        let loaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let l = Arc::clone(&loaded);
        let got = c
            .make(
                key(),
                Encoding::Gzip,
                move || {
                    l.store(true, std::sync::atomic::Ordering::Relaxed);
                    Ok(Bytes::from_static(b"identity"))
                },
                6,
            )
            .await;
        assert_eq!(got.as_deref(), Some(&b"made once"[..]));
        assert!(
            !loaded.load(std::sync::atomic::Ordering::Relaxed),
            "loaded and made again"
        );
        assert_eq!(c.stats.made.get(), 0);
        assert_eq!(c.kept.lock().unwrap().bytes, 9);
    }
}
