//! Every listening socket of the server as one set: the `[[listen]]` entries
//! and the metrics listener are entries of the same kind, run by the same
//! accept loop ([`crate::conn::accept_loop`]) and diffed the same way on
//! reload: an address still wanted keeps its socket (and its connections), a
//! new one is opened before anything changes, a dropped one stops accepting.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::addr::ListenAddr;
use crate::config::Config;
use crate::conn::drain::Drain;
use crate::conn::{self, Purpose};
use crate::listen::{Inherited, ListenError, Listener};
use crate::state::State;

/// One wanted socket: what it is for and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Site traffic or the metrics listener.
    pub purpose: Purpose,
    /// The configured address.
    pub addr: ListenAddr,
}

impl Endpoint {
    /// The same socket for the same purpose: what reload keeps.
    fn same(&self, other: &Endpoint) -> bool {
        self.purpose == other.purpose && self.addr.same_socket(&other.addr)
    }
}

/// Every endpoint a configuration asks for: its `[[listen]]` entries in
/// order, then the metrics listener.
pub fn wanted(cfg: &Config) -> Vec<Endpoint> {
    let site = cfg.listen.iter().map(|l| Endpoint {
        purpose: Purpose::Site,
        addr: l.addr.clone(),
    });
    let metrics = cfg.metrics.address.iter().map(|a| Endpoint {
        purpose: Purpose::Metrics,
        addr: a.clone(),
    });
    site.chain(metrics).collect()
}

/// The sockets opened for one endpoint (a `systemd:` name may stand for
/// several), not yet accepting.
pub struct Bound {
    endpoint: Endpoint,
    listeners: Vec<Listener>,
}

/// Opens every endpoint or none: the first failure is returned and the
/// sockets opened so far are closed.
pub fn open(endpoints: &[Endpoint], inherited: &Inherited) -> Result<Vec<Bound>, ListenError> {
    endpoints
        .iter()
        .map(|e| {
            Ok(Bound {
                endpoint: e.clone(),
                listeners: Listener::open(&e.addr, inherited)?,
            })
        })
        .collect()
}

impl Bound {
    /// The addresses actually bound (port 0 resolved).
    pub fn local(&self) -> Vec<ListenAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Whether this is a site (not the metrics) endpoint.
    pub fn is_site(&self) -> bool {
        self.endpoint.purpose == Purpose::Site
    }
}

/// An endpoint being served: its accept loops and their stop switch.
pub struct Serving {
    endpoint: Endpoint,
    local: Vec<ListenAddr>,
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
}

/// Starts one accept loop per socket of `bound`, all stopped by one switch.
pub fn serve(bound: Bound, state: &Arc<State>, drain: &Drain) -> Serving {
    let (stop, stop_rx) = watch::channel(false);
    let local = bound.local();
    let loops = bound
        .listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(conn::accept_loop(
                l,
                bound.endpoint.purpose,
                bound.endpoint.addr.clone(),
                Arc::clone(state),
                // Only site connections hold up a drain.
                (bound.endpoint.purpose == Purpose::Site).then(|| drain.watch()),
                stop_rx.clone(),
            ))
        })
        .collect();
    Serving {
        endpoint: bound.endpoint,
        local,
        stop,
        loops,
    }
}

/// The set being served.
#[derive(Default)]
pub struct Set {
    serving: Vec<Serving>,
}

impl Set {
    /// Adds a started endpoint.
    pub fn push(&mut self, s: Serving) {
        self.serving.push(s);
    }

    /// The wanted endpoints not served yet.
    pub fn missing(&self, wanted: &[Endpoint]) -> Vec<Endpoint> {
        wanted
            .iter()
            .filter(|w| !self.serving.iter().any(|s| s.endpoint.same(w)))
            .cloned()
            .collect()
    }

    /// Stops accepting on every endpoint not in `wanted`.
    pub fn retain(&mut self, wanted: &[Endpoint]) {
        let (keep, removed): (Vec<Serving>, Vec<Serving>) = std::mem::take(&mut self.serving)
            .into_iter()
            .partition(|s| wanted.iter().any(|w| w.same(&s.endpoint)));
        self.serving = keep;
        for s in removed {
            tracing::info!(listen = %s.endpoint.addr, "closing listener removed from the configuration");
            let _ = s.stop.send(true);
        }
    }

    /// The bound addresses of the endpoints for `purpose`, in order.
    pub fn local(&self, purpose: Purpose) -> Vec<ListenAddr> {
        self.serving
            .iter()
            .filter(|s| s.endpoint.purpose == purpose)
            .flat_map(|s| s.local.iter().cloned())
            .collect()
    }

    /// Each endpoint for `purpose` as configured, with its bound addresses.
    pub fn bound(&self, purpose: Purpose) -> Vec<(&ListenAddr, &[ListenAddr])> {
        self.serving
            .iter()
            .filter(|s| s.endpoint.purpose == purpose)
            .map(|s| (&s.endpoint.addr, s.local.as_slice()))
            .collect()
    }

    /// Whether every accept loop is still running.
    pub fn all_running(&self) -> bool {
        !self
            .serving
            .iter()
            .flat_map(|s| &s.loops)
            .any(|l| l.is_finished())
    }

    /// Stops accepting on the endpoints for `purpose` and waits until their
    /// loops have returned (so their sockets are closed).
    pub async fn stop(&mut self, purpose: Purpose) {
        let (stopping, keep): (Vec<Serving>, Vec<Serving>) = std::mem::take(&mut self.serving)
            .into_iter()
            .partition(|s| s.endpoint.purpose == purpose);
        self.serving = keep;
        for s in &stopping {
            let _ = s.stop.send(true);
        }
        for s in stopping {
            for l in s.loops {
                let _ = l.await;
            }
        }
    }
}
