//! File-system faults under a running server (the real binary where process
//! limits or privileges matter): files truncated, rewritten, replaced or
//! deleted while they are sent, permission denied, a root that disappears and
//! comes back, and file-descriptor exhaustion. Every wait is bounded.

use crate::common;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::common::{blocking_exchange, blocking_get, fixture, Daemon, TestServer};

const BIG: usize = 64 << 20;

/// Deterministic, position-dependent content, so a byte from the wrong place
/// or the wrong version is visible.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// A served tree holding `big.bin` of [`BIG`] pattern bytes.
fn serving_big_file() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>, Daemon) {
    let dir = fixture();
    let path = dir.path().join("big.bin");
    let original = pattern(BIG, 1);
    std::fs::write(&path, &original).unwrap();
    let d = Daemon::serving(dir.path(), &[]);
    (dir, path, original, d)
}

/// Starts a download of `path`, reads the head and `first` body bytes, and
/// returns the stream (the server is then blocked on a full socket buffer),
/// the Content-Length and the body bytes read so far.
fn start(d: &Daemon, path: &str, first: usize) -> (TcpStream, usize, Vec<u8>) {
    let mut s = d.start_download(path);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = buf.split_off(head_end);
    while body.len() < first {
        let n = s.read(&mut chunk).unwrap();
        body.extend_from_slice(&chunk[..n]);
    }
    (s, len, body)
}

/// The response head of a HEAD request.
fn head(addr: std::net::SocketAddr, path: &str) -> String {
    let request = format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    blocking_exchange(addr, request.as_bytes()).unwrap()
}

/// Reads the rest until the server ends the response or closes.
fn finish(mut s: TcpStream, mut body: Vec<u8>, len: usize) -> Vec<u8> {
    let mut chunk = [0u8; 65536];
    while body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body
}

#[test]
fn truncated_while_sent_aborts_instead_of_a_short_body() {
    let (_dir, path, original, d) = serving_big_file();
    let (s, len, body) = start(&d, "/big.bin", 1 << 20);
    assert_eq!(len, BIG);
    // Truncate in place (the same inode): reads past 1 MiB now find nothing.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let body = finish(s, body, len);
    assert!(body.len() < len, "a short file was sent as complete");
    assert_eq!(
        body[..],
        original[..body.len()],
        "wrong bytes before the abort"
    );
    // The next request sees the new length.
    let reply = head(d.addr, "/big.bin");
    assert!(reply.contains("content-length: 1048576"), "{reply}");
}

#[test]
fn rewritten_in_place_while_sent_aborts_instead_of_mixing_versions() {
    let (_dir, path, original, d) = serving_big_file();
    let (s, len, body) = start(&d, "/big.bin", 1 << 20);
    // Same length, other bytes, same inode: only the modification time and
    // the content tell.
    std::thread::sleep(Duration::from_millis(20));
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all(&pattern(BIG, 2)).unwrap();
    drop(f);
    let body = finish(s, body, len);
    // Whatever arrived is the old version's prefix, and it is not complete:
    // the connection was aborted before a byte of the new version.
    let same = body
        .iter()
        .zip(&original)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(body.len() < len, "a mixed body was sent as complete");
    assert_eq!(same, body.len(), "bytes of the new version were sent");
}

#[test]
fn replaced_or_deleted_while_sent_sends_the_old_version_whole() {
    let (dir, path, original, d) = serving_big_file();

    // Replaced by rename (how deploys and editors write): the open file is
    // the old one, sent whole; the next request gets the new one.
    let (s, len, body) = start(&d, "/big.bin", 1 << 20);
    let tmp = dir.path().join(".big.bin.new");
    std::fs::write(&tmp, pattern(BIG, 3)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let body = finish(s, body, len);
    assert_eq!(body.len(), len);
    assert!(body == original, "the old version was not sent intact");
    let (s, len, body) = start(&d, "/big.bin", 0);
    let body = finish(s, body, len);
    assert!(body == pattern(BIG, 3), "the new version is not served");

    // Deleted: the same, then 404.
    let (s, len, body) = start(&d, "/big.bin", 1 << 20);
    std::fs::remove_file(&path).unwrap();
    let body = finish(s, body, len);
    assert!(body == pattern(BIG, 3));
    let reply = head(d.addr, "/big.bin");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

/// A small (cached) file changed on disk is served fresh within the
/// revalidation interval, and a deleted one turns 404.
#[tokio::test]
async fn cached_file_changes_are_seen() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "[files]\ncache_revalidate = \"200ms\"").await;
    assert_eq!(s.get("/hello.txt").await.text(), "hello world\n");
    std::fs::write(dir.path().join("hello.txt"), "changed\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.get("/hello.txt").await.text() != "changed\n" {
        assert!(Instant::now() < deadline, "stale cache entry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(dir.path().join("hello.txt")).unwrap();
    while s.get("/hello.txt").await.status != 404 {
        assert!(Instant::now() < deadline, "deleted file still served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn root_that_disappears_answers_404_and_recovers() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hello world\n").unwrap();
    let s = TestServer::start(&root, "[files]\ncache_revalidate = \"100ms\"").await;
    assert_eq!(s.get("/hello.txt").await.status, 200);
    let away = parent.path().join("www.away");
    std::fs::rename(&root, &away).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = s.get("/hello.txt").await.status;
        if status == 404 || status == 503 {
            break;
        }
        assert_eq!(status, 200, "only a cached answer may come meanwhile");
        assert!(Instant::now() < deadline, "root gone, still 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Other paths too, and nothing panics while the root is gone.
    assert_eq!(s.get("/").await.status, 404);
    std::fs::rename(&away, &root).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.get("/hello.txt").await.status != 200 {
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.get("/hello.txt").await.text(), "hello world\n");
}

/// Permission checks need a process that is not root: the daemon runs as
/// `nobody` through setpriv (util-linux), as a systemd DynamicUser would.
#[test]
fn unreadable_file_is_403() {
    let dir = fixture();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let hidden = dir.path().join("locked");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::write(hidden.join("inside.txt"), "inside\n").unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o000)).unwrap();
    // A copy of the binary that `nobody` can execute whatever the checkout's
    // directory permissions are.
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("ruchy-serve");
    std::fs::copy(common::binary(), &bin).unwrap();
    let d = serving_through(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &bin,
        dir.path(),
    );
    let reply = blocking_get(d.addr, "/secret.txt").unwrap();
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(!reply.contains("top secret"));
    let reply = blocking_get(d.addr, "/locked/inside.txt").unwrap();
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    let reply = blocking_get(d.addr, "/hello.txt").unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// The binary at `bin` serving `root`, started through a wrapper program
/// (setpriv, prlimit) that execs it.
fn serving_through(wrapper: &[&str], bin: &std::path::Path, root: &std::path::Path) -> Daemon {
    let mut args: Vec<&str> = wrapper[1..].to_vec();
    args.extend([
        "--",
        bin.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    Daemon::spawn_program(wrapper[0], &args)
}

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), here 11 and 12 after the name.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// With RLIMIT_NOFILE lowered, accept fails with EMFILE: the server must back
/// off (not spin on a listener that stays readable) and serve again as soon
/// as descriptors free up.
#[test]
fn fd_exhaustion_backs_off_and_recovers() {
    let dir = fixture();
    let d = serving_through(
        &["prlimit", "--nofile=64:64"],
        &common::binary(),
        dir.path(),
    );
    let mut held = Vec::new();
    for _ in 0..120 {
        let mut c = TcpStream::connect(d.addr).unwrap();
        c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        held.push(c);
    }
    // Let the server run into the limit, then watch it for a second: a
    // spinning accept loop burns the whole second.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_seconds(d.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_seconds(d.child.id()) - before;
    assert!(used < 0.5, "accept loop spinning: {used:.2} CPU s in 1 s");
    assert!(
        d.log_text().contains("accept failed; backing off"),
        "EMFILE not logged: {}",
        d.log_text()
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match blocking_get(d.addr, "/hello.txt") {
            Ok(r) if r.contains("hello world") => break,
            _ => {
                assert!(Instant::now() < deadline, "did not recover after fds freed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A write through a shared mapping to a page that is already dirty
/// changes the bytes and no timestamp (the kernel updates mtime on the
/// first write fault after writeback only): the identity the caches key by
/// stays the same. Within the settling window the ETag is hashed again and
/// the body read again, so the old ETag gets the new bytes, not a 304.
/// (Issue 25 item 2: the old ETag got 304 and gzip clients the old bytes.)
#[tokio::test]
async fn bytes_changed_through_a_mapping_without_a_new_timestamp_get_a_new_etag() {
    use std::os::fd::AsRawFd;
    let dir = fixture();
    let path = dir.path().join("mapped.txt");
    std::fs::write(&path, vec![b'a'; 4096]).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: a shared mapping of the file's one page, unmapped below; the
    // file stays 4096 bytes long while it is mapped.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    } as *mut u8;
    assert_ne!(map as *mut libc::c_void, libc::MAP_FAILED);
    // The first write faults and stamps the file; the page is now dirty.
    unsafe { *map = b'X' };
    let s = TestServer::start(dir.path(), "[files]\ncache_revalidate = \"100ms\"").await;
    let first = s.get("/mapped.txt").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body[0], b'X');
    let etag = first.header("etag").unwrap().to_string();

    let before = std::fs::metadata(&path).unwrap();
    unsafe { *map = b'Y' };
    let after = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.mtime(), before.mtime_nsec(), before.ctime_nsec()),
        (after.mtime(), after.mtime_nsec(), after.ctime_nsec()),
        "the premise: a write to a dirty mapped page sets no timestamp"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = s
        .get_with("/mapped.txt", &[("if-none-match", etag.as_str())])
        .await;
    unsafe { libc::munmap(map.cast(), 4096) };
    assert_eq!(
        second.status, 200,
        "the old ETag was taken for the new bytes"
    );
    assert_eq!(second.body[0], b'Y', "the old bytes were served");
    assert_ne!(second.header("etag"), Some(etag.as_str()));
}
