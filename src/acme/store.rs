//! The state directory: the ACME account's credentials and each site's
//! certificate and key, written atomically (a temporary file in the same
//! directory, fsync, rename, fsync of the directory) with mode 0600 under
//! directories of mode 0700, so a crash leaves the old files or the new
//! ones, never half of one, and no other user reads a key.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// What went wrong with the state directory; each names the path.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {}: {source} (hint: the state directory must be writable by the server: StateDirectory=ruchy-serve, or acme.state_dir)", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source} (hint: the state directory must be writable by the server)", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not ACME account credentials: {reason} (hint: move the file away to create a new account)", path.display())]
    Parse { path: PathBuf, reason: String },
}

/// Creates `dir` and its parents (0700 for the ones made here).
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Create {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `bytes` to `path` atomically, mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    ensure_dir(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let fail = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An existing file keeps its mode through create: set it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

/// Whether files can be written in `dir` now (created if missing): a
/// certificate the CA issued but we could not keep would be ordered again
/// at the next start, so nothing is ordered until this holds.
pub fn probe(dir: &Path) -> Result<(), StoreError> {
    let probe = dir.join(".probe");
    write_atomic(&probe, b"ruchy-serve\n")?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The account credentials kept at `path`, if any.
pub fn load_account(path: &Path) -> Result<Option<instant_acme::AccountCredentials>, StoreError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| StoreError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Keeps the account credentials (they hold the account's private key).
pub fn save_account(
    path: &Path,
    credentials: &instant_acme::AccountCredentials,
) -> Result<(), StoreError> {
    let text = serde_json::to_vec_pretty(credentials).map_err(|e| StoreError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn files_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(dir.path().join("a/b")).unwrap().mode() & 0o777,
            0o700
        );
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("a/b")).unwrap().count(),
            1
        );
    }

    #[test]
    fn an_unwritable_directory_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"").unwrap();
        // A directory below a regular file cannot be made, even by root.
        let e = probe(&file.join("state")).unwrap_err();
        assert!(e.to_string().contains("plain-file/state"), "{e}");
    }
}
