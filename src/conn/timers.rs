//! A connection's clocks: what it has done and when, and the deadlines that
//! follow from that. Every phase of a connection has one:
//!
//! | phase | deadline | ends it |
//! |---|---|---|
//! | accept to the end of the first request head (PROXY header, TLS, protocol detection, HTTP/2 preface included) | `header_read_timeout` | closed |
//! | first byte of a later HTTP/1 request head to its end (a request's own body is no head) | `header_read_timeout` | closed |
//! | nothing in flight, before or between requests (HTTP/1 and HTTP/2; PINGs do not count) | `keep_alive_timeout` | graceful |
//! | a response in flight that makes no progress (HTTP/1: no byte written; HTTP/2: its body not polled, since hyper polls it only when the stream has window: PING ACKs are not progress) | `send_timeout` | closed |
//! | the connection's age, its request count | `max_connection_age`, `max_requests_per_connection` | graceful |
//! | a graceful close with nothing in flight (GOAWAY unanswered, a drain) | [`GRACE`] | closed |
//! | an HTTP/2 connection past its age, GOAWAY sent | `send_timeout` more | closed |
//!
//! "Graceful" is hyper's: HTTP/1 closes after the response in flight (or at
//! once when idle), HTTP/2 sends GOAWAY and lets open streams finish.
//! The clocks are the coarse monotonic clock in milliseconds
//! ([`coarse_now_ms`]): [`Tracked`] touches them on every read and write.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::clock::coarse_now_ms;
use crate::config::Limits;
use crate::listen::Stream;
use crate::serve::body::Budget;

/// How long a connection with nothing in flight has to finish a graceful
/// close (GOAWAY sent, or an idle HTTP/1 close) before it is dropped: a
/// client that never answers cannot keep it open.
pub const GRACE: Duration = Duration::from_secs(1);

/// How long an HTTP/1 connection with nothing in flight keeps hyper's state
/// (its read and write buffers, 16 KiB or more) before handing it back and
/// waiting for the client's next bytes with the socket alone, as nginx frees
/// its buffers between requests. Long enough that a client sending request
/// after request (a benchmark, a page's assets) never pays for the rebuild;
/// short enough that a burst of short-lived clients, each then idle, does not
/// keep a burst's worth of buffers (benches/README.md, "Idle connections").
pub const RELEASE_AFTER: Duration = Duration::from_millis(10);

/// Why a connection was ended by one of its deadlines: the `reason` label of
/// `http_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// No complete first request head within `header_read_timeout` of accept.
    FirstRequest,
    /// A later HTTP/1 request head not complete within `header_read_timeout`.
    Head,
    /// Nothing in flight for `keep_alive_timeout`.
    Idle,
    /// A response in flight and no byte written for `send_timeout`.
    Send,
    /// Older than `max_connection_age`.
    Age,
    /// `max_requests_per_connection` requests served.
    Requests,
    /// Not a close: an HTTP/1 connection quiet for [`RELEASE_AFTER`] hands
    /// hyper's state back and keeps the socket. Never counted.
    Release,
    /// A connection closed gracefully for its age still open
    /// `send_timeout` later: dropped (already counted as `max_age`).
    AgeGrace,
    /// HTTP/2 control frames past their allowance (`conn::frames`).
    Flood,
}

impl Close {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Close::FirstRequest => "first_request_timeout",
            Close::Head => "header_timeout",
            Close::Idle => "idle",
            Close::Send => "send_timeout",
            Close::Age => "max_age",
            Close::Requests => "max_requests",
            Close::Release => "release",
            Close::AgeGrace => "max_age",
            Close::Flood => "h2_flood",
        }
    }

    /// Whether the connection may finish what it is doing (GOAWAY,
    /// Connection: close) rather than be dropped.
    pub fn graceful(self) -> bool {
        matches!(self, Close::Idle | Close::Age | Close::Requests)
    }
}

/// A free slot in [`Activity::progress`].
const FREE: u64 = u64::MAX;

/// What a connection has done, and when; shared by the transport (reads and
/// writes), the service (requests) and the response bodies (in flight).
#[derive(Debug)]
pub struct Activity {
    /// When the connection was accepted.
    born_ms: u64,
    /// The last request event: a request head completed, or a response ended.
    last_event_ms: AtomicU64,
    /// The last byte written to the socket.
    last_write_ms: AtomicU64,
    /// Bytes written to the socket (the control-frame allowance grows
    /// with them).
    written: AtomicU64,
    /// When the first byte of an unfinished HTTP/1 request head arrived; 0
    /// when no head is in progress.
    head_since_ms: AtomicU64,
    /// Responses whose bodies are not finished.
    inflight: AtomicUsize,
    /// Request heads completed.
    requests: AtomicU64,
    /// Responses finished (sent, or dropped by hyper): with `requests`, tells
    /// a connection waiting for its next request from one whose handler is
    /// still working on the last.
    answered: AtomicU64,
    /// The last write to the socket could not take its bytes: hyper has a
    /// response waiting to be flushed.
    write_blocked: AtomicBool,
    /// The connection speaks HTTP/2, where bytes between requests are frames
    /// (PING, WINDOW_UPDATE), not the start of a request head.
    h2: AtomicBool,
    /// HTTP/2: when each response body in flight was last polled by hyper
    /// (by slot: a body takes a free one), the progress the send deadline
    /// watches. hyper polls a stream's body only when the client has given
    /// the stream window, so a stalled stream stops here while PINGs and
    /// other control frames still move the socket.
    progress: std::sync::Mutex<Vec<u64>>,
    /// The request being answered carries a body (HTTP/1): bytes that
    /// arrive after its head are that body, not the start of the next head.
    body_expected: AtomicBool,
    /// Wakes the deadline watch early (a request count reached its limit).
    wake: Notify,
    /// The client sent more HTTP/2 control frames than its allowance.
    flooded: AtomicBool,
    /// HTTP/1: the next response carries `Connection: close` (HTTP/1 cannot
    /// announce a close on an idle connection without racing the client's
    /// next request, so an age limit waits for one).
    closing: AtomicBool,
    /// The connection's response-memory budget: bytes it holds must make
    /// progress (the send deadline), and a wait for the pool's room is the
    /// server's, not the client's (no deadline runs while it lasts).
    budget: Option<Budget>,
}

impl Activity {
    /// A connection accepted at `born_ms` (coarse clock).
    pub fn new(born_ms: u64) -> Activity {
        Activity {
            born_ms,
            last_event_ms: AtomicU64::new(born_ms),
            last_write_ms: AtomicU64::new(born_ms),
            written: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            progress: std::sync::Mutex::new(Vec::new()),
            body_expected: AtomicBool::new(false),
            wake: Notify::new(),
            flooded: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            budget: None,
        }
    }

    /// This connection's bodies are charged to `budget`.
    pub fn holding(mut self, budget: Budget) -> Activity {
        self.budget = Some(budget);
        self
    }

    /// Whether the connection speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// HTTP/1: end the connection after the next response.
    pub fn close_after_next_response(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Whether the response being made should carry `Connection: close`.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// The connection speaks HTTP/2 (ALPN said so, or the preface came).
    pub fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }

    /// Request heads completed so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A request head is complete: hyper is about to call the handler.
    /// Returns how many requests the connection has carried.
    pub fn request_started(&self, now: u64) -> u64 {
        self.head_since_ms.store(0, Ordering::Relaxed);
        self.last_event_ms.store(now, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// HTTP/1: whether the request just started carries a body; bytes
    /// read until the next request (or the hand-back) are taken for it.
    pub fn expect_body(&self, body: bool) {
        if body || self.body_expected.load(Ordering::Relaxed) {
            self.body_expected.store(body, Ordering::Relaxed);
        }
    }

    /// When the body in flight that has gone longest without being polled
    /// was last polled (HTTP/2); `None` with none in flight.
    fn stalled_since(&self) -> Option<u64> {
        let p = self.progress.lock().expect("progress lock");
        p.iter().copied().filter(|&t| t != FREE).min()
    }

    fn body_started(&self, now: u64) -> Option<usize> {
        if !self.is_h2() {
            return None;
        }
        let mut p = self.progress.lock().expect("progress lock");
        match p.iter().position(|&t| t == FREE) {
            Some(i) => {
                p[i] = now;
                Some(i)
            }
            None => {
                p.push(now);
                Some(p.len() - 1)
            }
        }
    }

    fn body_polled(&self, slot: usize, now: u64) {
        self.progress.lock().expect("progress lock")[slot] = now;
    }

    fn body_ended(&self, slot: usize) {
        self.progress.lock().expect("progress lock")[slot] = FREE;
    }

    /// Wakes the deadline watch now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Bytes came from the client: on HTTP/1 a request head has begun, if
    /// one had not.
    /// While a request's body may still be arriving, its bytes start no
    /// head: the keep-alive deadline bounds that wait, and the next head's
    /// timer starts when hyper's state is handed back with it.
    pub fn read(&self) {
        if !self.h2.load(Ordering::Relaxed)
            && !self.body_expected.load(Ordering::Relaxed)
            && self.head_since_ms.load(Ordering::Relaxed) == 0
        {
            self.head_since_ms
                .store(coarse_now_ms().max(1), Ordering::Relaxed);
        }
    }

    /// The client flooded HTTP/2 control frames: its reads now fail.
    pub fn flood(&self) {
        self.flooded.store(true, Ordering::Relaxed);
    }

    /// Whether [`Activity::flood`] was called.
    pub fn flooded(&self) -> bool {
        self.flooded.load(Ordering::Relaxed)
    }

    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        self.last_write_ms.store(coarse_now_ms(), Ordering::Relaxed);
        if self.write_blocked.load(Ordering::Relaxed) {
            self.write_blocked.store(false, Ordering::Relaxed);
        }
    }

    fn write_pending(&self) {
        self.write_blocked.store(true, Ordering::Relaxed);
    }

    /// The first deadline that has passed at `now`, or how long until the
    /// next one might. `graceful_since`: when a graceful close began, if one
    /// has; age and count no longer matter then, and an idle connection gets
    /// [`GRACE`] more to finish closing before it is dropped.
    /// `release_after`: for an HTTP/1 connection served by hyper, the request
    /// count when its hyper state was built; [`Close::Release`] applies once
    /// it has answered a request since and everything is quiet (every
    /// request answered and flushed, no new head begun) for [`RELEASE_AFTER`].
    pub fn check(
        &self,
        limits: &Limits,
        now: u64,
        graceful_since: Option<u64>,
        release_after: Option<u64>,
    ) -> Result<Close, Duration> {
        let ms = |d: Duration| d.as_millis() as u64;
        let requests = self.requests.load(Ordering::Relaxed);
        let inflight = self.inflight.load(Ordering::Relaxed);
        // Each candidate: (reason, when it fires, applies now).
        let mut next = u64::MAX;
        // An HTTP/1 connection already told to close after its next
        // response has dealt with its age and count; idle still applies.
        let closing = self.closing.load(Ordering::Relaxed);
        let graceful_done = graceful_since.is_some();
        let mut due = |reason: Close, at: u64, applies: bool| -> Option<Close> {
            let handled = match reason {
                Close::Age | Close::Requests => graceful_done || closing,
                _ => false,
            };
            if !applies || handled {
                return None;
            }
            if now >= at {
                return Some(reason);
            }
            next = next.min(at);
            None
        };
        let head = self.head_since_ms.load(Ordering::Relaxed);
        let last_event = self.last_event_ms.load(Ordering::Relaxed);
        let last_write = self.last_write_ms.load(Ordering::Relaxed);
        // Waiting for the pool's room is the server's wait: no deadline
        // for the client while it lasts (the holders' own send deadlines
        // bound it).
        let ours = self.budget.as_ref().is_some_and(Budget::waiting);
        // Bytes held for the client (in our bodies or h2's send buffer)
        // and when they last moved: on HTTP/1 every write is response
        // bytes; on HTTP/2 only a charge given back or a frame written is.
        let holding = self.budget.as_ref().and_then(Budget::holding_since);
        let held_progress = holding.map(|d| match self.is_h2() {
            false => d.max(last_write),
            true => d,
        });
        let checks = [
            (
                Close::FirstRequest,
                self.born_ms + ms(limits.header_read_timeout),
                requests == 0,
            ),
            (
                Close::Head,
                head + ms(limits.header_read_timeout),
                requests > 0 && head != 0 && inflight == 0,
            ),
            (
                Close::Send,
                // HTTP/1 writes only response bytes, so a write is progress;
                // on HTTP/2 a PING ACK or SETTINGS is a write too, so the
                // deadline follows the body polled least recently.
                match self.is_h2() {
                    false => last_write.max(last_event),
                    true => self.stalled_since().unwrap_or(now).max(last_event),
                } + ms(limits.send_timeout),
                inflight > 0 && !ours,
            ),
            (
                // Bytes held with no progress, whatever else the client
                // sends (a HEAD every second, PINGs): the send deadline.
                Close::Send,
                held_progress.unwrap_or(0) + ms(limits.send_timeout),
                held_progress.is_some() && !ours,
            ),
            (
                Close::Idle,
                // Once a graceful close has begun, an idle connection has
                // its short grace to finish it, not a new keep-alive wait:
                // a peer that never answers GOAWAY's PING holds nothing.
                match graceful_since {
                    Some(g) => g + ms(GRACE),
                    None => last_event + ms(limits.keep_alive_timeout),
                },
                inflight == 0 && holding.is_none() && !ours,
            ),
            (
                // Past its age, a connection that was told to go (GOAWAY)
                // has send_timeout more to finish its streams, then it is
                // dropped however busy: age is a bound, not a request.
                Close::AgeGrace,
                self.born_ms
                    + limits.max_connection_age.map_or(u64::MAX / 4, ms)
                    + ms(limits.send_timeout),
                limits.max_connection_age.is_some() && graceful_done,
            ),
            (
                Close::Age,
                self.born_ms + limits.max_connection_age.map_or(u64::MAX / 2, ms),
                limits.max_connection_age.is_some(),
            ),
            (
                Close::Requests,
                now,
                limits
                    .max_requests_per_connection
                    .is_some_and(|max| requests >= max),
            ),
            (
                Close::Release,
                last_event + ms(RELEASE_AFTER),
                release_after.is_some_and(|built| requests > built)
                    && !graceful_done
                    && !closing
                    && inflight == 0
                    && head == 0
                    // hyper may still be reading past the last request's
                    // body; handing its state back then would cut it.
                    && !self.body_expected.load(Ordering::Relaxed)
                    && self.answered.load(Ordering::Relaxed) == requests
                    && !self.write_blocked.load(Ordering::Relaxed),
            ),
        ];
        for (reason, at, applies) in checks {
            if let Some(r) = due(reason, at, applies) {
                return Ok(r);
            }
        }
        Err(Duration::from_millis(next.saturating_sub(now)))
    }

    /// Waits until a deadline passes and says which.
    ///
    /// Requests, reads and writes move the deadlines without waking this
    /// watch (a wake-up per request would cost every request). That is safe
    /// because it never sleeps longer than the shortest timeout an event can
    /// start (`header_read_timeout` for a head, `send_timeout` for a
    /// response, `keep_alive_timeout` when one ends): a deadline created at
    /// time t is at least t plus that, and the watch, last awake at or
    /// before t, looks again by then. So an idle connection costs one timer
    /// wake-up per `header_read_timeout` (10 s by default). A request count
    /// reaching its limit wakes it at once ([`Activity::wake`]).
    ///
    /// With `release_after` (see [`Activity::check`]) it also looks every
    /// [`RELEASE_AFTER`], so a connection that goes quiet is released within
    /// two spells; a busy one pays a timer wake-up per spell, not per request.
    pub async fn deadline(
        &self,
        limits: &Limits,
        graceful_since: Option<u64>,
        release_after: Option<u64>,
    ) -> Close {
        let mut longest = limits
            .header_read_timeout
            .min(limits.send_timeout)
            .min(limits.keep_alive_timeout);
        if release_after.is_some() {
            longest = longest.min(RELEASE_AFTER);
        }
        let longest = longest.max(Duration::from_millis(10));
        loop {
            let wait = match self.check(limits, coarse_now_ms(), graceful_since, release_after) {
                Ok(reason) => return reason,
                Err(wait) => wait.clamp(Duration::from_millis(10), longest),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// A response body in flight: counted from the moment the response exists
/// until hyper has sent or dropped its body, so the idle timer never closes a
/// connection in the middle of a response, and the send timer watches it.
pub struct InFlight<B> {
    inner: B,
    activity: Arc<Activity>,
    /// HTTP/2: this body's slot in [`Activity::progress`].
    slot: Option<usize>,
    /// HTTP/1: the request's body, unread, kept until the response is
    /// done. hyper reads past an unread body when it is dropped, or closes
    /// the connection if it has not all arrived: kept this long, a body
    /// sent just after its head (curl's two writes) has arrived by then.
    request_body: Option<hyper::body::Incoming>,
}

impl<B> InFlight<B> {
    /// Counts `inner` as in flight on the connection of `activity`.
    pub fn new(inner: B, activity: Arc<Activity>) -> Self {
        activity.inflight.fetch_add(1, Ordering::Relaxed);
        let slot = activity.body_started(coarse_now_ms());
        InFlight {
            inner,
            activity,
            slot,
            request_body: None,
        }
    }

    /// Keeps the request's unread `body` until this response is done.
    pub fn keeping(mut self, body: Option<hyper::body::Incoming>) -> Self {
        self.request_body = body;
        self
    }
}

impl<B> Drop for InFlight<B> {
    fn drop(&mut self) {
        let a = &self.activity;
        let now = coarse_now_ms();
        if let Some(slot) = self.slot {
            a.body_ended(slot);
        }
        a.inflight.fetch_sub(1, Ordering::Relaxed);
        a.answered.fetch_add(1, Ordering::Relaxed);
        a.last_event_ms.store(now, Ordering::Relaxed);
        if a.body_expected.load(Ordering::Relaxed) {
            // What came after the head was (at least partly) the request's
            // body, which hyper now reads past: a next head that follows it
            // starts its timer when hyper's state is handed back with it
            // (or the keep-alive deadline ends a connection that sends a
            // partial head and stops).
            a.head_since_ms.store(0, Ordering::Relaxed);
        } else if a.head_since_ms.load(Ordering::Relaxed) != 0 {
            // Bytes that came while the response was going out (a pipelined
            // request, a TLS record) get a full head timeout from now, when
            // hyper turns to reading them.
            a.head_since_ms.store(now, Ordering::Relaxed);
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        // Polled at all is progress: hyper polls an HTTP/2 body only when
        // its stream has window to send.
        if let Some(slot) = self.slot {
            self.activity.body_polled(slot, coarse_now_ms());
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's byte stream, with its clocks: reads start the head
/// timer, writes feed the send timer. It first replays the bytes read past a
/// PROXY header.
pub struct Tracked {
    pub(super) inner: Stream,
    pub(super) prefix: Bytes,
    pub(super) activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
        } else {
            let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
            if !matches!(poll, Poll::Ready(Ok(()))) {
                return poll;
            }
        }
        if buf.filled().len() > before {
            self.activity.read();
        }
        Poll::Ready(Ok(()))
    }
}

impl Tracked {
    fn wrote(&self, poll: &Poll<io::Result<usize>>) {
        match poll {
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.wrote(*n),
            Poll::Pending => self.activity.write_pending(),
            _ => {}
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&poll);
        poll
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&poll);
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

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(75),
            max_header_size: 16 << 10,
            max_headers: 100,
            max_uri_length: 8192,
            h2_max_concurrent_streams: 128,
            max_connections: 100,
            max_request_body: 0,
            send_timeout: Duration::from_secs(60),
            max_requests_per_connection: None,
            max_connection_age: None,
            max_response_buffer: 4 << 20,
            max_response_memory: 64 << 20,
            max_connections_per_client: None,
        }
    }

    const S: u64 = 1000;

    #[test]
    fn a_silent_connection_gets_the_head_timeout_not_the_idle_one() {
        let a = Activity::new(0);
        assert_eq!(
            a.check(&limits(), 9 * S, None, None),
            Err(Duration::from_secs(1))
        );
        assert_eq!(
            a.check(&limits(), 10 * S, None, None),
            Ok(Close::FirstRequest)
        );
    }

    #[test]
    fn idle_keep_alive_is_its_own_timer() {
        let l = limits();
        let a = Arc::new(Activity::new(0));
        a.request_started(S);
        drop(InFlight::new((), Arc::clone(&a)));
        a.last_event_ms.store(S, Ordering::Relaxed);
        // Served at 1 s; nothing since: idle until 76 s, even though the
        // head timeout is 10 s.
        assert!(a.check(&l, 30 * S, None, None).is_err());
        assert_eq!(a.check(&l, 76 * S, None, None), Ok(Close::Idle));
        // A graceful close began at 76 s: dropped if not done a grace later.
        assert!(a.check(&l, 76 * S, Some(76 * S), None).is_err());
        assert_eq!(a.check(&l, 77 * S, Some(76 * S), None), Ok(Close::Idle));
    }

    #[test]
    fn a_started_http1_head_must_finish_in_time_but_http2_frames_do_not_start_one() {
        let l = limits();
        let a = Activity::new(0);
        a.request_started(S);
        a.head_since_ms.store(20 * S, Ordering::Relaxed);
        assert_eq!(a.check(&l, 30 * S, None, None), Ok(Close::Head));

        let h2 = Activity::new(0);
        h2.set_h2();
        h2.request_started(S);
        h2.read();
        assert_eq!(h2.head_since_ms.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_quiet_answered_connection_is_released_and_a_busy_one_is_not() {
        let l = limits();
        let ms = RELEASE_AFTER.as_millis() as u64;
        let a = Arc::new(Activity::new(0));
        // Built before its first request: nothing to release yet.
        assert!(a.check(&l, 5 * S, None, Some(0)).is_err());
        a.request_started(S);
        // The handler is still working (no response yet): not released.
        assert!(a.check(&l, S + 10 * ms, None, Some(0)).is_err());
        drop(InFlight::new((), Arc::clone(&a)));
        let answered_at = a.last_event_ms.load(Ordering::Relaxed);
        assert_eq!(
            a.check(&l, answered_at + ms, None, Some(0)),
            Ok(Close::Release)
        );
        // Not for hyper state built after that request, nor without hyper
        // state, nor while a response waits for the socket or a head has
        // begun.
        assert!(a.check(&l, answered_at + ms, None, Some(1)).is_err());
        assert!(a.check(&l, answered_at + ms, None, None).is_err());
        a.write_pending();
        assert!(a.check(&l, answered_at + ms, None, Some(0)).is_err());
        a.wrote(1);
        a.read();
        assert!(a.check(&l, answered_at + ms, None, Some(0)).is_err());
    }

    #[test]
    fn a_stuck_response_hits_the_send_timeout() {
        let l = limits();
        let a = Arc::new(Activity::new(0));
        a.request_started(S);
        let _body = InFlight::new((), Arc::clone(&a));
        a.last_write_ms.store(2 * S, Ordering::Relaxed);
        assert!(a.check(&l, 61 * S, None, None).is_err());
        assert_eq!(a.check(&l, 62 * S, None, None), Ok(Close::Send));
    }

    /// Bytes held for an HTTP/2 client (in h2's buffer, the body done)
    /// must move: requests that keep the connection busy are not progress.
    #[test]
    fn held_bytes_without_delivery_hit_the_send_timeout_however_busy() {
        let l = limits();
        let budget = Budget::new(4 << 20);
        let a = Arc::new(Activity::new(0).holding(budget.clone()));
        a.set_h2();
        let now = coarse_now_ms();
        a.request_started(now);
        let held = budget.try_charge(1 << 20).expect("room");
        // A HEAD answered every second: events, and writes.
        for t in 1..=59 {
            a.last_event_ms.store(now + t * S, Ordering::Relaxed);
            a.wrote(1);
        }
        assert_eq!(a.check(&l, now + 61 * S, None, None), Ok(Close::Send));
        drop(held);
        assert!(a.check(&l, now + 61 * S, None, None).is_err());
    }

    /// A response waiting for room in the process-wide pool waits on the
    /// server: neither the send nor the idle deadline runs meanwhile.
    #[tokio::test]
    async fn waiting_for_the_pool_is_not_the_clients_stall() {
        let l = limits();
        let pool = Arc::new(crate::serve::body::Pool::new(1 << 20, None));
        let other = Budget::within(4 << 20, &pool, None);
        let full = other.try_charge(1 << 20).expect("the pool's room");
        let budget = Budget::within(4 << 20, &pool, None);
        let a = Arc::new(Activity::new(0).holding(budget.clone()));
        let now = coarse_now_ms();
        a.request_started(now);
        let mut waiting = Box::pin(budget.charge(64 << 10));
        let pending = tokio::time::timeout(Duration::from_millis(50), waiting.as_mut()).await;
        assert!(pending.is_err(), "no room yet");
        assert!(a.check(&l, now + 600 * S, None, None).is_err());
        drop(full);
        let _room = waiting.await;
        assert!(!budget.waiting());
    }

    #[test]
    fn age_and_request_count_close_gracefully() {
        let mut l = limits();
        l.max_connection_age = Some(Duration::from_secs(3600));
        l.max_requests_per_connection = Some(2);
        let a = Activity::new(0);
        a.request_started(S);
        assert!(a.check(&l, 2 * S, None, None).is_err());
        a.request_started(2 * S);
        assert_eq!(a.check(&l, 2 * S, None, None), Ok(Close::Requests));
        // A long download in flight, still moving: age ends it gracefully.
        let b = Arc::new(Activity::new(0));
        b.request_started(S);
        let _body = InFlight::new((), Arc::clone(&b));
        b.last_write_ms.store(3599 * S, Ordering::Relaxed);
        assert_eq!(b.check(&l, 3600 * S, None, None), Ok(Close::Age));
        assert!(Close::Age.graceful() && !Close::Send.graceful());
    }
}
