//! The one place where responses are assembled: files (through
//! [`super::represent`]), error pages, redirects and short text answers all
//! end in [`build`], and every generated answer gets the same common headers
//! (`nosniff`, cross-origin isolation) from [`super::headers`].

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::body::{self, Body, Segment};
use super::headers;
use super::resolve::Found;
use crate::config::Config;

pub(crate) const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// A response from its parts.
pub fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// A fixed text answer with no site headers: health probes and the metrics
/// listener, which are not part of any site.
pub fn plain(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, TEXT_PLAIN);
    build(status, h, body::full(Bytes::from_static(msg.as_bytes())))
}

/// A `text/plain` answer of bytes made at run time.
pub fn plain_bytes(status: StatusCode, msg: Bytes) -> Response<Body> {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, TEXT_PLAIN);
    build(status, h, body::full(msg))
}

/// `404 Not Found\n` and the like, with the site's common headers; no body
/// for HEAD.
pub fn status_text(cfg: &Config, status: StatusCode, head: bool) -> Response<Body> {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, TEXT_PLAIN);
    let msg = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    in_memory(cfg, status, h, Bytes::from(msg), head)
}

/// No body at all (204), with the site's common headers.
pub fn no_body(cfg: &Config, status: StatusCode) -> Response<Body> {
    let mut h = HeaderMap::new();
    headers::apply_common(&cfg.headers, &mut h);
    build(status, h, body::empty())
}

/// A body held in memory, with Content-Length and the site's common headers.
pub fn in_memory(
    cfg: &Config,
    status: StatusCode,
    mut h: HeaderMap,
    bytes: Bytes,
    head: bool,
) -> Response<Body> {
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    headers::apply_common(&cfg.headers, &mut h);
    let body = if head {
        body::empty()
    } else {
        body::full(bytes)
    };
    build(status, h, body)
}

/// A redirect with a short text body. A location that is not a valid header
/// value is left out rather than sent broken.
pub fn redirect(cfg: &Config, status: StatusCode, location: &str, head: bool) -> Response<Body> {
    let mut r = status_text(cfg, status, head);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A configured error page (404, 403, 5xx) from its resolved file: never
/// stored by caches, since the same file answers many paths.
pub fn error_file<B>(
    cfg: &Config,
    req: &Request<B>,
    status: StatusCode,
    found: Found,
    budget: &body::Budget,
    ran: body::Ran,
) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        headers::content_type(&found.rel_path, &cfg.files.mime_types),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(found.len));
    headers::apply_common(&cfg.headers, &mut h);
    let b = if head {
        body::empty()
    } else {
        let version = found.version();
        let whole = vec![Segment::File {
            offset: 0,
            len: found.len,
        }];
        body::file_for(req, found.file, whole, version, budget.clone(), ran)
    };
    build(status, h, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Config {
        crate::config::load(&crate::config::Sources::default()).expect("demo config")
    }

    #[test]
    fn status_text_carries_length_and_common_headers() {
        let cfg = demo();
        let r = status_text(&cfg, StatusCode::NOT_FOUND, false);
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "14");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let head = status_text(&cfg, StatusCode::NOT_FOUND, true);
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "14");
        assert!(http_body::Body::is_end_stream(head.body()));
    }

    #[test]
    fn redirect_drops_a_location_that_is_not_a_header_value() {
        let cfg = demo();
        let ok = redirect(&cfg, StatusCode::PERMANENT_REDIRECT, "/a/", false);
        assert_eq!(ok.headers()[header::LOCATION], "/a/");
        let bad = redirect(&cfg, StatusCode::PERMANENT_REDIRECT, "/a\n", false);
        assert!(bad.headers().get(header::LOCATION).is_none());
    }
}
