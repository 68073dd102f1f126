//! The metrics listener (default 127.0.0.1:9898): `/metrics` in the
//! Prometheus text format, `/healthz` (200 while the process runs) and
//! `/readyz` (200 only while Ready, or Reloading, since the old configuration
//! keeps serving then; 503 while starting and draining, so a load balancer
//! stops sending before connections close). Kept apart from the main
//! listeners so scrapes and probes never compete with, or show up as, traffic.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::lifecycle::{Phase, Shared};
use crate::listen::Listener;
use crate::serve::body::{self, Body};

fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(Bytes::from_static(msg.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `/healthz` and `/readyz`, or `None` for any other path.
pub fn health(shared: &Shared, path: &str) -> Option<Response<Body>> {
    match path {
        "/healthz" => Some(text(StatusCode::OK, "ok\n")),
        "/readyz" => Some(match shared.phase() {
            Phase::Ready | Phase::Reloading => text(StatusCode::OK, "ready\n"),
            Phase::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            Phase::Draining | Phase::Stopped => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        }),
        _ => None,
    }
}

/// Answers one request on the metrics listener.
pub fn respond(shared: &Shared, path: &str) -> Response<Body> {
    if let Some(r) = health(shared, path) {
        return r;
    }
    if path != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    let mut r = Response::new(body::full(shared.metrics.render()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Serves the metrics listener until `stop` turns true.
pub async fn serve(listener: Listener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            conn = listener.accept() => conn,
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let r = respond(&shared, req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
