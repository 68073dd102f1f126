//! TLS material: PEM files -> validated certificates selected by SNI, behind
//! a resolver whose certificate set is swapped atomically. Never touches a
//! socket; [`crate::conn`] runs the handshake.
//!
//! One rustls `ServerConfig` lives for the whole process (so session tickets
//! stay valid across rotations); rotation replaces only the [`CertStore`]
//! inside the [`Resolver`]. New handshakes see the new certificate at once,
//! open connections are untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
#[cfg(feature = "aws-lc")]
use rustls::crypto::aws_lc_rs as provider;
#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
use rustls::crypto::ring as provider;
#[cfg(not(any(feature = "aws-lc", feature = "ring")))]
compile_error!("ruchy-serve needs a TLS crypto provider: the `aws-lc` (default) or `ring` feature");
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::addr::{host_key, MAX_HOST};
use crate::fileid::FileId;

/// One `[[tls.certificates]]` entry, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Explicit SNI names; empty means "the certificate's DNS names".
    pub names: Vec<String>,
    /// The first name of the `[[sites]]` entry whose certificate this is;
    /// `None` for `[tls]`'s. A connection whose handshake picked a site's
    /// certificate is that site's: a request on it for another site
    /// answers 421.
    pub site: Option<String>,
    /// Where the files come from: configured paths, or the ACME state
    /// directory (files that may not exist yet).
    pub source: Source,
}

/// Where a certificate comes from, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// Files the configuration names (certbot's, an operator's).
    #[default]
    File,
    /// Obtained by ruchy-serve from the `[acme]` CA, kept in the state
    /// directory.
    Acme,
}

impl Source {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Acme => "acme",
        }
    }
}

/// Why a certificate or key was refused. Each variant's message names the
/// file and the fix; the fields are what it prints.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no PEM certificate found (hint: the file should start with -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{}: certificate does not parse: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{} does not match the certificate in {} (hint: pair each certificate with its own key)", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: certificate expired on {not_after}", path.display())]
    Expired { path: PathBuf, not_after: String },
    #[error("{}: the certificate names no DNS name; list the SNI names in `names`", path.display())]
    NoNames { path: PathBuf },
}

/// A loaded, validated certificate.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// Where it was loaded from.
    pub spec: CertSpec,
    /// The SNI names it answers.
    pub names: Vec<String>,
    /// The DNS names its subjectAltName lists (lower case): what clients
    /// will accept it for.
    pub san: Vec<String>,
    /// The chain and signing key, as rustls uses them.
    pub key: Arc<CertifiedKey>,
    /// Expiry of the leaf, Unix seconds (exported for monitoring).
    pub not_after: i64,
    /// Start of the leaf's validity, Unix seconds (renewal is timed from
    /// the lifetime).
    pub not_before: i64,
    /// Leaf serial number in hex, for logs.
    pub serial: String,
    /// The certificate's and key's file versions when loaded: rotation tools
    /// rewrite or rename, and either changes the [`FileId`].
    stamps: [Option<FileId>; 2],
}

impl LoadedCert {
    /// Loads and validates one certificate and key: the chain parses, the key
    /// matches the leaf, the leaf has not expired. `stamps` are the files'
    /// versions, taken before reading them.
    fn load(spec: &CertSpec, stamps: [Option<FileId>; 2]) -> Result<LoadedCert, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(&spec.cert)?;
        let key_pem = read(&spec.key)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadCertificate {
                path: spec.cert.clone(),
                reason: e.to_string(),
            })?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::NoCertificate {
                path: spec.cert.clone(),
            });
        };
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
            path: spec.key.clone(),
        })?;
        let signing = provider::sign::any_supported_type(&key).map_err(|e| TlsError::BadKey {
            path: spec.key.clone(),
            reason: e.to_string(),
        })?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
                path: spec.cert.clone(),
                reason: e.to_string(),
            })?;
        let not_after = x509.validity().not_after.timestamp();
        let not_before = x509.validity().not_before.timestamp();
        if not_after < unix_now() {
            return Err(TlsError::Expired {
                path: spec.cert.clone(),
                not_after: x509.validity().not_after.to_string(),
            });
        }
        let serial = x509.raw_serial_as_string().replace(':', "");
        let san: Vec<String> = dns_names(&x509)
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        let names = if spec.names.is_empty() {
            san.clone()
        } else {
            spec.names.clone()
        };
        if names.is_empty() {
            return Err(TlsError::NoNames {
                path: spec.cert.clone(),
            });
        }
        let certified = CertifiedKey::new(chain.clone(), signing);
        if certified.keys_match().is_err() {
            return Err(TlsError::KeyMismatch {
                cert: spec.cert.clone(),
                key: spec.key.clone(),
            });
        }
        Ok(LoadedCert {
            spec: spec.clone(),
            names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
            san,
            key: Arc::new(certified),
            not_after,
            not_before,
            serial,
            stamps,
        })
    }

    /// The names it is answered for that its subjectAltName does not cover
    /// (exactly, or by a `*.` wildcard one label up): clients will refuse
    /// it for those.
    pub fn uncovered(&self) -> Vec<&str> {
        let covered = |name: &str| {
            self.san.iter().any(|s| match s.strip_prefix("*.") {
                Some(parent) => name.strip_prefix("*.").map_or_else(
                    || name.split_once('.').is_some_and(|(_, p)| p == parent),
                    |p| p == parent,
                ),
                None => s == name,
            })
        };
        self.names
            .iter()
            .map(String::as_str)
            .filter(|n| !covered(n))
            .collect()
    }

    /// Days until expiry (negative once expired).
    pub fn days_left(&self) -> i64 {
        (self.not_after - unix_now()).div_euclid(86_400)
    }

    /// The expiry date, for `check` and logs.
    pub fn not_after_text(&self) -> String {
        httpdate::fmt_http_date(
            SystemTime::UNIX_EPOCH + Duration::from_secs(self.not_after.max(0) as u64),
        )
    }

    fn changed_on_disk(&self) -> bool {
        [FileId::at(&self.spec.cert), FileId::at(&self.spec.key)] != self.stamps
    }
}

fn dns_names(x509: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_string());
            }
        }
    }
    names
}

fn unix_now() -> i64 {
    crate::clock::unix_now() as i64
}

/// The certificate a TLS connection was shown: its file (which stays the
/// same through a rotation) and the `[[sites]]` entry it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    cert: Box<Path>,
    site: Option<Box<str>>,
}

/// A configured certificate that could not be used: its names fail their
/// handshakes (no other certificate is shown for them) until its files
/// are fixed, while every other certificate serves.
#[derive(Debug, Clone)]
pub struct FailedCert {
    /// What was configured.
    pub spec: CertSpec,
    /// The names that fail (the configured ones, or the file's own).
    pub names: Vec<String>,
    /// Why, naming the file.
    pub error: String,
    /// An ACME certificate not obtained yet (its files do not exist): not
    /// an error, the site waits for its first order.
    pub pending: bool,
    stamps: [Option<FileId>; 2],
}

impl FailedCert {
    fn changed_on_disk(&self) -> bool {
        [FileId::at(&self.spec.cert), FileId::at(&self.spec.key)] != self.stamps
    }
}

/// The index value of a name whose certificate failed: no certificate.
const REFUSED: usize = usize::MAX;

/// Every configured certificate, indexed by name. The first usable one is
/// the default for clients that send no SNI (or an unknown name).
#[derive(Debug, Default)]
pub struct CertStore {
    /// The usable ones, in configuration order.
    pub certs: Vec<LoadedCert>,
    /// The unusable ones, in configuration order.
    pub failed: Vec<FailedCert>,
    /// Every spec, in configuration order (a refresh rebuilds in it).
    specs: Vec<CertSpec>,
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, usize>,
}

impl CertStore {
    /// Loads and validates every certificate; one that fails is kept aside
    /// in [`CertStore::failed`] and takes no other certificate down.
    pub fn load(specs: &[CertSpec]) -> CertStore {
        CertStore::build(specs, |spec| (None, try_load(spec)))
    }

    /// Builds the set from `specs` in order, each entry from `entry`
    /// (the certificate kept or loaded, or why it failed).
    fn build(
        specs: &[CertSpec],
        mut entry: impl FnMut(&CertSpec) -> (Option<LoadedCert>, Result<LoadedCert, FailedCert>),
    ) -> CertStore {
        let mut certs = Vec::new();
        let mut failed = Vec::new();
        for spec in specs {
            match entry(spec) {
                (_, Ok(c)) => certs.push(c),
                // A bad new file while a good version serves: the old one
                // stays (a rotation half done must not take the site
                // down); the error is reported by the caller.
                (Some(kept), Err(_)) => certs.push(kept),
                (None, Err(f)) => failed.push(f),
            }
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut claim = |name: &str, i: usize| {
            // The first certificate to claim a name keeps it.
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                None => exact.entry(name.to_string()).or_insert(i),
            };
        };
        for (i, c) in certs.iter().enumerate() {
            let uncovered = c.uncovered();
            for name in &c.names {
                // A name the certificate does not cover fails its
                // handshake rather than show a certificate every client
                // refuses.
                let slot = if uncovered.contains(&name.as_str()) {
                    REFUSED
                } else {
                    i
                };
                claim(name, slot);
            }
        }
        for f in &failed {
            for name in &f.names {
                claim(name, REFUSED);
            }
        }
        CertStore {
            certs,
            failed,
            specs: specs.to_vec(),
            exact,
            wildcard,
        }
    }

    /// This set, with `old`'s certificate kept for every spec that fails
    /// here but served there and has not expired (a reload during a
    /// half-done rotation must not take a site down); and one line per
    /// certificate so kept, for the log.
    pub fn keeping(&self, old: &CertStore) -> (CertStore, Vec<String>) {
        let mut notes = Vec::new();
        let now = unix_now();
        let store = CertStore::build(&self.specs, |spec| match self.entry(spec) {
            Ok(c) => (None, Ok(c)),
            Err(f) => {
                let kept = old.get(spec).filter(|c| c.not_after > now).cloned();
                if kept.is_some() {
                    notes.push(format!(
                        "certificate change not applied, the certificate loaded before is kept: {}",
                        f.error
                    ));
                }
                (kept, Err(f))
            }
        });
        (store, notes)
    }

    /// Every problem an operator must fix, one line each: certificates that
    /// failed (not the ACME ones still waiting for their first order) and
    /// names a certificate does not cover.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = self
            .failed
            .iter()
            .filter(|f| !f.pending)
            .map(|f| Problem {
                spec: f.spec.clone(),
                message: format!(
                    "certificate for {} unusable: {}; those names fail their TLS handshakes, the other certificates serve",
                    f.names.join(", "),
                    f.error,
                ),
            })
            .collect();
        // An ACME certificate that lacks a name was ordered before a reload
        // added it: the manager orders it again at once, and its failures
        // have their own metric and alert.
        for c in self.certs.iter().filter(|c| c.spec.source == Source::File) {
            for name in c.uncovered() {
                out.push(Problem {
                    spec: c.spec.clone(),
                    message: format!(
                        "certificate {} does not cover {name} (its subjectAltName: {}): handshakes for {name} fail (hint: get a certificate for {name}, or list only covered names)",
                        c.spec.cert.display(),
                        match c.san.is_empty() {
                            // An IP-only certificate (or none at all).
                            true => "no DNS names".to_string(),
                            false => c.san.join(", "),
                        }
                    ),
                });
            }
        }
        out
    }

    /// Logs this set against `before` (`None`: at start): each problem at
    /// ERROR (every time: a reload that does not fix it says so again),
    /// each certificate that is new or changed at INFO, each ACME site
    /// newly waiting for its certificate at INFO.
    pub fn report(&self, before: Option<&CertStore>) {
        for p in self.problems() {
            tracing::error!(
                site = p.spec.site.as_deref().unwrap_or("-"),
                "{}",
                p.message
            );
        }
        for c in &self.certs {
            if before.is_some_and(|b| b.get(&c.spec).is_some_and(|o| o.serial == c.serial)) {
                continue;
            }
            tracing::info!(
                cert = %c.spec.cert.display(),
                site = c.spec.site.as_deref().unwrap_or("-"),
                source = c.spec.source.label(),
                serial = %c.serial,
                not_after = %c.not_after_text(),
                names = %c.names.join(", "),
                "certificate loaded"
            );
        }
        for f in self.failed.iter().filter(|f| f.pending) {
            let known =
                before.is_some_and(|b| b.failed.iter().any(|o| o.pending && o.spec == f.spec));
            if !known {
                tracing::info!(
                    site = f.spec.site.as_deref().unwrap_or("-"),
                    names = %f.spec.names.join(", "),
                    "no certificate yet: waiting for the ACME order (HTTP-01 is answered meanwhile)"
                );
            }
        }
    }

    /// Exact name first, then a wildcard one label up, then the default.
    /// The name is normalized by [`host_key`], as site choice does. `None`
    /// for a name whose certificate failed (and when none is usable).
    pub fn select(&self, sni: Option<&str>) -> Option<&LoadedCert> {
        let mut buf = [0u8; MAX_HOST];
        let index = sni.and_then(|name| {
            let name = host_key(name.as_bytes(), &mut buf)?;
            self.exact.get(name).copied().or_else(|| {
                name.split_once('.')
                    .and_then(|(_, parent)| self.wildcard.get(parent).copied())
            })
        });
        self.certs.get(index.unwrap_or(0))
    }

    /// The usable certificate loaded from `spec`, if any.
    pub fn get(&self, spec: &CertSpec) -> Option<&LoadedCert> {
        self.certs.iter().find(|c| c.spec == *spec)
    }

    /// Why `spec` is not usable, if it is not.
    fn failed_for(&self, spec: &CertSpec) -> Option<&FailedCert> {
        self.failed.iter().find(|f| f.spec == *spec)
    }

    /// `spec`'s entry as it stands: its certificate, or why it has none.
    // See `try_load` on the error's size.
    #[allow(clippy::result_large_err)]
    fn entry(&self, spec: &CertSpec) -> Result<LoadedCert, FailedCert> {
        match self.get(spec) {
            Some(c) => Ok(c.clone()),
            None => Err(self
                .failed_for(spec)
                .cloned()
                .expect("every spec is loaded or failed")),
        }
    }

    /// The certificate a handshake that sent `sni` was shown (what
    /// [`CertStore::may_serve`] later compares requests against).
    pub fn shown(&self, sni: Option<&str>) -> Option<Shown> {
        self.select(sni).map(|c| Shown {
            cert: c.spec.cert.clone().into_boxed_path(),
            site: c.spec.site.clone().map(String::into_boxed_str),
        })
    }

    /// Whether a connection that was shown `shown` may answer a request for
    /// `host` (a name, no port), which is `site`'s (its label; `None`: the
    /// top-level site's): only if `host` would be shown the same
    /// certificate, and a site's own certificate only for that site. So
    /// sites that share a `[tls]` certificate share connections (browsers
    /// reuse one HTTP/2 connection for every name its certificate covers),
    /// and one site's certificate never serves another site.
    pub fn may_serve(&self, shown: &Shown, host: Option<&str>, site: Option<&str>) -> bool {
        let Some(cert) = self.select(host) else {
            return false;
        };
        *cert.spec.cert == *shown.cert
            && shown
                .site
                .as_deref()
                .is_none_or(|owner| Some(owner) == site)
    }

    fn changed_on_disk(&self) -> bool {
        self.certs.iter().any(LoadedCert::changed_on_disk)
            || self.failed.iter().any(FailedCert::changed_on_disk)
    }
}

/// One thing wrong with a configured certificate.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The certificate it is about.
    pub spec: CertSpec,
    /// What, naming the file, the names that fail and the fix.
    pub message: String,
}

/// Loads one spec, or says why not (an ACME spec without files is pending).
// Either half is kept in the store, so boxing the error only adds a move;
// this runs at load, not per request.
#[allow(clippy::result_large_err)]
fn try_load(spec: &CertSpec) -> Result<LoadedCert, FailedCert> {
    let stamps = [FileId::at(&spec.cert), FileId::at(&spec.key)];
    LoadedCert::load(spec, stamps).map_err(|e| {
        // Answered for its own DNS names: read them if the file still
        // parses (an expired or mismatched certificate does), so those
        // names fail rather than fall to the default certificate.
        let names = match spec.names.is_empty() {
            true => names_in(&spec.cert),
            false => spec.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        };
        FailedCert {
            pending: spec.source == Source::Acme
                && matches!(&e, TlsError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            error: e.to_string(),
            spec: spec.clone(),
            names,
            stamps,
        }
    })
}

/// The DNS names of the first certificate in the PEM file at `path`, if it
/// can be read at all.
fn names_in(path: &Path) -> Vec<String> {
    let Ok(pem) = std::fs::read(path) else {
        return Vec::new();
    };
    let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(&pem).next() else {
        return Vec::new();
    };
    match x509_parser::parse_x509_certificate(&leaf) {
        Ok((_, x509)) => dns_names(&x509)
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// rustls asks this for a certificate on every handshake.
#[derive(Debug, Default)]
pub struct Resolver {
    store: ArcSwap<CertStore>,
    /// `acme-tls/1` challenge certificates by name (RFC 8737), shown only
    /// to a client that offers that protocol; swapped whole by the ACME
    /// manager, so a handshake never waits on a lock.
    challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl Resolver {
    /// The certificates in use now.
    pub fn store(&self) -> Arc<CertStore> {
        self.store.load_full()
    }
    /// Swaps in a new set; handshakes already past certificate selection
    /// keep the one they got.
    pub fn replace(&self, store: Arc<CertStore>) {
        self.store.store(store);
    }

    /// Shows `key` to TLS-ALPN-01 validation of `name` (`None`: no longer).
    pub fn set_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        let name = name.to_ascii_lowercase();
        self.challenges.rcu(|map| {
            let mut map = HashMap::clone(map);
            match &key {
                Some(k) => map.insert(name.clone(), Arc::clone(k)),
                None => map.remove(&name),
            };
            map
        });
    }

    /// The file watch (and the ACME manager after it writes): if any
    /// certificate or key file changed since it was loaded, load those again
    /// and swap the set in. A broken new file keeps the old certificate
    /// serving (or the name failing, if it had none) and is reported once
    /// per version of the file; only certificates that really changed are
    /// logged.
    pub fn refresh_if_changed(&self, last_error: &mut Vec<String>) {
        let current = self.store();
        if !current.changed_on_disk() {
            return;
        }
        let mut errors = Vec::new();
        let store = CertStore::build(&current.specs, |spec| {
            let kept = current.get(spec);
            let changed = match (kept, current.failed_for(spec)) {
                (Some(c), _) => c.changed_on_disk(),
                (None, Some(f)) => f.changed_on_disk(),
                (None, None) => true,
            };
            if !changed {
                return (None, current.entry(spec));
            }
            let loaded = try_load(spec);
            if let Err(f) = &loaded {
                if !f.pending {
                    errors.push(match kept {
                        Some(_) => format!(
                            "certificate change not applied, old certificate kept: {}",
                            f.error
                        ),
                        None => format!("certificate still unusable: {}", f.error),
                    });
                }
            }
            (kept.cloned(), loaded)
        });
        // Only over the set it started from: a SIGHUP that installed a new
        // configuration's certificates meanwhile wins, instead of being
        // undone by a list loaded from the old one.
        let previous = self.store.compare_and_swap(&current, Arc::new(store));
        if !Arc::ptr_eq(&previous, &current) {
            tracing::debug!("certificate set replaced by a reload meanwhile; file change dropped");
            return;
        }
        for c in &self.store().certs {
            if current
                .get(&c.spec)
                .is_none_or(|old| old.serial != c.serial)
            {
                tracing::info!(
                    cert = %c.spec.cert.display(),
                    site = c.spec.site.as_deref().unwrap_or("-"),
                    serial = %c.serial,
                    not_after = %c.not_after_text(),
                    "certificate reloaded from disk"
                );
            }
        }
        for e in &errors {
            if !last_error.contains(e) {
                tracing::error!("{e}");
            }
        }
        *last_error = errors;
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // RFC 8737 section 3: only the validation certificate, and
            // nothing at all for a name without a challenge.
            return hello
                .server_name()
                .and_then(|n| self.challenges.load().get(&n.to_ascii_lowercase()).cloned());
        }
        let store = self.store.load();
        store
            .select(hello.server_name())
            .map(|c| Arc::clone(&c.key))
    }
}

/// The process-wide server configuration: TLS 1.3 and 1.2 only (rustls has
/// nothing older), ALPN `h2` then `http/1.1`, stateless session tickets plus
/// the in-memory session cache for resumption. The provider is aws-lc-rs
/// by default, chosen by measurement of full-handshake rates (README "TLS",
/// benches/README.md), or ring with the `ring` feature.
pub fn server_config(resolver: Arc<Resolver>) -> Arc<ServerConfig> {
    let crypto = Arc::new(provider::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(crypto)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("both providers support TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // `acme-tls/1` last: only ACME validation offers it, and such a
    // connection is closed after its handshake (`conn`).
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    // The server's suite order wins: every suite offered is AEAD, TLS 1.3
    // first, strongest first, so a client preferring a weaker one (or a
    // downgrade in the middle) does not choose it.
    cfg.ignore_client_order = true;
    match provider::Ticketer::new() {
        Ok(t) => cfg.ticketer = t,
        Err(e) => tracing::warn!(error = %e, "session tickets unavailable"),
    }
    Arc::new(cfg)
}

/// A rustls signing key for `chain` (leaf first) and `key`, through the
/// provider the binary was built with.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let signing = provider::sign::any_supported_type(key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A TLS client configuration over `roots`, on the provider the binary was
/// built with (the ACME client's, to its CA).
pub fn client_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("both providers support the safe defaults")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Fills `buf` from the system's random source through the TLS crypto
/// provider the binary was built with; whether it could.
pub fn fill_random(buf: &mut [u8]) -> bool {
    provider::default_provider().secure_random.fill(buf).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> LoadedCert {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let key = PrivateKeyDer::from_pem_slice(ck.signing_key.serialize_pem().as_bytes()).unwrap();
        let signing = provider::sign::any_supported_type(&key).unwrap();
        LoadedCert {
            spec: CertSpec {
                cert: PathBuf::from(names[0]),
                key: PathBuf::new(),
                names: vec![],
                site: None,
                source: Source::File,
            },
            names: names.iter().map(|s| s.to_string()).collect(),
            san: names.iter().map(|s| s.to_string()).collect(),
            key: Arc::new(CertifiedKey::new(vec![ck.cert.der().clone()], signing)),
            not_after: 0,
            not_before: 0,
            serial: names[0].to_string(),
            stamps: [None, None],
        }
    }

    fn from_certs(certs: Vec<LoadedCert>) -> CertStore {
        let specs: Vec<CertSpec> = certs.iter().map(|c| c.spec.clone()).collect();
        CertStore::build(&specs, |spec| {
            (
                None,
                Ok(certs.iter().find(|c| c.spec == *spec).unwrap().clone()),
            )
        })
    }

    #[test]
    fn sni_selects_exact_then_wildcard_then_default() {
        let store = from_certs(vec![
            cert(&["default.test"]),
            cert(&["a.example.com"]),
            cert(&["*.example.com"]),
        ]);
        let pick = |sni: Option<&str>| store.select(sni).unwrap().serial.clone();
        assert_eq!(pick(Some("a.example.com")), "a.example.com");
        assert_eq!(pick(Some("A.Example.COM.")), "a.example.com");
        assert_eq!(pick(Some("b.example.com")), "*.example.com");
        // A wildcard covers one label only.
        assert_eq!(pick(Some("x.b.example.com")), "default.test");
        assert_eq!(pick(Some("example.com")), "default.test");
        assert_eq!(pick(None), "default.test");
    }
}
