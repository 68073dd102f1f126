//! A connection ready for HTTP: hyper-util's builder, the handler as its
//! service, and the loop that runs the connection against its deadlines
//! ([`super::timers`]) and the drain ([`super::drain`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use super::drain::DrainWatch;
use super::timers::{Activity, Close, InFlight};
use crate::addr::Peer;
use crate::clock::coarse_now_ms;
use crate::config::Limits;
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

/// Streams a client may reset before they were accepted (h2's default).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Stream errors one client may cause before the connection is closed.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 200;

/// hyper's own limit when `max_headers` is not called.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

fn builder(limits: &Limits, protocol: Protocol) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // hyper's header timer also runs while an HTTP/1 connection waits
        // idle for its next request, which would cap keep-alive at the head
        // timeout. Our own timers take both jobs (super::timers): the head
        // deadline from the first byte, the idle one from the last response.
        .header_read_timeout(None)
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

/// A connection ready for HTTP: its handler, its limits and clocks.
pub struct Session {
    pub(super) handler: Handler,
    pub(super) protocol: Protocol,
    /// Connection-level settings come from the generation current at accept;
    /// each request then reads the newest generation.
    pub(super) limits: Limits,
    pub(super) activity: Arc<Activity>,
    /// `None` for the metrics listener: a drain does not wait for scrapes.
    pub(super) drain: Option<DrainWatch>,
    pub(super) peer: Peer,
    /// Where deadline closes are counted (`None`: not counted, the metrics
    /// listener), with the listener's label.
    pub(super) closed: Option<(Arc<Metrics>, Arc<str>)>,
}

impl Session {
    /// Runs HTTP on `io` until the client leaves, a deadline passes, or a
    /// drain ends it.
    pub async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Session {
            handler,
            protocol,
            limits,
            activity,
            mut drain,
            peer,
            closed,
        } = self;
        if protocol == Protocol::Http2 {
            activity.set_h2();
        }
        let handler = Arc::new(handler);
        let svc_activity = Arc::clone(&activity);
        let max_requests = limits.max_requests_per_connection;
        let count_close = {
            let closed = closed.clone();
            move |reason: Close| {
                if let Some((metrics, label)) = &closed {
                    metrics
                        .conns_closed
                        .with_label_values(&[label, reason.label()])
                        .inc();
                }
            }
        };
        let svc_count = count_close.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let handler = Arc::clone(&handler);
            let activity = Arc::clone(&svc_activity);
            let served = activity.request_started(coarse_now_ms());
            if max_requests.is_some_and(|max| served >= max) {
                if activity.is_h2() {
                    activity.wake();
                } else if !activity.closing() {
                    activity.close_after_next_response();
                    svc_count(Close::Requests);
                }
            }
            async move {
                let mut resp = handler.handle(req).await;
                if activity.closing() && !activity.is_h2() {
                    // hyper closes the connection once this response is sent.
                    resp.headers_mut().insert(http::header::CONNECTION, CLOSE);
                }
                Ok::<_, Infallible>(resp.map(|b| InFlight::new(b, activity)))
            }
        });
        let conn = builder(&limits, protocol)
            .serve_connection(TokioIo::new(io), svc)
            .into_owned();
        tokio::pin!(conn);
        // When a graceful close began (coarse clock), if one has.
        let mut graceful: Option<u64> = None;
        // The drain and the deadlines are polled only when they were woken,
        // not every time the connection is (every read and write).
        let mut drained = OnWake::new(draining(&mut drain));
        let result = loop {
            let mut deadline = OnWake::new(activity.deadline(&limits, graceful));
            tokio::select! {
                result = conn.as_mut() => break result,
                _ = &mut drained, if graceful.is_none() => {
                    graceful = Some(coarse_now_ms());
                    conn.as_mut().graceful_shutdown();
                }
                reason = &mut deadline => {
                    // An idle deadline after a graceful close began is its
                    // backstop, not a new reason.
                    let backstop = reason == Close::Idle && graceful.is_some();
                    if !backstop {
                        count_close(reason);
                        tracing::debug!(%peer, reason = reason.label(), "closing connection");
                    }
                    if reason.graceful() && !backstop {
                        match reason {
                            // HTTP/1 with a limit reached: the next (or
                            // current) response says Connection: close; an
                            // idle wait still ends at keep_alive_timeout.
                            Close::Age | Close::Requests if !activity.is_h2() => {
                                activity.close_after_next_response();
                            }
                            // Idle HTTP/1 closes at once; HTTP/2 sends GOAWAY
                            // and finishes its streams.
                            _ => {
                                graceful = Some(coarse_now_ms());
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    } else {
                        // A hard deadline, or a graceful close that did not
                        // finish in time: dropping the connection closes
                        // the socket.
                        return;
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
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
