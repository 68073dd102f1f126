//! The access log: one line per request, written by the handler's
//! accounting step when the response body has been sent (or abandoned), so
//! bytes and duration are what really happened.
//!
//! Records go through tracing under the [`TARGET`] target; [`crate::logging`]
//! routes that target to its own layer and format (`combined` or `json`).

use std::time::{Instant, SystemTime};

use http::{Request, Version};

use crate::addr::Peer;
use crate::clock::clf_time;

/// The tracing target of access-log events.
pub const TARGET: &str = "ruchy_serve::access";

/// What the access log needs from the request, taken before it is answered.
#[derive(Debug)]
pub struct Record {
    peer: Peer,
    /// The method as a metrics label (a fixed set).
    pub(crate) method_label: &'static str,
    /// Write the access-log line.
    pub(crate) log: bool,
    method: String,
    target: String,
    version: Version,
    referer: String,
    user_agent: String,
    pub(crate) start: Instant,
    /// Set once the response is known.
    pub(crate) status: u16,
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
    pub fn emit(&self, bytes: u64) {
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

/// Escapes the way nginx does: `"`, `\\` and every byte outside printable
/// ASCII as `\xHH`, so a hostile user agent can neither forge a log line nor
/// reorder what a terminal shows (U+202E right-to-left override, U+2028 line
/// separator).
fn escape(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_stops_log_forging() {
        assert_eq!(escape("a\"b\nc"), "a\\x22b\\x0Ac");
    }

    #[test]
    fn escape_covers_every_byte_outside_printable_ascii() {
        assert_eq!(escape("x\u{202E}y"), "x\\xE2\\x80\\xAEy");
        assert_eq!(escape("\u{2028}"), "\\xE2\\x80\\xA8");
        assert_eq!(escape("é\x7f"), "\\xC3\\xA9\\x7F");
        assert_eq!(escape("curl/8.0 (x; y)"), "curl/8.0 (x; y)");
    }
}
