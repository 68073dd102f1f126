//! Transport: the one accept loop every listener runs (the main ones and the
//! metrics one alike), and a connection's life up to and around HTTP:
//! connection slot -> PROXY protocol header (when configured) -> TLS
//! handshake (inside the connection's task, under a timeout, so a stalled
//! client cannot hold the loop) -> hyper-util's builder (HTTP/1.1 and h2c with
//! prior knowledge on plain sockets, the ALPN-negotiated protocol on TLS) ->
//! the connection's timers (hyper's header-read timer, our idle timer) and
//! the graceful-shutdown watch that lets a drain wait for it.
//!
//! What each request gets is not decided here: each connection builds a
//! [`Handler`] from its facts (peer, TLS, the listener's role) and hyper
//! calls it once per request.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::addr::{ListenAddr, Peer};
use crate::clock::coarse_now_ms;
use crate::config::{Config, Limits};
use crate::handler::{Handler, Role};
use crate::listen::{Listener, Stream};
use crate::state::State;

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
    purpose: Purpose,
    /// The configured address, to look up the listener's current flags (TLS,
    /// redirect, PROXY) in the newest configuration for each connection.
    addr: ListenAddr,
    /// The metric label, fixed by the configuration: a bounded set.
    label: Arc<str>,
    state: Arc<State>,
}

/// Accepts until `stop` turns true, then returns (dropping the listener, so
/// the port closes while connections already accepted drain).
///
/// `graceful` is the drain's watch for site listeners; `None` for the
/// metrics listener, whose connections a drain does not wait for.
pub async fn accept_loop(
    listener: Listener,
    purpose: Purpose,
    addr: ListenAddr,
    state: Arc<State>,
    graceful: Option<Arc<GracefulShutdown>>,
    mut stop: watch::Receiver<bool>,
) {
    let listening = Arc::new(Listening {
        label: Arc::from(addr.to_string()),
        purpose,
        addr,
        state,
    });
    let state = &listening.state;
    let mut slots = Slots::new(state.config().limits.max_connections);
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
        let conn = Connection {
            listening: Arc::clone(&listening),
            stream,
            peer,
            // A watcher, not the drain itself: the drain must be able to
            // take sole ownership once every accept loop has returned.
            watcher: graceful.as_ref().map(|g| g.watcher()),
        };
        tokio::spawn(async move {
            conn.run().await;
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
/// configuration. An address no longer configured (its loop is stopping)
/// serves plain HTTP until then.
fn role(cfg: &Config, purpose: Purpose, addr: &ListenAddr) -> (Role, bool) {
    if purpose == Purpose::Metrics {
        return (Role::Metrics, false);
    }
    if let Some(l) = cfg.listen.iter().find(|l| l.addr.same_socket(addr)) {
        let role = Role::Site {
            tls: l.tls,
            redirect_https: l.redirect_https,
        };
        return (role, l.proxy_protocol);
    }
    let plain = Role::Site {
        tls: false,
        redirect_https: false,
    };
    (plain, false)
}

/// Which HTTP versions to speak on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Plain TCP or unix: HTTP/1.1, or HTTP/2 when the client opens with the
    /// HTTP/2 preface (h2c prior knowledge).
    Auto,
    Http1,
    Http2,
}

/// Streams a client may reset before they were accepted (h2's default).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Stream errors one client may cause before the connection is closed.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 200;

/// hyper's own limit when `max_headers` is not called.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

fn builder(limits: &Limits, protocol: Protocol) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Without a timer hyper silently ignores header_read_timeout and a
        // client sending one byte a second holds the connection forever.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size)
        .keep_alive(true);
    // hyper parses into a stack array of 100 headers unless told another
    // count, which costs a heap vector filled on every request (seen in
    // profiles, benches/README.md): only say it when it differs.
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        b.http1().max_headers(limits.max_headers);
    }
    // HTTP/2 floods, stated rather than left to defaults that could change:
    // rapid reset (CVE-2023-44487) ends the connection with GOAWAY once a
    // client has reset 20 streams still waiting to be accepted; a client that
    // provokes more than 200 stream errors is cut off (RUSTSEC-2024-0003);
    // CONTINUATION floods (CVE-2024-27316 class) are bounded by h2 through
    // the header list size, so a header block cannot grow past
    // `max_header_size` however it is split into frames.
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_size as u32)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    match protocol {
        Protocol::Auto => b,
        Protocol::Http1 => b.http1_only(),
        Protocol::Http2 => b.http2_only(),
    }
}

/// Keeps `http_connections_open` right however the connection ends.
struct OpenGuard(prometheus::IntGauge);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One accepted connection, before anything is read from it.
struct Connection {
    listening: Arc<Listening>,
    stream: Stream,
    peer: Peer,
    /// `None` for the metrics listener: a drain does not wait for scrapes.
    watcher: Option<Watcher>,
}

/// A connection ready for HTTP: its handler, its limits and timers.
struct Session {
    handler: Handler,
    protocol: Protocol,
    /// Connection-level settings come from the generation current at accept;
    /// each request then reads the newest generation.
    limits: Limits,
    activity: Arc<Activity>,
    /// `None` for the metrics listener: a drain does not wait for scrapes.
    watcher: Option<Watcher>,
    peer: Peer,
}

impl Connection {
    /// The connection's life before HTTP: role, PROXY header, TLS; then the
    /// session.
    async fn run(self) {
        let Connection {
            listening,
            mut stream,
            peer,
            watcher,
        } = self;
        tracing::debug!(%peer, "connection accepted");
        let state = &listening.state;
        let metrics = &state.metrics;
        let label = &*listening.label;
        let cfg = state.config();
        let (role, proxy_protocol) = role(&cfg, listening.purpose, &listening.addr);
        let traffic = role != Role::Metrics;
        let _open = traffic.then(|| {
            let open = metrics.conns_open.with_label_values(&[label]);
            open.inc();
            OpenGuard(open)
        });
        let limits = cfg.limits.clone();
        let handshake_timeout = cfg.tls.handshake_timeout;
        let (peer, prefix) = if proxy_protocol {
            match proxy_header(
                &listening,
                &cfg,
                &mut stream,
                peer,
                limits.header_read_timeout,
            )
            .await
            {
                Some(found) => found,
                None => return,
            }
        } else {
            (peer, Bytes::new())
        };
        drop(cfg);
        let activity = Arc::new(Activity::default());
        let tracked = Tracked {
            inner: stream,
            prefix,
            activity: Arc::clone(&activity),
        };
        let tls = matches!(role, Role::Site { tls: true, .. });
        if traffic {
            let scheme = if tls { "https" } else { "http" };
            metrics
                .conns_accepted
                .with_label_values(&[label, scheme])
                .inc();
        }
        let handler = Handler::new(Arc::clone(state), peer, role, Arc::clone(&listening.label));
        let mut session = Session {
            handler,
            protocol: Protocol::Auto,
            limits,
            activity,
            watcher,
            peer,
        };
        // Boxed, here and below: the connection's state machine is several
        // KiB, and a boxed one is built in place instead of being copied into
        // the task (memmove in profiles, benches/README.md).
        if !tls {
            return Box::pin(session.serve(tracked)).await;
        }
        let handshake = tls_handshake(&listening, tracked, handshake_timeout, peer);
        if let Some((stream, protocol)) = Box::pin(handshake).await {
            session.protocol = protocol;
            Box::pin(session.serve(stream)).await
        }
    }
}

/// Reads the PROXY header a balancer sends before TLS and HTTP, from a
/// trusted peer only. The client it names (or the peer, for a LOCAL header)
/// and the bytes read past it; `None` when the connection is refused
/// (counted and logged at debug).
async fn proxy_header(
    listening: &Listening,
    cfg: &Config,
    stream: &mut Stream,
    peer: Peer,
    timeout: Duration,
) -> Option<(Peer, Bytes)> {
    let header = if cfg.trusted_proxies.trusts(&peer) {
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

/// The TLS handshake under `timeout`, and the protocol ALPN chose; `None`
/// when it failed or timed out (counted and logged at debug).
async fn tls_handshake(
    listening: &Listening,
    io: Tracked,
    timeout: Duration,
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
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
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

impl Session {
    /// Runs HTTP on `io` until the client leaves, the connection idles out,
    /// or a drain ends it.
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Session {
            handler,
            protocol,
            limits,
            activity,
            watcher,
            peer,
        } = self;
        let handler = Arc::new(handler);
        let svc_activity = Arc::clone(&activity);
        let svc = service_fn(move |req: Request<Incoming>| {
            let handler = Arc::clone(&handler);
            let activity = Arc::clone(&svc_activity);
            async move {
                let resp = handler.handle(req).await;
                Ok::<_, Infallible>(resp.map(|b| InFlight::new(b, activity)))
            }
        });
        let conn = builder(&limits, protocol)
            .serve_connection(TokioIo::new(io), svc)
            .into_owned();
        let run = async move {
            match watcher {
                Some(w) => w.watch(conn).await,
                None => conn.await,
            }
        };
        tokio::select! {
            result = run => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
            _ = idle(&activity, limits.keep_alive_timeout) => {
                tracing::debug!(%peer, "closing idle connection");
            }
        }
    }
}

/// Resolves once the connection has had no response in flight and no traffic
/// for `timeout`. (For HTTP/1 hyper's header timer also closes a connection
/// that stays idle for `header_read_timeout` between requests.)
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        let quiet = activity.idle_for();
        if activity.inflight() == 0 && quiet >= timeout {
            return;
        }
        let wait = timeout
            .saturating_sub(quiet)
            .max(Duration::from_millis(250));
        tokio::time::sleep(wait).await;
    }
}

/// Per-connection activity for the idle timer: when bytes last moved, and
/// how many responses are in flight. A connection is idle only when both say
/// so.
///
/// `touch` runs on every read and write, so it reads the coarse monotonic
/// clock ([`coarse_now_ms`]).
#[derive(Debug)]
struct Activity {
    last_ms: AtomicU64,
    inflight: AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            last_ms: AtomicU64::new(coarse_now_ms()),
            inflight: AtomicUsize::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(coarse_now_ms(), Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(coarse_now_ms().saturating_sub(last))
    }
    fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// A response body in flight: counted from the moment the response exists
/// until hyper has sent or dropped its body, so the idle timer never closes a
/// connection in the middle of a response.
struct InFlight<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B> InFlight<B> {
    fn new(inner: B, activity: Arc<Activity>) -> Self {
        activity.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight { inner, activity }
    }
}

impl<B> Drop for InFlight<B> {
    fn drop(&mut self) {
        self.activity.inflight.fetch_sub(1, Ordering::Relaxed);
        self.activity.touch();
    }
}

impl<B: HttpBody + Unpin> HttpBody for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream that records when bytes last moved, for the idle timer, and
/// first replays the bytes read past a PROXY header.
struct Tracked {
    inner: Stream,
    prefix: bytes::Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
