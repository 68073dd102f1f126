//! File work that waits for the disk: inline while the kernel's caches hold
//! what a request needs, on the blocking pool when they do not, and never
//! more pool threads than `blocking_threads`. Files are pushed out of the
//! page cache with `posix_fadvise(DONTNEED)` after `fsync` (clean pages are
//! dropped), and the test checks that they really are out before it asks.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{blocking_get, Daemon, TestServer};

/// Writes `data` to `path`, flushed to disk (so its pages can be dropped).
fn write_synced(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}

/// Drops `path`'s pages from the page cache, and checks with `mincore`
/// that its first page is no longer there (not with a read: even a
/// RWF_NOWAIT read that fails starts readahead, and the page would be
/// back before the server asks).
/// A page just written can sit in a per-CPU batch that DONTNEED does not
/// see yet, so the advice is repeated a few times.
fn evict(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    let mut last = String::new();
    for _ in 0..50 {
        // SAFETY: a valid descriptor; advice only.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
        // SAFETY: a read-only shared mapping of the file's first page,
        // never touched (mincore only asks), unmapped before leaving.
        let resident = unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let mut vec = [0u8; 1];
            let rc = libc::mincore(map, 4096, vec.as_mut_ptr());
            libc::munmap(map, 4096);
            assert_eq!(rc, 0, "mincore");
            vec[0] & 1 == 1
        };
        if !resident {
            return;
        }
        last = "resident".into();
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{} is still in the page cache ({last}): this file system cannot drop it",
        path.display()
    );
}

/// `ruchy_serve_file_work_total{ran="..."}` of an in-process server.
fn ran(s: &TestServer, label: &str) -> u64 {
    let text = String::from_utf8(s.state.metrics.render()).unwrap();
    let want = format!("ruchy_serve_file_work_total{{ran=\"{label}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Bytes that differ from offset to offset, so a misplaced chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i / 7 + seed as usize) % 26) as u8)
        .collect()
}

/// A warm file is resolved and read on the runtime's thread; a file out
/// of the page cache, cached whole or streamed in chunks, is read on the
/// blocking pool, and its bytes are the file's.
#[tokio::test]
async fn warm_files_are_read_inline_and_cold_ones_on_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let small = pattern(50 << 10, 1);
    let large = pattern(3 << 20, 2);
    write_synced(&dir.path().join("warm.html"), &small);
    write_synced(&dir.path().join("small.html"), &small);
    write_synced(&dir.path().join("large.bin"), &large);
    // A name never looked up is not in the dentry cache: its first lookup
    // reads the directory and runs on the pool. Warm every name the
    // requests look up (the files and their would-be twins).
    for name in ["warm.html", "small.html", "large.bin"] {
        for twin in ["", ".br", ".zst", ".gz"] {
            let _ = std::fs::metadata(dir.path().join(format!("{name}{twin}")));
        }
    }
    // Tagged by identity: the 3 MiB file is not hashed first (hashing a
    // file that long runs on the pool, warm or not).
    let s = TestServer::start(dir.path(), "[files]\netag_hash_limit = \"1MiB\"\n").await;

    let r = s.get("/warm.html").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, small);
    assert!(ran(&s, "inline") >= 1);
    assert_eq!(ran(&s, "pool"), 0, "a warm file went to the blocking pool");

    // Read whole for the file cache: the read would wait, so the whole
    // resolution runs again on the pool.
    evict(&dir.path().join("small.html"));
    let r = s.get("/small.html").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, small);
    let after_small = ran(&s, "pool");
    assert!(after_small >= 1, "a cold file was read inline");

    // Streamed in chunks (above cache_max_file_size): each cold chunk on
    // the pool, in order.
    evict(&dir.path().join("large.bin"));
    let r = s.get("/large.bin").await;
    assert_eq!(r.status, 200);
    assert!(r.body == large, "the streamed bytes are not the file's");
    assert!(
        ran(&s, "pool") > after_small,
        "cold chunks were read inline"
    );
}

/// Threads of a process, from /proc.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// Cold misses from many clients at once queue for at most
/// `blocking_threads` threads; tokio's default would start one per miss
/// (up to 512), which on a site larger than the page cache was 150-230
/// threads switching on one core.
#[test]
fn cold_misses_wait_on_at_most_blocking_threads_threads() {
    const FILES: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("warm.txt"), b"warm\n").unwrap();
    let bodies: Vec<Vec<u8>> = (0..FILES).map(|i| pattern(200 << 10, i as u8)).collect();
    for (i, b) in bodies.iter().enumerate() {
        write_synced(&dir.path().join(format!("f{i}.txt")), b);
    }
    for i in 0..FILES {
        evict(&dir.path().join(format!("f{i}.txt")));
    }
    let d = Daemon::serving(
        dir.path(),
        &[
            ("RUCHY_SERVE_WORKERS", "1"),
            ("RUCHY_SERVE_BLOCKING_THREADS", "2"),
        ],
    );
    assert!(blocking_get(d.addr, "/warm.txt")
        .unwrap()
        .ends_with("warm\n"));
    let pid = d.child.id();
    let before = threads(pid);

    let addr = d.addr;
    let clients: Vec<_> = (0..FILES)
        .map(|i| std::thread::spawn(move || blocking_get(addr, &format!("/f{i}.txt")).unwrap()))
        .collect();
    let mut most = before;
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
        most = most.max(threads(pid));
        std::thread::sleep(Duration::from_millis(1));
    }
    for (i, c) in clients.into_iter().enumerate() {
        let reply = c.join().unwrap();
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "f{i}: {}",
            &reply[..reply.len().min(200)]
        );
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(body.as_bytes() == bodies[i], "f{i}: wrong bytes");
    }
    assert!(
        most <= before + 2,
        "{} threads at most while {FILES} cold misses were answered, {before} before: the pool grew past blocking_threads = 2",
        most
    );
}
