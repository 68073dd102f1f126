//! The request header fields the pipeline reads, found in one pass over the
//! request's headers.
//!
//! Each `HeaderMap::get` hashes the name and probes the map; the guard, the
//! cache, the preconditions and the range step asked for ten fields that
//! way per request, most of them absent (callgrind: about a thousand
//! instructions per request, benches/README.md). One walk over the fields
//! the client actually sent, comparing standard names (an enum compare),
//! answers all of them: a request with only a Host field costs one step.

use http::header::{self, HeaderMap, HeaderValue};

/// What the pipeline needs from the request's header fields. For a field
/// given more than once, the first value counts (as `HeaderMap::get`),
/// except Host and Content-Length, whose repeats the guard must see.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fields<'a> {
    /// The first Host value.
    pub host: Option<&'a HeaderValue>,
    /// How many Host field lines there were.
    pub hosts: usize,
    /// How many Content-Length field lines there were (the guard reads
    /// them all when there is more than one).
    pub content_lengths: usize,
    /// The first Content-Length value.
    pub content_length: Option<&'a HeaderValue>,
    /// Whether Transfer-Encoding was sent.
    pub transfer_encoding: bool,
    /// Accept-Encoding, if it is text.
    pub accept_encoding: Option<&'a str>,
    /// If-Match, if it is text.
    pub if_match: Option<&'a str>,
    /// If-None-Match, if it is text.
    pub if_none_match: Option<&'a str>,
    /// If-Modified-Since, if it is text.
    pub if_modified_since: Option<&'a str>,
    /// If-Unmodified-Since, if it is text.
    pub if_unmodified_since: Option<&'a str>,
    /// Range, if it is text.
    pub range: Option<&'a str>,
    /// If-Range, if it is text.
    pub if_range: Option<&'a str>,
}

impl<'a> Fields<'a> {
    /// One pass over `headers`.
    pub fn of(headers: &'a HeaderMap) -> Fields<'a> {
        let mut f = Fields::default();
        // First values of the text fields, read as text once the pass is
        // done: a first value that is not text then answers `None`, as
        // `get` + `to_str` did.
        let mut first: [Option<&'a HeaderValue>; 7] = [None; 7];
        for (name, value) in headers {
            let slot = if name == header::HOST {
                f.hosts += 1;
                f.host.get_or_insert(value);
                continue;
            } else if name == header::ACCEPT_ENCODING {
                0
            } else if name == header::IF_NONE_MATCH {
                1
            } else if name == header::IF_MODIFIED_SINCE {
                2
            } else if name == header::RANGE {
                3
            } else if name == header::IF_MATCH {
                4
            } else if name == header::IF_UNMODIFIED_SINCE {
                5
            } else if name == header::IF_RANGE {
                6
            } else {
                if name == header::CONTENT_LENGTH {
                    f.content_lengths += 1;
                    f.content_length.get_or_insert(value);
                } else if name == header::TRANSFER_ENCODING {
                    f.transfer_encoding = true;
                }
                continue;
            };
            first[slot].get_or_insert(value);
        }
        let text = |i: usize| first[i].and_then(|v| v.to_str().ok());
        f.accept_encoding = text(0);
        f.if_none_match = text(1);
        f.if_modified_since = text(2);
        f.range = text(3);
        f.if_match = text(4);
        f.if_unmodified_since = text(5);
        f.if_range = text(6);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    /// The pass answers what `get` + `to_str` answered, field by field.
    #[test]
    fn one_pass_agrees_with_lookups() {
        let h = map(&[
            ("host", b"a.example"),
            ("host", b"b.example"),
            ("accept-encoding", b"gzip, br"),
            ("if-none-match", b"\"x\""),
            ("if-none-match", b"\"y\""),
            ("range", b"bytes=0-1"),
            ("if-range", b"\xff"),
            ("if-range", b"\"z\""),
            ("content-length", b"5"),
            ("content-length", b"6"),
            ("user-agent", b"curl"),
        ]);
        let f = Fields::of(&h);
        assert_eq!(f.hosts, 2);
        assert_eq!(f.host.unwrap(), "a.example");
        assert_eq!(f.content_lengths, 2);
        assert_eq!(f.content_length.unwrap(), "5");
        assert!(!f.transfer_encoding);
        let get = |n: http::header::HeaderName| h.get(n).and_then(|v| v.to_str().ok());
        assert_eq!(f.accept_encoding, get(header::ACCEPT_ENCODING));
        assert_eq!(f.if_none_match, get(header::IF_NONE_MATCH));
        assert_eq!(f.range, get(header::RANGE));
        assert_eq!(
            f.if_range,
            get(header::IF_RANGE),
            "a first value that is not text"
        );
        assert_eq!(f.if_range, None);
        assert_eq!(f.if_match, None);
        assert_eq!(f.if_modified_since, None);
        assert_eq!(f.if_unmodified_since, None);
        let empty = HeaderMap::new();
        let f = Fields::of(&empty);
        assert_eq!((f.hosts, f.host, f.accept_encoding), (0, None, None));
        assert!(Fields::of(&map(&[("transfer-encoding", b"chunked")])).transfer_encoding);
    }
}
