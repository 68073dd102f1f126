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
use super::body::{Body, Budget};
use super::fields::Fields;
use super::{cache, response, Site};
use crate::config::locations::{adds_headers, Return};
use crate::config::Location;

/// A request placed in its site: the location it is in, if any, and the
/// site its files are served as (the location's own configuration, or the
/// site's).
pub struct Placed<'s> {
    /// The site files are served as.
    pub site: &'s Arc<Site>,
    /// The location, if the path is in one.
    pub location: Option<&'s Location>,
    /// The path locations were matched against (resolved).
    path: Option<Cow<'s, str>>,
    /// The location's Basic authentication, if it has one.
    gate: Option<&'s Gate>,
    /// The site's `site` label (for the refusal's log line).
    label: &'s str,
}

/// Places `path` (the request's, as sent) in `site`.
pub fn place<'s>(site: &'s Arc<Site>, path: &'s str) -> Placed<'s> {
    let locations = &site.config.locations;
    if locations.is_empty() {
        return Placed {
            site,
            location: None,
            path: None,
            gate: None,
            label: &site.label,
        };
    }
    // The path as files are resolved (a path that is not UTF-8 once
    // decoded is matched with U+FFFD for its invalid sequences, so
    // `/private/%ff` is still in `/private/`).
    let resolved = cache::key(path).or_else(|| cache::lossy_key(path).map(Cow::Owned));
    let index = resolved.as_deref().and_then(|p| locations.find(p));
    let Some(i) = index else {
        return Placed {
            site,
            location: None,
            path: resolved,
            gate: None,
            label: &site.label,
        };
    };
    let located = &site.located[i];
    Placed {
        site: located.site.as_ref().unwrap_or(site),
        location: Some(&locations.all[i]),
        path: resolved,
        gate: located.gate.as_ref(),
        label: &site.label,
    }
}

impl Placed<'_> {
    /// What the location answers instead of a file: 403 for a client its
    /// `access` refuses, else its `return`; `None` to serve the file.
    /// `client`: the client's address after `trusted_proxies` (`None` on a
    /// unix socket).
    pub async fn gate<B>(
        &self,
        req: &Request<B>,
        client: Option<IpAddr>,
        fields: &Fields<'_>,
        budget: &Budget,
    ) -> Option<Response<Body>> {
        let location = self.location?;
        let cfg = &self.site.config;
        let head = req.method() == Method::HEAD;
        if !location.admits(client) {
            return Some(response::status_text(cfg, StatusCode::FORBIDDEN, head));
        }
        if let Some(gate) = self.gate {
            match gate.check(req.headers().get(header::AUTHORIZATION)).await {
                Verdict::Admitted => {}
                verdict => {
                    if verdict == Verdict::Refused {
                        self.site.cache.stats().auth_failures.inc();
                        auth::log_refusal(self.label, self.path.as_deref().unwrap_or(""));
                    }
                    let mut r = response::status_text(cfg, StatusCode::UNAUTHORIZED, head);
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, gate.challenge().clone());
                    return Some(r);
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
                Some(response::redirect(cfg, *status, &target, head))
            }
            Return::Status { status, body: None }
                if *status == StatusCode::NOT_FOUND || status.is_server_error() =>
            {
                // The site's error page, as nginx's `return 404` shows its
                // `error_page 404`.
                Some(super::error_answer(self.site, req, fields, budget, *status).await)
            }
            Return::Status { status, body: None } => {
                Some(response::status_text(cfg, *status, head))
            }
            Return::Status {
                status,
                body: Some(text),
            } => {
                let mut h = http::HeaderMap::new();
                h.insert(header::CONTENT_TYPE, response::TEXT_PLAIN);
                Some(response::in_memory(cfg, *status, h, text.clone(), head))
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
