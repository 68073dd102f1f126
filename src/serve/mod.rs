//! Static files: the per-request pipeline.
//!
//! 1. Method: GET and HEAD serve, OPTIONS answers 204, anything else 405.
//! 2. URI length: past `limits.max_uri_length`, 414.
//! 3. Cache ([`cache`]): a fresh entry for this path answers from memory,
//!    with no file-system call at all.
//!    Resolve ([`resolve`]): decoded path -> contained, policy-checked file,
//!    index, listing or redirect; twin chosen by [`encoding`]; file opened and
//!    its strong ETag taken from [`etag`]; small files read whole for the
//!    cache. One blocking-pool trip.
//! 4. Not found: the single-page-app fallback, else the 404 page.
//! 5. Preconditions ([`conditional`], RFC 9110 section 13.2.2): 304 or 412.
//! 6. Range ([`range`], section 14) with If-Range: 206, multipart or 416.
//! 7. Headers ([`headers`]): type, validators, cache and header rules, security.
//! 8. Body ([`body`]): streamed from the open file; none for HEAD.

pub mod body;
pub mod cache;
pub mod conditional;
pub mod encoding;
pub mod etag;
pub mod guard;
pub mod headers;
pub mod listing;
pub mod range;
pub mod resolve;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::config::Config;
use body::{Body, Segment};
use conditional::{Decision, Preconditions, Validators};
use range::{ByteRange, RangeOutcome};
use resolve::{Found, Outcome};

const ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");

/// One configuration generation and the caches that belong to it. Reload
/// builds a new `Site`, so caches are cleared by construction.
#[derive(Debug)]
pub struct Site {
    pub config: Arc<Config>,
    pub etags: etag::EtagCache,
    pub cache: cache::FileCache,
}

impl Site {
    pub fn new(config: Arc<Config>, stats: cache::Stats) -> Site {
        Site {
            cache: cache::FileCache::new(&config, stats),
            config,
            etags: etag::EtagCache::default(),
        }
    }
}

/// Where a representation's bytes come from.
enum Source {
    File(std::fs::File, body::Version),
    Memory(Bytes),
}

impl Source {
    fn body(self, segments: Vec<Segment>) -> Body {
        match self {
            Source::File(f, version) => body::file(f, segments, version),
            Source::Memory(bytes) => {
                let slice =
                    |offset: u64, len: u64| bytes.slice(offset as usize..(offset + len) as usize);
                match segments.as_slice() {
                    [Segment::File { offset, len }] => body::full(slice(*offset, *len)),
                    parts => {
                        let mut out = bytes::BytesMut::new();
                        for p in parts {
                            match p {
                                Segment::Bytes(b) => out.extend_from_slice(b),
                                Segment::File { offset, len } => {
                                    out.extend_from_slice(&slice(*offset, *len))
                                }
                            }
                        }
                        body::full(out.freeze())
                    }
                }
            }
        }
    }
}

/// Reads a whole small file for the cache; `None` if it is not the length
/// its metadata promised (changed under us), so nothing wrong is cached.
fn read_whole(file: &std::fs::File, len: u64) -> Option<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).ok()?;
    Some(Bytes::from(buf))
}

/// The answer to a request [`guard::check`] refused: a short text body, and
/// `Connection: close` on HTTP/1 when the request's body was left unread.
pub fn refuse<B>(cfg: &Config, req: &Request<B>, refusal: guard::Refusal) -> Response<Body> {
    let mut r = simple(cfg, refusal.status, Some(req.method() == Method::HEAD));
    if refusal.close && req.version() < http::Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Answers one request. Never fails: every I/O error becomes a status code
/// and a log line.
pub async fn respond<B>(site: Arc<Site>, req: &Request<B>) -> Response<Body> {
    let cfg = &site.config;
    let head = req.method() == Method::HEAD;
    match *req.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => {
            let mut r = simple(cfg, StatusCode::NO_CONTENT, None);
            r.headers_mut().insert(header::ALLOW, ALLOW);
            return r;
        }
        _ => {
            let mut r = simple(cfg, StatusCode::METHOD_NOT_ALLOWED, Some(head));
            r.headers_mut().insert(header::ALLOW, ALLOW);
            return r;
        }
    }
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > cfg.limits.max_uri_length {
        return simple(cfg, StatusCode::URI_TOO_LONG, Some(head));
    }

    if let Some(entry) = site.cache.lookup(req.uri().path()) {
        if entry.missing {
            site.cache.hit();
            return not_found(&site, req).await;
        }
        let chosen =
            encoding::negotiate(header_str(req, header::ACCEPT_ENCODING), &entry.available);
        if let Some(v) = entry.variant(chosen) {
            site.cache.hit();
            return represent(req, &v.prepared, Source::Memory(v.body.clone()));
        }
    }

    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let accept = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let outcome = blocking(&site, move |site| {
        let resolved = resolve::resolve(
            &site.config,
            &site.etags,
            &path,
            query.as_deref(),
            accept.as_deref(),
        );
        let outcome = match resolved {
            // ENOENT and ENOTDIR are answers, not failures: cache them as such.
            Err(e) if resolve::is_not_found(&e) => Outcome::NotFound,
            other => other?,
        };
        let bytes = match &outcome {
            Outcome::File(f) if site.cache.accepts(f.len) => read_whole(&f.file, f.len),
            _ => None,
        };
        Ok((outcome, bytes))
    })
    .await;

    match outcome {
        Ok((Outcome::File(found), Some(bytes))) => {
            site.cache.miss();
            let found = *found;
            let prepared = prepare(cfg, &found);
            let variant = site.cache.insert(
                req.uri().path(),
                &found.available,
                cache::Variant {
                    prepared,
                    body: bytes,
                },
            );
            represent(req, &variant.prepared, Source::Memory(variant.body.clone()))
        }
        Ok((Outcome::NotFound, _)) => {
            site.cache.miss();
            site.cache.insert_missing(req.uri().path());
            not_found(&site, req).await
        }
        Ok((outcome, _)) => respond_outcome(&site, req, outcome).await,
        Err(e) => io_error(&site, req, e).await,
    }
}

fn prepare(cfg: &Config, found: &Found) -> cache::Prepared {
    cache::Prepared::new(
        cfg,
        &found.rel_path,
        found.etag.clone(),
        found.modified,
        found.has_twins,
        found.encoding,
        found.len,
    )
}

/// Everything resolution can answer besides a cached file.
async fn respond_outcome<B>(
    site: &Arc<Site>,
    req: &Request<B>,
    outcome: Outcome,
) -> Response<Body> {
    let cfg = &site.config;
    let head = req.method() == Method::HEAD;
    match outcome {
        Outcome::File(found) => {
            let prepared = prepare(cfg, &found);
            let version = found.version();
            represent(req, &prepared, Source::File(found.file, version))
        }
        Outcome::Redirect(location) => {
            let mut r = simple(cfg, StatusCode::PERMANENT_REDIRECT, Some(head));
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Outcome::Listing(dir) => {
            let shown = percent_encoding::percent_decode_str(req.uri().path())
                .decode_utf8_lossy()
                .into_owned();
            let dotfiles = cfg.files.dotfiles;
            match blocking(site, move |_| listing::render(&dir, &shown, dotfiles)).await {
                Ok(html) => {
                    let mut h = HeaderMap::new();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    finish(cfg, StatusCode::OK, h, Bytes::from(html), head)
                }
                Err(e) => io_error(site, req, e).await,
            }
        }
        Outcome::NotFound => not_found(site, req).await,
        Outcome::Forbidden => error_page(site, StatusCode::FORBIDDEN, head).await,
        Outcome::BadRequest => simple(cfg, StatusCode::BAD_REQUEST, Some(head)),
    }
}

/// Runs file-system work on the blocking pool with the site in hand.
async fn blocking<T, F>(site: &Arc<Site>, f: F) -> std::io::Result<T>
where
    F: FnOnce(&Site) -> std::io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let site = Arc::clone(site);
    tokio::task::spawn_blocking(move || f(&site))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

async fn io_error<B>(site: &Arc<Site>, req: &Request<B>, e: std::io::Error) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    if resolve::is_not_found(&e) {
        return not_found(site, req).await;
    }
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        tracing::warn!(path = req.uri().path(), error = %e, "permission denied");
        return error_page(site, StatusCode::FORBIDDEN, head).await;
    }
    tracing::error!(path = req.uri().path(), error = %e, "I/O error while serving");
    error_page(site, StatusCode::INTERNAL_SERVER_ERROR, head).await
}

async fn not_found<B>(site: &Arc<Site>, req: &Request<B>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    if let Some(fallback) = site.config.files.fallback.clone() {
        let accept = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let found = blocking(site, move |s| {
            resolve::resolve(&s.config, &s.etags, &fallback, None, accept.as_deref())
        })
        .await;
        match found {
            Ok(Outcome::File(found)) => {
                let prepared = prepare(&site.config, &found);
                let version = found.version();
                return represent(req, &prepared, Source::File(found.file, version));
            }
            _ => tracing::warn!(
                fallback = site.config.files.fallback.as_deref(),
                "fallback file is missing; answering 404"
            ),
        }
    }
    error_page(site, StatusCode::NOT_FOUND, head).await
}

/// The configured page for 404 or 5xx, else a one-line text body.
async fn error_page(site: &Arc<Site>, status: StatusCode, head: bool) -> Response<Body> {
    let cfg = &site.config;
    let page = match status {
        StatusCode::NOT_FOUND => cfg.files.not_found_page.clone(),
        s if s.is_server_error() => cfg.files.server_error_page.clone(),
        _ => None,
    };
    if let Some(page) = page {
        let found = blocking(site, move |s| {
            resolve::resolve(&s.config, &s.etags, &page, None, None)
        })
        .await;
        if let Ok(Outcome::File(found)) = found {
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
                body::file(
                    found.file,
                    vec![Segment::File {
                        offset: 0,
                        len: found.len,
                    }],
                    version,
                )
            };
            return build(status, h, b);
        }
        tracing::warn!(status = status.as_u16(), "error page file is missing");
    }
    simple(cfg, status, Some(head))
}

/// A short text response (`Some(head)`) or an empty one (`None`).
fn simple(cfg: &Config, status: StatusCode, text: Option<bool>) -> Response<Body> {
    let mut h = HeaderMap::new();
    match text {
        Some(head) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            let msg = format!(
                "{} {}\n",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            finish(cfg, status, h, Bytes::from(msg), head)
        }
        None => {
            headers::apply_common(&cfg.headers, &mut h);
            build(status, h, body::empty())
        }
    }
}

/// In-memory body with Content-Length and common headers.
fn finish(
    cfg: &Config,
    status: StatusCode,
    mut h: HeaderMap,
    bytes: Bytes,
    head: bool,
) -> Response<Body> {
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    headers::apply_common(&cfg.headers, &mut h);
    build(
        status,
        h,
        if head {
            body::empty()
        } else {
            body::full(bytes)
        },
    )
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

fn header_str<B>(req: &Request<B>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Steps 5 to 8 for a representation, from a file or from memory.
fn represent<B>(req: &Request<B>, prepared: &cache::Prepared, source: Source) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let mut h = prepared.headers.clone();
    let content_type = prepared.content_type.clone();
    let validators = Validators {
        etag: &prepared.etag,
        last_modified: prepared.modified,
    };
    let pre = Preconditions {
        if_match: header_str(req, header::IF_MATCH),
        if_none_match: header_str(req, header::IF_NONE_MATCH),
        if_modified_since: header_str(req, header::IF_MODIFIED_SINCE),
        if_unmodified_since: header_str(req, header::IF_UNMODIFIED_SINCE),
    };
    match conditional::evaluate(&pre, &validators) {
        Decision::Proceed => {}
        Decision::NotModified => return build(StatusCode::NOT_MODIFIED, h, body::empty()),
        Decision::Failed => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return build(StatusCode::PRECONDITION_FAILED, h, body::empty());
        }
    }

    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(enc) = prepared.encoding {
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(enc.token()),
        );
    }
    let len = prepared.len;
    // Range is defined for GET only (RFC 9110 section 14.2); HEAD ignores it.
    let range = match header_str(req, header::RANGE) {
        Some(r) if !head => {
            let applies = header_str(req, header::IF_RANGE)
                .is_none_or(|ir| conditional::if_range_allows(ir, &validators));
            if applies {
                range::evaluate(r, len, prepared.max_ranges)
            } else {
                RangeOutcome::Full
            }
        }
        _ => RangeOutcome::Full,
    };

    let whole = |h: &mut HeaderMap| {
        h.insert(header::CONTENT_TYPE, content_type.clone());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    };
    match range {
        RangeOutcome::Full => {
            whole(&mut h);
            let b = if head {
                body::empty()
            } else {
                source.body(vec![Segment::File { offset: 0, len }])
            };
            build(StatusCode::OK, h, b)
        }
        RangeOutcome::Unsatisfiable => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            build(StatusCode::RANGE_NOT_SATISFIABLE, h, body::empty())
        }
        RangeOutcome::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            h.insert(header::CONTENT_TYPE, content_type);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
            if let Ok(v) = HeaderValue::from_str(&content_range(r, len)) {
                h.insert(header::CONTENT_RANGE, v);
            }
            let b = source.body(vec![Segment::File {
                offset: r.start,
                len: r.len(),
            }]);
            build(StatusCode::PARTIAL_CONTENT, h, b)
        }
        RangeOutcome::Partial(ranges) => {
            let (segments, total, boundary) = multipart(&ranges, len, &content_type);
            if let Ok(v) =
                HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
            {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            build(StatusCode::PARTIAL_CONTENT, h, source.body(segments))
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

/// A plain-HTTP listener with `redirect_https`: 308 to the same host and
/// path over https (the method and body are kept by 308, unlike 301). The
/// host comes from the request and is checked, so a hostile Host header
/// cannot make us redirect to a crafted URL.
pub fn redirect_https<B>(cfg: &Config, req: &Request<B>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| header_str(req, header::HOST).map(str::to_string))
        .unwrap_or_default();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() {
                name
            } else {
                host.as_str()
            }
        }
        _ => host.as_str(),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !valid {
        return simple(cfg, StatusCode::BAD_REQUEST, Some(head));
    }
    let port = match cfg.tls.https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut r = simple(cfg, StatusCode::PERMANENT_REDIRECT, Some(head));
    if let Ok(v) = HeaderValue::from_str(&format!("https://{name}{port}{target}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
