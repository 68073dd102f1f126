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
#[derive(Debug)]
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
    /// Leaf serial number in hex, for logs.
    pub serial: String,
    /// The certificate's and key's file versions when loaded: rotation tools
    /// rewrite or rename, and either changes the [`FileId`].
    stamps: [Option<FileId>; 2],
}

impl LoadedCert {
    /// Loads and validates one certificate and key: the chain parses, the key
    /// matches the leaf, the leaf has not expired.
    pub fn load(spec: &CertSpec) -> Result<LoadedCert, TlsError> {
        let stamps = [FileId::at(&spec.cert), FileId::at(&spec.key)];
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

/// Every configured certificate, indexed by name. The first is the default
/// for clients that send no SNI (or an unknown name).
#[derive(Debug, Default)]
pub struct CertStore {
    /// In configuration order; the first is the default.
    pub certs: Vec<LoadedCert>,
    exact: HashMap<String, usize>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, usize>,
}

impl CertStore {
    /// Loads and validates every certificate, or reports the first bad one.
    pub fn load(specs: &[CertSpec]) -> Result<CertStore, TlsError> {
        let certs = specs
            .iter()
            .map(LoadedCert::load)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CertStore::from_certs(certs))
    }

    fn from_certs(certs: Vec<LoadedCert>) -> CertStore {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for name in &c.names {
                // The first certificate to claim a name keeps it.
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        CertStore {
            certs,
            exact,
            wildcard,
        }
    }

    /// Exact name first, then a wildcard one label up, then the default.
    /// The name is normalized by [`host_key`], as site choice does.
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
    }

    fn specs(&self) -> Vec<CertSpec> {
        self.certs.iter().map(|c| c.spec.clone()).collect()
    }
}

/// rustls asks this for a certificate on every handshake.
#[derive(Debug, Default)]
pub struct Resolver {
    store: ArcSwap<CertStore>,
}

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

    /// The file watch: if any certificate or key file changed since it was
    /// loaded, load the whole set again and swap it in. A broken new file
    /// keeps the old set serving and is reported once per version of the file.
    pub fn refresh_if_changed(&self, last_error: &mut Option<String>) {
        let current = self.store();
        if !current.changed_on_disk() {
            return;
        }
        match CertStore::load(&current.specs()) {
            Ok(store) => {
                // Only over the set it started from: a SIGHUP that installed
                // a new configuration's certificates meanwhile wins, instead
                // of being undone by a list loaded from the old one.
                let previous = self.store.compare_and_swap(&current, Arc::new(store));
                if !Arc::ptr_eq(&previous, &current) {
                    tracing::debug!(
                        "certificate set replaced by a reload meanwhile; file change dropped"
                    );
                    return;
                }
                // Only the certificates whose files changed: the others
                // were read again, but nothing about them is news.
                let changed: Vec<_> = current
                    .certs
                    .iter()
                    .filter(|c| c.changed_on_disk())
                    .map(|c| c.spec.cert.clone())
                    .collect();
                for c in self
                    .store()
                    .certs
                    .iter()
                    .filter(|c| changed.contains(&c.spec.cert))
                {
                    tracing::info!(
                        cert = %c.spec.cert.display(),
                        serial = %c.serial,
                        not_after = %c.not_after_text(),
                        "certificate reloaded from disk"
                    );
                }
                *last_error = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!("certificate change not applied, old certificate kept: {msg}");
                    *last_error = Some(msg);
                }
            }
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
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
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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
                cert: PathBuf::new(),
                key: PathBuf::new(),
                names: vec![],
                site: None,
            },
            names: names.iter().map(|s| s.to_string()).collect(),
            san: names.iter().map(|s| s.to_string()).collect(),
            key: Arc::new(CertifiedKey::new(vec![ck.cert.der().clone()], signing)),
            not_after: 0,
            serial: names[0].to_string(),
            stamps: [None, None],
        }
    }

    #[test]
    fn sni_selects_exact_then_wildcard_then_default() {
        let store = CertStore::from_certs(vec![
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
