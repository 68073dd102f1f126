//! The ACME manager: one task that keeps every `acme = true` site's
//! certificate valid. For each site it works out when the certificate is
//! due (none yet: now; else when `acme.renew_before` is left, or at two
//! thirds of its lifetime), orders it from the CA when due, writes it to
//! the state directory and has the resolver load it. A failure is that
//! site's alone: it is retried after `acme.retry_min`, doubling with
//! jitter up to `acme.retry_max`, so a CA that refuses is never hammered,
//! and every other site serves on. A reload wakes it (a new site or name
//! is ordered at once).
//!
//! Nothing here is asked of the CA while a valid certificate is on disk
//! and not due: a restart reads the files and orders nothing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::store::{self, StoreError};
use crate::config::acme::{Acme, Challenge};
use crate::config::Config;
use crate::state::State;
use crate::tls::{CertSpec, LoadedCert};

/// Longest an order may take, start to certificate (a CA that accepts the
/// connection and then says nothing must not stall the manager).
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// Why an order failed; the message is what the log shows.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The state directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA or the protocol (connection refused, a problem document).
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    /// What the CA asked for and we cannot do, or what it said about it.
    #[error("{0}")]
    Order(String),
    /// `acme.ca_root`.
    #[error("acme.ca_root {}: {reason}", path.display())]
    Root {
        /// The file.
        path: std::path::PathBuf,
        /// Why it was not used.
        reason: String,
    },
    /// The order took longer than [`ORDER_TIMEOUT`].
    #[error("the order did not finish within {}s", ORDER_TIMEOUT.as_secs())]
    Timeout,
}

/// One site's failed attempts since its last success.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    next: SystemTime,
}

/// The manager's memory (nothing of it needs to survive a restart: the
/// certificates are on disk, and a restart retries at once).
struct Manager {
    state: Arc<State>,
    /// The account, for the CA (directory and root) it was made with.
    account: Option<(String, Option<std::path::PathBuf>, Account)>,
    /// By site (its first name).
    backoff: HashMap<String, Backoff>,
    /// Serials issued by this process, with the `renew_before` in effect
    /// then: while it stays, such a certificate is renewed no sooner than
    /// two thirds of its lifetime, even when `renew_before` is longer than
    /// the CA's certificates live (which would otherwise order again at
    /// once, forever). A reload that changes `renew_before` applies it to
    /// the certificate in hand.
    fresh: HashMap<String, Option<Duration>>,
    /// Sites with per-site gauges, so a site a reload removes loses them.
    series: HashSet<String>,
}

/// Runs until aborted; `state.acme_wake` (a reload) makes it look again.
pub async fn run(state: Arc<State>) {
    let mut m = Manager {
        state,
        account: None,
        backoff: HashMap::new(),
        fresh: HashMap::new(),
        series: HashSet::new(),
    };
    loop {
        let cfg = m.state.config();
        let wake = match &cfg.acme {
            None => None,
            Some(acme) => m.round(&cfg, acme).await,
        };
        let sleep = wake
            .map(|t| {
                t.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
            .unwrap_or(Duration::from_secs(24 * 3600))
            // Woken at least hourly: a clock that jumped, a file removed.
            .min(Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = m.state.acme_wake.notified() => {}
        }
    }
}

impl Manager {
    /// Orders every site that is due (one at a time); returns when the
    /// next one is, or `None` when none is scheduled.
    async fn round(&mut self, cfg: &Arc<Config>, acme: &Acme) -> Option<SystemTime> {
        let labels: HashSet<&str> = acme
            .sites
            .iter()
            .filter_map(|s| s.site.as_deref())
            .collect();
        // Sites a reload removed: forget them and their series.
        self.backoff
            .retain(|site, _| labels.contains(site.as_str()));
        let m = &self.state.metrics.acme;
        for gone in self.series.iter().filter(|s| !labels.contains(s.as_str())) {
            let _ = m.next_attempt.remove_label_values(&[gone]);
            let _ = m.failures.remove_label_values(&[gone]);
        }
        self.series = labels.iter().map(|s| s.to_string()).collect();
        let mut next: Option<SystemTime> = None;
        for spec in &acme.sites {
            let site = spec.site.clone().unwrap_or_default();
            let store = self.state.tls_resolver.store();
            let due = match store.get(spec) {
                // A certificate in memory for other names (a reload added
                // one) is due at once.
                Some(c) if covers(c, &spec.names) => self.due(c, acme),
                _ => SystemTime::now(),
            };
            let when = match self.backoff.get(&site) {
                Some(b) => due.max(b.next),
                None => due,
            };
            self.state
                .metrics
                .acme
                .next_attempt
                .with_label_values(&[&site])
                .set(unix(when) as f64);
            if when > SystemTime::now() {
                next = Some(next.map_or(when, |n| n.min(when)));
                continue;
            }
            let started = Instant::now();
            tracing::info!(
                site = %site,
                names = %spec.names.join(", "),
                directory = %acme.directory,
                "ACME: ordering a certificate"
            );
            let result =
                match tokio::time::timeout(ORDER_TIMEOUT, self.order(cfg, acme, spec)).await {
                    Ok(r) => r,
                    Err(_) => Err(OrderError::Timeout),
                };
            let m = &self.state.metrics.acme;
            match result {
                Ok(()) => {
                    self.backoff.remove(&site);
                    m.orders.with_label_values(&[&site, "issued"]).inc();
                    m.failures.with_label_values(&[&site]).set(0);
                    self.install().await;
                    let store = self.state.tls_resolver.store();
                    if let Some(c) = store.get(spec) {
                        self.fresh.insert(c.serial.clone(), acme.renew_before);
                        tracing::info!(
                            site = %site,
                            serial = %c.serial,
                            not_after = %c.not_after_text(),
                            took_ms = started.elapsed().as_millis() as u64,
                            "ACME: certificate obtained and serving"
                        );
                    }
                }
                Err(e) => {
                    let failures = self.backoff.get(&site).map_or(0, |b| b.failures) + 1;
                    let wait = retry_delay(acme, failures);
                    self.backoff.insert(
                        site.clone(),
                        Backoff {
                            failures,
                            next: SystemTime::now() + wait,
                        },
                    );
                    m.orders.with_label_values(&[&site, "failed"]).inc();
                    m.failures.with_label_values(&[&site]).set(failures as i64);
                    let serving = match self.state.tls_resolver.store().get(spec) {
                        Some(c) => format!("the current certificate (expires {}) keeps serving", c.not_after_text()),
                        None => "the site has no certificate yet: its TLS handshakes fail, HTTP-01 keeps being answered".into(),
                    };
                    tracing::error!(
                        site = %site,
                        attempt = failures,
                        "ACME: order failed: {}; {serving}; next attempt in {}",
                        chain(&e),
                        humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                    );
                }
            }
            // The store changed, or a wait started: look again from the top.
            return Some(SystemTime::now());
        }
        next
    }

    /// When `c` is due for renewal (before jitter).
    fn due(&self, c: &LoadedCert, acme: &Acme) -> SystemTime {
        let lifetime = (c.not_after - c.not_before).max(0) as u64;
        let two_thirds = c.not_before.max(0) as u64 + lifetime * 2 / 3;
        // Spread a fleet's renewals over 1% of the lifetime: by the serial,
        // so the time stays put between rounds (a fresh draw each round
        // would move it, and the next-attempt gauge with it).
        let hash = blake3::hash(c.serial.as_bytes());
        let draw = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
        let spread = draw % (lifetime / 100).max(1);
        let at = match acme.renew_before {
            Some(before) => {
                let at = (c.not_after.max(0) as u64).saturating_sub(before.as_secs());
                let fresh = self.fresh.get(&c.serial) == Some(&acme.renew_before);
                match fresh && at < two_thirds {
                    true => two_thirds,
                    false => at,
                }
            }
            None => two_thirds,
        };
        UNIX_EPOCH + Duration::from_secs(at.saturating_sub(spread))
    }

    /// The account for this CA: the stored one, or a new one (stored).
    async fn account(&mut self, acme: &Acme) -> Result<Account, OrderError> {
        if let Some((dir, root, account)) = &self.account {
            if *dir == acme.directory && *root == acme.ca_root {
                return Ok(account.clone());
            }
        }
        let path = acme.account_file();
        let account = match store::load_account(&path)? {
            Some(credentials) => {
                Account::builder_with_http(http_client(acme.ca_root.as_deref())?)
                    .from_credentials(credentials)
                    .await?
            }
            None => {
                let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
                let eab = acme
                    .eab
                    .as_ref()
                    .map(|(kid, key)| instant_acme::ExternalAccountKey::new(kid.clone(), key));
                let (account, credentials) =
                    Account::builder_with_http(http_client(acme.ca_root.as_deref())?)
                        .create(
                            &NewAccount {
                                contact: &contact,
                                terms_of_service_agreed: true,
                                only_return_existing: false,
                            },
                            acme.directory.clone(),
                            eab.as_ref(),
                        )
                        .await?;
                store::save_account(&path, &credentials)?;
                tracing::info!(
                    account = %account.id(),
                    file = %path.display(),
                    "ACME: account created"
                );
                account
            }
        };
        self.account = Some((
            acme.directory.clone(),
            acme.ca_root.clone(),
            account.clone(),
        ));
        Ok(account)
    }

    /// One order for `spec`'s names, start to files on disk.
    async fn order(
        &mut self,
        cfg: &Config,
        acme: &Acme,
        spec: &CertSpec,
    ) -> Result<(), OrderError> {
        // Nothing is ordered that could not be kept: it would be ordered
        // again at every start, into the CA's rate limits.
        let dir = spec.cert.parent().unwrap_or(Path::new("/"));
        store::probe(dir)?;
        let account = self.account(acme).await?;
        let ids: Vec<Identifier> = spec
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut published = Published {
            state: Arc::clone(&self.state),
            tokens: Vec::new(),
            names: Vec::new(),
        };
        let plain = cfg.listen.iter().any(|l| !l.tls);
        let tls = cfg.listen.iter().any(|l| l.tls);
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(OrderError::Order(format!(
                        "authorization for {} is {other:?}",
                        authz.identifier()
                    )))
                }
            }
            let offered = |t: ChallengeType| authz.challenges.iter().any(|c| c.r#type == t);
            let kind = acme.challenges.iter().find_map(|c| match c {
                Challenge::Http01 if plain && offered(ChallengeType::Http01) => {
                    Some(Challenge::Http01)
                }
                Challenge::TlsAlpn01 if tls && offered(ChallengeType::TlsAlpn01) => {
                    Some(Challenge::TlsAlpn01)
                }
                _ => None,
            });
            let name = authz.identifier().to_string();
            let Some(kind) = kind else {
                return Err(OrderError::Order(format!(
                    "no challenge for {name} that a listener can answer (http-01 needs a plain listener on port 80, tls-alpn-01 a TLS listener on 443; acme.challenges = {:?})",
                    acme.challenges
                )));
            };
            let (ty, label) = match kind {
                Challenge::Http01 => (ChallengeType::Http01, "http-01"),
                Challenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
            };
            let mut challenge = authz.challenge(ty).expect("offered, checked above");
            let key_authorization = challenge.key_authorization();
            match kind {
                Challenge::Http01 => {
                    self.state
                        .acme_http01
                        .insert(&challenge.token, key_authorization.as_str());
                    published.tokens.push(challenge.token.clone());
                }
                Challenge::TlsAlpn01 => {
                    let cert = alpn_certificate(&name, key_authorization.digest().as_ref())?;
                    self.state.tls_resolver.set_challenge(&name, Some(cert));
                    published.names.push(name.clone());
                }
            }
            tracing::debug!(site = ?spec.site, %name, challenge = label, "ACME: challenge published");
            challenge.set_ready().await?;
        }
        // Validation and issuance take the CA from well under a second
        // (Pebble) to a few: first look after 100 ms, then 1.5 times
        // longer each time (14 requests in the first minute; a
        // Retry-After from the CA overrides).
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(100))
            .backoff(1.5)
            .timeout(Duration::from_secs(120));
        let status = order.poll_ready(&retries).await?;
        if status != OrderStatus::Ready {
            return Err(OrderError::Order(format!(
                "the CA did not validate the challenges (order {status:?}){}",
                authorization_errors(&mut order).await
            )));
        }
        let key_pem = order.finalize().await?;
        // Often issued by the time finalize answers: one look before polling.
        let chain_pem = match order.certificate().await? {
            Some(chain) => chain,
            None => order.poll_certificate(&retries).await?,
        };
        drop(published);
        // The key first: a reader between the two renames sees the new key
        // with the old certificate, refuses the pair and keeps what it has.
        store::write_atomic(&spec.key, key_pem.as_bytes())?;
        store::write_atomic(&spec.cert, chain_pem.as_bytes())?;
        Ok(())
    }

    /// Has the resolver load the files just written (not waiting for the
    /// file watch), and the metrics follow.
    async fn install(&self) {
        let state = Arc::clone(&self.state);
        let _ = tokio::task::spawn_blocking(move || {
            state.tls_resolver.refresh_if_changed(&mut Vec::new());
            state.metrics.set_certificates(&state.tls_resolver.store());
        })
        .await;
    }
}

/// The challenges' answers published for one order, withdrawn when it ends
/// however it ends.
struct Published {
    state: Arc<State>,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Drop for Published {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.state.acme_http01.remove(t);
        }
        for n in &self.names {
            self.state.tls_resolver.set_challenge(n, None);
        }
    }
}

/// `e` with its causes, `: `-separated ("client error (Connect): tcp
/// connect error: Connection refused"), skipping a cause its parent's
/// message already contains.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// What the CA said about the authorizations that failed.
async fn authorization_errors(order: &mut instant_acme::Order) -> String {
    let mut out = String::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(e) = &c.error {
                out.push_str(&format!("; {}: {e}", authz.identifier()));
            }
        }
    }
    out
}

/// Whether `c` answers every one of `names`.
fn covers(c: &LoadedCert, names: &[String]) -> bool {
    names.iter().all(|n| c.names.contains(n)) && c.uncovered().is_empty()
}

/// The wait after the `failures`th failure in a row: `retry_min` doubled
/// per failure, at most `retry_max`, less up to a quarter at random (so
/// servers that failed together do not retry together).
fn retry_delay(acme: &Acme, failures: u32) -> Duration {
    let base = acme
        .retry_min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(acme.retry_max);
    base - Duration::from_millis(jitter(base.as_millis() as u64 / 4))
}

/// A random number below `bound` (0 when `bound` is 0).
fn jitter(bound: u64) -> u64 {
    let mut b = [0u8; 8];
    if bound == 0 || !crate::tls::fill_random(&mut b) {
        return 0;
    }
    u64::from_le_bytes(b) % bound
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The HTTPS client to the CA: the system's roots, plus `ca_root`'s.
fn http_client(ca_root: Option<&Path>) -> Result<Box<dyn instant_acme::HttpClient>, OrderError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(path) = ca_root {
        let bad = |reason: String| OrderError::Root {
            path: path.to_path_buf(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_config(roots))
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, BodyWrapper<bytes::Bytes>>(https);
    Ok(Box::new(client))
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 section 3): self
/// signed, for `name` only, with the key authorization's SHA-256 in the
/// critical acmeIdentifier extension.
fn alpn_certificate(
    name: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, OrderError> {
    let fail = |e: &dyn std::fmt::Display| {
        OrderError::Order(format!("tls-alpn-01 certificate for {name}: {e}"))
    };
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| fail(&e))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
    let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    crate::tls::certified_key(vec![cert.der().clone()], &der).map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(min: u64, max: u64) -> Acme {
        Acme {
            directory: String::new(),
            contact: vec![],
            ca_root: None,
            state_dir: "/tmp".into(),
            challenges: vec![Challenge::Http01],
            renew_before: None,
            retry_min: Duration::from_secs(min),
            retry_max: Duration::from_secs(max),
            eab: None,
            sites: vec![],
        }
    }

    #[test]
    fn retries_double_with_jitter_up_to_the_maximum() {
        let a = acme(60, 3600);
        for (failures, base) in [
            (1, 60),
            (2, 120),
            (3, 240),
            (6, 1920),
            (7, 3600),
            (40, 3600),
        ] {
            let d = retry_delay(&a, failures).as_secs_f64();
            assert!(
                d <= base as f64 && d >= base as f64 * 0.75,
                "{failures}: {d} vs {base}"
            );
        }
    }

    #[test]
    fn the_alpn_certificate_carries_the_digest() {
        let digest = [7u8; 32];
        let ck = alpn_certificate("a.example.com", &digest).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
        let ext = x509
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING of the 32 bytes.
        assert_eq!(&ext.value[2..], &digest);
    }
}
