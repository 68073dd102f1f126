//! The access log: one line per request, written by the handler's
//! accounting step when the response body has been sent (or abandoned), so
//! bytes and duration are what really happened.
//!
//! With `log.access_log_path` set, lines go to that file through
//! [`file::FileLog`] (buffered, off the request's path). Otherwise records
//! go through tracing under the [`TARGET`] target; [`crate::logging`]
//! routes that target to its own layer and format (`combined` or `json`).
//! Both carry the same text: the combined line escapes every byte outside
//! printable ASCII as `\xHH`, JSON escapes every character outside it as
//! `\uXXXX`.

pub mod file;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Request, Version};

use crate::addr::Peer;
use crate::clock::{clf_time, iso_time};
use crate::config::AccessLog;
use file::FileLog;

/// Where a request's line goes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A tracing event: stderr or the journal, by `log.target`.
    Events,
    /// The access-log file, in this format.
    File(Arc<FileLog>, AccessLog),
}

/// The tracing target of access-log events.
pub const TARGET: &str = "ruchy_serve::access";

/// What the access log needs from the request, taken before it is answered.
#[derive(Debug)]
pub struct Record {
    peer: Peer,
    /// The method as a metrics label (a fixed set).
    pub(crate) method_label: &'static str,
    /// Where the line goes; `None`: the access log is off.
    pub(crate) sink: Option<Sink>,
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
    /// `sink`: where the line goes, `None` for no line.
    pub fn new<B>(req: &Request<B>, peer: Peer, sink: Option<Sink>, start: Instant) -> Record {
        let log = sink.is_some();
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
            sink,
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

    /// Writes the line, to the sink chosen at the start of the request.
    pub fn emit(&self, bytes: u64) {
        let duration_us = self.start.elapsed().as_micros() as u64;
        match &self.sink {
            None => {}
            Some(Sink::Events) => self.event(bytes, duration_us),
            Some(Sink::File(log, format)) => {
                let mut line = String::with_capacity(256);
                match format {
                    AccessLog::Json => self.json(bytes, duration_us, &mut line),
                    _ => self.combined(bytes, duration_us, &mut line),
                }
                line.push('\n');
                log.write_line(line.as_bytes());
            }
        }
    }

    /// nginx's combined format plus the duration:
    /// `addr - - [time] "GET /p HTTP/1.1" 200 12 "referer" "agent" 35us`.
    fn combined(&self, bytes: u64, duration_us: u64, out: &mut String) {
        let _ = write!(
            out,
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

    /// One JSON object, the fields the journal gets, plus the time.
    fn json(&self, bytes: u64, duration_us: u64, out: &mut String) {
        let _ = write!(
            out,
            "{{\"time\":\"{}\",\"remote_addr\":\"{}\",\"http_method\":\"{}\",\"request_path\":\"{}\",\"http_protocol\":\"{:?}\",\"http_status\":{},\"bytes\":{},\"duration_us\":{},\"http_referer\":\"{}\",\"http_user_agent\":\"{}\"}}",
            iso_time(SystemTime::now()),
            json_escape(&self.peer.to_string()),
            json_escape(&self.method),
            json_escape(&self.target),
            self.version,
            self.status,
            bytes,
            duration_us,
            json_escape(&self.referer),
            json_escape(&self.user_agent),
        );
    }

    /// One event: structured fields for the journal and JSON, and nginx's
    /// combined line (plus the duration) as the message.
    fn event(&self, bytes: u64, duration_us: u64) {
        let mut line = String::with_capacity(256);
        self.combined(bytes, duration_us, &mut line);
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
            "{line}"
        );
    }
}

/// A JSON string's inside: `"`, `\\` and every character outside printable
/// ASCII as `\uXXXX` (UTF-16, as JSON spells it), so the JSON log shows
/// what the combined one shows, escaped.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out
}

/// Escapes the way nginx does: `"`, `\\` and every byte outside printable
/// ASCII as `\xHH`, so a hostile user agent can neither forge a log line nor
/// reorder what a terminal shows (U+202E right-to-left override, U+2028 line
/// separator).
fn escape(s: &str) -> String {
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
    fn json_escaping_covers_every_character_outside_printable_ascii() {
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
        assert_eq!(json_escape("x\u{202E}\u{2028}"), "x\\u202e\\u2028");
        assert_eq!(json_escape("\u{1F600}"), "\\ud83d\\ude00");
        assert_eq!(json_escape("curl/8.0 (x; y)"), "curl/8.0 (x; y)");
    }

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
