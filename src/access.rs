//! The access log: one line per request, written when the response body has
//! been sent (or abandoned), so bytes and duration are what really happened.
//!
//! Records go through tracing under the [`TARGET`] target; [`crate::logging`]
//! routes that target to its own layer and format (`combined` or `json`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::listen::Peer;
use crate::metrics::ConnMetrics;
use crate::serve::body::Body;

/// The tracing target of access-log events.
pub const TARGET: &str = "ruchy_serve::access";

/// Per-connection activity: the idle timer in [`crate::conn`] closes a
/// connection only when no response is in flight and no byte moved lately.
///
/// `touch` runs on every read and write, so it reads the coarse monotonic
/// clock (a few milliseconds of resolution, no TSC read): `Instant::now` there
/// was 3% of the server core at w1 in a perf profile.
#[derive(Debug)]
pub struct Activity {
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

/// Milliseconds on CLOCK_MONOTONIC_COARSE.
fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    debug_assert_eq!(rc, 0, "CLOCK_MONOTONIC_COARSE is always available on Linux");
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

impl Activity {
    pub fn touch(&self) {
        self.last_ms.store(coarse_now_ms(), Ordering::Relaxed);
    }
    pub fn idle_for(&self) -> std::time::Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        std::time::Duration::from_millis(coarse_now_ms().saturating_sub(last))
    }
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
    fn begin(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
    }
    fn end(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }
}

/// What the access log needs from the request, taken before it is answered.
#[derive(Debug)]
pub struct Record {
    peer: Peer,
    method_label: &'static str,
    /// Write the access-log line.
    log: bool,
    method: String,
    target: String,
    version: Version,
    referer: String,
    user_agent: String,
    start: Instant,
    status: u16,
}

impl Record {
    /// `log`: write the access-log line.
    pub fn new<B>(req: &Request<B>, peer: Peer, log: bool, start: Instant) -> Record {
        // The strings are copied only for the access log: with it off, a
        // request costs no allocation here.
        let text = |f: &dyn Fn() -> Option<String>, absent: &str| {
            if log {
                f().unwrap_or_else(|| absent.to_string())
            } else {
                String::new()
            }
        };
        let header = |name: http::header::HeaderName| {
            req.headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Record {
            peer,
            method_label: crate::metrics::method_label(req.method()),
            log,
            method: text(&|| Some(req.method().as_str().to_string()), ""),
            target: text(
                &|| req.uri().path_and_query().map(|pq| pq.as_str().to_string()),
                "/",
            ),
            version: req.version(),
            referer: text(&|| header(http::header::REFERER), "-"),
            user_agent: text(&|| header(http::header::USER_AGENT), "-"),
            start,
            status: 0,
        }
    }

    /// One event: structured fields for the journal and JSON, and nginx's
    /// combined line (plus the duration) as the message.
    fn emit(&self, bytes: u64) {
        let duration_us = self.start.elapsed().as_micros() as u64;
        tracing::info!(
            target: TARGET,
            remote_addr = %self.peer,
            http_method = %self.method,
            request_path = %self.target,
            http_protocol = ?self.version,
            http_status = self.status,
            bytes,
            duration_us,
            http_referer = %self.referer,
            http_user_agent = %self.user_agent,
            "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" {}us",
            self.peer,
            clf_time(SystemTime::now()),
            escape(&self.method),
            escape(&self.target),
            self.version,
            self.status,
            bytes,
            escape(&self.referer),
            escape(&self.user_agent),
            duration_us,
        );
    }
}

/// A response body that counts what it sends and logs when dropped.
pub struct LoggedBody {
    inner: Body,
    bytes: u64,
    record: Record,
    activity: Arc<Activity>,
    /// `None` when there is no metrics listener to read them.
    metrics: Option<Arc<ConnMetrics>>,
}

impl LoggedBody {
    pub fn new(
        inner: Body,
        status: u16,
        mut record: Record,
        activity: Arc<Activity>,
        metrics: Option<Arc<ConnMetrics>>,
    ) -> Self {
        activity.begin();
        record.status = status;
        LoggedBody {
            inner,
            bytes: 0,
            record,
            activity,
            metrics,
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        let r = &self.record;
        if let Some(m) = &self.metrics {
            m.request(
                r.method_label,
                r.status,
                r.start.elapsed().as_secs_f64(),
                self.bytes,
            );
        }
        if r.log {
            r.emit(self.bytes);
        }
        self.activity.end();
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        poll
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// nginx's `$time_local` in UTC: `27/Nov/2026:06:31:31 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Escapes `"`, `\` and control bytes the way nginx does (`\xHH`), so a
/// hostile user agent cannot forge a log line.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' || c.is_control() {
            for b in c.to_string().bytes() {
                out.push_str(&format!("\\x{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clf_time_matches_nginx_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_761_091);
        assert_eq!(clf_time(t), "27/Nov/2026:06:31:31 +0000");
        assert_eq!(
            clf_time(SystemTime::UNIX_EPOCH),
            "01/Jan/1970:00:00:00 +0000"
        );
    }

    #[test]
    fn escape_stops_log_forging() {
        assert_eq!(escape("a\"b\nc"), "a\\x22b\\x0Ac");
    }
}
