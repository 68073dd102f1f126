//! `[log]`: the daemon's own messages and the access log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawLog;
use super::types::{AccessLog, LogFormat, LogTarget};
use super::{ConfigError, Ctx};

/// The validated `[log]` section.
#[derive(Debug, Clone)]
pub struct Log {
    /// A tracing filter directive, checked to parse.
    pub level: String,
    /// The format of the daemon's own messages.
    pub format: LogFormat,
    /// The access log's format, or off.
    pub access_log: AccessLog,
    /// Where messages go.
    pub target: LogTarget,
    /// The access log's own file, buffered; `None`: it goes with `target`.
    pub access_file: Option<AccessFile>,
}

/// `access_log_path` and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFile {
    /// Absolute path of the file, appended to, created 0640 when missing.
    pub path: PathBuf,
    /// Bytes gathered before one write (nginx's `buffer=`).
    pub buffer: usize,
    /// Longest a line waits before it is written (nginx's `flush=`).
    pub flush: Duration,
}

/// Smallest and largest write buffer: below a page, writes get small;
/// above 16 MiB, the lines held in memory while the disk stalls
/// ([`AccessFile::max_pending`]) would be a gigabyte.
const MIN_BUFFER: u64 = 4 << 10;
const MAX_BUFFER: u64 = 16 << 20;

impl AccessFile {
    /// Bytes of lines held at most while the disk is slow: 64 buffers
    /// (4 MiB with the default 64 KiB). Past it, lines are dropped and
    /// counted; a response never waits for the log.
    pub fn max_pending(&self) -> usize {
        self.buffer * 64
    }

    fn from_raw(raw: &RawLog, ctx: &Ctx) -> Result<Option<AccessFile>, ConfigError> {
        if raw.access_log_path.is_empty() {
            return Ok(None);
        }
        let path = log_path(&raw.access_log_path, &["log", "access_log_path"], ctx)?;
        let buffer = raw.access_log_buffer.bytes();
        if !(MIN_BUFFER..=MAX_BUFFER).contains(&buffer) {
            return Err(ctx.bad(
                &["log", "access_log_buffer"],
                format!("{buffer} bytes is outside 4KiB..16MiB"),
                "nginx's usual value is \"64KiB\"",
            ));
        }
        let flush = raw.access_log_flush.get();
        if flush.is_zero() {
            return Err(ctx.bad(
                &["log", "access_log_flush"],
                "0s would write every line on its own".into(),
                "use a short interval such as \"1s\"",
            ));
        }
        Ok(Some(AccessFile {
            path,
            buffer: buffer as usize,
            flush,
        }))
    }
}

/// A `[[sites]]` entry's `access_log_path`: its own file, written like the
/// top level's (`log.access_log_buffer`, `log.access_log_flush`).
pub(super) fn site_file(path: &str, raw: &RawLog, ctx: &Ctx) -> Result<AccessFile, ConfigError> {
    let path = log_path(path, &["access_log_path"], ctx)?;
    Ok(AccessFile {
        path,
        buffer: raw.access_log_buffer.bytes().clamp(MIN_BUFFER, MAX_BUFFER) as usize,
        flush: raw.access_log_flush.get().max(Duration::from_millis(10)),
    })
}

/// An access-log path as written at `key`: absolute, and a file we could
/// append to.
fn log_path(written: &str, key: &[&str], ctx: &Ctx) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(written);
    if !path.is_absolute() {
        return Err(ctx.bad(
            key,
            format!("`{}` is not an absolute path", path.display()),
            "give the whole path, e.g. \"/var/log/ruchy-serve/access.log\"",
        ));
    }
    if let Err(problem) = writable(&path) {
        return Err(ctx.bad(
            key,
            format!("cannot write `{}`: {problem}", path.display()),
            "create the directory and let the service's user write it; \
             the shipped units create /var/log/ruchy-serve (LogsDirectory=)",
        ));
    }
    Ok(path)
}

/// Whether the file could be opened for appending, without creating it
/// (`check` must not leave files behind): an existing file must be a
/// regular file or FIFO we may write; a missing one needs a directory we
/// may write.
fn writable(path: &Path) -> Result<(), String> {
    use rustix::fs::{access, Access};
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err("it is a directory".into()),
        Ok(_) => access(path, Access::WRITE_OK).map_err(|e| format!("{e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => access(dir, Access::WRITE_OK | Access::EXEC_OK)
                    .map_err(|e| format!("directory `{}`: {e}", dir.display())),
                Ok(_) => Err(format!("`{}` is not a directory", dir.display())),
                Err(e) => Err(format!("directory `{}`: {e}", dir.display())),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

impl Log {
    pub(super) fn from_raw(raw: &RawLog, ctx: &Ctx) -> Result<Log, ConfigError> {
        let level = raw.level.clone();
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(ctx.bad(
                &["log", "level"],
                format!("`{level}` is not a log filter"),
                "use trace, debug, info, warn or error (or target=level pairs)",
            ));
        }
        Ok(Log {
            level,
            format: raw.format,
            access_log: raw.access_log,
            target: raw.target,
            access_file: AccessFile::from_raw(raw, ctx)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};
    use super::*;

    #[test]
    fn keywords_and_filters() {
        let l = valid("[log]\nlevel = \"ruchy_serve=debug,warn\"\nformat = \"json\"\naccess_log = \"off\"\ntarget = \"stderr\"\n").log;
        assert_eq!(l.format, LogFormat::Json);
        assert_eq!(l.access_log, AccessLog::Off);
        assert_eq!(l.target, LogTarget::Stderr);
        let e = invalid("[log]\nlevel = \"loud=[\"\n");
        assert_eq!(e.key(), Some("log.level"));
        let e = invalid("[log]\naccess_log = \"apache\"\n");
        assert!(
            e.to_string().contains("unknown access log format `apache`"),
            "{e}"
        );
        let e = invalid("[log]\ntarget = \"syslog\"\n");
        assert!(e.to_string().contains("unknown log target `syslog`"), "{e}");
    }

    #[test]
    fn the_access_log_file_must_be_writable_and_is_not_created_by_checking() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("access.log");
        let l = valid(&format!("[log]\naccess_log_path = {ok:?}\naccess_log_buffer = \"8KiB\"\naccess_log_flush = \"250ms\"\n")).log;
        let f = l.access_file.unwrap();
        assert_eq!(
            (f.path.as_path(), f.buffer, f.flush),
            (ok.as_path(), 8192, Duration::from_millis(250))
        );
        assert_eq!(f.max_pending(), 64 * 8192);
        assert!(!ok.exists(), "validation must not create the file");
        assert_eq!(valid("").log.access_file, None);

        let missing = dir.path().join("no/such/dir/access.log");
        let e = invalid(&format!("[log]\naccess_log_path = {missing:?}\n"));
        assert_eq!(e.key(), Some("log.access_log_path"));
        assert!(e.to_string().contains("no/such/dir"), "{e}");
        let e = invalid("[log]\naccess_log_path = \"access.log\"\n");
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        let e = invalid(&format!("[log]\naccess_log_path = {:?}\n", dir.path()));
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = invalid(&format!(
            "[log]\naccess_log_path = {ok:?}\naccess_log_buffer = \"1KiB\"\n"
        ));
        assert_eq!(e.key(), Some("log.access_log_buffer"));
        let e = invalid(&format!(
            "[log]\naccess_log_path = {ok:?}\naccess_log_flush = \"0s\"\n"
        ));
        assert_eq!(e.key(), Some("log.access_log_flush"));
    }
}
