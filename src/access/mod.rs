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
    /// A tracing event: stderr or the journal, by `log.target`; the
    /// format says whether its message starts with the site.
    Events(AccessLog),
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
    captured: Captured,
    pub(crate) start: Instant,
    /// Set once the response is known.
    pub(crate) status: u16,
    /// The user of the request's Basic credentials (nginx's
    /// `$remote_user`), escaped; `-` without.
    user: Option<Vec<u8>>,
}

/// The user name of an `Authorization: Basic` value for a log line, cut
/// at 64 bytes (a client chooses it): letters, digits and `-_.@+` as they
/// are, any other byte as `?`, so it needs no escaping in any format.
fn basic_user(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") || token.len() > 2048 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim_ascii())
        .ok()?;
    let user = &decoded[..decoded.iter().position(|&b| b == b':')?];
    let safe: Vec<u8> = user
        .iter()
        .take(64)
        .map(
            |&b| match b.is_ascii_alphanumeric() || b"-_.@+".contains(&b) {
                true => b,
                false => b'?',
            },
        )
        .collect();
    (!safe.is_empty()).then_some(safe)
}

/// What was taken from the request, in the form its sink wants.
#[derive(Debug)]
enum Captured {
    /// The access log is off: nothing copied, nothing allocated.
    Nothing,
    /// Separate fields, for the journal's structured entry.
    Fields(Box<Fields>),
    /// The request's parts of a file line, escaped once, in one string:
    /// `[..split]` is the request (`GET /p HTTP/1.1`, or its JSON fields),
    /// `[split..]` the referer and user agent.
    Line { text: Vec<u8>, split: usize },
}

#[derive(Debug)]
struct Fields {
    method: String,
    target: String,
    version: Version,
    referer: String,
    user_agent: String,
}

impl Record {
    /// `sink`: where the line goes, `None` for no line.
    pub fn new<B>(req: &Request<B>, peer: Peer, sink: Option<Sink>, start: Instant) -> Record {
        if sink.is_none() {
            // The access log is off: nothing looked up, nothing copied.
            return Record {
                peer,
                method_label: crate::metrics::method_label(req.method()),
                sink,
                captured: Captured::Nothing,
                start,
                status: 0,
                user: None,
            };
        }
        let user = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| basic_user(v.as_bytes()));
        let header = |name: http::header::HeaderName| {
            req.headers().get(name).map_or(&b"-"[..], |v| v.as_bytes())
        };
        let method = req.method().as_str();
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let (referer, agent) = (
            header(http::header::REFERER),
            header(http::header::USER_AGENT),
        );
        let version = req.version();
        let captured = match &sink {
            None => Captured::Nothing,
            Some(Sink::Events(_)) => Captured::Fields(Box::new(Fields {
                method: method.to_string(),
                target: target.to_string(),
                version,
                referer: String::from_utf8_lossy(referer).into_owned(),
                user_agent: String::from_utf8_lossy(agent).into_owned(),
            })),
            Some(Sink::File(_, AccessLog::Json)) => {
                let mut text = String::with_capacity(96 + target.len() + agent.len());
                text.push_str("\"http_method\":\"");
                json_escape_into(&mut text, method);
                text.push_str("\",\"request_path\":\"");
                json_escape_into(&mut text, target);
                let _ = write!(text, "\",\"http_protocol\":\"{version:?}\"");
                let split = text.len();
                text.push_str("\"http_referer\":\"");
                json_escape_into(&mut text, &String::from_utf8_lossy(referer));
                text.push_str("\",\"http_user_agent\":\"");
                json_escape_into(&mut text, &String::from_utf8_lossy(agent));
                text.push('"');
                Captured::Line {
                    text: text.into_bytes(),
                    split,
                }
            }
            Some(Sink::File(..)) => {
                let mut text = Vec::with_capacity(32 + target.len() + agent.len());
                escape_into(&mut text, method.as_bytes());
                text.push(b' ');
                escape_into(&mut text, target.as_bytes());
                text.push(b' ');
                text.extend_from_slice(version_text(version).as_bytes());
                let split = text.len();
                text.push(b'"');
                escape_into(&mut text, referer);
                text.extend_from_slice(b"\" \"");
                escape_into(&mut text, agent);
                text.push(b'"');
                Captured::Line { text, split }
            }
        };
        Record {
            peer,
            method_label: crate::metrics::method_label(req.method()),
            sink,
            captured,
            start,
            status: 0,
            user,
        }
    }

    /// Writes the line, to the sink chosen at the start of the request.
    /// `site` is the site's metric label (`None`: the top-level site's),
    /// in JSON lines and journal fields; the combined line stays nginx's.
    pub fn emit(&self, bytes: u64, site: Option<&str>) {
        let duration_us = self.start.elapsed().as_micros() as u64;
        let site = site.unwrap_or(crate::config::DEFAULT_LABEL);
        match (&self.sink, &self.captured) {
            (Some(Sink::Events(format)), Captured::Fields(f)) => {
                self.event(f, bytes, duration_us, site, *format)
            }
            (Some(Sink::File(log, format)), Captured::Line { text, split }) => {
                let (request, agents) = text.split_at(*split);
                LINE.with_borrow_mut(|line| {
                    line.clear();
                    match format {
                        AccessLog::Json => {
                            self.json_line(line, request, agents, bytes, duration_us, site)
                        }
                        AccessLog::VhostCombined => {
                            line.extend_from_slice(site.as_bytes());
                            line.push(b' ');
                            self.combined_line(line, request, agents, bytes, duration_us)
                        }
                        _ => self.combined_line(line, request, agents, bytes, duration_us),
                    }
                    line.push(b'\n');
                    log.write_line(line);
                });
            }
            _ => {}
        }
    }

    /// nginx's combined format plus the duration:
    /// `addr - - [time] "GET /p HTTP/1.1" 200 12 "referer" "agent" 35us`.
    /// `request` and `agents` are escaped already. Built with `push_str` and
    /// `itoa`, not `write!`: through `core::fmt` this line cost 2,500
    /// instructions a request, a fifth of a cached answer's
    /// (benches/callgrind.sh `ruchy-200-log`).
    fn combined_line(&self, out: &mut Vec<u8>, request: &[u8], agents: &[u8], bytes: u64, us: u64) {
        let mut num = itoa::Buffer::new();
        push_peer(out, self.peer);
        out.extend_from_slice(b" - ");
        out.extend_from_slice(self.user.as_deref().unwrap_or(b"-"));
        out.extend_from_slice(b" [");
        with_time(out, false);
        out.extend_from_slice(b"] \"");
        out.extend_from_slice(request);
        out.extend_from_slice(b"\" ");
        out.extend_from_slice(num.format(self.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(num.format(bytes).as_bytes());
        out.push(b' ');
        out.extend_from_slice(agents);
        out.push(b' ');
        out.extend_from_slice(num.format(us).as_bytes());
        out.extend_from_slice(b"us");
    }

    /// One JSON object, the fields the journal gets, plus the time. `site`
    /// is a configured name or label (host-name characters only), so it
    /// needs no escaping.
    fn json_line(
        &self,
        out: &mut Vec<u8>,
        request: &[u8],
        agents: &[u8],
        bytes: u64,
        us: u64,
        site: &str,
    ) {
        use std::io::Write as _;
        // Built from `String`s in `Record::new`: UTF-8.
        let request = std::str::from_utf8(request).unwrap_or_default();
        let agents = std::str::from_utf8(agents).unwrap_or_default();
        out.extend_from_slice(b"{\"time\":\"");
        with_time(out, true);
        let _ = write!(
            out,
            "\",\"remote_addr\":\"{}\",\"remote_user\":\"{}\",{request},\"http_status\":{},\"bytes\":{bytes},\"duration_us\":{us},\"site\":\"{site}\",{agents}}}",
            self.peer,
            String::from_utf8_lossy(self.user.as_deref().unwrap_or(b"-")),
            self.status
        );
    }

    /// One event: structured fields for the journal and JSON, and nginx's
    /// combined line (plus the duration) as the message.
    fn event(&self, f: &Fields, bytes: u64, duration_us: u64, site: &str, format: AccessLog) {
        let mut request = Vec::with_capacity(32 + f.target.len());
        escape_into(&mut request, f.method.as_bytes());
        request.push(b' ');
        escape_into(&mut request, f.target.as_bytes());
        request.push(b' ');
        request.extend_from_slice(version_text(f.version).as_bytes());
        let mut agents = Vec::with_capacity(8 + f.user_agent.len());
        agents.push(b'"');
        escape_into(&mut agents, f.referer.as_bytes());
        agents.extend_from_slice(b"\" \"");
        escape_into(&mut agents, f.user_agent.as_bytes());
        agents.push(b'"');
        let mut line = Vec::with_capacity(64 + request.len() + agents.len());
        if format == AccessLog::VhostCombined {
            line.extend_from_slice(site.as_bytes());
            line.push(b' ');
        }
        self.combined_line(&mut line, &request, &agents, bytes, duration_us);
        // Escaped to printable ASCII.
        let line = String::from_utf8_lossy(&line);
        tracing::info!(
            target: TARGET,
            remote_addr = %self.peer,
            remote_user = %String::from_utf8_lossy(self.user.as_deref().unwrap_or(b"-")),
            http_method = %f.method,
            request_path = %f.target,
            http_protocol = ?f.version,
            http_status = self.status,
            bytes,
            duration_us,
            site,
            http_referer = %f.referer,
            http_user_agent = %f.user_agent,
            "{line}"
        );
    }
}

thread_local! {
    /// The line being built, reused: a request costs no allocation for it.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    /// The second last formatted, and its two spellings: formatting a date
    /// once a second per thread instead of once a request.
    static TIME: std::cell::RefCell<(u64, String, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new(), String::new())) };
}

/// Appends the current time as nginx's `$time_local` (or, `iso`, as
/// `$time_iso8601`), formatted at most once a second per thread.
fn with_time(out: &mut Vec<u8>, iso: bool) {
    let now = SystemTime::now();
    let secs = crate::clock::unix_secs(now);
    TIME.with_borrow_mut(|(at, clf, iso_text)| {
        if *at != secs {
            *at = secs;
            clf.clear();
            iso_text.clear();
        }
        let (cached, format): (_, fn(SystemTime) -> String) = if iso {
            (iso_text, iso_time)
        } else {
            (clf, clf_time)
        };
        if cached.is_empty() {
            cached.push_str(&format(now));
        }
        out.extend_from_slice(cached.as_bytes());
    });
}

/// A JSON string's inside: `"`, `\\` and every character outside printable
/// ASCII as `\uXXXX` (UTF-16, as JSON spells it), so the JSON log shows
/// what the combined one shows, escaped.
fn json_escape_into(out: &mut String, s: &str) {
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
}

/// Escapes the way nginx does: `"`, `\\` and every byte outside printable
/// ASCII as `\xHH`, so a hostile user agent can neither forge a log line nor
/// reorder what a terminal shows (U+202E right-to-left override, U+2028 line
/// separator). Works on the raw bytes, so a header that is not UTF-8 is shown
/// as it came.
fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Printable ASCII but `"` and `\\`: what goes in as it is.
    const PLAIN: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0x20;
        while b <= 0x7e {
            t[b] = b != b'"' as usize && b != b'\\' as usize;
            b += 1;
        }
        t
    };
    out.reserve(s.len());
    let mut rest = s;
    loop {
        // Runs of plain bytes go in whole (a user agent is one run).
        let n = rest
            .iter()
            .position(|&b| !PLAIN[usize::from(b)])
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(n);
        out.extend_from_slice(run);
        let Some((&b, tail)) = tail.split_first() else {
            return;
        };
        out.extend_from_slice(&[
            b'\\',
            b'x',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 15)],
        ]);
        rest = tail;
    }
}

/// The protocol as a request line spells it.
fn version_text(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The client address as nginx's `$remote_addr` shows it: IPv4 written
/// digit by digit (through `core::fmt` it was 1,000 instructions a line),
/// a dual-stack socket's `::ffff:a.b.c.d` as `a.b.c.d`, IPv6 as Display
/// writes it, `unix:` for a unix socket.
fn push_peer(out: &mut Vec<u8>, peer: Peer) {
    match peer {
        Peer::Tcp(a) => match a.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => {
                let mut num = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    out.extend_from_slice(num.format(octet).as_bytes());
                }
            }
            v6 => {
                use std::io::Write as _;
                let _ = write!(out, "{v6}");
            }
        },
        Peer::Unix => out.extend_from_slice(b"unix:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(s: &str) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, s.as_bytes());
        String::from_utf8(out).unwrap()
    }

    fn json_escape(s: &str) -> String {
        let mut out = String::new();
        json_escape_into(&mut out, s);
        out
    }

    #[test]
    fn json_escaping_covers_every_character_outside_printable_ascii() {
        assert_eq!(json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
        assert_eq!(json_escape("x\u{202E}\u{2028}"), "x\\u202e\\u2028");
        assert_eq!(json_escape("\u{1F600}"), "\\ud83d\\ude00");
        assert_eq!(json_escape("curl/8.0 (x; y)"), "curl/8.0 (x; y)");
    }

    /// One request's line through the file target in `format`.
    fn file_line(format: AccessLog, req: &Request<()>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::config::AccessFile {
            path: dir.path().join("a.log"),
            buffer: 4096,
            flush: std::time::Duration::from_secs(60),
        };
        let log =
            Arc::new(FileLog::open(&spec, crate::metrics::Metrics::new().access_log).unwrap());
        let peer = Peer::Tcp("192.0.2.7:4000".parse().unwrap());
        let mut r = Record::new(
            req,
            peer,
            Some(Sink::File(Arc::clone(&log), format)),
            Instant::now(),
        );
        r.status = 200;
        r.emit(12, Some("blog.test"));
        assert!(log.close(std::time::Duration::from_secs(5)));
        std::fs::read_to_string(&spec.path).unwrap()
    }

    /// The file target writes the same text in both formats: combined
    /// escapes as `\xHH`, JSON as `\uXXXX`, and the JSON line parses back
    /// to exactly what the client sent.
    #[test]
    fn both_formats_escape_what_a_client_sends() {
        let ua = "evil\u{202E}\"quote\\ \u{2028}end";
        let req = Request::get("/p?q=%22x")
            .header("user-agent", ua)
            .body(())
            .unwrap();
        let combined = file_line(AccessLog::Combined, &req);
        assert!(combined.starts_with("192.0.2.7 - - ["), "{combined}");
        assert!(
            combined.ends_with("us\n") && combined.lines().count() == 1,
            "{combined}"
        );
        assert!(
            combined.contains("] \"GET /p?q=%22x HTTP/1.1\" 200 12 \"-\" \"evil\\xE2\\x80\\xAE\\x22quote\\x5C \\xE2\\x80\\xA8end\" "),
            "{combined}"
        );
        let vhost = file_line(AccessLog::VhostCombined, &req);
        assert!(vhost.starts_with("blog.test 192.0.2.7 - - ["), "{vhost}");
        let request = |l: &str| {
            l.split_once("] ")
                .map(|(_, r)| r.rsplit_once(' ').unwrap().0.to_string())
        };
        assert_eq!(
            request(&vhost),
            request(&combined),
            "the site, then the combined line"
        );
        let json = file_line(AccessLog::Json, &req);
        assert!(json.is_ascii() && json.ends_with("}\n"), "{json}");
        let v: serde_json::Value = serde_json::from_str(json.trim_end()).unwrap();
        assert_eq!(v["http_user_agent"], ua);
        assert_eq!(v["http_referer"], "-");
        assert_eq!(v["request_path"], "/p?q=%22x");
        assert_eq!(v["http_method"], "GET");
        assert_eq!(v["http_protocol"], "HTTP/1.1");
        assert_eq!(v["http_status"], 200);
        assert_eq!(v["remote_addr"], "192.0.2.7");
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["site"], "blog.test");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }

    /// nginx's `$remote_user`: the Basic credentials' user, in both
    /// formats, with anything but a plain name character as `?`.
    #[test]
    fn the_basic_user_is_logged() {
        use base64::Engine as _;
        let basic = |cred: &str| {
            let b = base64::engine::general_purpose::STANDARD.encode(cred);
            format!("Basic {b}")
        };
        let req = Request::get("/staff/")
            .header("authorization", basic("alice:secret"))
            .body(())
            .unwrap();
        let combined = file_line(AccessLog::Combined, &req);
        assert!(combined.starts_with("192.0.2.7 - alice ["), "{combined}");
        assert!(!combined.contains("secret"), "{combined}");
        let json = file_line(AccessLog::Json, &req);
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["remote_user"], "alice");
        let odd = Request::get("/")
            .header("authorization", basic("a \"b\n:x"))
            .body(())
            .unwrap();
        let combined = file_line(AccessLog::Combined, &odd);
        assert!(combined.starts_with("192.0.2.7 - a??b? ["), "{combined}");
        let plain = Request::get("/").body(()).unwrap();
        assert!(file_line(AccessLog::Combined, &plain).starts_with("192.0.2.7 - - ["));
    }

    #[test]
    fn the_client_address_is_written_as_nginx_writes_it() {
        let shown = |peer: Peer| {
            let mut out = Vec::new();
            push_peer(&mut out, peer);
            String::from_utf8(out).unwrap()
        };
        let tcp = |a: &str| Peer::Tcp(a.parse().unwrap());
        assert_eq!(shown(tcp("192.0.2.255:1")), "192.0.2.255");
        assert_eq!(shown(tcp("0.0.0.0:1")), "0.0.0.0");
        assert_eq!(shown(tcp("[::ffff:10.1.2.3]:1")), "10.1.2.3");
        assert_eq!(shown(tcp("[2001:db8::1]:1")), "2001:db8::1");
        assert_eq!(shown(Peer::Unix), "unix:");
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
