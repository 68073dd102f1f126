//! Request checks before any file-system work, for what hyper lets through:
//! the Host header (RFC 9112 section 3.2) and request bodies, which a static
//! file server never reads.
//!
//! hyper itself refuses malformed request lines and header fields, bare CR,
//! obs-fold, NUL and invalid chunked framing, and Content-Length together with
//! Transfer-Encoding; `tests/it/hostile.rs` holds a case for each.

use http::{header, HeaderMap, Request, StatusCode, Version};

use super::fields::Fields;

/// Why a request is refused, and whether the connection must close after the
/// answer (a body we did not read would otherwise be parsed as the next
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer with.
    pub status: StatusCode,
    /// Close the connection after the answer.
    pub close: bool,
}

impl Refusal {
    fn bad_request() -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            close: true,
        }
    }
}

/// Refuses what no static file request should carry: a missing, repeated or
/// malformed Host, or a request body.
pub fn check<B>(req: &Request<B>, fields: &Fields<'_>, max_body: u64) -> Result<(), Refusal> {
    host(req.version(), fields)?;
    authority_agrees(req, fields)?;
    body(req.headers(), fields, max_body)
}

/// RFC 9113 section 8.3.1: an HTTP/2 request whose Host header names
/// another authority than its `:authority` is malformed ("a server SHOULD
/// treat a request as malformed if it contains a Host header field that
/// identifies an entity that differs from the entity in the :authority
/// pseudo-header field"): 400, rather than choosing one of the two, since
/// a proxy in front may have routed by the other. (HTTP/1.1's absolute-form
/// target is different: RFC 9112 section 3.2.2 says to ignore Host then.)
fn authority_agrees<B>(req: &Request<B>, fields: &Fields<'_>) -> Result<(), Refusal> {
    if req.version() != Version::HTTP_2 {
        return Ok(());
    }
    match (req.uri().authority(), fields.host) {
        (Some(a), Some(h)) if !same_entity(a.as_str().as_bytes(), h.as_bytes()) => {
            Err(Refusal::bad_request())
        }
        _ => Ok(()),
    }
}

/// Whether two authorities name the same host: compared as names (case
/// and a final `.` aside, `A.EXAMPLE.` is `a.example`), with the same
/// port when both give one.
fn same_entity(a: &[u8], b: &[u8]) -> bool {
    let (Some(a), Some(b)) = (parse_host(a), parse_host(b)) else {
        return a.eq_ignore_ascii_case(b);
    };
    let name = |n: &[u8]| n.strip_suffix(b".").unwrap_or(n).to_ascii_lowercase();
    let ports = match (a.port, b.port) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    name(a.name) == name(b.name) && ports
}

/// RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request)
/// status code to any HTTP/1.1 request message that lacks a Host header
/// field and to any request message that contains more than one Host header
/// field line or a Host header field with an invalid field value." HTTP/1.0
/// and HTTP/2 (which has `:authority`) may omit it.
fn host(version: Version, fields: &Fields<'_>) -> Result<(), Refusal> {
    let Some(value) = fields.host else {
        return if version == Version::HTTP_11 {
            Err(Refusal::bad_request())
        } else {
            Ok(())
        };
    };
    if fields.hosts > 1 || !valid_host(value.as_bytes()) {
        return Err(Refusal::bad_request());
    }
    Ok(())
}

/// A Host value split into its parts, borrowed from the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The host: a reg-name, or an IP-literal with its brackets.
    pub name: &'a [u8],
    /// The decimal port, when one was given.
    pub port: Option<&'a [u8]>,
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 section 7.2, RFC 3986): an
/// IP-literal in brackets or a reg-name, then an optional decimal port. No
/// userinfo, path, whitespace or other delimiters. The one Host parser: the
/// guard checks with it, the https redirect takes the name from it.
pub fn parse_host(v: &[u8]) -> Option<HostPort<'_>> {
    let (name, port) = if v.first() == Some(&b'[') {
        let end = v.iter().position(|&b| b == b']')?;
        let literal = &v[1..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ok {
            return None;
        }
        match &v[end + 1..] {
            [] => (&v[..=end], None),
            [b':', port @ ..] => (&v[..=end], Some(port)),
            _ => return None,
        }
    } else {
        let (name, port) = match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        };
        let reg_name_ok = name.iter().all(|&b| REG_NAME[b as usize]);
        if !reg_name_ok {
            return None;
        }
        (name, port)
    };
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    port_ok.then_some(HostPort { name, port })
}

/// The bytes of a reg-name: letters, digits, unreserved, sub-delims and
/// pct-encoded's '%' (a table: this runs on every request).
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~!$&'()*+,;=%";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether `v` is a valid Host value ([`parse_host`]).
pub fn valid_host(v: &[u8]) -> bool {
    parse_host(v).is_some()
}

/// Bodies are never read. One announced above `max_body` gets 413; one of
/// unknown length (Transfer-Encoding) gets 413 too, since nothing we serve
/// takes a body and reading it to find its size is what a flood wants.
fn body(headers: &HeaderMap, fields: &Fields<'_>, max_body: u64) -> Result<(), Refusal> {
    let too_large = Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        close: true,
    };
    if fields.transfer_encoding {
        return Err(too_large);
    }
    if fields.content_lengths == 0 {
        return Ok(());
    }
    for v in headers.get_all(header::CONTENT_LENGTH) {
        match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) if n <= max_body => {}
            Some(_) => return Err(too_large),
            None => return Err(Refusal::bad_request()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "example.com",
            "example.com:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "xn--bcher-kva.example",
            "",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?} should be valid");
        }
        for bad in [
            "user@example.com",
            "user:pw@example.com",
            "example.com/path",
            "exa mple.com",
            "example.com:80x",
            "example.com:123456",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "a\"b",
            "a<b>",
            "a\\b",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn parse_host_splits_name_and_port() {
        let split = |v: &'static str| {
            parse_host(v.as_bytes()).map(|h| {
                (
                    String::from_utf8_lossy(h.name).into_owned(),
                    h.port.map(|p| String::from_utf8_lossy(p).into_owned()),
                )
            })
        };
        assert_eq!(split("example.com"), Some(("example.com".into(), None)));
        assert_eq!(
            split("example.com:8080"),
            Some(("example.com".into(), Some("8080".into())))
        );
        assert_eq!(
            split("[::1]:8443"),
            Some(("[::1]".into(), Some("8443".into())))
        );
        assert_eq!(split("[::1]"), Some(("[::1]".into(), None)));
        assert_eq!(split("a/b:1"), None);
    }

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn checked(req: &Request<()>, max: u64) -> Result<(), Refusal> {
        check(req, &Fields::of(req.headers()), max)
    }

    #[test]
    fn host_presence_by_version() {
        assert!(checked(&req(Version::HTTP_11, &[]), 0).is_err());
        assert!(checked(&req(Version::HTTP_10, &[]), 0).is_ok());
        assert!(checked(&req(Version::HTTP_2, &[]), 0).is_ok());
        let two = [("host", "a"), ("host", "b")];
        assert!(checked(&req(Version::HTTP_10, &two), 0).is_err());
        assert!(checked(&req(Version::HTTP_2, &two), 0).is_err());
        assert!(checked(&req(Version::HTTP_11, &[("host", "a")]), 0).is_ok());
    }

    #[test]
    fn bodies() {
        let v = Version::HTTP_11;
        let with = |h: &[(&str, &str)]| {
            let mut all = vec![("host", "a")];
            all.extend_from_slice(h);
            checked(&req(v, &all), 10)
        };
        assert!(with(&[("content-length", "10")]).is_ok());
        assert!(with(&[("content-length", "0")]).is_ok());
        let r = with(&[("content-length", "11")]).unwrap_err();
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.close);
        let r = with(&[("transfer-encoding", "chunked")]).unwrap_err();
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Every Content-Length line counts, not only the first.
        let two = [("content-length", "1"), ("content-length", "99")];
        assert_eq!(
            with(&two).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let bad = [("content-length", "1"), ("content-length", "x")];
        assert_eq!(with(&bad).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
