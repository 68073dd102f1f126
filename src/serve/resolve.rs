//! Request path -> file, as an [`Outcome`]. All file-system work for one
//! request happens here, synchronously, inside a single `spawn_blocking` call:
//! stat, symlink policy, index files, precompressed twins, open, validators.
//!
//! Containment is structural: the path is percent-decoded once and only plain
//! components are accepted, so `..` can never be joined onto the root. The root
//! was canonicalized at start-up; symlinks are then checked against it.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{Config, Encoding};
use crate::fileid::FileId;

use super::encoding::negotiate;
use super::etag::{EtagCache, Trust};
use super::tree::{is_escape, is_would_block, Tree, Wait};

/// What a request path resolves to.
#[derive(Debug)]
pub enum Outcome {
    /// A regular file, opened.
    File(Box<Found>),
    /// A directory asked for without its trailing slash: 308 to this location.
    Redirect(String),
    /// A directory without an index, listing enabled.
    Listing(PathBuf),
    /// Nothing there (or hidden by the dotfile policy).
    NotFound,
    /// Exists but policy or permissions forbid serving it.
    Forbidden,
    /// The path itself is malformed (NUL, `..`, backslash, bad escapes).
    BadRequest,
}

/// An opened regular file and everything needed to answer for it.
#[derive(Debug)]
pub struct Found {
    /// Opened before the validators were computed, so the bytes we send are
    /// the bytes the validators describe (unless the file is rewritten in
    /// place while we stream it, which the body detects by length).
    pub file: File,
    /// The identity of the opened file, taken with the validators.
    pub id: FileId,
    /// Length when opened.
    pub len: u64,
    /// Modification time when opened (Last-Modified).
    pub modified: SystemTime,
    /// The strong ETag, quotes included.
    pub etag: String,
    /// The coding of the twin chosen, `None` for the file itself.
    pub encoding: Option<Encoding>,
    /// Whether any twin exists: then every response varies on Accept-Encoding.
    pub has_twins: bool,
    /// The twins that exist, in server preference order.
    pub available: Vec<Encoding>,
    /// Path of the requested (not twin) file relative to the root, `/`-separated:
    /// what content type, cache and header rules match against.
    pub rel_path: String,
    /// The file's own request path (percent-encoded) when it is not the
    /// path asked for: a directory's index, a `files.try` candidate. The
    /// request meets that path's location before it is served (nginx's
    /// internal redirect); `None` for the path itself, at no cost.
    pub served: Option<String>,
}

impl Found {
    /// The version of the file the headers describe: the body checks that
    /// the file stays this version while it streams.
    pub fn version(&self) -> FileId {
        self.id
    }
}

/// A decoded request path: plain components and whether it ended in `/`.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedPath {
    /// The decoded components, none empty, `.` or `..`.
    pub components: Vec<Vec<u8>>,
    /// The path ended in `/`.
    pub trailing_slash: bool,
}

/// Percent-decodes once and keeps only plain components. Refuses NUL,
/// backslash, `.` and `..` (also when they were escaped), so nothing decoded
/// here can climb out of the root. Empty components (`//`) are skipped.
pub fn decode_path(raw: &str) -> Option<DecodedPath> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    if decoded.first() != Some(&b'/') {
        return None;
    }
    if decoded.iter().any(|&b| b == 0 || b == b'\\') {
        return None;
    }
    let mut components = Vec::new();
    for comp in decoded.split(|&b| b == b'/') {
        match comp {
            b"" => continue,
            b"." | b".." => return None,
            c => components.push(c.to_vec()),
        }
    }
    Some(DecodedPath {
        trailing_slash: decoded.len() > 1 && decoded.ends_with(b"/"),
        components,
    })
}

/// Resolves `raw_path` (the URI path, still percent-encoded) under the config.
/// `query` is kept on redirects. Under [`Wait::Never`] every lookup and
/// read comes from the kernel's caches or the resolution stops with
/// `WouldBlock` ([`super::tree::is_would_block`]), having changed nothing.
pub fn resolve(
    cfg: &Config,
    etags: &EtagCache,
    stale_twins: &prometheus::IntCounter,
    raw_path: &str,
    query: Option<&str>,
    accept_encoding: Option<&str>,
    wait: Wait,
) -> io::Result<Outcome> {
    let Some(decoded) = decode_path(raw_path) else {
        return Ok(Outcome::BadRequest);
    };
    if !cfg.files.dotfiles && hidden(&decoded.components, &cfg.files.dotfiles_allow) {
        return Ok(Outcome::NotFound);
    }
    let mut path = cfg.root.clone();
    for c in &decoded.components {
        path.push(OsStr::from_bytes(c));
    }
    let tree = Tree::open(cfg, wait)?;
    let Some((path, meta)) = tree.check(&path)? else {
        return Ok(Outcome::Forbidden);
    };
    let mut rel: Vec<&[u8]> = decoded.components.iter().map(|c| c.as_slice()).collect();
    let mut served = None;
    let (path, meta) = if meta.is_dir() {
        if !decoded.trailing_slash && !decoded.components.is_empty() {
            // Built from the decoded components, never from the request's
            // spelling: `//evil.com` must not become the protocol-relative
            // `//evil.com/`, which a browser follows to another host.
            let mut location = location_of(&decoded.components);
            if let Some(q) = query {
                location.push('?');
                location.push_str(q);
            }
            return Ok(Outcome::Redirect(location));
        }
        let mut index = None;
        for name in &cfg.files.index {
            match tree.check(&path.join(name)) {
                Ok(Some((p, m))) if m.is_file() => {
                    index = Some((p, m, name));
                    break;
                }
                Ok(_) => continue,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        match index {
            Some((p, m, name)) => {
                rel.push(name.as_bytes());
                served = Some(file_path(&rel));
                (p, m)
            }
            None if cfg.files.directory_listing => return Ok(Outcome::Listing(path)),
            None => return Ok(Outcome::NotFound),
        }
    } else if decoded.trailing_slash {
        // `/file.txt/`: nginx and the file system both say no such directory.
        return Ok(Outcome::NotFound);
    } else {
        (path, meta)
    };
    if !meta.is_file() {
        // FIFOs, sockets, devices: opening a FIFO would block a thread forever.
        return Ok(Outcome::Forbidden);
    }
    let rel_path = rel
        .iter()
        .map(|c| String::from_utf8_lossy(c))
        .collect::<Vec<_>>()
        .join("/");

    // Precompressed twins: `F.br` beside `F`, under the same symlink policy.
    let mut twins = Vec::new();
    for &enc in &cfg.files.precompressed {
        let mut twin = path.clone().into_os_string();
        twin.push(enc.suffix());
        let checked = match tree.check(Path::new(&twin)) {
            // Not knowing whether a twin exists is not knowing the answer.
            Err(e) if is_would_block(&e) => return Err(e),
            checked => checked,
        };
        if let Ok(Some((p, m))) = checked {
            if m.is_file() {
                if stale(&m, &meta) {
                    stale_twins.inc();
                    report_stale(&p, &meta, "is older than its original");
                    continue;
                }
                twins.push((enc, p));
            }
        }
    }
    // The twin the client takes, if it decodes to the original (checked
    // once per pair of versions); else the next one it takes, or the file.
    // The check above chose symlink-free paths; the open refuses to follow
    // one, so a directory swapped for a symlink since then fails here.
    let original = FileId::of(&meta);
    let (chosen, file, meta) = loop {
        let available: Vec<Encoding> = twins.iter().map(|(e, _)| *e).collect();
        let chosen = negotiate(accept_encoding, &available);
        let serve_path = match chosen {
            Some(enc) => {
                &twins
                    .iter()
                    .find(|(e, _)| *e == enc)
                    .expect("chosen twin")
                    .1
            }
            None => &path,
        };
        let file = match tree.open_file(serve_path) {
            Ok(f) => f,
            Err(e) if is_escape(&e) => return Ok(Outcome::Forbidden),
            Err(e) => return Err(e),
        };
        let served = file.metadata()?;
        if !served.is_file() {
            return Ok(Outcome::Forbidden);
        }
        let Some(enc) = chosen else {
            break (None, file, served);
        };
        let open_original = || tree.open_file(&path);
        match etags.twin_matches((&file, &served), original, open_original, enc, wait) {
            Ok(true) => break (Some(enc), file, served),
            Ok(false) => {}
            Err(e) if is_escape(&e) => return Ok(Outcome::Forbidden),
            Err(e) => return Err(e),
        }
        stale_twins.inc();
        report_stale(serve_path, &meta, "does not decode to its original");
        twins.retain(|(e, _)| *e != enc);
    };
    let available: Vec<Encoding> = twins.iter().map(|(e, _)| *e).collect();
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let etag = etags.etag(
        &file,
        &meta,
        cfg.files.etag_hash_limit,
        Trust::of(&cfg.files),
        wait,
    )?;
    Ok(Outcome::File(Box::new(Found {
        file,
        id: FileId::of(&meta),
        len: meta.len(),
        modified,
        etag,
        encoding: chosen,
        has_twins: !twins.is_empty(),
        available,
        rel_path,
        served,
    })))
}

/// The bytes left as they are in a Location path: RFC 3986 unreserved
/// characters and the sub-delimiters that are safe inside a segment.
const PATH_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// `/a/b/` for the components `a`, `b`: exactly one leading slash, every
/// component percent-encoded, a trailing slash.
pub fn location_of(components: &[Vec<u8>]) -> String {
    let mut out = String::from("/");
    for c in components {
        out.extend(percent_encoding::percent_encode(c, PATH_SAFE));
        out.push('/');
    }
    out
}

/// `/a/b` for the components `a`, `b`: a file's request path, every
/// component percent-encoded (so a name with `%` or a newline in it comes
/// back to the same file when it is resolved again).
pub fn file_path(components: &[&[u8]]) -> String {
    let mut out = String::new();
    for c in components {
        out.push('/');
        out.extend(percent_encoding::percent_encode(c, PATH_SAFE));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Is any component a dot-name not covered by an allowed prefix such as
/// `.well-known`?
fn hidden(components: &[Vec<u8>], allow: &[String]) -> bool {
    let first_hidden = components.iter().position(|c| c.first() == Some(&b'.'));
    let Some(_) = first_hidden else {
        return false;
    };
    !allow.iter().any(|prefix| {
        let want: Vec<&[u8]> = prefix.split('/').map(str::as_bytes).collect();
        components.len() >= want.len()
            && components
                .iter()
                .zip(&want)
                .all(|(c, w)| c.as_slice() == *w)
            && components[want.len()..]
                .iter()
                .all(|c| c.first() != Some(&b'.'))
    })
}

/// A twin last written before its original describes an older version of
/// it: serving it would hand out old content under the new file's name
/// (nginx's gzip_static has this trap).
fn stale(twin: &Metadata, original: &Metadata) -> bool {
    let t = FileId::of(twin).mtime_ns;
    let o = FileId::of(original).mtime_ns;
    t < o
}

/// Logs a stale twin once per version of its original (a client can ask
/// for it as often as it likes); the memory is bounded like the ETag cache.
fn report_stale(twin: &Path, original: &Metadata, why: &str) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashSet<(std::path::PathBuf, FileId)>>> = Mutex::new(None);
    let key = (twin.to_path_buf(), FileId::of(original));
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.len() >= 4096 {
        seen.clear();
    }
    if seen.insert(key) {
        tracing::warn!(
            twin = %twin.display(),
            "precompressed file {why}; not serving it until it is rebuilt"
        );
    }
}

/// ENOENT, or ENOTDIR (a path through a regular file): answers, not failures.
pub fn is_not_found(e: &io::Error) -> bool {
    // ENOTDIR: `/file.txt/x` walks through a regular file. ENAMETOOLONG: a
    // component or path longer than the file system allows names nothing
    // that exists; the client's doing, not a server error.
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc_errno::ENOTDIR | libc_errno::ENAMETOOLONG)
        )
}

/// The two errno values above, as Linux numbers them.
mod libc_errno {
    pub const ENOTDIR: i32 = 20;
    pub const ENAMETOOLONG: i32 = 36;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(p: &str) -> Vec<Vec<u8>> {
        decode_path(p).unwrap().components
    }

    #[test]
    fn decodes_once_and_keeps_plain_components() {
        assert_eq!(
            comps("/a/b%20c/d.txt"),
            vec![b"a".to_vec(), b"b c".to_vec(), b"d.txt".to_vec()]
        );
        assert_eq!(
            comps("//etc/passwd"),
            vec![b"etc".to_vec(), b"passwd".to_vec()]
        );
        // Double-encoded dots stay literal names after one decode.
        assert_eq!(
            comps("/%252e%252e/x"),
            vec![b"%2e%2e".to_vec(), b"x".to_vec()]
        );
    }

    #[test]
    fn traversal_attempts_are_refused() {
        for p in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc",
            "/..%5c..%5cwindows",
            "/a\\b",
            "/file%00.txt",
            "/./x",
            "relative",
        ] {
            assert_eq!(decode_path(p), None, "{p}");
        }
    }

    #[test]
    fn overlong_utf8_dots_are_not_dots() {
        // %c0%ae is an invalid encoding of '.', which must not act as one.
        assert_eq!(comps("/%c0%ae%c0%ae/x").len(), 2);
    }

    #[test]
    fn trailing_slash_is_recorded() {
        assert!(decode_path("/dir/").unwrap().trailing_slash);
        assert!(!decode_path("/dir").unwrap().trailing_slash);
        assert!(!decode_path("/").unwrap().trailing_slash);
    }

    #[test]
    fn dot_paths_are_hidden_unless_allowed() {
        let allow = vec![".well-known".to_string()];
        assert!(hidden(&comps("/.git/config"), &allow));
        assert!(hidden(&comps("/a/.env"), &allow));
        assert!(!hidden(&comps("/.well-known/security.txt"), &allow));
        assert!(hidden(&comps("/.well-known/.secret"), &allow));
        assert!(!hidden(&comps("/a/b.txt"), &allow));
    }
}
