//! The access log's own file, written the way nginx's `access_log ...
//! buffer=64k flush=1s` writes it, but never on the request's path.
//!
//! Requests append whole lines to an in-memory buffer under a mutex held
//! for one copy. A buffer that reaches `access_log_buffer` bytes is handed
//! to one writer thread, which also writes whatever is buffered every
//! `access_log_flush`, on SIGUSR1 (before it reopens the path, so each
//! line lands whole in the old file or the new one), and at shutdown.
//! Each write is one buffer of whole lines to a file opened `O_APPEND`.
//!
//! What a stalled disk can make us hold is bounded: lines waiting for the
//! writer never pass [`AccessFile::max_pending`] bytes; past it a line is
//! dropped and counted (`ruchy_serve_access_log_dropped_total{reason="buffer_full"}`),
//! so a response never waits for the log. A failed write (disk full, EIO)
//! loses that buffer's lines (`reason="write_error"`), is counted in
//! `ruchy_serve_access_log_write_errors_total` and logged at most once a minute;
//! serving goes on.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::RateLimit;
use crate::config::AccessFile;
use crate::metrics::AccessLogCounters as Counters;

/// Buffers kept for reuse by the writer, so a steady stream of lines
/// allocates nothing.
const SPARES: usize = 4;

#[derive(Debug, Default)]
struct Pending {
    /// The buffer requests append to now.
    current: Vec<u8>,
    /// Buffers that reached the write size, oldest first.
    full: VecDeque<Vec<u8>>,
    /// Bytes in `current`, `full` and the batch being written.
    held: usize,
    spare: Vec<Vec<u8>>,
    reopen: bool,
    closing: bool,
    /// Set by the writer when it has written everything and stopped.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer (a full buffer, reopen, close).
    wake: Condvar,
    /// Wakes whoever waits for the writer to finish ([`FileLog::close`]).
    done: Condvar,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An open access-log file and its writer thread. Dropping the last handle
/// writes what is buffered and stops the thread (without waiting for it).
#[derive(Debug)]
pub struct FileLog {
    shared: Arc<Shared>,
    spec: AccessFile,
}

/// Opens `path` for appending, creating it with mode 0640 (nginx's logs are
/// 0640 too: readable by the adm group, not by everyone).
fn open(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

impl FileLog {
    /// Opens the file now (so a start or reload can fail on it) and starts
    /// the writer thread.
    pub fn open(spec: &AccessFile, counters: Counters) -> io::Result<FileLog> {
        let file = open(&spec.path)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            counters,
        });
        let writer = Writer {
            shared: Arc::clone(&shared),
            path: spec.path.clone(),
            flush: spec.flush,
            file,
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())?;
        Ok(FileLog {
            shared,
            spec: spec.clone(),
        })
    }

    /// What this log was opened with: a reload that asks for the same keeps it.
    pub fn spec(&self) -> &AccessFile {
        &self.spec
    }

    /// Appends one whole line (with its `\n`). Never blocks on the disk.
    pub fn write_line(&self, line: &[u8]) {
        let mut p = self.shared.lock();
        if p.closing || p.held + line.len() > self.spec.max_pending() {
            drop(p);
            self.shared.counters.dropped_full.inc();
            return;
        }
        if p.current.capacity() == 0 {
            let fresh = p
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(self.spec.buffer + 1024));
            p.current = fresh;
        }
        p.current.extend_from_slice(line);
        p.held += line.len();
        if p.current.len() >= self.spec.buffer {
            let full = std::mem::take(&mut p.current);
            p.full.push_back(full);
            drop(p);
            self.shared.wake.notify_one();
        }
    }

    /// Writes what is buffered to the file open now, then opens the path
    /// again (SIGUSR1, after logrotate renamed the file).
    pub fn reopen(&self) {
        self.shared.lock().reopen = true;
        self.shared.wake.notify_one();
    }

    /// Writes everything buffered and stops the writer, waiting at most
    /// `timeout` for it (a stalled disk must not hold up the exit).
    /// Whether everything was written in time.
    pub fn close(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut p = self.shared.lock();
        p.closing = true;
        self.shared.wake.notify_one();
        while !p.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            p = self
                .shared
                .done
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

/// The writer thread's side.
struct Writer {
    shared: Arc<Shared>,
    path: PathBuf,
    flush: Duration,
    file: File,
}

/// Write failures logged at most once a minute: a full disk fails every
/// write, and the log about it must not fill what is left.
static WRITE_ERROR_LOG: RateLimit = RateLimit::new();

impl Writer {
    fn run(mut self) {
        let mut last_flush = Instant::now();
        loop {
            let (batch, reopen, closing) = {
                let mut p = self.shared.lock();
                loop {
                    if !p.full.is_empty() || p.reopen || p.closing {
                        break;
                    }
                    let waited = last_flush.elapsed();
                    if waited >= self.flush {
                        break;
                    }
                    p = self
                        .shared
                        .wake
                        .wait_timeout(p, self.flush - waited)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                let mut batch: Vec<Vec<u8>> = p.full.drain(..).collect();
                let due = last_flush.elapsed() >= self.flush;
                if !p.current.is_empty() && (due || p.reopen || p.closing) {
                    batch.push(std::mem::take(&mut p.current));
                }
                if due || p.reopen || p.closing {
                    last_flush = Instant::now();
                }
                (batch, std::mem::take(&mut p.reopen), p.closing)
            };
            let mut written = 0;
            let mut spare = Vec::new();
            for mut buf in batch {
                self.write(&buf);
                written += buf.len();
                buf.clear();
                spare.push(buf);
            }
            {
                let mut p = self.shared.lock();
                p.held -= written;
                for buf in spare {
                    if p.spare.len() < SPARES {
                        p.spare.push(buf);
                    }
                }
            }
            if reopen {
                self.reopen();
            }
            if closing {
                let mut p = self.shared.lock();
                if p.full.is_empty() && p.current.is_empty() {
                    p.closed = true;
                    self.shared.done.notify_all();
                    return;
                }
            }
        }
    }

    fn write(&mut self, buf: &[u8]) {
        if let Err(e) = self.file.write_all(buf) {
            let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            self.shared.counters.write_errors.inc();
            self.shared.counters.dropped_error.inc_by(lines);
            if WRITE_ERROR_LOG.due() {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    lines,
                    "cannot write the access log; its lines are lost (logged at most once a minute)"
                );
            }
        }
    }

    fn reopen(&mut self) {
        match open(&self.path) {
            Ok(f) => {
                self.file = f;
                tracing::info!(path = %self.path.display(), "access log reopened");
            }
            Err(e) => {
                self.shared.counters.write_errors.inc();
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    "cannot reopen the access log; still writing the file open before"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> Counters {
        let c = |n: &str| prometheus::IntCounter::new(n, "test").unwrap();
        Counters {
            dropped_full: c("a"),
            dropped_error: c("b"),
            write_errors: c("c"),
        }
    }

    fn spec(path: &Path, buffer: usize, flush_ms: u64) -> AccessFile {
        AccessFile {
            path: path.to_path_buf(),
            buffer,
            flush: Duration::from_millis(flush_ms),
        }
    }

    #[test]
    fn lines_reach_the_file_when_the_buffer_fills_or_the_interval_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let log = FileLog::open(&spec(&path, 4096, 200), counters()).unwrap();
        log.write_line(b"one\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"", "buffered");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(std::fs::read(&path).unwrap(), b"one\n", "flushed");
        let line = [b'x'; 99];
        for _ in 0..50 {
            log.write_line(&[&line[..], b"\n"].concat());
        }
        assert!(log.close(Duration::from_secs(5)));
        assert_eq!(std::fs::read(&path).unwrap().len(), 4 + 50 * 100);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn reopen_moves_to_a_new_file_without_splitting_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let log = FileLog::open(&spec(&path, 4096, 60_000), counters()).unwrap();
        log.write_line(b"before\n");
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        log.write_line(b"still before\n");
        log.reopen();
        std::thread::sleep(Duration::from_millis(200));
        log.write_line(b"after\n");
        assert!(log.close(Duration::from_secs(5)));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.log.1")).unwrap(),
            "before\nstill before\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
    }
}
