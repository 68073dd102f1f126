//! Steps 5 to 8 of the pipeline for one representation, from a file or from
//! memory: preconditions, range, headers, body. No I/O happens here (a file
//! body reads only when hyper polls it), so the whole step is a function of
//! the request and the prepared representation.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::body::{self, Body, Segment};
use super::cache::{ranged, Prepared};
use super::conditional::{self, Decision, Preconditions, Validators};
use super::fields::Fields;
use super::range::{self, ByteRange, RangeOutcome};
use super::response::build;
use crate::fileid::FileId;

/// Where a representation's bytes come from.
pub enum Source {
    /// An open file that must stay this version while it streams, read
    /// within the connection's budget.
    File(std::fs::File, FileId, body::Budget, body::Ran),
    /// The cached bytes of the representation.
    Memory(Bytes),
}

impl Source {
    fn body<B>(self, segments: Vec<Segment>, req: &Request<B>) -> Body {
        match self {
            Source::File(f, version, budget, ran) => {
                body::file_for(req, f, segments, version, budget, ran)
            }
            // A range is a slice that holds the whole buffer: charged whole.
            Source::Memory(bytes) => body::slices(bytes, segments),
        }
    }
}

/// Steps 5 to 8 for a representation, from a file or from memory.
pub fn represent<B>(
    req: &Request<B>,
    fields: &Fields<'_>,
    prepared: &Prepared,
    source: Source,
) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let validators = Validators {
        etag: &prepared.etag,
        last_modified: prepared.modified,
    };
    let pre = Preconditions {
        if_match: fields.if_match,
        if_none_match: fields.if_none_match,
        if_modified_since: fields.if_modified_since,
        if_unmodified_since: fields.if_unmodified_since,
    };
    match conditional::evaluate(&pre, &validators) {
        Decision::Proceed => {}
        Decision::NotModified => {
            return build(
                StatusCode::NOT_MODIFIED,
                prepared.headers.clone(),
                body::empty(),
            )
        }
        Decision::Failed => {
            let mut h = prepared.headers.clone();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return build(StatusCode::PRECONDITION_FAILED, h, body::empty());
        }
    }

    let len = prepared.len;
    // Range is defined for GET only (RFC 9110 section 14.2); HEAD ignores it.
    let range = match fields.range {
        Some(r) if !head => {
            let applies = fields
                .if_range
                .is_none_or(|ir| conditional::if_range_allows(ir, &validators));
            if applies {
                range::evaluate(r, len, prepared.max_ranges)
            } else {
                RangeOutcome::Full
            }
        }
        _ => RangeOutcome::Full,
    };

    match range {
        RangeOutcome::Full => {
            let b = match source {
                _ if head => body::empty(),
                // The whole of a cached file: the buffer itself.
                Source::Memory(bytes) => body::full(bytes),
                file => file.body(vec![Segment::File { offset: 0, len }], req),
            };
            build(StatusCode::OK, prepared.full.clone(), b)
        }
        RangeOutcome::Unsatisfiable => {
            // No payload, so no coding to announce: Content-Encoding on an
            // empty 416 would describe bytes that are not there.
            let mut h = ranged(&prepared.headers, None);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            build(StatusCode::RANGE_NOT_SATISFIABLE, h, body::empty())
        }
        RangeOutcome::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            let mut h = ranged(&prepared.headers, prepared.encoding);
            h.insert(header::CONTENT_TYPE, prepared.content_type.clone());
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
            if let Ok(v) = HeaderValue::from_str(&content_range(r, len)) {
                h.insert(header::CONTENT_RANGE, v);
            }
            let b = source.body(
                vec![Segment::File {
                    offset: r.start,
                    len: r.len(),
                }],
                req,
            );
            build(StatusCode::PARTIAL_CONTENT, h, b)
        }
        RangeOutcome::Partial(ranges) => {
            // The multipart body is not itself encoded (its parts are ranges
            // of the encoded bytes): a Content-Encoding here would make a
            // client try to decode the multipart text (curl --compressed
            // failed on it).
            let mut h = ranged(&prepared.headers, None);
            let (segments, total, boundary) = multipart(&ranges, len, &prepared.content_type);
            if let Ok(v) =
                HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            build(StatusCode::PARTIAL_CONTENT, h, source.body(segments, req))
        }
    }
}

fn content_range(r: ByteRange, len: u64) -> String {
    format!("bytes {}-{}/{len}", r.start, r.end)
}

/// The parts of a multipart/byteranges body (RFC 9110 section 14.6) and its
/// exact length, so it can be sent with Content-Length.
fn multipart(
    ranges: &[ByteRange],
    len: u64,
    content_type: &HeaderValue,
) -> (Vec<Segment>, u64, String) {
    use std::hash::{BuildHasher, Hasher};
    // A fresh random boundary per response: it must not occur in the parts.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(len);
    let boundary = format!("ruchy{:016x}", hasher.finish());
    let ct = content_type.to_str().unwrap_or("application/octet-stream");
    let mut segments = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut total = 0u64;
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        let part = format!(
            "{lead}--{boundary}\r\nContent-Type: {ct}\r\nContent-Range: {}\r\n\r\n",
            content_range(*r, len)
        );
        total += part.len() as u64 + r.len();
        segments.push(Segment::Bytes(Bytes::from(part)));
        segments.push(Segment::File {
            offset: r.start,
            len: r.len(),
        });
    }
    let end = format!("\r\n--{boundary}--\r\n");
    total += end.len() as u64;
    segments.push(Segment::Bytes(Bytes::from(end)));
    (segments, total, boundary)
}
