//! Reload (SIGHUP): read and validate the whole configuration off the
//! runtime, open the endpoints it adds, then swap. Any failure leaves the old
//! configuration and listeners serving. Either way systemd hears READY=1 at
//! the end.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::listeners::{self, Set};
use super::{enter, status_line};
use crate::config::{self, Config, Sources};
use crate::conn::drain::Drain;
use crate::listen::Inherited;
use crate::state::{Phase, State};

/// Everything reload needs that does not change between reloads.
pub struct Reloader {
    /// Where the configuration comes from (file, environment, flags).
    pub sources: Sources,
    /// systemd's sockets, kept so a reload can serve a `systemd:` name again.
    pub inherited: Inherited,
}

impl Reloader {
    /// One reload, start to end.
    pub async fn reload(&self, state: &Arc<State>, drain: &Drain, set: &mut Set) {
        enter(state, Phase::Reloading, "reloading configuration");
        let src = self.sources.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&src))
            .await
            .unwrap_or_else(|e| panic!("config loader panicked: {e}"));
        let result = match loaded {
            Err(e) => Err(e.to_string()),
            Ok(cfg) => self.swap(cfg, state, drain, set),
        };
        let status = match result {
            Ok(()) => {
                state.reloads.succeeded.fetch_add(1, Ordering::Relaxed);
                state.metrics.reloads.with_label_values(&["success"]).inc();
                let status = status_line(state, set);
                tracing::info!("reloaded: {status}");
                status
            }
            Err(e) => {
                state.reloads.failed.fetch_add(1, Ordering::Relaxed);
                state.metrics.reloads.with_label_values(&["failure"]).inc();
                tracing::error!(
                    "reload failed, still serving generation {}: {e}",
                    state.generation()
                );
                format!(
                    "reload failed: {e}; still serving generation {}",
                    state.generation()
                )
            }
        };
        enter(state, Phase::Ready, &status);
    }

    /// Opens what is new before touching anything (a port in use must not
    /// leave us half reloaded), then closes what is gone, swaps the
    /// configuration, and starts the new endpoints.
    fn swap(
        &self,
        cfg: Config,
        state: &Arc<State>,
        drain: &Drain,
        set: &mut Set,
    ) -> Result<(), String> {
        let wanted = listeners::wanted(&cfg);
        // A new access-log path that cannot be opened fails the reload
        // before anything changed: the old file stays open.
        let access_log =
            super::access_log_for(&cfg, state.access_log(), state).map_err(|e| e.to_string())?;
        let site_logs =
            super::site_logs_for(&cfg, &state.site_logs(), state).map_err(|e| e.to_string())?;
        let added =
            listeners::open(&set.missing(&wanted), &self.inherited).map_err(|e| e.to_string())?;
        set.retain(&wanted);
        crate::logging::apply(&cfg.log);
        state.replace(Arc::new(cfg));
        state.set_access_log(access_log);
        state.set_site_logs(site_logs);
        for b in added {
            for addr in b.local() {
                tracing::info!(listen = %addr, "opening listener added to the configuration");
            }
            set.push(listeners::serve(b, state, drain));
        }
        Ok(())
    }
}
