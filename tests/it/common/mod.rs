//! What the integration tests share, one module per thing they drive:
//! [`server`] an in-process server, [`daemon`] the real binary as a process,
//! [`systemd`] socket activation and a NOTIFY_SOCKET, [`client`] HTTP and raw
//! requests, [`pki`] test certificates; and here the fixture tree and the
//! helper that writes a config file.

pub mod client;
pub mod daemon;
pub mod nginx;
pub mod pebble;
pub mod pki;
pub mod server;
pub mod systemd;

use std::path::{Path, PathBuf};

pub use client::*;
pub use daemon::*;
pub use server::TestServer;
pub use systemd::*;

/// A fixture tree with the files most tests need.
/// The fixture's `assets/app.js`.
pub const APP_JS: &[u8] = b"console.log('app');\n";

/// The fixture's twin of `assets/app.js` in `coding` (`gzip`, `br`,
/// `zstd`): the bytes a build step would write.
pub fn twin(coding: &str) -> Vec<u8> {
    ruchy_serve::serve::compress::compress(
        match coding {
            "gzip" => ruchy_serve::config::Encoding::Gzip,
            "br" => ruchy_serve::config::Encoding::Brotli,
            "zstd" => ruchy_serve::config::Encoding::Zstd,
            other => panic!("no coding {other}"),
        },
        match coding {
            "gzip" => 6,
            "br" => 5,
            _ => 3,
        },
        APP_JS,
    )
    .unwrap()
}

pub fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    w("index.html", b"<h1>home</h1>\n");
    w("hello.txt", b"hello world\n");
    w("digits.txt", b"0123456789abcdefghijklmnopqrstuvwxyz");
    w("docs/index.html", b"<h1>docs</h1>\n");
    w("docs/page.html", b"<h1>page</h1>\n");
    w("empty-dir/readme.md", b"# no index here\n");
    w("assets/app.js", APP_JS);
    // Twins that decode to the original, as a build step makes them (a
    // twin that does not is not served).
    w("assets/app.js.gz", &twin("gzip"));
    w("assets/app.js.br", &twin("br"));
    w("assets/app.js.zst", &twin("zstd"));
    w("module.wasm", b"\0asm\x01\0\0\0");
    w("data.json", b"{\"a\":1}\n");
    w(".env", b"SECRET=1\n");
    w(".git/config", b"[core]\n");
    w(".well-known/security.txt", b"Contact: x\n");
    w("404.html", b"<h1>custom not found</h1>\n");
    w("50x.html", b"<h1>custom error</h1>\n");
    w("with space.txt", b"spaced\n");
    dir
}

/// A config file in a temporary directory of its own, removed when dropped.
pub struct ConfigFile {
    pub path: PathBuf,
    root: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl ConfigFile {
    /// `root = "<root>"` followed by `body`.
    pub fn new(root: &Path, body: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile {
            path: dir.path().join("c.toml"),
            root: Some(root.to_path_buf()),
            _dir: dir,
        };
        file.write(body);
        file
    }

    /// `body` exactly, with no root line.
    pub fn raw(body: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile {
            path: dir.path().join("c.toml"),
            root: None,
            _dir: dir,
        };
        file.write(body);
        file
    }

    /// Replaces the contents (after the root line, if any). Written then
    /// renamed, as config management does, so a reload never reads a
    /// half-written file.
    pub fn write(&self, body: &str) {
        let text = match &self.root {
            Some(root) => format!("root = {:?}\n{body}\n", root.display().to_string()),
            None => body.to_string(),
        };
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// A loopback address with a port that was free a moment ago (for a
/// metrics listener whose address the test must know in advance).
pub fn free_local_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
