//! The one accept loop: any [`Listener`] -> hyper-util's auto builder
//! (HTTP/1.1 and h2c with prior knowledge on the same port), each connection in
//! its own task and watched by the graceful-shutdown token so a drain waits for
//! it. TLS (its own issue) wraps the stream between accept and hyper.

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
use crate::config::{AccessLog, Limits};
use crate::lifecycle::Shared;
use crate::listen::{Listener, Peer, Stream};
use crate::serve;

/// Accepts until `stop` turns true, then returns (dropping the listener, so
/// the port closes while connections already accepted drain).
pub async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            conn = listener.accept() => conn,
        };
        tokio::spawn(serve_connection(
            stream,
            peer,
            Arc::clone(&shared),
            graceful.watcher(),
        ));
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Without a timer hyper silently ignores header_read_timeout and a
        // client sending one byte a second holds the connection forever.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_size)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_size as u32);
    b
}

async fn serve_connection(stream: Stream, peer: Peer, shared: Arc<Shared>, watcher: Watcher) {
    tracing::debug!(%peer, "connection accepted");
    // Connection-level settings come from the generation current at accept;
    // each request then reads the newest generation.
    let site = shared.site();
    let limits = site.config.limits.clone();
    drop(site);
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let svc_activity = Arc::clone(&activity);
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        let activity = Arc::clone(&svc_activity);
        async move {
            let start = Instant::now();
            let site = shared.site();
            let logged = site.config.log.access_log != AccessLog::Off;
            let record = logged.then(|| Record::new(&req, peer, start));
            let resp = serve::respond(site, &req).await;
            let status = resp.status().as_u16();
            Ok::<_, Infallible>(resp.map(|b| LoggedBody::new(b, status, record, activity)))
        }
    });
    let builder = builder(&limits);
    let conn = builder.serve_connection(io, svc).into_owned();
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

/// A stream that records when bytes last moved, for the idle timer.
struct Tracked {
    inner: Stream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
