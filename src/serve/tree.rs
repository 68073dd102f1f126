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
}

/// Flags every file is opened with: `O_NONBLOCK` so that a FIFO swapped in
/// after the type check cannot block a thread in `open` (reads of regular
/// files ignore it).
fn file_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

impl<'a> Tree<'a> {
    /// Opens the root of `cfg` (a path handle only: `O_PATH`).
    pub fn open(cfg: &'a Config) -> io::Result<Tree<'a>> {
        let root = rustix::fs::open(
            &cfg.root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Tree { cfg, root })
    }

    /// Applies the symlink policy to `path` (the root joined with decoded
    /// components). `Ok(None)`: the policy refuses it. Otherwise the path to
    /// use from now on (canonical for `within-root`) and its metadata, taken
    /// without following any symlink below the root.
    pub fn check(&self, path: &Path) -> io::Result<Option<(PathBuf, Metadata)>> {
        match self.cfg.files.follow_symlinks {
            SymlinkPolicy::Always => {
                let meta = std::fs::metadata(path)?;
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
            SymlinkPolicy::Always => rustix::fs::open(path, file_flags(), Mode::empty())?,
            _ => self.open_beneath(path, file_flags())?,
        };
        Ok(File::from(fd))
    }

    /// Opens a directory for listing, as [`Tree::open_file`] opens a file.
    pub fn open_dir(&self, path: &Path) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(match self.cfg.files.follow_symlinks {
            SymlinkPolicy::Always => rustix::fs::open(path, flags, Mode::empty())?,
            _ => self.open_beneath(path, flags)?,
        })
    }

    fn open_beneath(&self, path: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        // Every path handed here was built from the root (or is its
        // canonical form); one that is not cannot be below it.
        let rel = path
            .strip_prefix(&self.cfg.root)
            .map_err(|_| io::Error::from_raw_os_error(rustix::io::Errno::XDEV.raw_os_error()))?;
        open_beneath(self.root.as_fd(), rel, flags)
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
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match rustix::fs::openat2(
            dir,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(rustix::io::Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // openat2 retries EAGAIN itself only for some races; the walk
            // answers the same question without them.
            Err(rustix::io::Errno::AGAIN) => {}
            other => return Ok(other?),
        }
    }
    walk(dir, rel, flags)
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

    /// Both ways of opening give the same answers: a plain path opens, a
    /// symlink anywhere on the way is an escape, `..` is an escape.
    #[test]
    fn openat2_and_the_walk_agree() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), b"outside").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"inside").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("d"), dir.path().join("in")).unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("d/link")).unwrap();
        let fd = root(dir.path());
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
}
