//! `ruchy-serve explain URL`: why a URL gets the answer it gets, without
//! serving. The request goes through the same [`Handler`] a connection
//! uses, over the configuration's own [`State`] (no socket is bound), so
//! the status and headers printed are the ones the server sends; the lines
//! before them say how it got there: the listener, the site and why, each
//! location in the order tried and which one took the path, the
//! `[[redirects]]` rule, and the file resolved (or why none).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Request, Uri};

use crate::addr::Peer;
use crate::config::{Config, ListenAddr};
use crate::handler::{Handler, Role};
use crate::serve::body::Budget;
use crate::serve::resolve::Outcome;
use crate::serve::tree::Wait;
use crate::serve::{cache, locate};
use crate::state::State;

/// What `explain` is asked.
#[derive(Debug, Clone)]
pub struct Question {
    /// `http://host[:port]/path?query`, `https://...`, or `/path` (then
    /// the host is `Host` from `headers`, else `localhost`).
    pub url: String,
    /// `Name: value` request headers.
    pub headers: Vec<String>,
    /// The method.
    pub method: String,
    /// The client's address (for `access` rules and the log): the peer's.
    pub client: IpAddr,
    /// The TLS server name sent (`None`: an https URL's host).
    pub sni: Option<String>,
    /// Asked on a unix-socket listener.
    pub unix: bool,
}

/// The explanation, or what is wrong with the question.
pub async fn explain(config: Arc<Config>, q: &Question) -> Result<String, String> {
    let uri: Uri = q
        .url
        .parse()
        .map_err(|e| format!("`{}` is not a URL: {e}", q.url))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") | None => false,
        Some(other) => return Err(format!("scheme `{other}`: use http or https")),
    };
    let mut req = Request::builder()
        .method(q.method.as_str())
        .uri(uri.path_and_query().map_or("/", |pq| pq.as_str()));
    let mut host_given = false;
    for h in &q.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header `{h}`: write it as `Name: value`"))?;
        host_given |= name.trim().eq_ignore_ascii_case("host");
        req = req.header(name.trim(), value.trim());
    }
    if !host_given {
        let host = uri.authority().map_or("localhost", |a| a.as_str());
        req = req.header("host", host);
    }
    let req = req.body(()).map_err(|e| format!("not a request: {e}"))?;
    let mut out = String::new();

    // The listener: the unix one when asked; else the one on the URL's
    // port, else the first of its kind.
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let on_port = |l: &&crate::config::Listen| match l.addr {
        ListenAddr::Tcp(a) => !q.unix && a.port() == port,
        _ => q.unix,
    };
    if q.unix
        && !config
            .listen
            .iter()
            .any(|l| !matches!(l.addr, ListenAddr::Tcp(_)))
    {
        return Err("--unix: the configuration has no unix-socket listener".into());
    }
    let listener = config
        .listen
        .iter()
        .find(on_port)
        .or_else(|| {
            config
                .listen
                .iter()
                .find(|l| l.tls == https && !l.redirect_https)
        })
        .or_else(|| config.listen.iter().find(|l| l.tls == https));
    let (tls, redirect_https) = match listener {
        Some(l) => {
            let how = match (l.tls, l.redirect_https) {
                (true, _) => "TLS",
                (_, true) => "plain HTTP, redirect_https",
                _ => "plain HTTP",
            };
            let _ = writeln!(out, "listener  {} ({how})", l.addr);
            (l.tls, l.redirect_https)
        }
        None => {
            let _ = writeln!(
                out,
                "listener  none on port {port}: answered as on a plain one"
            );
            (https, false)
        }
    };

    let state = Arc::new(State::new(Arc::clone(&config)));
    let sites = state.sites();
    // The certificate a TLS client is shown for its server name decides
    // which sites it may ask for, as in the handler.
    let sni = match (&q.sni, https) {
        (Some(name), _) => Some(name.clone()),
        (None, true) => uri.host().map(str::to_string),
        (None, false) => None,
    };
    let certs = (tls && sites.several()).then(|| state.tls_resolver.store());
    let shown = certs.as_deref().and_then(|c| c.shown(sni.as_deref()));
    if tls {
        let _ = writeln!(
            out,
            "tls       server name `{}`",
            sni.as_deref().map_or("(none)".into(), escaped)
        );
    }
    let chosen = sites.choose(&req, certs.as_deref().zip(shown.as_ref()));
    // The client as the server counts it: the peer, or behind a trusted
    // proxy the address its X-Forwarded-For names.
    let peer = match q.unix {
        true => Peer::Unix,
        false => Peer::Tcp(SocketAddr::new(q.client, 0)),
    };
    let client = match crate::proxy::client(&req, peer, &config.trusted_proxies) {
        Peer::Tcp(a) => Some(a.ip()),
        Peer::Unix => None,
    };
    match (client, q.unix) {
        (_, true) => {
            let _ = writeln!(out, "client    on the unix socket (no address)");
        }
        (Some(ip), false) if ip != q.client => {
            let _ = writeln!(
                out,
                "client    {ip}, from X-Forwarded-For: the peer {} is in trusted_proxies",
                q.client
            );
        }
        _ => {}
    }
    let name = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| crate::serve::guard::parse_host(h.as_bytes()))
        .map(|h| String::from_utf8_lossy(h.name).into_owned())
        .unwrap_or_default();
    match chosen {
        Err(_) if shown.is_some() && sites.choose(&req, None).is_ok() => {
            let _ = writeln!(
                out,
                "site      none: `{name}` is another certificate's than the one shown for the \
                 server name (421)"
            );
        }
        Err(_) => {
            let _ = writeln!(
                out,
                "site      none: no site has the name `{name}` and default_site = false"
            );
        }
        Ok(site) => {
            let which = config
                .sites
                .iter()
                .position(|s| *s.names.label() == *site.label);
            let _ = match which {
                Some(i) => writeln!(
                    out,
                    "site      {} (sites[{i}]): `{name}` is one of its names",
                    site.label
                ),
                None => writeln!(
                    out,
                    "site      the top-level site: no [[sites]] entry has the name `{name}`"
                ),
            };
            if !redirect_https || crate::serve::acme_challenge(req.uri().path()) {
                explain_site(&mut out, site, &req, client);
            }
        }
    }

    let role = Role::Site {
        tls,
        redirect_https,
    };
    let trace = crate::handler::Trace::default();
    let mut handler = Handler::new(
        Arc::clone(&state),
        peer,
        role,
        "explain".into(),
        Budget::default(),
    )
    .traced(Arc::clone(&trace));
    if tls {
        handler.set_sni(&state.tls_resolver.store(), sni.as_deref());
    }
    let site = chosen.ok().cloned();
    let resp = handler.handle(req).await;
    // Each internal redirect the request took, with the locations of the
    // path it went to (nginx's find-config phase again).
    let hops = trace.lock().expect("trace lock").clone();
    for (path, why) in hops {
        let _ = writeln!(out, "internal  {why}: {} is placed again", escaped(&path));
        if let Some(site) = &site {
            let key = cache::key(&path).or_else(|| cache::lossy_key(&path).map(Cow::Owned));
            if let Some(key) = key {
                locations(&mut out, site, &key);
            }
        }
    }
    let status = resp.status();
    let _ = writeln!(
        out,
        "=> {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in resp.headers() {
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    Ok(out)
}

/// Each location of `site` in the order tried, and which takes `path`.
fn locations(out: &mut String, site: &crate::serve::Site, path: &str) {
    let cfg = &site.config;
    let chosen = cfg.locations.find(path);
    for (i, written) in cfg.locations.in_order() {
        let verdict = match chosen {
            Some(c) if c == i => "<- takes the path",
            _ if cfg.locations.all[i].matcher.is_match(path) => "matches, but another comes first",
            _ => "no",
        };
        let _ = writeln!(
            out,
            "location  locations[{i}] {}: {verdict}",
            escaped(&written)
        );
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`): a path
/// decoded from `%0A` must not start a line of its own in the output.
fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c.is_control() {
            true => out.extend(c.escape_debug()),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The site's part: the path, its locations, redirects and file.
fn explain_site(
    out: &mut String,
    site: &Arc<crate::serve::Site>,
    req: &Request<()>,
    client: Option<IpAddr>,
) {
    let who = client.map_or_else(|| "a unix-socket client".to_string(), |ip| ip.to_string());
    let raw = req.uri().path();
    let resolved = cache::key(raw).or_else(|| cache::lossy_key(raw).map(Cow::Owned));
    let Some(path) = resolved else {
        let _ = writeln!(
            out,
            "path      `{raw}` does not resolve to a path in the root"
        );
        return;
    };
    let _ = writeln!(out, "path      {}", escaped(&path));
    let cfg = &site.config;
    let placed = locate::place(site, raw);
    locations(out, site, &path);
    if let Some(l) = placed.location {
        if !l.admits(client) {
            let _ = writeln!(out, "access    {who} is denied here (403)");
            return;
        }
        if !l.access.is_empty() {
            let _ = writeln!(out, "access    {who} is allowed");
        }
        if let Some(users) = &l.auth {
            let given = req.headers().contains_key(http::header::AUTHORIZATION);
            let _ = writeln!(
                out,
                "auth      basic_auth against {}: {}",
                users.file.display(),
                match given {
                    true => "the credentials given are checked (the status below says how)",
                    false => "no credentials given: 401",
                }
            );
        }
        if l.action.is_some() {
            let _ = writeln!(out, "return    the location answers (below)");
            return;
        }
    } else if !cfg.locations.is_empty() {
        let _ = writeln!(
            out,
            "location  none takes the path: the site's settings apply"
        );
    }
    if let Some((status, to)) = cfg.redirects.find(&path, req.uri().query()) {
        let _ = writeln!(
            out,
            "redirect  a [[redirects]] rule answers {} to {to}",
            status.as_u16()
        );
        return;
    }
    let serving = placed.site;
    let accept = req
        .headers()
        .get(http::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    match serving.resolve_trying(raw, req.uri().query(), accept, Wait::Disk) {
        Ok(Outcome::File(found)) => {
            let _ = writeln!(
                out,
                "file      {}/{}",
                escaped(&serving.config.root.display().to_string()),
                escaped(found.rel_path.trim_start_matches('/'))
            );
        }
        Ok(Outcome::Redirect(to)) => {
            let _ = writeln!(out, "file      a directory: redirected to {to}");
        }
        Ok(Outcome::Listing(dir)) => {
            let _ = writeln!(
                out,
                "file      a directory without index, listed: {}",
                dir.display()
            );
        }
        Ok(Outcome::NotFound) => {
            let _ = writeln!(out, "file      none (nor any of files.try): not found");
        }
        Ok(Outcome::Forbidden) => {
            let _ = writeln!(
                out,
                "file      exists, but the policy or permissions refuse it"
            );
        }
        Ok(Outcome::BadRequest) => {
            let _ = writeln!(out, "file      the path is malformed");
        }
        Err(e) => {
            let _ = writeln!(out, "file      cannot be read: {e}");
        }
    }
}
