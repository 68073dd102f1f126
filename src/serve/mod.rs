//! Static files: the per-request pipeline.
//!
//! 1. Method: GET and HEAD serve, OPTIONS answers 204, anything else 405.
//! 2. URI length: past `limits.max_uri_length`, 414.
//! 3. Redirects (`[[redirects]]`, [`crate::config::Redirects`]): the first
//!    rule matching the resolved path answers 301/302/307/308.
//!    Cache ([`cache`]): a fresh entry for this path answers from memory,
//!    with no file-system call at all.
//!    Resolve ([`resolve`]): decoded path -> contained, policy-checked file,
//!    index, listing or redirect; twin chosen by [`encoding`]; file opened and
//!    its strong ETag taken from [`etag`]; small files read whole for the
//!    cache. One blocking-pool trip.
//!    Then `files.try` for a path not found (`{path}.html`, ...).
//! 4. Not found: the single-page-app fallback, else the 404 page.
//! 5. Preconditions ([`conditional`], RFC 9110 section 13.2.2): 304 or 412.
//! 6. Range ([`range`], section 14) with If-Range: 206, multipart or 416.
//! 7. Headers ([`headers`]): type, validators, cache and header rules, security.
//! 8. Body ([`body`]): streamed from the open file; none for HEAD.
//!
//! This module does steps 1 to 4, the part with I/O (one blocking-pool trip
//! per request that misses the cache); [`represent`] does 5 to 8 without any;
//! [`response`] assembles every kind of answer.

pub mod auth;
pub mod body;
pub mod cache;
pub mod compress;
pub mod conditional;
pub mod encoding;
pub mod etag;
pub mod fields;
pub mod guard;
pub mod headers;
pub mod listing;
pub mod locate;
pub mod range;
pub mod represent;
pub mod resolve;
pub mod response;
pub mod sites;
pub mod tree;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::config::Config;
use body::{Body, Budget};
use fields::Fields;
use represent::{represent, Source};
use resolve::{Found, Outcome};
use tree::Wait;

const ALLOW: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");

/// One site (the top-level one or a `[[sites]]` entry) of one
/// configuration generation, with the generation's caches. Reload builds new
/// `Site`s, so caches are cleared by construction.
#[derive(Debug)]
pub struct Site {
    /// The site's configuration (for a `[[sites]]` entry, the top level's
    /// with the site's root and tables).
    pub config: Arc<Config>,
    /// Content hashes by file version (shared by the generation's sites:
    /// keyed by the file's absolute path).
    pub etags: Arc<etag::EtagCache>,
    /// Small hot files, prepared for answering from memory; one cache and
    /// one byte budget for the generation, each site's keys apart.
    pub cache: Arc<cache::FileCache>,
    /// Compressed variants of files with no twin (`[compression]`), by
    /// content hash: the same bytes in two sites are compressed once.
    pub compress: Arc<compress::Compressor>,
    /// What this site's cache keys start with: nothing for the top-level
    /// site, `{index}` for `sites[index]` (a path always starts with `/`,
    /// so no two sites' keys can meet).
    key_prefix: Option<Box<str>>,
    /// The `site` label of its requests in metrics.
    pub label: Arc<str>,
    /// The site's own access-log file, when it is not the top level's.
    pub own_log: Option<std::path::PathBuf>,
    /// The configuration whose locations apply here: this site's, or for
    /// a location's own site its site's (so `files.try` never serves a
    /// file another location guards).
    rules: Arc<Config>,
    /// By index in `config.locations`: what each location needs at run
    /// time.
    located: Vec<Located>,
    /// The text 404 (headers and body), made once: scanners ask for missing
    /// paths over and over, and the answer only depends on the configuration.
    not_found_text: (HeaderMap, Bytes),
}

/// A location's run-time part.
#[derive(Debug)]
struct Located {
    /// The site the location's files are served as when it has a
    /// configuration of its own (same caches and keys: a path is in one
    /// location only, so its entries are that location's).
    site: Option<Arc<Site>>,
    /// `basic_auth`: its users and what has been verified of them.
    gate: Option<auth::Gate>,
}

/// What the sites of one generation share.
#[derive(Debug, Clone)]
pub struct Shared {
    etags: Arc<etag::EtagCache>,
    cache: Arc<cache::FileCache>,
    compress: Arc<compress::Compressor>,
}

impl Shared {
    /// Empty caches sized by the top-level configuration `top`; `stats`
    /// are the process-wide counters, which outlive generations.
    pub fn new(top: &Config, stats: cache::Stats, compression: Arc<compress::Stats>) -> Shared {
        Shared {
            etags: Arc::default(),
            cache: Arc::new(cache::FileCache::new(top, stats)),
            compress: Arc::new(compress::Compressor::new(&top.compression, compression)),
        }
    }
}

impl Site {
    /// A lone site with empty caches of its own (tests and benchmarks).
    pub fn new(
        config: Arc<Config>,
        stats: cache::Stats,
        compression: Arc<compress::Stats>,
    ) -> Site {
        let shared = Shared::new(&config, stats, compression);
        Site::within(config, &shared, None, crate::config::DEFAULT_LABEL.into())
    }

    /// Site `index` of a generation (`None`: the top-level one) over the
    /// generation's `shared` caches.
    pub fn within(
        config: Arc<Config>,
        shared: &Shared,
        index: Option<usize>,
        label: Arc<str>,
    ) -> Site {
        let text = response::status_text(&config, StatusCode::NOT_FOUND, false);
        let (parts, body) = text.into_parts();
        let bytes = match body {
            Body::Full(Some(b)) => b,
            _ => Bytes::new(),
        };
        let located = config
            .locations
            .all
            .iter()
            .map(|l| Located {
                site: l.config.as_ref().map(|own| {
                    let mut inner =
                        Site::within(Arc::clone(own), shared, index, Arc::clone(&label));
                    inner.rules = Arc::clone(&config);
                    Arc::new(inner)
                }),
                gate: l.auth.as_ref().map(|u| auth::Gate::new(Arc::clone(u))),
            })
            .collect();
        Site {
            cache: Arc::clone(&shared.cache),
            compress: Arc::clone(&shared.compress),
            etags: Arc::clone(&shared.etags),
            key_prefix: index.map(|i| i.to_string().into_boxed_str()),
            label,
            located,
            own_log: None,
            rules: Arc::clone(&config),
            config,
            not_found_text: (parts.headers, bytes),
        }
    }

    /// Reads again each `basic_auth` file of its locations that changed.
    pub fn refresh_users(&self) {
        for gate in self.located.iter().filter_map(|l| l.gate.as_ref()) {
            gate.refresh();
        }
    }

    /// Whether this is the top-level site.
    pub fn is_default(&self) -> bool {
        self.key_prefix.is_none()
    }

    /// The file-cache key of a request path's [`cache::key`] in this site.
    fn cache_key<'k>(&self, key: Cow<'k, str>) -> Cow<'k, str> {
        match &self.key_prefix {
            None => key,
            Some(prefix) => Cow::Owned(format!("{prefix}{key}")),
        }
    }

    /// [`resolve::resolve`] under this generation's configuration and caches.
    pub fn resolve(
        &self,
        raw_path: &str,
        query: Option<&str>,
        accept_encoding: Option<&str>,
        wait: Wait,
    ) -> std::io::Result<Outcome> {
        resolve::resolve(
            &self.config,
            &self.etags,
            &self.cache.stats().stale_twins,
            raw_path,
            query,
            accept_encoding,
            wait,
        )
    }

    /// The request path resolved, and when it is not found, each of
    /// `files.try` in turn (nginx's `try_files`): the first file found
    /// answers with its own type and validators. Not-found is an answer here
    /// (ENOENT and ENOTDIR become [`Outcome::NotFound`], cached as such).
    pub fn resolve_trying(
        &self,
        path: &str,
        query: Option<&str>,
        accept: Option<&str>,
        wait: Wait,
    ) -> std::io::Result<Outcome> {
        let resolve = |p: &str| match self.resolve(p, query, accept, wait) {
            Err(e) if resolve::is_not_found(&e) => Ok(Outcome::NotFound),
            other => other,
        };
        let outcome = resolve(path)?;
        let tries = &self.config.files.try_files;
        // A path ending in `/` is a directory's: its index answers it. A
        // directory asked for without its `/` is not a file either: as in
        // nginx's `try_files $uri $uri.html $uri/`, `about.html` answers
        // `/about` before the directory `about/` does; entries inside the
        // directory (`{path}/index.html`) are left to its redirect, so
        // its page's relative links keep working.
        let directory = matches!(outcome, Outcome::Redirect(_));
        if !(matches!(outcome, Outcome::NotFound) || directory)
            || tries.is_empty()
            || path.ends_with('/')
        {
            return Ok(outcome);
        }
        let locations = &self.rules.locations;
        let location_of = |p: &str| {
            let key = cache::key(p).or_else(|| cache::lossy_key(p).map(Cow::Owned));
            key.and_then(|k| locations.find(&k))
        };
        let here = match locations.is_empty() {
            true => None,
            false => location_of(path),
        };
        for (before, after) in tries {
            if directory && after.starts_with('/') {
                continue;
            }
            let candidate = format!("{before}{path}{after}");
            // A file in another location that guards its paths (`access`,
            // `basic_auth`, `return`) is not served for this one: `/admin`
            // must not answer with a guarded `/admin.html` (nginx's
            // try_files would).
            if !locations.is_empty() {
                let there = location_of(&candidate);
                if there != here && there.is_some_and(|j| locations.all[j].guards()) {
                    continue;
                }
            }
            if let Outcome::File(mut found) = resolve(&candidate)? {
                // The candidate's own path (or its directory's index).
                found.served.get_or_insert(candidate);
                return Ok(Outcome::File(found));
            }
        }
        Ok(match directory {
            true => outcome,
            false => Outcome::NotFound,
        })
    }
}

/// Reads a whole small file for the cache; `Ok(None)` if it is not the
/// length its metadata promised (changed under us), so nothing wrong is
/// cached. Under [`Wait::Never`], `WouldBlock` unless the page cache holds
/// all of it.
fn read_whole(file: &std::fs::File, len: u64, wait: Wait) -> std::io::Result<Option<Bytes>> {
    let mut buf = Vec::with_capacity(len as usize);
    match body::read_more_at(file, &mut buf, len as usize, 0, wait) {
        Err(e) if tree::is_would_block(&e) => Err(e),
        Err(_) => Ok(None),
        Ok(()) => Ok((buf.len() as u64 == len).then(|| Bytes::from(buf))),
    }
}

/// The answer to a request [`guard::check`] refused: a short text body, and
/// `Connection: close` on HTTP/1 when the request's body was left unread.
pub fn refuse<B>(cfg: &Config, req: &Request<B>, refusal: guard::Refusal) -> Response<Body> {
    let mut r = response::status_text(cfg, refusal.status, req.method() == Method::HEAD);
    if refusal.close && req.version() < http::Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The answer to a request no site answers: its host is no site's name and
/// there is no default site, or it is another site's than the TLS
/// connection's (RFC 9110 section 15.5.20). A client may retry it on a new
/// connection.
pub fn misdirected<B>(cfg: &Config, req: &Request<B>) -> Response<Body> {
    response::status_text(
        cfg,
        StatusCode::MISDIRECTED_REQUEST,
        req.method() == Method::HEAD,
    )
}

/// The path the content phase serves: the request's own, or after an
/// internal redirect the path of the file that will be served.
#[derive(Debug, Clone)]
pub struct Target<'p> {
    /// The path, percent-encoded as a request's.
    pub path: Cow<'p, str>,
    /// Served as the page of this error status (`files.not_found_page`,
    /// `files.server_error_page`), not as itself.
    pub status: Option<StatusCode>,
    /// Why an internal redirect came here (`None`: the request's own
    /// path); `[[redirects]]` (the server's rewrite phase) are not matched
    /// again after one.
    pub internal: Option<&'static str>,
}

impl<'p> Target<'p> {
    /// The request's own path.
    pub fn asked(path: &'p str) -> Target<'p> {
        Target {
            path: Cow::Borrowed(path),
            status: None,
            internal: None,
        }
    }
}

/// What the content phase gives back.
#[derive(Debug)]
pub enum Served {
    /// The answer.
    Answer(Response<Body>),
    /// nginx's internal redirect: what would be served is another path's,
    /// in another location (a directory's index, a `files.try` candidate,
    /// the fallback, an error page), so the request meets that location
    /// first. Nothing was charged or sent.
    Again(Target<'static>),
}

/// Whether `path` (a request path) is in another location of `site`'s
/// rules than `here`: then it is served only after an internal redirect.
fn located_elsewhere(site: &Site, here: Option<usize>, path: &str) -> bool {
    let locations = &site.rules.locations;
    if locations.is_empty() {
        return false;
    }
    let key = cache::key(path).or_else(|| cache::lossy_key(path).map(Cow::Owned));
    key.and_then(|k| locations.find(&k)) != here
}

/// One request being answered: the generation, the request, and the
/// connection's body budget that every body read or held in memory is
/// charged to.
struct Ask<'a, B> {
    site: &'a Arc<Site>,
    req: &'a Request<B>,
    /// The path served (the request's, or an internal redirect's).
    target: &'a Target<'a>,
    /// The location `target` was placed in, by index in the site's rules.
    here: Option<usize>,
    /// Set when the answer is an internal redirect ([`Served::Again`]).
    again: OnceLock<Target<'static>>,
    fields: &'a Fields<'a>,
    budget: &'a Budget,
    /// Bytes an in-memory body needed that the budget did not have: the
    /// answer is dropped and made again once that room is free.
    need: AtomicUsize,
    /// Room already waited for, for the next try.
    credit: Mutex<Option<body::Charge>>,
    /// Whether `credit` holds any.
    has_credit: AtomicBool,
}

impl<'a, B> Ask<'a, B> {
    /// A request about to be answered, with no room waited for yet.
    fn new(
        site: &'a Arc<Site>,
        req: &'a Request<B>,
        (target, here): (&'a Target<'a>, Option<usize>),
        fields: &'a Fields<'a>,
        budget: &'a Budget,
    ) -> Self {
        Ask {
            site,
            req,
            target,
            here,
            again: OnceLock::new(),
            fields,
            budget,
            need: AtomicUsize::new(0),
            credit: Mutex::new(None),
            has_credit: AtomicBool::new(false),
        }
    }

    /// An internal redirect to `path` (served as the page of `status`
    /// when given): the answer returned is a placeholder that
    /// [`respond`] drops.
    fn redirect(
        &self,
        path: &str,
        status: Option<StatusCode>,
        why: &'static str,
    ) -> Response<Body> {
        let _ = self.again.set(Target {
            path: Cow::Owned(path.to_string()),
            status,
            internal: Some(why),
        });
        response::build(
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderMap::new(),
            body::empty(),
        )
    }

    /// Whether `path` is another location's than the one being served.
    fn elsewhere(&self, path: &str) -> bool {
        located_elsewhere(self.site, self.here, path)
    }

    /// The room waited for, if any.
    fn take_credit(&self) -> Option<body::Charge> {
        self.has_credit.store(false, Ordering::Relaxed);
        self.credit.lock().expect("credit lock").take()
    }

    /// Keeps `room` for the next try.
    fn give_credit(&self, room: Option<body::Charge>) {
        self.has_credit.store(room.is_some(), Ordering::Relaxed);
        *self.credit.lock().expect("credit lock") = room;
    }

    /// `resp` with its in-memory body charged to the budget. When there is
    /// no room now, the body is dropped at once and [`Ask::need`] says how
    /// much to wait for: a stream waiting for room must not hold the bytes
    /// meanwhile (a cached buffer the cache has since let go of is memory
    /// that only this stream keeps alive).
    fn charged(&self, resp: Response<Body>) -> Response<Body> {
        let Some(n) = resp.body().held() else {
            return resp;
        };
        // Credit exists only after a wait: the common answer takes no lock.
        let credit = match self.has_credit.load(Ordering::Relaxed) {
            true => self.take_credit(),
            false => None,
        };
        if let Some(c) = credit {
            if self.budget.covers(&c, n) {
                return resp.map(|b| b.charge(c));
            }
        }
        match self.budget.try_charge(n) {
            Some(c) => resp.map(|b| b.charge(c)),
            None => {
                self.need.store(n, Ordering::Relaxed);
                resp.map(|_| body::empty())
            }
        }
    }
}

/// Answers one request. Never fails: every I/O error becomes a status code
/// and a log line.
///
/// An answer whose in-memory body finds no room in the budget is made
/// again once the room is free ([`Ask::charged`]): by then the cache may
/// answer it, or the file is read anew within the room waited for.
///
/// `target` is served as located `here` (by index in the site's rules); a
/// file that another location's path would serve comes back as
/// [`Served::Again`].
pub async fn respond<B>(
    site: Arc<Site>,
    req: &Request<B>,
    (target, here): (&Target<'_>, Option<usize>),
    fields: &Fields<'_>,
    budget: &Budget,
) -> Served {
    let ask = Ask::new(&site, req, (target, here), fields, budget);
    let resp = respond_within(&ask).await;
    match ask.again.into_inner() {
        Some(t) => Served::Again(t),
        None => Served::Answer(resp),
    }
}

/// [`respond`] for the request's own path in a site without locations,
/// where no internal redirect can happen: the handler's path for such a
/// site (no `Served` to wrap and unwrap), and what benchmarks and tests
/// drive.
pub async fn answer<B>(
    site: Arc<Site>,
    req: &Request<B>,
    fields: &Fields<'_>,
    budget: &Budget,
) -> Response<Body> {
    let target = Target::asked(req.uri().path());
    let ask = Ask::new(&site, req, (&target, None), fields, budget);
    respond_within(&ask).await
}

/// The answer within the budget: made again once room is free when its
/// in-memory body found none; the placeholder when it is an internal
/// redirect ([`Ask::again`]).
async fn respond_within<B>(ask: &Ask<'_, B>) -> Response<Body> {
    loop {
        let resp = respond_once(ask).await;
        if ask.again.get().is_some() {
            return resp;
        }
        let need = ask.need.swap(0, Ordering::Relaxed);
        if need == 0 {
            return resp;
        }
        drop(resp);
        let room = ask.budget.charge(need).await;
        ask.give_credit(Some(room));
    }
}

async fn respond_once<B>(ask: &Ask<'_, B>) -> Response<Body> {
    let (site, req, fields) = (ask.site, ask.req, ask.fields);
    let cfg = &site.config;
    let head = req.method() == Method::HEAD;
    match *req.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => {
            let mut r = response::no_body(cfg, StatusCode::NO_CONTENT);
            r.headers_mut().insert(header::ALLOW, ALLOW);
            return r;
        }
        _ => {
            let mut r = response::status_text(cfg, StatusCode::METHOD_NOT_ALLOWED, head);
            r.headers_mut().insert(header::ALLOW, ALLOW);
            return r;
        }
    }
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > cfg.limits.max_uri_length {
        return response::status_text(cfg, StatusCode::URI_TOO_LONG, head);
    }
    let target = ask.target;
    if let Some(status) = target.status {
        return page(ask, &target.path, status).await;
    }

    // One entry per file, however the request spells its path.
    let path_key = cache::key(&target.path);
    // `[[redirects]]` before files, matched on that same resolved path.
    if !cfg.redirects.is_empty() && target.internal.is_none() {
        // A path that is not UTF-8 once decoded has no cache key, but the
        // rules must see it too (a rule skipped for `/private/%ff.txt`
        // would serve what it redirects away): its components with each
        // invalid sequence as U+FFFD.
        let lossy = match &path_key {
            Some(_) => None,
            None => cache::lossy_key(&target.path),
        };
        let found = path_key
            .as_deref()
            .or(lossy.as_deref())
            .and_then(|k| cfg.redirects.find(k, req.uri().query()));
        if let Some((status, location)) = found {
            return response::redirect(cfg, status, &location, head);
        }
    }
    let key = path_key.map(|k| site.cache_key(k));
    if let Some(entry) = key.as_deref().and_then(|k| site.cache.lookup(k)) {
        if entry.missing {
            site.cache.hit();
            return not_found(ask).await;
        }
        let chosen = encoding::negotiate(fields.accept_encoding, &entry.available);
        if let Some(v) = entry.variant(chosen) {
            site.cache.hit();
            return from_memory(ask, Some(&entry), v).await;
        }
    }

    // A revalidation: the entry that expired, whose bodies are kept when
    // the file is still the version they were read from (a stat, not a
    // copy: nginx's open_file_cache_valid).
    let expired = key.as_deref().and_then(|k| site.cache.expired(k));
    let miss = Miss {
        path: target.path.to_string(),
        here: ask.here,
        query: req.uri().query().map(str::to_string),
        accept: fields.accept_encoding.map(str::to_string),
        expired,
        budget: ask.budget.clone(),
    };
    let (outcome, room) = file_work(site, ask.take_credit(), move |site, wait, room| {
        miss.run(site, wait, room)
    })
    .await;
    ask.give_credit(room);
    // The file is another path's (an index, a `files.try` candidate) in
    // another location: that location decides first. Nothing is cached
    // under this path, so its next request comes here again.
    if let Ok((Outcome::File(found), _)) = &outcome {
        if let Some(path) = found.served.as_deref().filter(|p| ask.elsewhere(p)) {
            return ask.redirect(path, None, "the file served (an index or files.try)");
        }
    }

    match outcome {
        Ok((Outcome::File(found), Some(bytes))) => {
            site.cache.miss();
            let found = *found;
            let prepared = prepare(cfg, &found);
            let variant = cache::Variant {
                prepared,
                body: bytes,
                file: Some(found.id),
            };
            match key.as_deref() {
                Some(k) => {
                    let variant = site.cache.insert(k, &found.available, variant);
                    from_memory(ask, None, &variant).await
                }
                None => ask.charged(represent(
                    req,
                    fields,
                    &variant.prepared,
                    Source::Memory(variant.body),
                )),
            }
        }
        Ok((Outcome::NotFound, _)) => {
            site.cache.miss();
            if let Some(k) = key.as_deref() {
                site.cache.insert_missing(k);
            }
            not_found(ask).await
        }
        Ok((outcome, _)) => respond_outcome(ask, outcome).await,
        Err(e) => io_error(ask, e).await,
    }
}

/// What a request that the file cache could not answer needs resolved.
struct Miss {
    path: String,
    /// The location the path is in: a file another location's path serves
    /// is not read here ([`Served::Again`]).
    here: Option<usize>,
    query: Option<String>,
    accept: Option<String>,
    /// The entry that expired, if any ([`cache::FileCache::expired`]).
    expired: Option<Arc<cache::Entry>>,
    budget: Budget,
}

impl Miss {
    /// The outcome, and for a file the cache accepts its bytes: the
    /// expired entry's if the file kept its identity, else read whole
    /// within `room` (waited for earlier) or room taken now. Without room
    /// the file streams chunk by chunk within the budget instead.
    fn run(
        &self,
        site: &Site,
        wait: Wait,
        room: &mut Option<body::Charge>,
    ) -> std::io::Result<(Outcome, Option<Bytes>)> {
        let outcome = site.resolve_trying(
            &self.path,
            self.query.as_deref(),
            self.accept.as_deref(),
            wait,
        )?;
        let elsewhere = |f: &Found| {
            f.served
                .as_deref()
                .is_some_and(|p| located_elsewhere(site, self.here, p))
        };
        let bytes = match &outcome {
            Outcome::File(f) if site.cache.accepts(f.len) && !elsewhere(f) => {
                let kept = self
                    .expired
                    .as_ref()
                    .and_then(|e| e.variant(f.encoding))
                    .filter(|v| v.file == Some(f.id) && v.body.len() as u64 == f.len)
                    // Only a settled identity vouches for the bytes kept.
                    .filter(|_| {
                        f.id.settled(std::time::SystemTime::now(), site.config.files.settle_time)
                    });
                let len = f.len as usize;
                if room.as_ref().is_some_and(|c| !self.budget.covers(c, len)) {
                    *room = None;
                }
                match kept {
                    Some(v) => Some(v.body.clone()),
                    None => {
                        if room.is_none() {
                            *room = self.budget.try_charge(len);
                        }
                        match room {
                            Some(_) => read_whole(&f.file, f.len, wait)?,
                            None => None,
                        }
                    }
                }
            }
            _ => None,
        };
        Ok((outcome, bytes))
    }
}

/// Runs `work` on the runtime's thread from the kernel's caches only
/// ([`Wait::Never`]), and when that would wait for the disk, again on the
/// blocking pool ([`Wait::Disk`]); `state` goes along and comes back.
/// Counted in `ruchy_serve_file_work_total` by where it ran.
async fn file_work<S, T, F>(site: &Arc<Site>, mut state: S, work: F) -> (std::io::Result<T>, S)
where
    F: Fn(&Site, Wait, &mut S) -> std::io::Result<T> + Send + 'static,
    S: Default + Send + 'static,
    T: Send + 'static,
{
    let ran = &site.cache.stats().ran;
    match work(site, Wait::Never, &mut state) {
        Err(e) if tree::is_would_block(&e) => {}
        done => {
            ran.inline.inc();
            return (done, state);
        }
    }
    ran.pool.inc();
    let site = Arc::clone(site);
    let back = tokio::task::spawn_blocking(move || {
        let done = work(&site, Wait::Disk, &mut state);
        (done, state)
    })
    .await;
    // A panic in the work took its state with it.
    back.unwrap_or_else(|e| (Err(std::io::Error::other(e)), S::default()))
}

/// A cached representation, compressed on the fly when `[compression]`
/// applies to it and the client takes a coding ([`on_the_fly`]).
async fn from_memory<B>(
    ask: &Ask<'_, B>,
    entry: Option<&Arc<cache::Entry>>,
    v: &cache::Variant,
) -> Response<Body> {
    let made = match v.prepared.compressible {
        true => on_the_fly(ask, entry, v).await,
        false => None,
    };
    let v = made.as_deref().unwrap_or(v);
    ask.charged(represent(
        ask.req,
        ask.fields,
        &v.prepared,
        Source::Memory(v.body.clone()),
    ))
}

/// The compressed variant of `identity` (a cached file `[compression]`
/// applies to) in the coding the client prefers among
/// `compression.encodings`: from the path's cache `entry` when it holds one,
/// else from the compressor (kept, or made now); `None` when the client
/// takes none of them or every compression slot is busy.
async fn on_the_fly<B>(
    ask: &Ask<'_, B>,
    entry: Option<&Arc<cache::Entry>>,
    identity: &cache::Variant,
) -> Option<Arc<cache::Variant>> {
    let cfg = &ask.site.config.compression;
    let enc = encoding::negotiate(ask.fields.accept_encoding, &cfg.encodings)?;
    if let Some(v) = entry.and_then(|e| e.variant(Some(enc))) {
        return Some(Arc::clone(v));
    }
    let made = Arc::new(ask.site.compress.variant(cfg, identity, enc).await?);
    Some(match entry {
        Some(e) => ask.site.cache.keep_made(e, enc, made),
        None => made,
    })
}

/// A file the file cache does not hold, compressed in the coding the
/// client prefers: the kept variant, or one made from the whole file read
/// by its open descriptor (refused if the file changed meanwhile); `None`
/// when the client takes no coding or every slot is busy.
async fn compressed_file<B>(
    ask: &Ask<'_, B>,
    prepared: &cache::Prepared,
    found: &Found,
) -> Option<cache::Variant> {
    let cfg = &ask.site.config.compression;
    let enc = encoding::negotiate(ask.fields.accept_encoding, &cfg.encodings)?;
    let file = found.file.try_clone().ok()?;
    let (len, id) = (found.len, found.version());
    let load = move || {
        let changed = || std::io::Error::other("file changed while read");
        let bytes = read_whole(&file, len, Wait::Disk)?.ok_or_else(changed)?;
        match id.same_bytes(&crate::fileid::FileId::of(&file.metadata()?)) {
            true => Ok(bytes),
            false => Err(changed()),
        }
    };
    ask.site.compress.variant_of(cfg, prepared, enc, load).await
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

/// A resolved file, answered straight from the open file, or, when
/// `[compression]` applies and the client takes a coding, from its kept
/// compressed variant (made now from the whole file if need be).
async fn represent_file<B>(ask: &Ask<'_, B>, found: Found) -> Response<Body> {
    let prepared = prepare(&ask.site.config, &found);
    if prepared.compressible {
        if let Some(v) = compressed_file(ask, &prepared, &found).await {
            return ask.charged(represent(
                ask.req,
                ask.fields,
                &v.prepared,
                Source::Memory(v.body),
            ));
        }
    }
    let version = found.version();
    represent(
        ask.req,
        ask.fields,
        &prepared,
        Source::File(
            found.file,
            version,
            ask.budget.clone(),
            ask.site.cache.stats().ran.clone(),
        ),
    )
}

/// Everything resolution can answer besides a cached file.
async fn respond_outcome<B>(ask: &Ask<'_, B>, outcome: Outcome) -> Response<Body> {
    let (site, req) = (ask.site, ask.req);
    let cfg = &site.config;
    let head = req.method() == Method::HEAD;
    match outcome {
        Outcome::File(found) => represent_file(ask, *found).await,
        Outcome::Redirect(location) => {
            response::redirect(cfg, StatusCode::PERMANENT_REDIRECT, &location, head)
        }
        Outcome::Listing(dir) => {
            let shown = percent_encoding::percent_decode_str(req.uri().path())
                .decode_utf8_lossy()
                .into_owned();
            match blocking(site, move |s| listing::render(&dir, &shown, &s.config)).await {
                Ok(html) => {
                    let mut h = HeaderMap::new();
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    ask.charged(response::in_memory(
                        cfg,
                        StatusCode::OK,
                        h,
                        Bytes::from(html),
                        head,
                    ))
                }
                Err(e) => io_error(ask, e).await,
            }
        }
        Outcome::NotFound => not_found(ask).await,
        Outcome::Forbidden => error_page(ask, StatusCode::FORBIDDEN).await,
        Outcome::BadRequest => response::status_text(cfg, StatusCode::BAD_REQUEST, head),
    }
}

/// A request path for a log line: at most 256 bytes of it, so a client
/// cannot make one line kilobytes long.
fn truncated(path: &str) -> &str {
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

static PERMISSION_WARNING: crate::clock::RateLimit = crate::clock::RateLimit::new();
static IO_ERROR: crate::clock::RateLimit = crate::clock::RateLimit::new();

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

async fn io_error<B>(ask: &Ask<'_, B>, e: std::io::Error) -> Response<Body> {
    let req = ask.req;
    if resolve::is_not_found(&e) {
        return not_found(ask).await;
    }
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        // Every request for the file would log it: a warning at most once a
        // minute (a client can repeat the request as often as it likes).
        if PERMISSION_WARNING.due() {
            tracing::warn!(path = %truncated(req.uri().path()), error = %e, "permission denied (logged at most once a minute)");
        } else {
            tracing::debug!(path = %truncated(req.uri().path()), error = %e, "permission denied");
        }
        return error_page(ask, StatusCode::FORBIDDEN).await;
    }
    let follows_all = ask.site.config.files.follow_symlinks == crate::config::SymlinkPolicy::Always;
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) && !follows_all {
        // A symlink loop in the tree (`ln -s loop loop`): under the
        // default policies a link that cannot be followed below the root,
        // refused like any other (README: 403). Under `always`, where the
        // operator asked to follow every link, it stays a broken tree (5xx,
        // logged below). A client may ask as often as it likes: debug only.
        tracing::debug!(path = %truncated(req.uri().path()), "symlink loop");
        return error_page(ask, StatusCode::FORBIDDEN).await;
    }
    // Every request for the path would log it: at ERROR at most once a
    // minute, each one at debug.
    if IO_ERROR.due() {
        tracing::error!(path = %truncated(req.uri().path()), error = %e, "I/O error while serving (logged at most once a minute)");
    } else {
        tracing::debug!(path = %truncated(req.uri().path()), error = %e, "I/O error while serving");
    }
    error_page(ask, StatusCode::INTERNAL_SERVER_ERROR).await
}

/// `status` (404 or 5xx) as the site answers it: its configured page,
/// else a one-line text (a location's `return = 404`).
pub async fn error_answer<B>(
    site: &Arc<Site>,
    req: &Request<B>,
    (target, here): (&Target<'_>, Option<usize>),
    fields: &Fields<'_>,
    budget: &Budget,
    status: StatusCode,
) -> Served {
    let ask = Ask::new(site, req, (target, here), fields, budget);
    let answer = error_page(&ask, status).await;
    match ask.again.into_inner() {
        Some(t) => Served::Again(t),
        None => Served::Answer(answer),
    }
}

async fn not_found<B>(ask: &Ask<'_, B>) -> Response<Body> {
    let site = ask.site;
    if let Some(fallback) = site.config.files.fallback.clone() {
        if ask.elsewhere(&fallback) {
            return ask.redirect(&fallback, None, "files.fallback");
        }
        let accept = ask.fields.accept_encoding.map(str::to_string);
        let (found, ()) = file_work(site, (), move |s, wait, _| {
            s.resolve(&fallback, None, accept.as_deref(), wait)
        })
        .await;
        match found {
            Ok(Outcome::File(found)) => return represent_file(ask, *found).await,
            _ => tracing::warn!(
                fallback = site.config.files.fallback.as_deref(),
                "fallback file is missing; answering 404"
            ),
        }
    }
    error_page(ask, StatusCode::NOT_FOUND).await
}

/// The configured page for 404 or 5xx, else a one-line text body.
async fn error_page<B>(ask: &Ask<'_, B>, status: StatusCode) -> Response<Body> {
    let (site, req) = (ask.site, ask.req);
    let cfg = &site.config;
    let head = req.method() == Method::HEAD;
    let page = match status {
        StatusCode::NOT_FOUND => cfg.files.not_found_page.as_ref(),
        s if s.is_server_error() => cfg.files.server_error_page.as_ref(),
        _ => None,
    };
    if page.is_none() && status == StatusCode::NOT_FOUND {
        let (h, bytes) = &site.not_found_text;
        let b = if head {
            body::empty()
        } else {
            body::full(bytes.clone())
        };
        return response::build(status, h.clone(), b);
    }
    match page {
        // The page is another location's: it decides first, as nginx's
        // `error_page` is an internal redirect.
        Some(page) if ask.elsewhere(page) => ask.redirect(page, Some(status), "the error page"),
        Some(page) => self::page(ask, page, status).await,
        None => response::status_text(cfg, status, head),
    }
}

/// The file at `path` as the page of `status`, else a one-line text.
async fn page<B>(ask: &Ask<'_, B>, path: &str, status: StatusCode) -> Response<Body> {
    let (site, req) = (ask.site, ask.req);
    let cfg = &site.config;
    let path = path.to_string();
    let (found, ()) = file_work(site, (), move |s, wait, _| {
        s.resolve(&path, None, None, wait)
    })
    .await;
    if let Ok(Outcome::File(found)) = found {
        let ran = site.cache.stats().ran.clone();
        return response::error_file(cfg, req, status, *found, ask.budget, ran);
    }
    tracing::warn!(status = status.as_u16(), "error page file is missing");
    response::status_text(cfg, status, req.method() == Method::HEAD)
}

/// A plain-HTTP listener with `redirect_https`: `tls.redirect_status`
/// (308 by default: the method and body are kept, unlike 301) to the same
/// path over https on `tls.redirect_host`, or when that is unset the
/// request's own host. The
/// host comes from the request and is checked with the guard's Host parser,
/// and only letters, digits, dots, dashes and IP-literal brackets pass, so a
/// hostile Host header cannot make us redirect to a crafted URL.
pub fn redirect_https<B>(cfg: &Config, req: &Request<B>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let port = match cfg.tls.https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if let Some(canonical) = &cfg.tls.redirect_host {
        let to = format!("https://{canonical}{port}{target}");
        return response::redirect(cfg, cfg.tls.redirect_status, &to, head);
    }
    let host = match req.uri().authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => req.headers().get(header::HOST).map(|v| v.as_bytes()),
    };
    let name = host
        .and_then(guard::parse_host)
        .map(|h| h.name)
        .filter(|n| {
            !n.is_empty()
                && n.iter().all(|&b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
                })
        });
    let Some(name) = name else {
        return response::status_text(cfg, StatusCode::BAD_REQUEST, head);
    };
    let name = String::from_utf8_lossy(name);
    response::redirect(
        cfg,
        cfg.tls.redirect_status,
        &format!("https://{name}{port}{target}"),
        head,
    )
}

/// Whether `path` is an ACME HTTP-01 challenge's
/// (`/.well-known/acme-challenge/TOKEN`, RFC 8555 section 8.3): a
/// `redirect_https` listener serves it from the site instead of
/// redirecting, so a certificate can be had before https works.
/// Matched on the resolved path, so `/.well-known/acme-challenge/../x`
/// is redirected like `/x`.
pub fn acme_challenge(path: &str) -> bool {
    cache::key(path).is_some_and(|k| k.starts_with("/.well-known/acme-challenge/"))
}
