//! An in-process server: the library's `Server` on 127.0.0.1:0, driven by
//! events instead of signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ruchy_serve::config::{self, ListenAddr, Sources};
use ruchy_serve::lifecycle::{Event, Server};
use ruchy_serve::listen::Inherited;
use ruchy_serve::state::State;
use tokio::sync::mpsc;

use super::client::{get, Resp};
use super::ConfigFile;

/// An in-process server; stopped (and drained) when dropped or `stop`ped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub addrs: Vec<SocketAddr>,
    /// The metrics listener, when there is one on TCP.
    pub metrics_addr: Option<SocketAddr>,
    pub config_file: PathBuf,
    pub state: Arc<State>,
    stop: Option<mpsc::Sender<Event>>,
    done: Option<tokio::task::JoinHandle<()>>,
    config: ConfigFile,
}

impl TestServer {
    /// Starts a server for `root` with `extra` TOML appended to a config file
    /// that sets `root` and an ephemeral listen port.
    pub async fn start(root: &Path, extra: &str) -> TestServer {
        TestServer::start_raw(
            root,
            &format!("{extra}\n[[listen]]\naddress = \"127.0.0.1:0\"\n"),
        )
        .await
    }

    /// Starts a server whose config file is `root = ...` followed by `body`,
    /// which must list its own `[[listen]]` tables. `addrs` are the bound
    /// addresses in order; `reload` re-reads the same file.
    pub async fn start_raw(root: &Path, body: &str) -> TestServer {
        TestServer::try_start_raw(root, body)
            .await
            .unwrap_or_else(|e| panic!("test config invalid: {e}"))
    }

    /// [`TestServer::start`], or the configuration's error.
    pub async fn try_start(root: &Path, extra: &str) -> Result<TestServer, config::ConfigError> {
        let body = format!("{extra}\n[[listen]]\naddress = \"127.0.0.1:0\"\n");
        TestServer::try_start_raw(root, &body).await
    }

    async fn try_start_raw(root: &Path, body: &str) -> Result<TestServer, config::ConfigError> {
        let config = ConfigFile::new(root, &format!("{}{body}", metrics_default(body)));
        let sources = Sources {
            config_file: Some(config.path.clone()),
            ..Default::default()
        };
        let cfg = config::load(&sources)?;
        let server = Server::bind(cfg, sources, Inherited::default()).expect("bind");
        let addrs: Vec<SocketAddr> = server
            .local_addrs()
            .into_iter()
            .filter_map(|a| match a {
                ListenAddr::Tcp(a) => Some(a),
                _ => None,
            })
            .collect();
        let metrics_addr = match server.metrics_addr() {
            Some(ListenAddr::Tcp(a)) => Some(a),
            _ => None,
        };
        let state = server.state();
        let (tx, rx) = mpsc::channel(1);
        let done = tokio::spawn(server.run(rx));
        Ok(TestServer {
            state,
            metrics_addr,
            addr: addrs[0],
            addrs,
            config_file: config.path.clone(),
            stop: Some(tx),
            done: Some(done),
            config,
        })
    }

    /// Rewrites the config body (as for `start_raw`) and reloads, as SIGHUP does.
    pub async fn reload(&self, body: Option<&str>) {
        if let Some(body) = body {
            self.config
                .write(&format!("{}{body}", metrics_default(body)));
        }
        let attempts = |s: &State| {
            s.reloads.succeeded.load(Ordering::Relaxed) + s.reloads.failed.load(Ordering::Relaxed)
        };
        let before = attempts(&self.state);
        self.stop
            .as_ref()
            .unwrap()
            .send(Event::Reload)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while attempts(&self.state) == before {
            assert!(std::time::Instant::now() < deadline, "reload not handled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Begins the drain and waits until the server has finished.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(Event::Shutdown).await;
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        get(self.addr, path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        get(self.addr, path, headers).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Dropping the sender ends the server's event loop: it drains.
        self.stop.take();
    }
}

/// Tests get an ephemeral metrics port unless they configure one.
fn metrics_default(body: &str) -> &'static str {
    if body.contains("[metrics]") {
        ""
    } else {
        "[metrics]\naddress = \"127.0.0.1:0\"\n"
    }
}
