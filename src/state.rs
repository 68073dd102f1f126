//! The server's state, low in the house: the current configuration
//! generation, the lifecycle [`Phase`], reload counts, the TLS certificate
//! resolver and the metrics. Every connection holds an `Arc<State>`; the
//! lifecycle owns the changes (reload swaps the generation, phase changes
//! come with an sd_notify message). This module imports nothing that
//! imports it: connections, handlers and the lifecycle all build on it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::StatusCode;

use crate::access::file::FileLog;
use crate::clock::unix_now;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::serve::body::Pool;
use crate::serve::sites::Sites;
use crate::tls::{self, Resolver};

/// Where the server is in its life; one-to-one with sd_notify messages
/// (see `lifecycle::notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Binding and loading; not yet serving.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Re-reading the configuration while the old one keeps serving.
    Reloading = 2,
    /// Accepting no more connections; in-flight requests finish.
    Draining = 3,
    /// Done.
    Stopped = 4,
}

/// Reload bookkeeping, for logs, STATUS and tests.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads that swapped in a new configuration.
    pub succeeded: AtomicU64,
    /// Reloads refused (bad configuration, port in use); the old one serves on.
    pub failed: AtomicU64,
    /// Configuration generation: 1 at start, +1 per successful reload.
    pub generation: AtomicU64,
}

/// State shared by every connection: the current configuration generation
/// (swapped whole on reload; each request loads it once and keeps it, so
/// in-flight requests finish under the generation they started with) and the
/// phase.
#[derive(Debug)]
pub struct State {
    sites: ArcSwap<Sites>,
    phase: AtomicU8,
    /// Reload counts and the current generation.
    pub reloads: ReloadStats,
    /// Certificates by SNI; swapped on reload and by the file watch.
    pub tls_resolver: Arc<Resolver>,
    /// One rustls configuration for the process, so session tickets survive
    /// certificate rotation.
    pub tls_config: Arc<rustls::ServerConfig>,
    /// The process's Prometheus registry and handles.
    pub metrics: Arc<Metrics>,
    /// The access-log file, when `log.access_log_path` names one; kept
    /// across reloads that do not change it.
    access_log: ArcSwapOption<FileLog>,
    /// `[[sites]]` entries' own access-log files, by path.
    site_logs: ArcSwap<SiteLogs>,
    /// What all connections' response bodies may hold together
    /// (`limits.max_response_memory`); its bound follows reloads.
    pub response_memory: Arc<Pool>,
    /// Each client address's share of `response_memory`.
    pub response_shares: crate::serve::body::Shares,
    /// Open connections by client address, for
    /// `limits.max_connections_per_client`.
    pub clients: Arc<crate::clients::Clients>,
    /// HTTP-01 answers published by the ACME manager.
    pub acme_http01: crate::challenges::Http01,
    /// Wakes the ACME manager (a reload may add a site or a name).
    pub acme_wake: tokio::sync::Notify,
}

/// Sites' own access-log files, by path (two sites naming one file share
/// it).
pub type SiteLogs = std::collections::HashMap<std::path::PathBuf, Arc<FileLog>>;

impl State {
    /// The state of a server about to start on `config` (generation 1,
    /// phase Starting).
    pub fn new(config: Arc<Config>) -> State {
        let reloads = ReloadStats::default();
        reloads.generation.store(1, Ordering::Relaxed);
        let tls_resolver = Arc::new(Resolver::default());
        config.tls.store.report(None);
        tls_resolver.replace(Arc::clone(&config.tls.store));
        let tls_config = tls::server_config(Arc::clone(&tls_resolver));
        let metrics = Arc::new(Metrics::new());
        metrics.generation.set(1);
        metrics.last_reload_success.set(unix_now() as f64);
        metrics.set_certificates(&config.tls.store);
        let response_memory = Arc::new(Pool::new(
            config.limits.max_response_memory,
            Some(metrics.response_memory.clone()),
        ));
        State {
            sites: ArcSwap::from_pointee(Sites::new(
                config,
                metrics.file_cache.clone(),
                Arc::clone(&metrics.compression),
            )),
            phase: AtomicU8::new(Phase::Starting as u8),
            reloads,
            tls_resolver,
            tls_config,
            metrics,
            access_log: ArcSwapOption::empty(),
            site_logs: ArcSwap::from_pointee(SiteLogs::new()),
            response_memory,
            response_shares: Default::default(),
            clients: Arc::default(),
            acme_http01: Default::default(),
            acme_wake: tokio::sync::Notify::new(),
        }
    }

    /// The access-log file lines go to now, if any.
    pub fn access_log(&self) -> Option<Arc<FileLog>> {
        self.access_log.load_full()
    }

    /// Sets the access-log file (at start and reload); the one it replaces
    /// writes out what it holds when its last line is in.
    pub fn set_access_log(&self, log: Option<Arc<FileLog>>) {
        self.access_log.store(log);
    }

    /// The access-log file of a site whose own file is `path`.
    pub fn site_log(&self, path: &std::path::Path) -> Option<Arc<FileLog>> {
        self.site_logs.load().get(path).cloned()
    }

    /// The sites' own access-log files now.
    pub fn site_logs(&self) -> Arc<SiteLogs> {
        self.site_logs.load_full()
    }

    /// Sets the sites' own files (at start and reload).
    pub fn set_site_logs(&self, logs: SiteLogs) {
        self.site_logs.store(Arc::new(logs));
    }

    /// Every access-log file open now: the top level's and the sites'.
    pub fn all_access_logs(&self) -> Vec<Arc<FileLog>> {
        let mut all: Vec<Arc<FileLog>> = self.access_log().into_iter().collect();
        all.extend(self.site_logs.load().values().cloned());
        all
    }

    /// The current generation's sites; cheap (one atomic load and a
    /// refcount).
    pub fn sites(&self) -> Arc<Sites> {
        self.sites.load_full()
    }

    /// The current (top-level) configuration.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.sites.load().config)
    }

    /// Swaps in a new configuration with fresh caches: the one place where a
    /// reload takes effect.
    pub fn replace(&self, config: Arc<Config>) {
        self.response_memory
            .set_limit(config.limits.max_response_memory);
        let old = self.tls_resolver.store();
        let (store, kept) = config.tls.store.keeping(&old);
        store.report(Some(&old));
        for k in kept {
            tracing::error!("{k}");
        }
        self.tls_resolver.replace(Arc::new(store));
        self.sites.store(Arc::new(Sites::new(
            config,
            self.metrics.file_cache.clone(),
            Arc::clone(&self.metrics.compression),
        )));
        let generation = self.reloads.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.generation.set(generation as i64);
        self.metrics.last_reload_success.set(unix_now() as f64);
        self.metrics.set_certificates(&self.tls_resolver.store());
        self.acme_wake.notify_one();
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Reloading,
            3 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }

    /// Records a phase change. The lifecycle pairs it with the sd_notify
    /// message; nothing else should call it.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// The current configuration generation.
    pub fn generation(&self) -> u64 {
        self.reloads.generation.load(Ordering::Relaxed)
    }

    /// The answer to a health probe: `/healthz` (200 while the process runs)
    /// and `/readyz` (200 only while Ready, or Reloading, since the old
    /// configuration keeps serving then; 503 while starting and draining, so
    /// a load balancer stops sending before connections close). `None` for
    /// any other path.
    pub fn health(&self, path: &str) -> Option<(StatusCode, &'static str)> {
        match path {
            "/healthz" => Some((StatusCode::OK, "ok\n")),
            "/readyz" => Some(match self.phase() {
                Phase::Ready | Phase::Reloading => (StatusCode::OK, "ready\n"),
                Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
                Phase::Draining | Phase::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_state() -> State {
        let sources = crate::config::Sources::default();
        State::new(Arc::new(
            crate::config::load(&sources).expect("demo config"),
        ))
    }

    #[test]
    fn readyz_follows_the_phase() {
        let state = demo_state();
        let ready = |s: &State| s.health("/readyz").map(|(c, _)| c);
        assert_eq!(ready(&state), Some(StatusCode::SERVICE_UNAVAILABLE));
        for (phase, code) in [
            (Phase::Ready, StatusCode::OK),
            (Phase::Reloading, StatusCode::OK),
            (Phase::Draining, StatusCode::SERVICE_UNAVAILABLE),
            (Phase::Stopped, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            state.set_phase(phase);
            assert_eq!(state.phase(), phase);
            assert_eq!(ready(&state), Some(code), "{phase:?}");
        }
        assert_eq!(
            state.health("/healthz").map(|(c, _)| c),
            Some(StatusCode::OK)
        );
        assert_eq!(state.health("/index.html"), None);
    }

    #[test]
    fn replace_advances_the_generation_and_clears_caches() {
        let state = demo_state();
        let before = state.sites();
        assert_eq!(state.generation(), 1);
        state.replace(Arc::clone(&before.config));
        assert_eq!(state.generation(), 2);
        let (old, new) = (before.default_site(), state.sites());
        assert!(
            !Arc::ptr_eq(&old.unwrap().cache, &new.default_site().unwrap().cache),
            "new sites, with new caches"
        );
    }
}
