//! A request's location ([`crate::config::locations`]): which one it is in,
//! what the location answers before any file (`access`, `return`), and the
//! headers it adds to whatever the answer is.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::auth::{self, Gate, Verdict};
use super::body::Budget;
use super::fields::Fields;
use super::{cache, response, Served, Site, Target};
use crate::config::locations::{adds_headers, Return};
use crate::config::{Encoding, Location};

/// A request placed in its site: the location it is in, if any, and the
/// site its files are served as (the location's own configuration, or the
/// site's).
pub struct Placed<'s, 'p> {
    /// The site files are served as.
    pub site: &'s Arc<Site>,
    /// The location, if the path is in one.
    pub location: Option<&'s Location>,
    /// Its index in the site's locations.
    pub index: Option<usize>,
    /// The path locations were matched against (resolved).
    path: Option<Cow<'p, str>>,
    /// The location's Basic authentication, if it has one.
    gate: Option<&'s Gate>,
    /// The site's `site` label (for the refusal's log line).
    label: &'s str,
}

/// Places `path` (a request path, as sent) in `site`.
pub fn place<'s, 'p>(site: &'s Arc<Site>, path: &'p str) -> Placed<'s, 'p> {
    if site.config.locations.is_empty() {
        return placed_at(site, None, None);
    }
    // The path as files are resolved (a path that is not UTF-8 once
    // decoded is matched with U+FFFD for its invalid sequences, so
    // `/private/%ff` is still in `/private/`).
    let resolved = cache::key(path).or_else(|| cache::lossy_key(path).map(Cow::Owned));
    let index = resolved
        .as_deref()
        .and_then(|p| site.config.locations.find(p));
    placed_at(site, resolved, index)
}

fn placed_at<'s, 'p>(
    site: &'s Arc<Site>,
    path: Option<Cow<'p, str>>,
    index: Option<usize>,
) -> Placed<'s, 'p> {
    let Some(i) = index else {
        return Placed {
            site,
            location: None,
            index: None,
            path,
            gate: None,
            label: &site.label,
        };
    };
    let located = &site.located[i];
    Placed {
        site: located.site.as_ref().unwrap_or(site),
        location: Some(&site.config.locations.all[i]),
        index,
        path,
        gate: located.gate.as_ref(),
        label: &site.label,
    }
}

/// For a path that names a precompressed twin (`/app.js.map.gz`), the
/// location of its original when that is another one that guards its
/// paths: the twin is the original's content, so the original's guard
/// applies to it too (nginx's does not).
pub fn twin_guard<'s>(site: &'s Arc<Site>, placed: &Placed<'s, '_>) -> Option<Placed<'s, 'static>> {
    let path = placed.path.as_deref()?;
    let original = [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd]
        .iter()
        .find_map(|e| path.strip_suffix(e.suffix()))
        .filter(|o| !o.is_empty() && !o.ends_with('/'))?;
    let locations = &site.config.locations;
    let index = locations
        .find(original)
        .filter(|&i| Some(i) != placed.index)?;
    locations.all[index]
        .guards()
        .then(|| placed_at(site, Some(Cow::Owned(original.to_string())), Some(index)))
}

impl Placed<'_, '_> {
    /// What the location answers instead of a file: 403 for a client its
    /// `access` refuses, else its `return`; `None` to serve the file.
    /// `client`: the client's address after `trusted_proxies` (`None` on a
    /// unix socket).
    pub async fn gate<B>(
        &self,
        req: &Request<B>,
        target: &Target<'_>,
        client: Option<IpAddr>,
        fields: &Fields<'_>,
        budget: &Budget,
    ) -> Option<Served> {
        let answer = |r| Some(Served::Answer(r));
        let location = self.location?;
        let cfg = &self.site.config;
        let head = req.method() == Method::HEAD;
        if !location.admits(client) {
            return answer(response::status_text(cfg, StatusCode::FORBIDDEN, head));
        }
        if let Some(gate) = self.gate {
            match gate
                .check(req.headers().get(header::AUTHORIZATION), client)
                .await
            {
                Verdict::Admitted => {}
                Verdict::Busy => {
                    self.site.cache.stats().auth_busy.inc();
                    let status = StatusCode::TOO_MANY_REQUESTS;
                    let mut r = response::status_text(cfg, status, head);
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return answer(r);
                }
                verdict => {
                    if verdict == Verdict::Refused {
                        self.site.cache.stats().auth_failures.inc();
                        let path = self.path.as_deref().unwrap_or("");
                        let sent = req.headers().get(header::AUTHORIZATION);
                        auth::log_refusal(self.label, path, client, sent);
                    }
                    let mut r = response::status_text(cfg, StatusCode::UNAUTHORIZED, head);
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, gate.challenge());
                    return answer(r);
                }
            }
        }
        match location.action.as_ref()? {
            Return::Redirect { status, to } => {
                let path = self.path.as_deref().unwrap_or("/");
                let mut target = location.redirect_target(to, path);
                if location.keep_query {
                    if let Some(q) = req.uri().query().filter(|q| !q.is_empty()) {
                        target.push(if target.contains('?') { '&' } else { '?' });
                        target.push_str(q);
                    }
                }
                answer(response::redirect(cfg, *status, &target, head))
            }
            Return::Status { status, body: None }
                if *status == StatusCode::NOT_FOUND || status.is_server_error() =>
            {
                // The site's error page, as nginx's `return 404` shows its
                // `error_page 404`.
                let at = (target, self.index);
                Some(super::error_answer(self.site, req, at, fields, budget, *status).await)
            }
            Return::Status { status, body: None } => {
                answer(response::status_text(cfg, *status, head))
            }
            Return::Status {
                status,
                body: Some(text),
            } => {
                let mut h = http::HeaderMap::new();
                h.insert(header::CONTENT_TYPE, response::TEXT_PLAIN);
                answer(response::in_memory(cfg, *status, h, text.clone(), head))
            }
        }
    }
}

/// The location's `headers`, `cache_control` and `expires` on `resp`:
/// `headers` on 2xx and 3xx answers (every answer with `always`), the
/// caching ones on 2xx and 3xx only, as nginx's `add_header` and `expires`.
pub fn add_headers<T>(location: &Location, resp: &mut Response<T>) {
    let status = resp.status();
    let usual = adds_headers(status);
    let h = resp.headers_mut();
    if usual || location.always {
        for (name, value) in &location.headers {
            h.insert(name.clone(), value.clone());
        }
    }
    if !usual {
        return;
    }
    if let Some(cc) = &location.cache_control {
        h.insert(header::CACHE_CONTROL, cc.clone());
    }
    if let Some(d) = location.expires {
        let at = httpdate::fmt_http_date(SystemTime::now() + d);
        if let Ok(v) = HeaderValue::from_str(&at) {
            h.insert(header::EXPIRES, v);
        }
    }
}
