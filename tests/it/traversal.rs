//! Nothing outside the root, ever: a traversal corpus over raw TCP (byte-exact
//! request targets no client library would send), dotfiles and symlinks.

use crate::common::{fixture, raw, raw_status, TestServer};

/// A secret beside the root that no request may reach.
fn secret_beside(root: &std::path::Path) -> std::path::PathBuf {
    let secret = root.parent().unwrap().join("outside-secret.txt");
    std::fs::write(&secret, b"TOP-SECRET-OUTSIDE").unwrap();
    secret
}

async fn raw_get(addr: std::net::SocketAddr, target: &str) -> String {
    raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

#[tokio::test]
async fn traversal_corpus_never_leaves_the_root() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("index.html"), b"inside").unwrap();
    secret_beside(&root);
    let s = TestServer::start(&root, "").await;
    let corpus = [
        "/../outside-secret.txt",
        "/..%2foutside-secret.txt",
        "/%2e%2e/outside-secret.txt",
        "/%2e%2e%2foutside-secret.txt",
        "/%2E%2E%2Foutside-secret.txt",
        "/%252e%252e%2foutside-secret.txt",
        "/..%5coutside-secret.txt",
        "/..\\outside-secret.txt",
        "/%c0%ae%c0%ae/outside-secret.txt",
        "/%c0%ae%c0%ae%c0%afoutside-secret.txt",
        "//etc/passwd",
        "/etc/passwd",
        "/%00",
        "/index.html%00.txt",
        "/./../outside-secret.txt",
        "/www/../../outside-secret.txt",
        "/..;/outside-secret.txt",
        "/%2e%2e%5c%2e%2e%5coutside-secret.txt",
    ];
    for target in corpus {
        let reply = raw_get(s.addr, target).await;
        let status = raw_status(&reply);
        assert!(
            status == 400 || status == 404,
            "{target}: status {status}\n{reply}"
        );
        assert!(!reply.contains("TOP-SECRET"), "{target} leaked");
        assert!(!reply.contains("root:x:0"), "{target} leaked /etc/passwd");
    }
    // The server is still up and serving.
    assert_eq!(raw_status(&raw_get(s.addr, "/").await), 200);
}

#[tokio::test]
async fn absolute_form_target_cannot_escape() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("www");
    std::fs::create_dir(&root).unwrap();
    secret_beside(&root);
    let s = TestServer::start(&root, "").await;
    let reply = raw_get(s.addr, "http://x/../outside-secret.txt").await;
    assert!(!reply.contains("TOP-SECRET"));
    assert!(matches!(raw_status(&reply), 400 | 404), "{reply}");
}

#[tokio::test]
async fn dotfiles_are_404_except_well_known() {
    let dir = fixture();
    let s = TestServer::start(dir.path(), "").await;
    for p in ["/.env", "/.git/config", "/.git/", "/%2eenv"] {
        let reply = raw_get(s.addr, p).await;
        assert_eq!(raw_status(&reply), 404, "{p}");
        assert!(!reply.contains("SECRET=1"));
    }
    assert_eq!(
        raw_status(&raw_get(s.addr, "/.well-known/security.txt").await),
        200
    );
    s.stop().await;

    let s = TestServer::start(dir.path(), "[files]\ndotfiles = true").await;
    assert_eq!(raw_status(&raw_get(s.addr, "/.env").await), 200);
}

#[tokio::test]
async fn symlink_outside_root_is_refused_within_root_policy() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("real.txt"), b"real").unwrap();
    let secret = secret_beside(&root);
    std::os::unix::fs::symlink(&secret, root.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(outer.path(), root.join("escape-dir")).unwrap();
    std::os::unix::fs::symlink("real.txt", root.join("inside-link.txt")).unwrap();

    let s = TestServer::start(&root, "").await;
    for p in ["/escape.txt", "/escape-dir/outside-secret.txt"] {
        let reply = raw_get(s.addr, p).await;
        assert_eq!(raw_status(&reply), 403, "{p}");
        assert!(!reply.contains("TOP-SECRET"));
    }
    let reply = raw_get(s.addr, "/inside-link.txt").await;
    assert_eq!(raw_status(&reply), 200);
    assert!(reply.ends_with("real"));
    s.stop().await;

    let s = TestServer::start(&root, "[files]\nfollow_symlinks = \"never\"").await;
    assert_eq!(raw_status(&raw_get(s.addr, "/inside-link.txt").await), 403);
    assert_eq!(raw_status(&raw_get(s.addr, "/escape.txt").await), 403);
    assert_eq!(raw_status(&raw_get(s.addr, "/real.txt").await), 200);
    s.stop().await;

    let s = TestServer::start(&root, "[files]\nfollow_symlinks = \"always\"").await;
    let reply = raw_get(s.addr, "/escape.txt").await;
    assert_eq!(
        raw_status(&reply),
        200,
        "operator opted in to following any link"
    );
}

#[tokio::test]
async fn index_symlinked_outside_root_is_not_served() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("www");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let secret = secret_beside(&root);
    std::os::unix::fs::symlink(&secret, root.join("sub/index.html")).unwrap();
    let s = TestServer::start(&root, "").await;
    let reply = raw_get(s.addr, "/sub/").await;
    assert!(!reply.contains("TOP-SECRET"));
    assert_eq!(raw_status(&reply), 404);
}

#[tokio::test]
async fn twin_symlinked_outside_root_is_not_served() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("www");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("app.js"), b"js").unwrap();
    let secret = secret_beside(&root);
    std::os::unix::fs::symlink(&secret, root.join("app.js.gz")).unwrap();
    let s = TestServer::start(&root, "").await;
    let reply = raw(
        s.addr,
        b"GET /app.js HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&reply), 200);
    assert!(!reply.contains("TOP-SECRET"));
    assert!(reply.ends_with("js"));
}

#[tokio::test]
async fn special_files_are_not_opened() {
    let dir = fixture();
    let fifo = dir.path().join("pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(ok.success());
    let s = TestServer::start(dir.path(), "").await;
    // Opening a FIFO would block a worker forever; it must be refused at once.
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), raw_get(s.addr, "/pipe"))
        .await
        .expect("no hang");
    assert_eq!(raw_status(&reply), 403);
}

/// A symlink loop in the tree is refused like any link the policy cannot
/// follow: 403, for the link and below it (it was 500, with an ERROR line
/// per request).
#[tokio::test]
async fn a_symlink_loop_is_forbidden_not_an_error() {
    let dir = crate::common::fixture();
    std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
    std::os::unix::fs::symlink("b", dir.path().join("a")).unwrap();
    std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
    let s = TestServer::start(dir.path(), "").await;
    for path in ["/loop", "/loop/x", "/a", "/a/index.html"] {
        assert_eq!(s.get(path).await.status, 403, "{path}");
    }
    assert_eq!(s.get("/hello.txt").await.status, 200);
}
