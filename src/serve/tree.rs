//! The served tree: the symlink policy, and every open and stat below the
//! root done in one step.
//!
//! Checking a path and then opening it by name are two steps; someone who
//! can write in the tree can swap a directory for a symlink to `/` between
//! them, and the open follows it. So for the `within-root` and `never`
//! policies the policy check only decides *which* symlink-free path below
//! the root to use (the canonical one, or the one asked for), and the open
//! itself refuses to leave the root or follow any symlink:
//! `openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, or on
//! kernels before 5.6 a walk that opens one component at a time with
//! `O_NOFOLLOW`. A swap between check and open then makes the open fail
//! (ELOOP, EXDEV), which answers 403, and never yields an outside byte.
//!
//! `always` follows whatever the tree holds, by the operator's choice, and
//! opens by name.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::config::{Config, SymlinkPolicy};

/// The root of one configuration, opened for the length of one request's
/// resolution (a root replaced on disk is picked up by the next request,
/// as it was when everything was opened by name).
#[derive(Debug)]
pub struct Tree<'a> {
    cfg: &'a Config,
    root: OwnedFd,
    wait: Wait,
}

/// Whether a resolution may wait for the disk.
///
/// A request's file-system work first runs on the runtime's own thread
/// with [`Wait::Never`]: every lookup with `RESOLVE_CACHED` (the dentry
/// cache only) and every read with `RWF_NOWAIT` (the page cache only). On
/// a warm site that answers nearly every miss and revalidation without a
/// thread hand-off, which was a quarter of the CPU on the site workload
/// (benches/README.md, w12). Whatever would wait fails with
/// [`io::ErrorKind::WouldBlock`] and the whole resolution runs again on the
/// blocking pool with [`Wait::Disk`]. This is the idea behind nginx's
/// `aio threads` fallback and Seastar's `RWF_NOWAIT` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Only from memory; anything else is `WouldBlock`.
    Never,
    /// May wait for the disk (on the blocking pool).
    Disk,
}

/// The error a [`Wait::Never`] resolution stops with.
pub fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

/// Whether `e` is [`would_block`]: run it again on the blocking pool.
pub fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Lookups of a path that is not below the root (the root itself, and
/// every path under `follow_symlinks = "always"`), from the dentry cache
/// only under [`Wait::Never`].
fn open_by_name(path: &Path, flags: OFlags, wait: Wait) -> io::Result<OwnedFd> {
    match wait {
        Wait::Disk => Ok(rustix::fs::open(path, flags, Mode::empty())?),
        Wait::Never if NO_OPENAT2.load(Ordering::Relaxed) => Err(would_block()),
        Wait::Never => {
            match rustix::fs::openat2(
                rustix::fs::CWD,
                path,
                flags,
                Mode::empty(),
                ResolveFlags::CACHED,
            ) {
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::NOSYS) => Err(would_block()),
                other => Ok(other?),
            }
        }
    }
}

/// Flags every file is opened with: `O_NONBLOCK` so that a FIFO swapped in
/// after the type check cannot block a thread in `open` (reads of regular
/// files ignore it).
fn file_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

impl<'a> Tree<'a> {
    /// Opens the root of `cfg` (a path handle only: `O_PATH`), for
    /// lookups that wait for the disk or not as `wait` says.
    pub fn open(cfg: &'a Config, wait: Wait) -> io::Result<Tree<'a>> {
        let root = open_by_name(
            &cfg.root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            wait,
        )?;
        Ok(Tree { cfg, root, wait })
    }

    /// How this tree's lookups wait.
    pub fn wait(&self) -> Wait {
        self.wait
    }

    /// Applies the symlink policy to `path` (the root joined with decoded
    /// components). `Ok(None)`: the policy refuses it. Otherwise the path to
    /// use from now on (canonical for `within-root`) and its metadata, taken
    /// without following any symlink below the root.
    pub fn check(&self, path: &Path) -> io::Result<Option<(PathBuf, Metadata)>> {
        match self.cfg.files.follow_symlinks {
            SymlinkPolicy::Always => {
                let fd = open_by_name(path, OFlags::PATH | OFlags::CLOEXEC, self.wait)?;
                let meta = File::from(fd).metadata()?;
                Ok(Some((path.to_path_buf(), meta)))
            }
            SymlinkPolicy::WithinRoot => {
                // A path with no symlink at all below the root is its own
                // canonical form: one openat2 answers for it, where
                // `canonicalize` would ask readlink of every component.
                // Only a path through a symlink (ELOOP) is resolved.
                // (The walk for old kernels opens a final symlink itself
                // under O_PATH: that, too, goes the long way.)
                match self.stat_beneath(path.to_path_buf()) {
                    Ok(None) => {}
                    Ok(Some((_, meta))) if meta.file_type().is_symlink() => {}
                    found => return found,
                }
                if self.wait == Wait::Never {
                    // canonicalize asks readlink of every component.
                    return Err(would_block());
                }
                let real = path.canonicalize()?;
                if !real.starts_with(&self.cfg.root) {
                    return Ok(None);
                }
                self.stat_beneath(real)
            }
            SymlinkPolicy::Never => self.stat_beneath(path.to_path_buf()),
        }
    }

    /// Whether the symlink policy lets `path` be served.
    pub fn allows(&self, path: &Path) -> bool {
        matches!(self.check(path), Ok(Some(_)))
    }

    fn stat_beneath(&self, path: PathBuf) -> io::Result<Option<(PathBuf, Metadata)>> {
        match self.open_beneath(&path, OFlags::PATH | OFlags::CLOEXEC) {
            Ok(fd) => {
                let meta = File::from(fd).metadata()?;
                Ok(Some((path, meta)))
            }
            Err(e) if is_escape(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a file for reading; under `within-root` and `never` without
    /// following any symlink or leaving the root.
    pub fn open_file(&self, path: &Path) -> io::Result<File> {
        let fd = match self.cfg.files.follow_symlinks {
            SymlinkPolicy::Always => open_by_name(path, file_flags(), self.wait)?,
            _ => self.open_beneath(path, file_flags())?,
        };
        Ok(File::from(fd))
    }

    /// Opens a directory for listing, as [`Tree::open_file`] opens a file.
    pub fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(match self.cfg.files.follow_symlinks {
            SymlinkPolicy::Always => open_by_name(path, flags, self.wait)?,
            _ => self.open_beneath(path, flags)?,
        })
    }

    fn open_beneath(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        // Every path handed here was built from the root (or is its
        // canonical form); one that is not cannot be below it.
        let rel = path
            .strip_prefix(&self.cfg.root)
            .map_err(|_| io::Error::from_raw_os_error(rustix::io::Errno::XDEV.raw_os_error()))?;
        match self.wait {
            Wait::Disk => open_beneath(self.root.as_fd(), rel, flags),
            Wait::Never => open_beneath_cached(self.root.as_fd(), rel, flags),
        }
    }
}

/// Whether `e` says the open would have left the root or followed a
/// symlink: the tree changed under us, or a link the policy refuses.
pub fn is_escape(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV)
    )
}

/// Set once `openat2` answered ENOSYS (Linux before 5.6, or a seccomp
/// filter that does not know it): the walk is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `rel` below `dir` with `flags`, following no symlink and never
/// leaving `dir`.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2_beneath(dir, rel, flags, ResolveFlags::empty()) {
            Err(rustix::io::Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // openat2 retries EAGAIN itself only for some races; the walk
            // answers the same question without them.
            Err(rustix::io::Errno::AGAIN) => {}
            other => return Ok(other?),
        }
    }
    walk(dir, rel, flags)
}

/// [`open_beneath`] from the dentry cache only (`RESOLVE_CACHED`, Linux
/// 5.12): a lookup that would read a directory from disk, and every kernel
/// without it, is [`would_block`].
pub fn open_beneath_cached(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return Err(would_block());
    }
    match openat2_beneath(dir, rel, flags, ResolveFlags::CACHED) {
        // EINVAL: a kernel between 5.6 and 5.12, which knows openat2 but
        // not RESOLVE_CACHED.
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
            Err(would_block())
        }
        other => Ok(other?),
    }
}

/// `openat2(dir, rel, BENEATH | NO_SYMLINKS | NO_MAGICLINKS | extra)`, the
/// root itself for an empty `rel`.
fn openat2_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
    extra: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    rustix::fs::openat2(
        dir,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | extra,
    )
}

/// `openat2`'s answer the long way: each directory opened with
/// `O_NOFOLLOW` relative to the one before, the last component opened with
/// `O_NOFOLLOW` too. Only plain components are accepted.
pub fn walk(dir: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    let mut names: Vec<&OsStr> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n),
            Component::CurDir => {}
            _ => return Err(rustix::io::Errno::XDEV.into()),
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return Ok(rustix::fs::openat(dir, ".", flags, Mode::empty())?);
    };
    let step = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut cur: Option<OwnedFd> = None;
    for name in dirs {
        let at = cur.as_ref().map_or(dir, |fd| fd.as_fd());
        // O_PATH|O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR;
        // say ELOOP, as openat2 does, so both read as an escape.
        let next = rustix::fs::openat(at, *name, step, Mode::empty()).map_err(|e| {
            if e == rustix::io::Errno::NOTDIR && is_symlink(at, name) {
                rustix::io::Errno::LOOP
            } else {
                e
            }
        })?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(dir, |fd| fd.as_fd());
    Ok(rustix::fs::openat(
        at,
        *last,
        flags | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

fn is_symlink(at: BorrowedFd<'_>, name: &OsStr) -> bool {
    rustix::fs::statat(at, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    type Opener = fn(BorrowedFd<'_>, &Path, OFlags) -> io::Result<OwnedFd>;

    fn root(dir: &Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    fn read(fd: OwnedFd) -> String {
        let mut s = String::new();
        File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    /// A tree `d/f` ("inside"), `d/link` -> `f`, `out` -> a directory
    /// outside holding `f` ("outside"); the outside directory, the tree,
    /// and the tree's root opened.
    fn sample() -> (tempfile::TempDir, tempfile::TempDir, OwnedFd) {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), b"outside").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"inside").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("d/link")).unwrap();
        let fd = root(dir.path());
        (outside, dir, fd)
    }

    /// Both ways of opening give the same answers: a plain path opens, a
    /// symlink anywhere on the way is an escape, `..` is an escape.
    #[test]
    fn openat2_and_the_walk_agree() {
        let (_outside, dir, fd) = sample();
        std::os::unix::fs::symlink(dir.path().join("d"), dir.path().join("in")).unwrap();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let ways: [Opener; 2] = [open_beneath, walk];
        for open in ways {
            assert_eq!(
                read(open(fd.as_fd(), Path::new("d/f"), flags).unwrap()),
                "inside"
            );
            for bad in ["out/f", "in/f", "d/link", "../f", "d/../../f"] {
                let e = open(fd.as_fd(), Path::new(bad), flags).unwrap_err();
                assert!(is_escape(&e), "{bad}: {e}");
            }
            let e = open(fd.as_fd(), Path::new("d/missing"), flags).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            assert!(open(fd.as_fd(), Path::new(""), OFlags::PATH).is_ok());
        }
    }

    /// From the dentry cache, once the names were looked up: the same
    /// answers as the lookups that may wait (a path opens, an escape is an
    /// escape, a missing name is missing), and a name never looked up
    /// would wait rather than be guessed.
    #[test]
    fn cached_lookups_agree_once_the_names_are_known() {
        let (_outside, dir, fd) = sample();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let paths = ["d/f", "out/f", "d/link", "../f", "d/missing"];
        for p in paths {
            let _ = open_beneath(fd.as_fd(), Path::new(p), flags);
        }
        assert_eq!(
            read(open_beneath_cached(fd.as_fd(), Path::new("d/f"), flags).unwrap()),
            "inside"
        );
        for bad in ["out/f", "d/link"] {
            let e = open_beneath_cached(fd.as_fd(), Path::new(bad), flags).unwrap_err();
            assert!(is_escape(&e), "{bad}: {e}");
        }
        // `..` is never asked (requests are decoded into plain names), and
        // the kernel sends it the slow way rather than answer from cache.
        let e = open_beneath_cached(fd.as_fd(), Path::new("../f"), flags).unwrap_err();
        assert!(is_escape(&e) || is_would_block(&e), "../f: {e}");
        let e = open_beneath_cached(fd.as_fd(), Path::new("d/missing"), flags).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);

        // A directory created behind the cache's back: its entries were
        // never looked up.
        std::fs::create_dir(dir.path().join("new")).unwrap();
        let e = open_beneath_cached(fd.as_fd(), Path::new("new/never-asked"), flags).unwrap_err();
        assert!(is_would_block(&e), "{e}");
        let e = open_beneath(fd.as_fd(), Path::new("new/never-asked"), flags).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
