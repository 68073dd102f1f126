//! Strong entity-tags derived from content, so that replicas serving the same
//! bytes behind one load balancer hand out the same ETag (nginx's
//! mtime-length tags differ whenever deploys touch mtimes differently).
//!
//! Hashing costs one read of the file, so results are cached per file version
//! ([`FileId`]: length, mtime, ctime, inode, device). Files above
//! `etag_hash_limit` get a tag from their identity instead: length, inode,
//! and modification and change times in nanoseconds. It stays strong (so
//! If-Range can resume large downloads) because no two versions of a file on
//! one machine share all four; the price is that replicas give the same
//! large file different tags (raise `etag_hash_limit` where that matters).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::sync::Mutex;

use crate::fileid::FileId;

use super::body::read_more_at;
use super::tree::Wait;

/// Bound on remembered tags; past it the map is cleared and refilled, which
/// costs one rehash per hot file and keeps memory flat under path scans.
const MAX_ENTRIES: usize = 65_536;
/// Read size while hashing: large enough to keep syscalls few.
const HASH_CHUNK: usize = 256 * 1024;
/// The longest file hashed on the runtime's thread (about 0.3 ms of
/// BLAKE3); longer ones are hashed on the blocking pool.
pub const INLINE_HASH_LIMIT: u64 = 1 << 20;

/// By a twin's inode: its version, its original's version, and whether the
/// one decodes to the other. Kept while both keep their identity, settled
/// or not: what it guards against (a rollback, pinned times) always changes
/// one, and decoding every twin of a site deployed a moment ago again each
/// `cache_revalidate` cost a fifth of w12's throughput.
type Verdicts = HashMap<(u64, u64), (FileId, FileId, bool)>;

/// By a file's inode: its version, its tag, and until when (coarse ms)
/// the tag is trusted.
type Tags = HashMap<(u64, u64), (FileId, String, u64)>;

/// How long what was learned of a file's bytes (its hash, whether a twin
/// decodes to it) is kept: while its identity stays the same, and, within
/// `settle` of its last change (when the identity does not vouch for the
/// bytes, [`FileId::settled`]), for `recheck` only. So a change through a
/// shared mapping is seen within `files.cache_revalidate`, as a change of
/// the file is, and a site deployed a moment ago is not hashed again on
/// every request meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Trust {
    /// `files.settle_time`.
    pub settle: std::time::Duration,
    /// `files.cache_revalidate`.
    pub recheck: std::time::Duration,
}

impl Trust {
    /// The trust `files` asks for.
    pub fn of(files: &crate::config::Files) -> Trust {
        Trust {
            settle: files.settle_time,
            recheck: files.cache_revalidate,
        }
    }

    /// Until when (coarse ms) knowledge of `ids`' bytes is kept.
    fn until(&self, ids: &[FileId]) -> u64 {
        let now = std::time::SystemTime::now();
        match ids.iter().all(|id| id.settled(now, self.settle)) {
            true => u64::MAX,
            false => crate::clock::coarse_now_ms() + self.recheck.as_millis() as u64,
        }
    }
}

#[derive(Default)]
/// Content ETags by inode (device and inode number), valid while the file
/// keeps its [`FileId`]: every name of one file (a hard link, a path
/// through a symlink under `follow_symlinks = "always"`) shares one hash.
/// Keyed by path, 39 spellings of one 8 MiB file were hashed 39 times.
pub struct EtagCache {
    map: Mutex<Tags>,
    /// Whether a precompressed twin (by its inode) decodes to its
    /// original's bytes, for one version of each.
    twins: Mutex<Verdicts>,
}

impl std::fmt::Debug for EtagCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtagCache").finish_non_exhaustive()
    }
}

impl EtagCache {
    /// The ETag (quotes included) of the open `file`.
    /// Under [`Wait::Never`] a file is hashed only from the page cache and
    /// only up to [`INLINE_HASH_LIMIT`]: a longer hash would hold the
    /// runtime's thread (`WouldBlock`: the blocking pool hashes it).
    pub fn etag(
        &self,
        file: &File,
        meta: &Metadata,
        hash_limit: u64,
        trust: Trust,
        wait: Wait,
    ) -> io::Result<String> {
        let key = FileId::of(meta);
        let inode = (key.dev, key.ino);
        if let Some((k, tag, until)) = self.map.lock().expect("etag cache").get(&inode) {
            if *k == key && crate::clock::coarse_now_ms() < *until {
                return Ok(tag.clone());
            }
        }
        let tag = if meta.len() <= hash_limit {
            if wait == Wait::Never && meta.len() > INLINE_HASH_LIMIT {
                return Err(super::tree::would_block());
            }
            hash_file(file, meta.len(), wait)?
        } else {
            format!(
                "\"{:x}-{:x}-{:x}-{:x}\"",
                key.len, key.ino, key.mtime_ns, key.ctime_ns
            )
        };
        // A file changed moments ago may change again without a new
        // identity (a write through a mapping): its tag is kept briefly.
        let until = trust.until(&[key]);
        let mut map = self.map.lock().expect("etag cache");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(inode, (key, tag.clone(), until));
        Ok(tag)
    }
}

impl EtagCache {
    /// Whether `twin` (`enc`-coded) decodes to exactly the bytes of
    /// `original`. The twin's modification time said so before, and a
    /// rollback (`rsync -a`, `cp -p`) or pinned times (`SOURCE_DATE_EPOCH`)
    /// could serve another version's twin; the bytes say it for sure. Each
    /// pair of versions is decoded and compared once; a twin that decodes
    /// past the original's length is refused without reading further.
    /// `original` is the original's identity as resolution found it, and
    /// `open_original` opens it, which only a pair not yet known needs (a
    /// known pair costs no system call). Under [`Wait::Never`] a pair not
    /// yet known is `WouldBlock`: the blocking pool decodes it.
    pub fn twin_matches(
        &self,
        (twin, twin_meta): (&File, &Metadata),
        original: FileId,
        open_original: impl FnOnce() -> io::Result<File>,
        enc: crate::config::Encoding,
        wait: Wait,
    ) -> io::Result<bool> {
        let t = FileId::of(twin_meta);
        let inode = (t.dev, t.ino);
        if let Some((kt, ko, verdict)) = self.twins.lock().expect("twin cache").get(&inode) {
            if *kt == t && *ko == original {
                return Ok(*verdict);
            }
        }
        if wait == Wait::Never {
            return Err(super::tree::would_block());
        }
        let file = open_original()?;
        // The version decoded against is the one opened.
        let o = FileId::of(&file.metadata()?);
        let verdict = decodes_to(twin, enc, &file, o.len)?;
        let mut map = self.twins.lock().expect("twin cache");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(inode, (t, o, verdict));
        Ok(verdict)
    }
}

/// Whether `twin`, decoded from `enc`, is exactly `original`'s `len` bytes.
fn decodes_to(
    twin: &File,
    enc: crate::config::Encoding,
    original: &File,
    len: u64,
) -> io::Result<bool> {
    use crate::config::Encoding;
    use std::io::Read;
    let reader = std::io::BufReader::new(twin.try_clone()?);
    let decoder: Box<dyn Read> = match enc {
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Encoding::Brotli => Box::new(brotli::Decompressor::new(reader, 64 << 10)),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    };
    // One byte past the original's length is enough to say no.
    let mut decoded = decoder.take(len + 1);
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut want = Vec::with_capacity(HASH_CHUNK);
    let mut at = 0u64;
    loop {
        let n = match decoded.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Not a valid stream of its coding: not the original.
            Err(_) => return Ok(false),
        };
        if at + n as u64 > len {
            return Ok(false);
        }
        want.clear();
        read_more_at(original, &mut want, n, at, Wait::Disk)?;
        if want[..] != buf[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(at == len)
}

/// BLAKE3 of the content, 128 bits in hex: collisions are not a concern and
/// hashing runs at memory speed.
fn hash_file(file: &File, len: u64, wait: Wait) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let chunk = HASH_CHUNK.min(len as usize).max(1);
    let mut buf = Vec::with_capacity(chunk);
    let mut off = 0u64;
    while off < len {
        buf.clear();
        read_more_at(file, &mut buf, chunk, off, wait)?;
        if buf.is_empty() {
            break;
        }
        hasher.update(&buf);
        off += buf.len() as u64;
    }
    let hash = hasher.finalize();
    let hex = hash.to_hex();
    Ok(format!("\"{}\"", &hex[..32]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// `file`'s tag from `cache`, hashed up to `limit`, trusted at once.
    fn tag_of(cache: &EtagCache, file: &File, limit: u64) -> String {
        let meta = file.metadata().unwrap();
        cache
            .etag(
                file,
                &meta,
                limit,
                Trust {
                    settle: std::time::Duration::ZERO,
                    recheck: std::time::Duration::ZERO,
                },
                Wait::Disk,
            )
            .unwrap()
    }

    #[test]
    fn same_content_gives_same_tag_in_different_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"hello").unwrap();
        std::fs::write(&b, b"hello").unwrap();
        let cache = EtagCache::default();
        let tag = |p: &std::path::Path| {
            let f = File::open(p).unwrap();
            tag_of(&cache, &f, 1 << 20)
        };
        assert_eq!(tag(&a), tag(&b));
        assert!(tag(&a).starts_with('"') && tag(&a).len() == 34);
    }

    /// Names of one file share one hash: the second name is answered from
    /// the cache, not hashed again (issue 25 item 10).
    #[test]
    fn every_name_of_a_file_shares_one_hash() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"hello").unwrap();
        for i in 0..5 {
            std::fs::hard_link(&a, dir.path().join(format!("link{i}"))).unwrap();
        }
        let cache = EtagCache::default();
        let mut tags = std::collections::HashSet::new();
        for name in ["a", "link0", "link1", "link2", "link3", "link4"] {
            let f = File::open(dir.path().join(name)).unwrap();
            let t = tag_of(&cache, &f, 1 << 20);
            tags.insert(t);
        }
        assert_eq!(tags.len(), 1);
        assert_eq!(
            cache.map.lock().unwrap().len(),
            1,
            "one hash per file, not per name"
        );
    }

    #[test]
    fn changed_content_changes_the_tag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let cache = EtagCache::default();
        let f = File::open(&p).unwrap();
        let first = tag_of(&cache, &f, 1 << 20);
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        w.write_all(b" two").unwrap();
        let f = File::open(&p).unwrap();
        let second = tag_of(&cache, &f, 1 << 20);
        assert_ne!(first, second);
    }

    #[test]
    fn files_over_the_limit_get_length_and_mtime_tags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![7u8; 100]).unwrap();
        let f = File::open(&p).unwrap();
        let tag = tag_of(&EtagCache::default(), &f, 10);
        assert!(tag.starts_with("\"64-"), "{tag}");
        // Rewritten in place, same length, old mtime put back: a new tag.
        let mtime = f.metadata().unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        w.write_all_at(&[8u8; 100], 0).unwrap();
        w.set_modified(mtime).unwrap();
        let again = tag_of(&EtagCache::default(), &f, 10);
        assert_ne!(tag, again);
    }
}
