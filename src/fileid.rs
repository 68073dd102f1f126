//! One answer to "is this still the same file version?", shared by everything
//! that remembers a file: the ETag cache ([`crate::serve::etag`]), the body's
//! change check while it streams ([`crate::serve::body`]) and the
//! certificate watch ([`crate::tls`]). Replacing a file (rename, new inode)
//! or rewriting it changes at least one field. The change time is what makes
//! a rewrite in place visible even when the length stays and the
//! modification time is put back (`rsync -t --inplace`, `touch -r`, builds
//! pinned with SOURCE_DATE_EPOCH): the kernel sets ctime on every write and
//! no system call lets user space choose it.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How long after a change a file's identity is not trusted to stand for
/// its bytes ([`FileId::settled`]): the kernel writes dirty pages back
/// after 30 s (`vm.dirty_expire_centisecs`) with a flusher that wakes every
/// 5 s, and only a write fault after that stamps the file again.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(40);

/// The identity of one version of a file, from its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Length in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the Unix epoch (negative before).
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device the inode lives on.
    pub dev: u64,
    /// Hard links to the inode (0 once it is deleted or replaced by rename).
    pub nlink: u64,
}

impl FileId {
    /// The identity described by `meta` (from `stat` or `fstat`).
    pub fn of(meta: &Metadata) -> FileId {
        FileId {
            len: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
            nlink: meta.nlink(),
        }
    }

    /// Whether an open file that was `self` still holds the same bytes, as
    /// far as its metadata can tell: the same length and modification time,
    /// and the change time too unless the change was a lost link. Deleting
    /// the file or replacing it by rename changes the old inode's ctime but
    /// not its bytes, and an open file keeps them: those are sent whole.
    pub fn same_bytes(&self, now: &FileId) -> bool {
        self.len == now.len
            && self.mtime_ns == now.mtime_ns
            && self.ino == now.ino
            && self.dev == now.dev
            && (self.ctime_ns == now.ctime_ns || now.nlink < self.nlink)
    }

    /// Whether the file's last change (modification or status change) is at
    /// least `settle` before `now` ([`SETTLE`] by default, `files.settle_time`):
    /// only then does this identity vouch for
    /// the bytes, so that a hash or a body taken from them may be kept under
    /// it. A write through a shared mapping to a page that is already dirty
    /// changes the bytes and no timestamp until the page is written back and
    /// faulted again (git's "racily clean" files are the same problem);
    /// within the window, hashes and bodies are taken again.
    pub fn settled(&self, now: std::time::SystemTime, settle: std::time::Duration) -> bool {
        let now_ns = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now_ns - self.mtime_ns.max(self.ctime_ns) >= settle.as_nanos() as i128
    }

    /// The identity of the file at `path` now (following symlinks), or `None`
    /// when it cannot be read.
    pub fn at(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| FileId::of(&m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rewrite_and_replace_change_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let first = FileId::at(&path).unwrap();
        assert_eq!(FileId::at(&path), Some(first), "same file, same identity");

        // Appending changes the length.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"!")
            .unwrap();
        assert_ne!(FileId::at(&path).unwrap().len, first.len);

        // Replacing by rename gives a new inode even with the same bytes.
        let before = FileId::at(&path).unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, b"one!").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let after = FileId::at(&path).unwrap();
        assert_ne!(after.ino, before.ino);
        assert_ne!(after, before);
    }

    #[test]
    fn a_rewrite_in_place_with_the_old_mtime_put_back_is_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"version-A").unwrap();
        let before = FileId::at(&path).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"version-B", 0).unwrap();
        f.set_modified(mtime).unwrap();
        let after = FileId::at(&path).unwrap();
        assert_eq!(
            (after.len, after.mtime_ns, after.ino),
            (before.len, before.mtime_ns, before.ino)
        );
        assert_ne!(after, before, "ctime tells them apart");
    }

    #[test]
    fn unlinking_an_open_file_keeps_its_bytes_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"bytes").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let opened = FileId::of(&f.metadata().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::remove_file(&path).unwrap();
        let now = FileId::of(&f.metadata().unwrap());
        assert_eq!(now.nlink, 0);
        assert!(opened.same_bytes(&now));
        // A write to it is a change.
        let w = dir.path().join("g");
        std::fs::write(&w, b"bytes").unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&w)
            .unwrap();
        let opened = FileId::of(&f.metadata().unwrap());
        let mtime = f.metadata().unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::os::unix::fs::FileExt::write_all_at(&f, b"BYTES", 0).unwrap();
        f.set_modified(mtime).unwrap();
        assert!(!opened.same_bytes(&FileId::of(&f.metadata().unwrap())));
    }

    #[test]
    fn a_missing_file_has_no_identity() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FileId::at(&dir.path().join("missing")), None);
    }
}
