//! Transport: the one accept loop every listener runs (the main ones and the
//! metrics one alike), and a connection's life up to and around HTTP:
//! connection slot -> PROXY protocol header (when configured) -> TLS
//! handshake (inside the connection's task, under a timeout, so a stalled
//! client cannot hold the loop) -> hyper's HTTP/1.1 or HTTP/2 connection
//! (h2c with prior knowledge on plain sockets, the ALPN-negotiated protocol
//! on TLS), built when the client sends and handed back when an HTTP/1
//! connection goes quiet -> the connection's timers and the
//! graceful-shutdown watch that lets a drain wait for it.
//!
//! What each request gets is not decided here: each connection builds a
//! [`Handler`] from its facts (peer, TLS, the listener's role) and hyper
//! calls it once per request.
//!
//! - [`timers`]: the connection's clocks and every phase's deadline;
//! - [`session`]: hyper's connections and the loop that runs one against
//!   its deadlines and the drain, holding only the socket while it waits;
//! - [`drain`]: how a shutdown reaches the connections.

pub mod coalesce;
pub mod drain;
pub mod frames;
pub mod session;
pub mod timers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use crate::addr::{ListenAddr, Peer};
use crate::clock::coarse_now_ms;
use crate::config::Config;
use crate::handler::{Handler, Role};
use crate::listen::{Listener, Stream};
use crate::metrics::ConnMetrics;
use crate::serve::body::{Budget, CLIENT_SHARE};
use crate::state::State;
use drain::DrainWatch;
use prometheus::{IntCounter, IntGauge};
use session::{Closes, Protocol, Session};
use timers::{Activity, Tracked};

/// What a listening socket is for. The metrics listener may share an
/// address spelling with a `[[listen]]` entry (`127.0.0.1:0` for both), so
/// the purpose travels with the socket instead of being looked up by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A `[[listen]]` entry.
    Site,
    /// `metrics.address`.
    Metrics,
}

/// One accept loop's fixed facts, shared by its connections.
struct Listening {
    /// The configured address, to look up the listener's current flags (TLS,
    /// redirect, PROXY) in the newest configuration at each accept.
    addr: ListenAddr,
    /// The metric label, fixed by the configuration: a bounded set.
    label: Arc<str>,
    /// The listener's connection gauges, looked up once (`None` for the
    /// metrics listener, whose connections are not counted).
    gauges: Option<Gauges>,
    /// The per-request metric handles of the listener's connections (`None`
    /// for the metrics listener, whose requests are not counted).
    metrics: Option<Arc<ConnMetrics>>,
    state: Arc<State>,
}

struct Gauges {
    open: IntGauge,
    waiting: IntGauge,
    accepted_http: IntCounter,
    accepted_https: IntCounter,
}

/// Accepts until `stop` turns true, then returns (dropping the listener, so
/// the port closes while connections already accepted drain).
///
/// `drain` is the drain's watch for site listeners; `None` for the metrics
/// listener, whose connections a drain does not wait for.
pub async fn accept_loop(
    listener: Listener,
    purpose: Purpose,
    addr: ListenAddr,
    state: Arc<State>,
    drain: Option<DrainWatch>,
    mut stop: watch::Receiver<bool>,
) {
    let label: Arc<str> = Arc::from(addr.to_string());
    let m = &state.metrics;
    let gauges = (purpose == Purpose::Site).then(|| Gauges {
        open: m.conns_open.with_label_values(&[&*label]),
        waiting: m.conns_waiting.with_label_values(&[&*label]),
        accepted_http: m.conns_accepted.with_label_values(&[&*label, "http"]),
        accepted_https: m.conns_accepted.with_label_values(&[&*label, "https"]),
    });
    let listening = Arc::new(Listening {
        metrics: (purpose == Purpose::Site)
            .then(|| Arc::new(ConnMetrics::new(Arc::clone(m), Arc::clone(&label)))),
        label,
        gauges,
        addr,
        state,
    });
    let state = &listening.state;
    let mut slots = Slots::new(state.config().limits.max_connections);
    // The listener's flags as last configured: a connection accepted just
    // as a reload removes the listener keeps them (TLS, PROXY) instead of
    // being served as plain HTTP.
    let plain = (
        Role::Site {
            tls: false,
            redirect_https: false,
        },
        false,
    );
    let mut flags = role(&state.config(), purpose, &listening.addr).unwrap_or(plain);
    let mut last_warning: Option<Instant> = None;
    loop {
        // A slot first: at the limit we stop accepting, so newcomers wait in
        // the kernel's backlog instead of costing us memory.
        let cfg = state.config();
        slots.resize(cfg.limits.max_connections);
        let permit = match Arc::clone(&slots.sem).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if purpose == Purpose::Site {
                    state
                        .metrics
                        .conns_limited
                        .with_label_values(&[&*listening.label])
                        .inc();
                }
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        listener = %listening.label,
                        limit = slots.limit,
                        "connection limit reached; not accepting until a connection closes \
                         (logged at most once a minute; counted in \
                         http_connections_limit_reached_total)"
                    );
                }
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    p = Arc::clone(&slots.sem).acquire_owned() => p.expect("never closed"),
                }
            }
        };
        drop(cfg);
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            conn = listener.accept() => conn,
        };
        if let Some(now) = role(&state.config(), purpose, &listening.addr) {
            flags = now;
        }
        let conn = Connection {
            listening: Arc::clone(&listening),
            flags,
            stream,
            peer,
            accepted: Instant::now(),
            accepted_ms: coarse_now_ms(),
            drain: drain.clone(),
        };
        tokio::spawn(async move {
            conn.start().await;
            drop(permit);
        });
    }
}

/// The connection slots of one listener, following `limits.max_connections`
/// across reloads: a raised limit adds permits at once, a lowered one takes
/// effect as connections close.
struct Slots {
    sem: Arc<tokio::sync::Semaphore>,
    limit: usize,
    /// Permits still to be withdrawn after a lowered limit.
    owed: usize,
}

impl Slots {
    fn new(limit: usize) -> Slots {
        Slots {
            sem: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
            owed: 0,
        }
    }

    fn resize(&mut self, limit: usize) {
        if limit > self.limit {
            let mut more = limit - self.limit;
            let repaid = more.min(self.owed);
            self.owed -= repaid;
            more -= repaid;
            self.sem.add_permits(more);
        } else if limit < self.limit {
            self.owed += self.limit - limit;
        }
        self.limit = limit;
        if self.owed > 0 {
            self.owed -= self.sem.forget_permits(self.owed);
        }
    }
}

/// A listener's role and whether it expects a PROXY header, from the newest
/// configuration; `None` for an address a reload has just removed (its loop
/// is stopping).
fn role(cfg: &Config, purpose: Purpose, addr: &ListenAddr) -> Option<(Role, bool)> {
    if purpose == Purpose::Metrics {
        return Some((Role::Metrics, false));
    }
    cfg.listen
        .iter()
        .find(|l| l.addr.same_socket(addr))
        .map(|l| {
            let role = Role::Site {
                tls: l.tls,
                redirect_https: l.redirect_https,
            };
            (role, l.proxy_protocol)
        })
}

/// Keeps `http_connections_open` right however the connection ends.
pub(super) struct OpenGuard(prometheus::IntGauge);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One accepted connection, before anything is read from it.
struct Connection {
    listening: Arc<Listening>,
    /// The listener's role and PROXY flag when the connection was accepted.
    flags: (Role, bool),
    stream: Stream,
    peer: Peer,
    /// When it was accepted: the first request's head is due
    /// `header_read_timeout` after this, PROXY header and TLS included.
    accepted: Instant,
    /// The same moment on the coarse clock the timers use.
    accepted_ms: u64,
    /// `None` for the metrics listener: a drain does not wait for scrapes.
    drain: Option<DrainWatch>,
}

/// A connection's whole life as one boxed future.
type Life = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Connection {
    /// The connection's life: straight to HTTP for a plain connection, or
    /// the PROXY header and TLS handshake first.
    ///
    /// Each phase's future is boxed in a statement of its own, so what stays
    /// allocated for an idle connection is only the phase it is in: a
    /// future built in the statement that awaits it keeps its space in the
    /// caller's state for as long as the caller lives (rustc #62958), which
    /// was the TLS handshake's and the session's several KiB in every idle
    /// connection (benches/README.md, "Idle connections").
    fn start(self) -> Life {
        tracing::debug!(peer = %self.peer, "connection accepted");
        let (role, proxy_protocol) = self.flags;
        let tls = matches!(role, Role::Site { tls: true, .. });
        if proxy_protocol || tls {
            return Box::pin(self.before_http(tls));
        }
        let cfg = self.listening.state.config();
        let Connection {
            listening,
            stream,
            peer,
            accepted_ms,
            drain,
            ..
        } = self;
        let Some((session, tracked)) = session(
            &listening,
            role,
            cfg,
            stream,
            peer,
            Bytes::new(),
            accepted_ms,
            drain,
        ) else {
            return Box::pin(std::future::ready(()));
        };
        Box::pin(session.serve(tracked))
    }

    /// The PROXY header and the TLS handshake, then the session.
    async fn before_http(self, tls: bool) {
        let Connection {
            listening,
            flags: (role, proxy_protocol),
            mut stream,
            peer,
            accepted,
            accepted_ms,
            drain,
        } = self;
        let cfg = listening.state.config();
        // Everything before the first request head shares one deadline.
        let head_due = tokio::time::Instant::from_std(accepted + cfg.limits.header_read_timeout);
        let handshake_due = head_due.min(tokio::time::Instant::from_std(
            accepted + cfg.tls.handshake_timeout,
        ));
        let (peer, prefix) = if proxy_protocol {
            let header = Box::pin(proxy_header(&listening, &cfg, &mut stream, peer, head_due));
            match header.await {
                Some(found) => found,
                None => return,
            }
        } else {
            (peer, Bytes::new())
        };
        let Some((mut session, tracked)) = session(
            &listening,
            role,
            cfg,
            stream,
            peer,
            prefix,
            accepted_ms,
            drain,
        ) else {
            return;
        };
        if !tls {
            let serve = Box::pin(session.serve(tracked));
            return serve.await;
        }
        // The certificate set the handshake will choose from. If it is
        // swapped (a reload, a rotation) while the handshake runs, which
        // certificate the client was shown cannot be told after it, and
        // working it out from the new set could record one the client never
        // saw: such a connection is closed (the client connects again).
        let certs = listening.state.tls_resolver.store();
        let handshake = Box::pin(tls_handshake(&listening, tracked, handshake_due, peer));
        let Some((stream, protocol)) = handshake.await else {
            return;
        };
        if !Arc::ptr_eq(&certs, &listening.state.tls_resolver.store()) {
            listening
                .state
                .metrics
                .conns_rejected
                .with_label_values(&[&*listening.label, "certificates_changed"])
                .inc();
            tracing::debug!(%peer, "certificates changed during the TLS handshake; closing");
            return;
        }
        session
            .handler
            .set_sni(&certs, stream.get_ref().1.server_name());
        session.protocol = protocol;
        let serve = Box::pin(session.serve(stream));
        serve.await
    }
}

/// A connection's HTTP session and its tracked stream, counted as accepted.
#[allow(clippy::too_many_arguments)]
fn session(
    listening: &Listening,
    role: Role,
    cfg: Arc<Config>,
    stream: Stream,
    peer: Peer,
    prefix: Bytes,
    accepted_ms: u64,
    drain: Option<DrainWatch>,
) -> Option<(Session, Tracked)> {
    let state = &listening.state;
    let traffic = role != Role::Metrics;
    let client = match cfg.limits.max_connections_per_client {
        Some(max) if traffic => match state.clients.admit(peer, max) {
            Ok(slot) => slot,
            Err(crate::clients::OverLimit) => {
                state
                    .metrics
                    .conns_rejected
                    .with_label_values(&[&*listening.label, "per_client_limit"])
                    .inc();
                tracing::debug!(%peer, "per-client connection limit reached; closing");
                return None;
            }
        },
        _ => None,
    };
    let gauges = listening.gauges.as_ref().filter(|_| traffic);
    let open = gauges.map(|g| {
        g.open.inc();
        OpenGuard(g.open.clone())
    });
    let tls = matches!(role, Role::Site { tls: true, .. });
    if let Some(g) = gauges {
        if tls {
            &g.accepted_https
        } else {
            &g.accepted_http
        }
        .inc();
    }
    // What this connection's response bodies may hold in user memory: its
    // own budget, its client address's share of the pool (not for a
    // trusted proxy's connections, which carry many clients), the pool.
    let share = match peer {
        Peer::Tcp(a) if !cfg.trusted_proxies.trusts(&peer) => {
            let bytes = cfg.limits.max_response_memory / CLIENT_SHARE;
            let waits = &state.metrics.response_memory.waits;
            Some(state.response_shares.of(a.ip(), bytes, waits))
        }
        _ => None,
    };
    let budget = Budget::within(
        cfg.limits.max_response_buffer,
        &state.response_memory,
        share,
    );
    let activity = Arc::new(Activity::new(accepted_ms).holding(budget.clone()));
    let tracked = Tracked {
        inner: stream,
        prefix,
        activity: Arc::clone(&activity),
    };
    let handler = Handler::on_listener(
        Arc::clone(state),
        peer,
        role,
        listening.metrics.as_ref(),
        budget,
    );
    let session = Session {
        handler,
        protocol: Protocol::Auto,
        config: cfg,
        activity,
        drain,
        peer,
        closes: Closes(traffic.then(|| (Arc::clone(&state.metrics), Arc::clone(&listening.label)))),
        waiting: gauges.map(|g| g.waiting.clone()),
        _open: open,
        _client: client,
    };
    Some((session, tracked))
}

/// Reads the PROXY header a balancer sends before TLS and HTTP, from a
/// trusted peer only, by `due`. The client it names (or the peer, for a
/// LOCAL header) and the bytes read past it; `None` when the connection is
/// refused (counted and logged at debug).
async fn proxy_header(
    listening: &Listening,
    cfg: &Config,
    stream: &mut Stream,
    peer: Peer,
    due: tokio::time::Instant,
) -> Option<(Peer, Bytes)> {
    let header = if cfg.trusted_proxies.trusts(&peer) {
        let timeout = due.saturating_duration_since(tokio::time::Instant::now());
        crate::proxy::read_header(stream, timeout).await
    } else {
        Err(crate::proxy::Rejected::Untrusted)
    };
    match header {
        Ok((client, rest)) => Some((client.map_or(peer, Peer::Tcp), rest)),
        Err(reason) => {
            tracing::debug!(%peer, reason = reason.label(), "PROXY protocol header refused");
            listening
                .state
                .metrics
                .conns_rejected
                .with_label_values(&[&*listening.label, reason.label()])
                .inc();
            None
        }
    }
}

/// The TLS handshake, finished by `due`, and the protocol ALPN chose;
/// `None` when it failed or timed out (counted and logged at debug).
async fn tls_handshake(
    listening: &Listening,
    io: Tracked,
    due: tokio::time::Instant,
    peer: Peer,
) -> Option<(tokio_rustls::server::TlsStream<Tracked>, Protocol)> {
    let metrics = &listening.state.metrics;
    let label = &*listening.label;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&listening.state.tls_config));
    let rejected = |reason: &str| {
        metrics
            .tls_handshakes
            .with_label_values(&[label, "failure", "unknown"])
            .inc();
        metrics
            .conns_rejected
            .with_label_values(&[label, reason])
            .inc();
    };
    match tokio::time::timeout_at(due, acceptor.accept(io)).await {
        Ok(Ok(stream)) => {
            let conn = stream.get_ref().1;
            let version = match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "unknown",
            };
            metrics
                .tls_handshakes
                .with_label_values(&[label, "success", version])
                .inc();
            let protocol = match conn.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                Some(crate::tls::ACME_TLS_ALPN) => {
                    // TLS-ALPN-01 validation: the handshake was the answer
                    // (RFC 8737 section 3); no HTTP follows.
                    tracing::debug!(%peer, "acme-tls/1 validation handshake answered");
                    let mut stream = stream;
                    let close = tokio::io::AsyncWriteExt::shutdown(&mut stream);
                    let _ = tokio::time::timeout_at(due, close).await;
                    return None;
                }
                _ => Protocol::Http1,
            };
            Some((stream, protocol))
        }
        Ok(Err(e)) => {
            rejected("tls_handshake_failed");
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            rejected("tls_handshake_timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available(s: &Slots) -> usize {
        s.sem.available_permits()
    }

    #[test]
    fn raised_limit_adds_permits_at_once() {
        let mut s = Slots::new(2);
        s.resize(5);
        assert_eq!(available(&s), 5);
        assert_eq!(s.limit, 5);
    }

    #[test]
    fn lowered_limit_takes_effect_as_connections_close() {
        let mut s = Slots::new(4);
        // Three connections open: one permit left.
        let held: Vec<_> = (0..3)
            .map(|_| Arc::clone(&s.sem).try_acquire_owned().unwrap())
            .collect();
        s.resize(1);
        // The free permit is withdrawn now; two more are owed.
        assert_eq!(available(&s), 0);
        assert_eq!(s.owed, 2);
        drop(held);
        // Returned permits pay the debt at the next resize (the accept loop
        // resizes before every accept).
        s.resize(1);
        assert_eq!(s.owed, 0);
        assert_eq!(available(&s), 1);
    }

    #[test]
    fn raising_again_repays_what_is_owed_first() {
        let mut s = Slots::new(4);
        let held: Vec<_> = (0..4)
            .map(|_| Arc::clone(&s.sem).try_acquire_owned().unwrap())
            .collect();
        s.resize(2);
        assert_eq!(s.owed, 2);
        s.resize(3);
        // One of the two owed permits is forgiven; nothing new is added.
        assert_eq!(s.owed, 1);
        assert_eq!(available(&s), 0);
        drop(held);
        s.resize(3);
        assert_eq!(available(&s), 3);
    }
}
