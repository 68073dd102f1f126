//! The sites of one configuration generation, and which one a request is
//! for: the site whose `names` hold the request's host (`:authority`, else
//! Host), exact names before `*.` wildcards; the top-level site when none
//! does (or no site at all with `default_site = false`: 421).
//!
//! On TLS the request must also be one the certificate the connection was
//! shown may serve: its host would be shown that same certificate, and a
//! site's own certificate serves that site only. Otherwise it answers 421
//! Misdirected Request (RFC 9110 section 15.5.20), so a certificate shown
//! for one site never vouches for another site's content, and a browser
//! that reused the connection for a second name retries on a new one.
//! Sites that share a `[tls]` certificate share connections.

use std::collections::HashMap;
use std::sync::Arc;

use http::{header, Request};

use super::{cache, compress, guard, Shared, Site};
use crate::addr::{host_key, MAX_HOST};
use crate::config::{Config, DEFAULT_LABEL, NONE_LABEL};
use crate::tls::{CertStore, Shown};

/// One generation's sites; reload builds a new one and swaps it whole.
#[derive(Debug)]
pub struct Sites {
    /// The top-level configuration: what is one per process (listeners,
    /// limits, logs) is read here.
    pub config: Arc<Config>,
    /// The top-level site; `None` with `default_site = false`.
    default: Option<Arc<Site>>,
    /// `[[sites]]`, in order.
    hosts: Vec<Arc<Site>>,
    /// Exact names -> index in `hosts`.
    exact: HashMap<String, usize>,
    /// `*.parent` stored as `parent` -> index in `hosts`.
    wildcard: HashMap<String, usize>,
    /// The `site` label of requests no site answered.
    pub none_label: Arc<str>,
}

/// Why no site answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Misdirected;

impl Sites {
    /// Every site of `config` over one set of empty caches; `stats` are the
    /// process-wide counters.
    pub fn new(
        config: Arc<Config>,
        stats: cache::Stats,
        compression: Arc<compress::Stats>,
    ) -> Sites {
        let shared = Shared::new(&config, stats, compression);
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut hosts = Vec::with_capacity(config.sites.len());
        for (i, vhost) in config.sites.iter().enumerate() {
            for name in &vhost.names.all {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.insert(parent.to_string(), i),
                    None => exact.insert(name.clone(), i),
                };
            }
            let mut site = Site::within(
                Arc::clone(&vhost.config),
                &shared,
                Some(i),
                vhost.names.label().into(),
            );
            let own = vhost.config.log.access_file.as_ref();
            if own != config.log.access_file.as_ref() {
                site.own_log = own.map(|f| f.path.clone());
            }
            hosts.push(Arc::new(site));
        }
        let default = config.default_site.then(|| {
            Arc::new(Site::within(
                Arc::clone(&config),
                &shared,
                None,
                DEFAULT_LABEL.into(),
            ))
        });
        Sites {
            config,
            default,
            hosts,
            exact,
            wildcard,
            none_label: NONE_LABEL.into(),
        }
    }

    /// Reads again each site's `basic_auth` files that changed.
    pub fn refresh_users(&self) {
        for site in self.default.iter().chain(&self.hosts) {
            site.refresh_users();
        }
    }

    /// The top-level site, if there is one.
    pub fn default_site(&self) -> Option<&Arc<Site>> {
        self.default.as_ref()
    }

    /// The `[[sites]]` entry that `name` (a host, no port; any case, a
    /// trailing dot allowed) belongs to, if any.
    pub fn by_name(&self, name: &[u8]) -> Option<usize> {
        if self.hosts.is_empty() {
            return None;
        }
        let mut buf = [0u8; MAX_HOST];
        let lower = host_key(name, &mut buf)?;
        self.exact.get(lower).copied().or_else(|| {
            let (_, parent) = lower.split_once('.')?;
            self.wildcard.get(parent).copied()
        })
    }

    /// The site for `by_name`'s answer: a `[[sites]]` entry, else the
    /// top-level site.
    fn site(&self, index: Option<usize>) -> Option<&Arc<Site>> {
        match index {
            Some(i) => self.hosts.get(i),
            None => self.default.as_ref(),
        }
    }

    /// Whether there are `[[sites]]` to choose among.
    pub fn several(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The site `req` is for. `tls`: on a TLS connection, the certificates
    /// and the one the connection was shown; the request must be one that
    /// certificate may serve ([`CertStore::may_serve`]).
    pub fn choose<B>(
        &self,
        req: &Request<B>,
        tls: Option<(&CertStore, &Shown)>,
    ) -> Result<&Arc<Site>, Misdirected> {
        if self.hosts.is_empty() {
            // One site: nothing to choose, nothing to compare.
            return self.default.as_ref().ok_or(Misdirected);
        }
        let host = match req.uri().authority() {
            Some(a) => Some(a.as_str().as_bytes()),
            None => req.headers().get(header::HOST).map(|v| v.as_bytes()),
        };
        let name = host.and_then(guard::parse_host).map(|h| h.name);
        let index = name.and_then(|n| self.by_name(n));
        let site = self.site(index).ok_or(Misdirected)?;
        if let Some((certs, shown)) = tls {
            let name = name.and_then(|n| std::str::from_utf8(n).ok());
            let label = index.map(|_| &*site.label);
            if !certs.may_serve(shown, name, label) {
                return Err(Misdirected);
            }
        }
        Ok(site)
    }
}
