//! The metrics listener's answers (default 127.0.0.1:9898): `/metrics` in the
//! Prometheus text format, and the health probes `/healthz` and `/readyz`
//! from [`crate::state`]. The listener itself is one more listener in
//! [`crate::conn`]'s accept loop, with the same limits and timers; it is kept
//! apart from the main listeners so scrapes and probes never compete with,
//! or show up as, traffic.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::serve::body::{self, Body};
use crate::serve::response;
use crate::state::State;

/// Answers one request on the metrics listener.
pub fn respond(state: &State, path: &str) -> Response<Body> {
    if let Some((status, text)) = state.health(path) {
        return response::plain(status, text);
    }
    if path != "/metrics" {
        return response::plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    state.response_memory.report();
    let mut r = Response::new(body::full(state.metrics.render()));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
