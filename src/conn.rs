//! The one accept loop: any [`Listener`] -> optional TLS handshake (inside the
//! connection's task, under a timeout, so a stalled client cannot hold the
//! loop) -> hyper-util's builder: HTTP/1.1 and h2c with prior knowledge on
//! plain sockets, the ALPN-negotiated protocol on TLS. Each connection is
//! watched by the graceful-shutdown token so a drain waits for it.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::access::{Activity, LoggedBody, Record};
use crate::config::{AccessLog, Limits, ListenAddr};
use crate::lifecycle::Shared;
use crate::listen::{Listener, Peer, Stream};
use crate::serve;

/// Accepts until `stop` turns true, then returns (dropping the listener, so
/// the port closes while connections already accepted drain). `addr` is the
/// configured address, used to look up the listener's current flags (TLS,
/// redirect) in the newest configuration for each connection.
pub async fn accept_loop(
    listener: Listener,
    addr: ListenAddr,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    // The metric label, fixed by the configuration: a bounded set.
    let label: Arc<str> = Arc::from(addr.to_string());
    let mut slots = Slots::new(shared.site().config.limits.max_connections);
    loop {
        // A slot first: at the limit we stop accepting, so newcomers wait in
        // the kernel's backlog instead of costing us memory.
        slots.resize(shared.site().config.limits.max_connections);
        let permit = match Arc::clone(&slots.sem).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                shared
                    .metrics
                    .conns_limited
                    .with_label_values(&[&*label])
                    .inc();
                if slots
                    .last_warning
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    slots.last_warning = Some(Instant::now());
                    tracing::warn!(
                        listener = %label,
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
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            conn = listener.accept() => conn,
        };
        let conn = serve_connection(
            stream,
            peer,
            addr.clone(),
            Arc::clone(&label),
            Arc::clone(&shared),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            conn.await;
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
    last_warning: Option<Instant>,
}

impl Slots {
    fn new(limit: usize) -> Slots {
        Slots {
            sem: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
            owed: 0,
            last_warning: None,
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
    // count, which costs a heap vector filled on every request (2% of the
    // server core at w1 in a perf profile): only say it when it differs.
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

/// Per-connection facts the request handler needs.
#[derive(Clone)]
struct ConnInfo {
    peer: Peer,
    /// Request metrics, when a metrics listener exists to read them.
    metrics: Option<Arc<crate::metrics::ConnMetrics>>,
    tls: bool,
    redirect_https: bool,
}

/// Keeps `http_connections_open` right however the connection ends.
struct OpenGuard(prometheus::IntGauge);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn serve_connection(
    stream: Stream,
    peer: Peer,
    addr: ListenAddr,
    listener: Arc<str>,
    shared: Arc<Shared>,
    watcher: Watcher,
) {
    tracing::debug!(%peer, "connection accepted");
    let metrics = &shared.metrics;
    let open = metrics.conns_open.with_label_values(&[&*listener]);
    open.inc();
    let _open = OpenGuard(open);
    // Connection-level settings come from the generation current at accept;
    // each request then reads the newest generation.
    let site = shared.site();
    let limits = site.config.limits.clone();
    let handshake_timeout = site.config.tls.handshake_timeout;
    let metered = site.config.metrics.address.is_some();
    let (tls, redirect_https, proxy_protocol) = site
        .config
        .listen
        .iter()
        .find(|l| l.addr.same_socket(&addr))
        .map_or((false, false, false), |l| {
            (l.tls, l.redirect_https, l.proxy_protocol)
        });
    let mut stream = stream;
    let mut peer = peer;
    let mut prefix = bytes::Bytes::new();
    if proxy_protocol {
        // Before TLS and HTTP: the balancer's header comes first on the wire.
        let header = if site.config.trusted_proxies.trusts(&peer) {
            crate::proxy::read_header(&mut stream, limits.header_read_timeout).await
        } else {
            Err(crate::proxy::Rejected::Untrusted)
        };
        match header {
            Ok((client, rest)) => {
                peer = client.map_or(peer, Peer::Tcp);
                prefix = rest;
            }
            Err(reason) => {
                tracing::debug!(%peer, reason = reason.label(), "PROXY protocol header refused");
                metrics
                    .conns_rejected
                    .with_label_values(&[&*listener, reason.label()])
                    .inc();
                return;
            }
        }
    }
    drop(site);
    let activity = Arc::new(Activity::default());
    let tracked = Tracked {
        inner: stream,
        prefix,
        activity: Arc::clone(&activity),
    };
    let info = ConnInfo {
        peer,
        metrics: metered.then(|| {
            Arc::new(crate::metrics::ConnMetrics::new(
                Arc::clone(&shared.metrics),
                Arc::clone(&listener),
            ))
        }),
        tls,
        redirect_https,
    };
    let scheme = if tls { "https" } else { "http" };
    metrics
        .conns_accepted
        .with_label_values(&[&*listener, scheme])
        .inc();
    if !tls {
        // Boxed, here and below: the connection's state machine is several
        // KiB, and a boxed one is built in place instead of being copied
        // into the task (memmove was 12% of the server core at w3).
        return Box::pin(serve_http(
            tracked,
            Protocol::Auto,
            info,
            limits,
            shared,
            activity,
            watcher,
        ))
        .await;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&shared.tls_config));
    let handshake = Box::pin(tokio::time::timeout(
        handshake_timeout,
        acceptor.accept(tracked),
    ))
    .await;
    let rejected = |reason: &str| {
        metrics
            .tls_handshakes
            .with_label_values(&[&*listener, "failure", "unknown"])
            .inc();
        metrics
            .conns_rejected
            .with_label_values(&[&*listener, reason])
            .inc();
    };
    match handshake {
        Ok(Ok(stream)) => {
            let conn = stream.get_ref().1;
            let version = match conn.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "unknown",
            };
            metrics
                .tls_handshakes
                .with_label_values(&[&*listener, "success", version])
                .inc();
            let protocol = match conn.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            let shared = Arc::clone(&shared);
            Box::pin(serve_http(
                stream, protocol, info, limits, shared, activity, watcher,
            ))
            .await
        }
        Ok(Err(e)) => {
            rejected("tls_handshake_failed");
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            rejected("tls_handshake_timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

async fn serve_http<I>(
    io: I,
    protocol: Protocol,
    info: ConnInfo,
    limits: Limits,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_activity = Arc::clone(&activity);
    let peer = info.peer;
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        let activity = Arc::clone(&svc_activity);
        let info = info.clone();
        async move {
            let start = Instant::now();
            let site = shared.site();
            let logged = site.config.log.access_log != AccessLog::Off;
            let client = crate::proxy::client(&req, info.peer, &site.config.trusted_proxies);
            let record = Record::new(&req, client, logged, start);
            let health = site.config.metrics.main_health_paths;
            let checked = serve::guard::check(&req, site.config.limits.max_request_body);
            let mut resp = if let Err(refusal) = checked {
                serve::refuse(&site.config, &req, refusal)
            } else {
                match crate::admin::health(&shared, req.uri().path()) {
                    Some(r) if health => r,
                    _ if info.redirect_https => serve::redirect_https(&site.config, &req),
                    _ => serve::respond(Arc::clone(&site), &req).await,
                }
            };
            if info.tls {
                if let Some(hsts) = &site.config.tls.hsts {
                    resp.headers_mut()
                        .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
                }
            }
            let status = resp.status().as_u16();
            let metrics = info.metrics.clone();
            Ok::<_, Infallible>(resp.map(|b| LoggedBody::new(b, status, record, activity, metrics)))
        }
    });
    let builder = builder(&limits, protocol);
    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    let conn = watcher.watch(conn);
    tokio::select! {
        result = conn => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = idle(&activity, limits.keep_alive_timeout) => {
            tracing::debug!(%peer, "closing idle connection");
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
