//! A connection ready for HTTP: hyper's HTTP/1 or HTTP/2 connection with
//! the handler as its service, run against the connection's deadlines
//! ([`super::timers`]) and the drain ([`super::drain`]).
//!
//! An HTTP/1 connection does not keep hyper's state while it waits for a
//! request: before the first, and once it has been quiet for
//! [`RELEASE_AFTER`] after the last, it holds only its socket (and what the
//! client sent that HTTP has not used yet), as nginx keeps only the socket
//! of an idle keep-alive connection. hyper's state, with its read and write
//! buffers, is built when the client sends again, and handed back with
//! hyper's own graceful close, which on an idle connection ends without
//! closing the socket and returns the bytes it read but did not parse.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::coalesce::Coalesce;
use super::drain::DrainWatch;
use super::frames::Frames;
use super::timers::{Activity, Close, InFlight, GRACE};
use crate::addr::Peer;
use crate::clock::coarse_now_ms;
use crate::config::{Config, Limits};
use crate::handler::Accounted;
use crate::handler::Handler;
use crate::metrics::Metrics;

/// Which HTTP versions to speak on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plain TCP or unix: HTTP/1.1, or HTTP/2 when the client opens with the
    /// HTTP/2 preface (h2c prior knowledge).
    Auto,
    /// ALPN chose HTTP/1.1 (or chose nothing).
    Http1,
    /// ALPN chose h2.
    Http2,
}

const CLOSE: http::HeaderValue = http::HeaderValue::from_static("close");

/// How an HTTP/2 client with prior knowledge opens (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams a client may reset before they were accepted (h2's default).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Stream errors one client may cause before the connection is closed.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 200;

/// The HTTP/2 connection window we grant for request bodies: the
/// protocol's initial one, never raised.
const H2_CONNECTION_WINDOW: u32 = 65_535;

/// hyper's own limit when `max_headers` is not called.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        // hyper's header timer also runs while an HTTP/1 connection waits
        // idle for its next request, which would cap keep-alive at the head
        // timeout. Our own timers take both jobs (super::timers): the head
        // deadline from the first byte, the idle one from the last response.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_size)
        // A client may send its request and shut its side at once
        // (`printf ... | nc -N`, health-check scripts): without this hyper
        // drops the connection at that EOF, before answering. The answer is
        // still bounded by send_timeout.
        .half_close(true)
        .keep_alive(true);
    // hyper parses into a stack array of 100 headers unless told another
    // count, which costs a heap vector filled on every request (seen in
    // profiles, benches/README.md): only say it when it differs.
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        b.max_headers(limits.max_headers);
    }
    b
}

fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    // HTTP/2 floods, stated rather than left to defaults that could change:
    // rapid reset (CVE-2023-44487) ends the connection with GOAWAY once a
    // client has reset 20 streams still waiting to be accepted; a client that
    // provokes more than 200 stream errors is cut off (RUSTSEC-2024-0003);
    // CONTINUATION floods (CVE-2024-27316 class) are bounded by h2 through
    // the header list size, so a header block cannot grow past
    // `max_header_size` however it is split into frames.
    let mut b = http2::Builder::new(TokioExecutor::new());
    // Request bodies are never read, only let through up to
    // `max_request_body`: a stream may send that much before its window
    // closes, and the whole connection the protocol's initial 64 KiB (h2
    // buffers what arrives until it is read, and hyper's defaults let a
    // connection of waiting streams hold about 0.5 MiB).
    let stream_window = limits.max_request_body.min(H2_CONNECTION_WINDOW as u64) as u32;
    b.timer(TokioTimer::new())
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_size as u32)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    b
}

/// Where deadline closes are counted (`None`: not counted, the metrics
/// listener), with the listener's label.
#[derive(Clone)]
pub(super) struct Closes(pub(super) Option<(Arc<Metrics>, Arc<str>)>);

impl Closes {
    fn count(&self, reason: Close) {
        if let Some((metrics, label)) = &self.0 {
            metrics
                .conns_closed
                .with_label_values(&[label, reason.label()])
                .inc();
        }
    }
}

type Reply = Response<InFlight<Accounted>>;

/// hyper's service for one connection: counts each request, runs the
/// handler, and marks the response in flight until its body is done.
#[derive(Clone)]
struct Service {
    handler: Arc<Handler>,
    activity: Arc<Activity>,
    max_requests: Option<u64>,
    closes: Closes,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Reply;
    type Error = Infallible;
    /// Boxed because hyper hands an HTTP/1 connection back
    /// (`poll_without_shutdown`) only when the future is `Unpin`.
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        let activity = Arc::clone(&self.activity);
        let served = activity.request_started(coarse_now_ms());
        if self.max_requests.is_some_and(|max| served >= max) {
            if activity.is_h2() {
                activity.wake();
            } else if !activity.closing() {
                activity.close_after_next_response();
                self.closes.count(Close::Requests);
            }
        }
        // HTTP/1: a request with a body keeps it (unread) until its
        // response is done ([`InFlight::keeping`]); the common request has
        // none, and goes to the handler as it is.
        let h1 = !activity.is_h2();
        let keep = h1 && !http_body::Body::is_end_stream(req.body());
        if h1 {
            activity.expect_body(keep);
        }
        if keep {
            let (parts, body) = req.into_parts();
            let req = Request::from_parts(parts, ());
            return Box::pin(answer(handler, activity, req, Some(body)));
        }
        Box::pin(answer(handler, activity, req, None))
    }
}

/// The handler's answer to `req`, in flight on its connection until its
/// body is done; `body`: the request's unread body, kept as long.
async fn answer<B>(
    handler: Arc<Handler>,
    activity: Arc<Activity>,
    req: Request<B>,
    body: Option<Incoming>,
) -> Result<Reply, Infallible> {
    let mut resp = handler.handle(req).await;
    if activity.closing() && !activity.is_h2() {
        // hyper closes the connection once this response is sent.
        resp.headers_mut().insert(http::header::CONNECTION, CLOSE);
    }
    Ok(resp.map(|b| InFlight::new(b, activity).keeping(body)))
}

/// A connection ready for HTTP: its handler, its limits and clocks.
pub struct Session {
    pub(super) handler: Handler,
    pub(super) protocol: Protocol,
    /// The generation current at accept, for its connection-level settings
    /// (`limits`); each request reads the newest generation.
    pub(super) config: Arc<Config>,
    pub(super) activity: Arc<Activity>,
    /// `None` for the metrics listener: a drain does not wait for scrapes.
    pub(super) drain: Option<DrainWatch>,
    pub(super) peer: Peer,
    pub(super) closes: Closes,
    /// `http_connections_waiting` for the listener (`None`: not counted).
    pub(super) waiting: Option<IntGauge>,
    /// Counts the connection in `http_connections_open` while it lives.
    pub(super) _open: Option<super::OpenGuard>,
    /// Counts the connection for its client address while it lives.
    pub(super) _client: Option<crate::clients::ClientSlot>,
}

/// hyper's connections over the connection's stream.
type Http1Conn<I> = http1::Connection<TokioIo<Replay<I>>, Service>;
type Http2Conn<I> = http2::Connection<TokioIo<Coalesce<Replay<I>>>, Service, TokioExecutor>;

/// What the connection is doing.
enum Phase<I> {
    /// Waiting for the client's next bytes with the socket alone.
    Waiting(Replay<I>),
    /// hyper's HTTP/1 connection; `built_at` is the request count when it
    /// was built, `releasing` that it is being handed back.
    Http1 {
        conn: Box<Http1Conn<I>>,
        built_at: u64,
        releasing: bool,
    },
    /// hyper's HTTP/2 connection, and the session's handle on its write
    /// buffer (written out after each poll of the connection).
    /// `finished`: hyper's result, held until the last buffered bytes are
    /// out.
    Http2 {
        conn: Pin<Box<Http2Conn<I>>>,
        out: Coalesce<Replay<I>>,
        finished: Option<hyper::Result<()>>,
    },
    /// Between two phases.
    Gone,
}

/// What woke the connection's loop.
enum Event {
    /// Waiting: the client sent bytes (`true`), or closed or failed (`false`).
    Bytes(bool),
    /// hyper's connection finished.
    Done(hyper::Result<()>),
    /// Writing what the connection buffered failed.
    Broken,
    /// The drain began.
    Drain,
    /// A deadline passed.
    Deadline(Close),
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Phase<I> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        match self {
            Phase::Waiting(io) => io.poll_fill(cx).map(Event::Bytes),
            Phase::Http1 { conn, .. } => conn.poll_without_shutdown(cx).map(Event::Done),
            Phase::Http2 {
                conn,
                out,
                finished,
            } => {
                if finished.is_none() {
                    if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                        *finished = Some(r);
                    }
                }
                // What this poll wrote goes out now, in one write; hyper's
                // end waits for it.
                match out.flush_now(cx) {
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::Broken),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => {}
                }
                match finished.take() {
                    Some(r) => Poll::Ready(Event::Done(r)),
                    None => Poll::Pending,
                }
            }
            Phase::Gone => Poll::Pending,
        }
    }

    /// Starts hyper's graceful close: HTTP/1 ends after the response in
    /// flight (at once when idle), HTTP/2 sends GOAWAY. `false` when there
    /// is no HTTP state to close (waiting: the connection just closes).
    fn graceful_shutdown(&mut self) -> bool {
        match self {
            Phase::Http1 { conn, .. } => {
                Pin::new(&mut **conn).graceful_shutdown();
                true
            }
            Phase::Http2 { conn, .. } => {
                conn.as_mut().graceful_shutdown();
                true
            }
            Phase::Waiting(_) | Phase::Gone => false,
        }
    }
}

/// Counts a connection in `http_connections_waiting` while it waits.
struct WaitingGauge {
    gauge: Option<IntGauge>,
    counted: bool,
}

impl WaitingGauge {
    fn set(&mut self, waiting: bool) {
        if let Some(g) = &self.gauge {
            if waiting != self.counted {
                self.counted = waiting;
                if waiting {
                    g.inc();
                } else {
                    g.dec();
                }
            }
        }
    }
}

impl Drop for WaitingGauge {
    fn drop(&mut self) {
        self.set(false);
    }
}

impl Session {
    /// Runs HTTP on `io` until the client leaves, a deadline passes, or a
    /// drain ends it.
    ///
    /// `self`'s fields are used in place, not moved into locals: an async
    /// fn keeps its arguments in its state, so moved-out copies would be
    /// held twice by every idle connection.
    pub async fn serve<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = &self.config.limits;
        let activity = &self.activity;
        let svc = Service {
            handler: Arc::new(self.handler),
            activity: Arc::clone(activity),
            max_requests: limits.max_requests_per_connection,
            closes: self.closes.clone(),
        };
        let mut gauge = WaitingGauge {
            gauge: self.waiting.take(),
            counted: false,
        };
        let io = Replay {
            inner: io,
            prefix: Bytes::new(),
            frames: None,
        };
        // Plain connections look at their first bytes for the HTTP/2 preface.
        let mut sniffing = self.protocol == Protocol::Auto;
        let mut phase = if self.protocol == Protocol::Http2 {
            activity.set_h2();
            start_http2(io, limits, &svc, activity)
        } else {
            gauge.set(true);
            Phase::Waiting(io)
        };
        // When a graceful close began (coarse clock), if one has.
        let mut graceful: Option<u64> = None;
        // The drain and the deadlines are polled only when they were woken,
        // not every time the connection is (every read and write).
        let mut drained = OnWake::new(draining(&mut self.drain));
        // The loop ends with the socket to shut down, or returns when the
        // connection is simply dropped.
        let mut io = loop {
            let release = match &phase {
                Phase::Http1 {
                    built_at,
                    releasing: false,
                    ..
                } => Some(*built_at),
                _ => None,
            };
            let event = {
                let mut deadline = OnWake::new(activity.deadline(limits, graceful, release));
                tokio::select! {
                    biased;
                    event = poll_fn(|cx| phase.poll(cx)) => event,
                    _ = &mut drained, if graceful.is_none() => Event::Drain,
                    reason = &mut deadline => Event::Deadline(reason),
                }
            };
            match event {
                Event::Bytes(false) => return,
                Event::Bytes(true) => {
                    let Phase::Waiting(io) = &phase else {
                        unreachable!("bytes are read only while waiting")
                    };
                    if sniffing {
                        let seen = &io.prefix[..];
                        if seen.len() < PREFACE.len() && PREFACE.starts_with(seen) {
                            continue;
                        }
                        sniffing = false;
                        if seen.starts_with(PREFACE) {
                            gauge.set(false);
                            activity.set_h2();
                            let Phase::Waiting(io) = std::mem::replace(&mut phase, Phase::Gone)
                            else {
                                unreachable!()
                            };
                            phase = start_http2(io, limits, &svc, activity);
                            continue;
                        }
                    }
                    gauge.set(false);
                    phase = start_http1(phase, limits, &svc, activity);
                }
                Event::Broken => return,
                Event::Done(result) => {
                    let ended = std::mem::replace(&mut phase, Phase::Gone);
                    if let Err(e) = result {
                        if activity.flooded() {
                            self.closes.count(Close::Flood);
                            static FLOOD: crate::clock::RateLimit = crate::clock::RateLimit::new();
                            if FLOOD.due() {
                                tracing::warn!(peer = %self.peer, "HTTP/2 control frames past their allowance: connection closed (logged at most once a minute; counted as h2_flood)");
                            }
                        }
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                        return;
                    }
                    let Phase::Http1 {
                        conn, releasing, ..
                    } = ended
                    else {
                        return;
                    };
                    let parts = conn.into_parts();
                    let mut io = parts.io.into_inner();
                    if !releasing || graceful.is_some() {
                        // Ended by the client, a `Connection: close` or a
                        // graceful close.
                        break io;
                    }
                    // Handed back. What hyper read but did not parse (the
                    // start of the next request) is replayed to the next
                    // hyper connection, built at once.
                    // hyper hands back only a connection whose last
                    // request is done, body and all.
                    activity.expect_body(false);
                    if !parts.read_buf.is_empty() {
                        activity.read();
                        io.unread(parts.read_buf);
                        phase = start_http1(Phase::Waiting(io), limits, &svc, activity);
                        continue;
                    }
                    phase = Phase::Waiting(io);
                    gauge.set(true);
                }
                Event::Drain => {
                    graceful = Some(coarse_now_ms());
                    if !phase.graceful_shutdown() {
                        return;
                    }
                }
                Event::Deadline(Close::Release) => {
                    if let Phase::Http1 {
                        conn, releasing, ..
                    } = &mut phase
                    {
                        *releasing = true;
                        Pin::new(&mut **conn).graceful_shutdown();
                    }
                }
                Event::Deadline(reason) => {
                    // An idle deadline after a graceful close began is its
                    // backstop, not a new reason.
                    let backstop =
                        (reason == Close::Idle && graceful.is_some()) || reason == Close::AgeGrace;
                    if !backstop {
                        self.closes.count(reason);
                        tracing::debug!(peer = %self.peer, reason = reason.label(), "closing connection");
                    }
                    if !reason.graceful() || backstop {
                        // A hard deadline, or a graceful close that did not
                        // finish in time: dropping the connection closes
                        // the socket.
                        return;
                    }
                    match reason {
                        // HTTP/1 with a limit reached: the next (or current)
                        // response says Connection: close; an idle wait
                        // still ends at keep_alive_timeout.
                        Close::Age | Close::Requests if !activity.is_h2() => {
                            activity.close_after_next_response();
                        }
                        // Idle HTTP/1 closes at once; HTTP/2 sends GOAWAY
                        // and finishes its streams.
                        _ => {
                            graceful = Some(coarse_now_ms());
                            if !phase.graceful_shutdown() {
                                return;
                            }
                        }
                    }
                }
            }
        };
        // What hyper's own ending does: FIN (or TLS close_notify), bounded.
        // Boxed apart from the await: its timer is not kept in every
        // connection's state (see `Connection::start`).
        let shutdown = Box::pin(tokio::time::timeout(GRACE, io.shutdown()));
        let _ = shutdown.await;
    }
}

/// hyper's HTTP/2 connection on `io`, writing through a [`Coalesce`].
fn start_http2<I>(
    mut io: Replay<I>,
    limits: &Limits,
    svc: &Service,
    activity: &Arc<Activity>,
) -> Phase<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Control frames counted from the preface on (it is still to replay).
    io.frames = Some((Frames::default(), Arc::clone(activity)));
    let out = Coalesce::new(io);
    let conn = http2_builder(limits).serve_connection(TokioIo::new(out.clone()), svc.clone());
    Phase::Http2 {
        conn: Box::pin(conn),
        out,
        finished: None,
    }
}

/// Builds hyper's HTTP/1 connection on a waiting connection's socket.
fn start_http1<I>(phase: Phase<I>, limits: &Limits, svc: &Service, activity: &Activity) -> Phase<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Phase::Waiting(io) = phase else {
        unreachable!("hyper's state is built only on a waiting connection")
    };
    Phase::Http1 {
        conn: Box::new(http1_builder(limits).serve_connection(TokioIo::new(io), svc.clone())),
        built_at: activity.requests(),
        releasing: false,
    }
}

/// The connection's stream, replaying first the bytes already taken from
/// it that HTTP has not used: the first bytes looked at for the HTTP/2
/// preface, the bytes that ended a wait, or what hyper had read but not
/// parsed when its state was handed back.
pub struct Replay<I> {
    inner: I,
    prefix: Bytes,
    /// HTTP/2: the client's control frames, counted against their
    /// allowance ([`super::frames`]); past it, reading fails and hyper
    /// ends the connection.
    frames: Option<(Frames, Arc<Activity>)>,
}

impl<I: AsyncRead + Unpin> Replay<I> {
    /// Reads what the client sends next and keeps it to replay; `false` when
    /// the client closed or the read failed.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut chunk = [0u8; 1024];
        let mut buf = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                self.unread(Bytes::copy_from_slice(buf.filled()));
                Poll::Ready(true)
            }
            Poll::Ready(_) => Poll::Ready(false),
        }
    }

    /// Puts `more` after the bytes already waiting to be replayed.
    fn unread(&mut self, more: Bytes) {
        if self.prefix.is_empty() {
            self.prefix = more;
        } else {
            let mut joined = BytesMut::with_capacity(self.prefix.len() + more.len());
            joined.extend_from_slice(&self.prefix);
            joined.extend_from_slice(&more);
            self.prefix = joined.freeze();
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Replay<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if self.prefix.is_empty() {
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        } else {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            if self.prefix.is_empty() {
                // Not the empty tail of a shared buffer: an idle connection
                // holds no buffer.
                self.prefix = Bytes::new();
            }
        }
        if let Some((frames, activity)) = &mut self.frames {
            if frames
                .feed(&buf.filled()[before..], activity.written())
                .is_err()
            {
                activity.flood();
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "HTTP/2 control-frame flood",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Replay<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// A future that is polled only when its own waker fired (and on its first
/// poll). `select!` polls every branch each time the task wakes; for a
/// connection that is every read and write, while the drain and the
/// deadline watch wake a few times in its whole life.
struct OnWake<F> {
    fut: Pin<Box<F>>,
    flag: Arc<WakeFlag>,
}

struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> OnWake<F> {
    fn new(fut: F) -> Self {
        OnWake {
            fut: Box::pin(fut),
            flag: Arc::new(WakeFlag {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&self.flag));
        self.fut.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

/// Resolves when the drain begins; never for a connection with no drain.
/// Borrows the watch: the drain waits until the connection drops it.
async fn draining(drain: &mut Option<DrainWatch>) {
    match drain {
        Some(d) => d.draining().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// The wrapped future is polled on the first poll and after its own
    /// waker fired, not on the task's other wake-ups.
    #[test]
    fn on_wake_polls_the_inner_future_only_when_it_was_woken() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let polls = Arc::new(AtomicUsize::new(0));
        let inner = {
            let (notify, polls) = (Arc::clone(&notify), Arc::clone(&polls));
            let mut notified = Box::pin(async move { notify.notified().await });
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                notified.as_mut().poll(cx)
            })
        };
        let mut w = Box::pin(OnWake::new(inner));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..5 {
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "polled once, then left alone"
        );
        notify.notify_one();
        assert!(w.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
