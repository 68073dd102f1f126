//! What a request gets: one [`Handler`] per connection, built by
//! [`crate::conn`] from the connection's facts, with one method per request.
//!
//! The steps, in order (each a module of its own):
//! 1. Guard ([`crate::serve::guard`]): Host and request-body checks; a
//!    refusal answers 400 or 413 at once.
//! 2. Health: `/healthz` and `/readyz` from [`crate::state`], when
//!    `metrics.main_health_paths` puts them on the main listeners.
//! 3. Redirect: a `redirect_https` listener answers every request with 308.
//! 4. Serve ([`crate::serve`]): the static-file pipeline.
//! 5. Response headers: HSTS on TLS connections.
//! 6. Accounting: the body is wrapped in [`Accounted`], which counts the bytes
//!    sent and, when the body is finished or dropped, records the request in
//!    the metrics and the access log ([`crate::access`]).
//!
//! The metrics listener's connections get a handler too ([`Role::Metrics`]):
//! its own three paths from [`crate::admin`], and no accounting, so scrapes
//! never show up as traffic.
//!
//! A handler needs no socket: tests build one over a [`State`] and call
//! [`Handler::handle`] with an `http::Request`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::access::{Record, Sink};
use crate::addr::Peer;
use crate::config::AccessLog;
use crate::metrics::ConnMetrics;
use crate::serve::body::{Body, Budget};
use crate::serve::fields::Fields;
use crate::serve::{self, locate, response, Served};
use crate::state::State;
use crate::tls::Shown;

/// What a listener is for, as the configuration says at accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A `[[listen]]` entry: the site.
    Site {
        /// The connection is TLS (HSTS applies).
        tls: bool,
        /// Answer everything with a redirect to https.
        redirect_https: bool,
    },
    /// The metrics listener: `/metrics`, `/healthz`, `/readyz`.
    Metrics,
}

/// The request side of one connection.
pub struct Handler {
    state: Arc<State>,
    peer: Peer,
    role: Role,
    /// Per-connection metric handles; `None` when no metrics listener exists
    /// to read them, and for the metrics listener itself.
    metrics: Option<Arc<ConnMetrics>>,
    /// What this connection's response bodies may hold in user memory;
    /// handed to each request's file bodies.
    budget: Budget,
    /// On TLS, the certificate the connection was shown (set after the
    /// handshake): a request for a host that would be shown another, or
    /// for another site than the certificate's own, answers 421.
    shown: Option<Box<Shown>>,
    /// `explain`'s record of the internal redirects a request took: each
    /// path and why.
    trace: Option<Trace>,
}

/// The internal redirects one request took, for `explain`.
pub type Trace = Arc<std::sync::Mutex<Vec<(String, &'static str)>>>;

impl Handler {
    /// A handler for a connection from `peer` on the listener labelled
    /// `listener` in metrics.
    pub fn new(
        state: Arc<State>,
        peer: Peer,
        role: Role,
        listener: Arc<str>,
        budget: Budget,
    ) -> Handler {
        let metrics = Arc::new(ConnMetrics::new(Arc::clone(&state.metrics), listener));
        Handler::on_listener(state, peer, role, Some(&metrics), budget)
    }

    /// A handler for a connection on the listener whose metric handles are
    /// `metrics` (looked up once per listener, not per connection).
    pub fn on_listener(
        state: Arc<State>,
        peer: Peer,
        role: Role,
        metrics: Option<&Arc<ConnMetrics>>,
        budget: Budget,
    ) -> Handler {
        let metered = matches!(role, Role::Site { .. }) && state.config().metrics.address.is_some();
        Handler {
            metrics: metrics.filter(|_| metered).cloned(),
            state,
            peer,
            role,
            budget,
            shown: None,
            trace: None,
        }
    }

    /// Records the internal redirects of the requests it handles in `trace`.
    pub fn traced(mut self, trace: Trace) -> Handler {
        self.trace = Some(trace);
        self
    }

    /// Records the certificate a TLS client that sent `sni` was shown from
    /// `certs`, the set its handshake chose from.
    pub fn set_sni(&mut self, certs: &crate::tls::CertStore, sni: Option<&str>) {
        self.shown = certs.shown(sni).map(Box::new);
    }

    /// Answers one request. Never fails: every error is a status code.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Accounted> {
        let Role::Site {
            tls,
            redirect_https,
        } = self.role
        else {
            let r = crate::admin::respond(&self.state, req.uri().path());
            return r.map(Accounted::unaccounted);
        };
        let start = Instant::now();
        let sites = self.state.sites();
        let cfg = &sites.config;
        // The certificates, on TLS when there are sites to tell apart.
        let certs = (tls && sites.several()).then(|| self.state.tls_resolver.store());
        let shown = certs.as_deref().zip(self.shown.as_deref());
        let site = sites.choose(&req, shown);
        let sink = match cfg.log.access_log {
            AccessLog::Off => None,
            format => {
                // A site with a file of its own writes there.
                let own = site.ok().and_then(|s| s.own_log.as_deref());
                let file = match own {
                    Some(path) => self.state.site_log(path),
                    None => self.state.access_log(),
                };
                Some(match file {
                    Some(file) => Sink::File(file, format),
                    None => Sink::Events(format),
                })
            }
        };
        let client = crate::proxy::client(&req, self.peer, &cfg.trusted_proxies);
        let record = Record::new(&req, client, sink, start);
        let health = cfg
            .metrics
            .main_health_paths
            .then(|| self.state.health(req.uri().path()))
            .flatten();
        let fields = Fields::of(req.headers());
        // `None` for the top-level site: no refcount traffic on a label
        // every request of a one-site server shares.
        let label = match site {
            Ok(site) if site.is_default() => None,
            Ok(site) => Some(Arc::clone(&site.label)),
            Err(_) => Some(Arc::clone(&sites.none_label)),
        };
        let mut location = None;
        // ACME's HTTP-01 validation, before any redirect or rule: it comes
        // over http://NAME:80/, and over HTTPS when something in front of
        // us redirects it there (CAs follow that redirect).
        let mut resp = if let Some(answer) = self.state.acme_http01.answer(req.uri().path()) {
            response::plain_bytes(http::StatusCode::OK, answer)
        } else if let Err(refusal) = serve::guard::check(&req, &fields, cfg.limits.max_request_body)
        {
            serve::refuse(cfg, &req, refusal)
        } else if let Some((status, text)) = health {
            response::plain(status, text)
        } else if redirect_https && !serve::acme_challenge(req.uri().path()) {
            // Hosts no site answers are not sent on to https (unless
            // every request goes to one canonical host).
            match site {
                Err(_) if cfg.tls.redirect_host.is_none() => serve::misdirected(cfg, &req),
                _ => serve::redirect_https(cfg, &req),
            }
        } else {
            match site {
                Ok(site) => {
                    let ip = match client {
                        Peer::Tcp(a) => Some(a.ip()),
                        Peer::Unix => None,
                    };
                    if site.config.locations.is_empty() {
                        // No location to place a path in, nor to redirect
                        // into: the content phase alone.
                        serve::answer(Arc::clone(site), &req, &fields, &self.budget).await
                    } else {
                        let (answer, last) = self.locate_and_serve(site, &req, ip, &fields).await;
                        location = last;
                        answer
                    }
                }
                Err(_) => serve::misdirected(cfg, &req),
            }
        };
        // A redirect_https listener answers for no site (nginx's port-80
        // server is a server of its own), its ACME challenges included.
        if let (Ok(site), false) = (site, redirect_https) {
            for (name, value) in &site.config.headers.always {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
        }
        if let Some(l) = location {
            locate::add_headers(l, &mut resp);
        }
        if tls {
            if let Some(hsts) = &cfg.tls.hsts {
                resp.headers_mut()
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
        }
        let status = resp.status().as_u16();
        let metrics = self.metrics.clone();
        resp.map(|b| Accounted::new(b, status, record, metrics, label))
    }
}

/// How many internal redirects one request may take (nginx's limit): a
/// configuration whose pages lead into each other answers 500.
const MAX_INTERNAL_REDIRECTS: usize = 10;

impl Handler {
    /// The location phase and the content phase, as nginx runs them: the
    /// path is placed in its location, which may answer (`access`,
    /// `basic_auth`, `return`); else the file is served, unless what
    /// would be served is another location's path (an index, a
    /// `files.try` candidate, the fallback, an error page): then that path
    /// is placed in turn, and every guard met on the way applies. Returns
    /// the answer and the location whose headers it gets (the last one).
    async fn locate_and_serve<'s, B>(
        &self,
        site: &'s Arc<serve::Site>,
        req: &Request<B>,
        ip: Option<std::net::IpAddr>,
        fields: &Fields<'_>,
    ) -> (Response<Body>, Option<&'s crate::config::Location>) {
        let mut target = serve::Target::asked(req.uri().path());
        let budget = &self.budget;
        for _ in 0..=MAX_INTERNAL_REDIRECTS {
            let placed = locate::place(site, &target.path);
            // A twin asked for by name meets its original's guard first.
            let original = locate::twin_guard(site, &placed);
            let mut answered = None;
            if let Some(original) = &original {
                answered = original.gate(req, &target, ip, fields, budget).await;
            }
            let mut location = original.as_ref().and_then(|o| o.location);
            if answered.is_none() {
                location = placed.location;
                answered = placed.gate(req, &target, ip, fields, budget).await;
            }
            let served = match answered {
                Some(served) => served,
                None => {
                    let at = (&target, placed.index);
                    serve::respond(Arc::clone(placed.site), req, at, fields, budget).await
                }
            };
            match served {
                Served::Answer(r) => return (r, location),
                Served::Again(next) => {
                    if let Some(trace) = &self.trace {
                        let why = next.internal.unwrap_or("");
                        let mut t = trace.lock().expect("trace lock");
                        t.push((next.path.to_string(), why));
                    }
                    target = next;
                }
            }
        }
        static LOOPED: crate::clock::RateLimit = crate::clock::RateLimit::new();
        if LOOPED.due() {
            tracing::error!(
                path = %target.path,
                "more than {MAX_INTERNAL_REDIRECTS} internal redirects (error pages or the fallback \
                 lead into each other); answering 500 (logged at most once a minute)"
            );
        }
        let cfg = &site.config;
        let head = req.method() == http::Method::HEAD;
        let r = response::status_text(cfg, http::StatusCode::INTERNAL_SERVER_ERROR, head);
        (r, None)
    }
}

/// A response body that counts what it sends and, when finished or dropped,
/// records the request: one metrics observation and one access-log line.
pub struct Accounted {
    inner: Body,
    bytes: u64,
    /// `None` for answers that are not traffic (the metrics listener).
    done: Option<Completion>,
}

/// What is recorded when the body ends.
struct Completion {
    record: Record,
    metrics: Option<Arc<ConnMetrics>>,
    /// The `site` label; `None`: the top-level site's.
    site: Option<Arc<str>>,
}

impl Accounted {
    fn new(
        inner: Body,
        status: u16,
        mut record: Record,
        metrics: Option<Arc<ConnMetrics>>,
        site: Option<Arc<str>>,
    ) -> Self {
        record.status = status;
        Accounted {
            inner,
            bytes: 0,
            done: Some(Completion {
                record,
                metrics,
                site,
            }),
        }
    }

    fn unaccounted(inner: Body) -> Self {
        Accounted {
            inner,
            bytes: 0,
            done: None,
        }
    }
}

impl Drop for Accounted {
    fn drop(&mut self) {
        let Some(done) = &self.done else { return };
        let r = &done.record;
        if let Some(m) = &done.metrics {
            m.request(
                r.method_label,
                r.status,
                r.start.elapsed().as_secs_f64(),
                self.bytes,
                done.site.as_deref(),
            );
        }
        r.emit(self.bytes, done.site.as_deref());
    }
}

impl HttpBody for Accounted {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use http_body_util::BodyExt;

    fn state(extra: &str) -> Arc<State> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>hello</p>").unwrap();
        let root = dir.keep();
        let file = root.join("ruchy.toml");
        std::fs::write(
            &file,
            format!("root = {root:?}\n[log]\naccess_log = \"off\"\n{extra}"),
        )
        .unwrap();
        let sources = crate::config::Sources {
            config_file: Some(file),
            ..Default::default()
        };
        Arc::new(State::new(Arc::new(
            crate::config::load(&sources).expect("config"),
        )))
    }

    fn peer() -> Peer {
        Peer::Tcp("127.0.0.1:40000".parse().unwrap())
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path)
            .header("host", "example.com")
            .body(())
            .unwrap()
    }

    async fn text(r: Response<Accounted>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn site(tls: bool, redirect_https: bool) -> Role {
        Role::Site {
            tls,
            redirect_https,
        }
    }

    #[tokio::test]
    async fn serves_a_file_without_a_socket() {
        let h = Handler::new(
            state(""),
            peer(),
            site(false, false),
            "test".into(),
            Budget::default(),
        );
        let r = h.handle(get("/")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(text(r).await, "<p>hello</p>");
    }

    #[tokio::test]
    async fn guard_runs_before_anything_else() {
        let h = Handler::new(
            state(""),
            peer(),
            site(false, true),
            "test".into(),
            Budget::default(),
        );
        // HTTP/1.1 without Host: 400 even on a redirecting listener.
        let r = h.handle(Request::get("/").body(()).unwrap()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn redirect_listener_sends_everything_to_https() {
        let h = Handler::new(
            state(""),
            peer(),
            site(false, true),
            "test".into(),
            Budget::default(),
        );
        let r = h.handle(get("/a?b=c")).await;
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()["location"], "https://example.com/a?b=c");
    }

    #[tokio::test]
    async fn health_paths_only_when_configured() {
        let off = Handler::new(
            state(""),
            peer(),
            site(false, false),
            "test".into(),
            Budget::default(),
        );
        assert_eq!(
            off.handle(get("/healthz")).await.status(),
            StatusCode::NOT_FOUND
        );
        let on = Handler::new(
            state("[metrics]\nmain_health_paths = true\n"),
            peer(),
            site(false, false),
            "test".into(),
            Budget::default(),
        );
        let r = on.handle(get("/healthz")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(text(r).await, "ok\n");
    }

    #[tokio::test]
    async fn hsts_only_on_tls_connections() {
        let cfg = "[tls]\nhsts = \"max-age=63072000\"\n";
        let plain = Handler::new(
            state(cfg),
            peer(),
            site(false, false),
            "t".into(),
            Budget::default(),
        );
        assert!(plain
            .handle(get("/"))
            .await
            .headers()
            .get("strict-transport-security")
            .is_none());
        let tls = Handler::new(
            state(cfg),
            peer(),
            site(true, false),
            "t".into(),
            Budget::default(),
        );
        assert_eq!(
            tls.handle(get("/")).await.headers()["strict-transport-security"],
            "max-age=63072000"
        );
    }

    #[tokio::test]
    async fn metrics_role_answers_the_metrics_paths_only() {
        let h = Handler::new(
            state(""),
            peer(),
            Role::Metrics,
            "m".into(),
            Budget::default(),
        );
        let r = h.handle(get("/metrics")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(text(r).await.contains("ruchy_serve_build_info{"));
        assert_eq!(
            h.handle(get("/index.html")).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
