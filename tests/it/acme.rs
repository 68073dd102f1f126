//! ACME against a real CA: Debian's Pebble, whose validation connects back
//! to the daemon's real listeners (HTTP-01 on the plain one, TLS-ALPN-01 on
//! the TLS one), in `-strict` mode. The daemon is the real binary.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::pebble::{Options, Pebble};
use crate::common::pki::{server_name, TestCa};
use crate::common::{self, blocking_get, fixture, ConfigFile, Daemon};

/// The listeners and state directory one daemon uses; Pebble must know the
/// ports before either starts.
struct Setup {
    http: SocketAddr,
    tls: SocketAddr,
    metrics: SocketAddr,
    state: tempfile::TempDir,
    root: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            http: common::free_local_addr(),
            tls: common::free_local_addr(),
            metrics: common::free_local_addr(),
            state: tempfile::tempdir().unwrap(),
            root: fixture(),
        }
    }

    fn pebble(&self, env: &[(&str, &str)]) -> Pebble {
        Pebble::start(Options {
            http_port: self.http.port(),
            tls_port: self.tls.port(),
            env,
            ..Options::default()
        })
    }

    /// A configuration: both listeners, `[acme]` pointed at `directory`
    /// with `acme` added, then `sites`.
    fn config(&self, directory: &str, ca_root: &Path, acme: &str, sites: &str) -> String {
        format!(
            "[[listen]]\naddress = \"{}\"\n[[listen]]\naddress = \"{}\"\ntls = true\n\
             [acme]\ndirectory = \"{directory}\"\nagree_to_terms = true\nca_root = {:?}\n\
             state_dir = {:?}\ncontact = [\"mailto:ops@example.com\"]\nretry_min = \"1s\"\n{acme}\n{sites}",
            self.http,
            self.tls,
            ca_root.display().to_string(),
            self.state.path().display().to_string(),
        )
    }

    /// An `acme = true` site.
    fn site(&self, names: &[&str]) -> String {
        let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        format!(
            "[[sites]]\nnames = [{}]\nroot = {:?}\nacme = true\n",
            names.join(", "),
            self.root.path().display().to_string()
        )
    }

    /// Writes a configuration for `pebble` (see [`Setup::config`]),
    /// starts the daemon on it and waits for `site`'s certificate.
    fn first_certificate(
        &self,
        pebble: &Pebble,
        acme: &str,
        sites: &str,
        site: &str,
    ) -> (ConfigFile, Daemon) {
        let cfg = ConfigFile::new(
            self.root.path(),
            &self.config(&pebble.directory, &pebble.ca_root, acme, sites),
        );
        let d = self.spawn(&cfg);
        wait_line(&d, &obtained(site), 30);
        (cfg, d)
    }

    fn spawn(&self, cfg: &ConfigFile) -> Daemon {
        Daemon::spawn(
            &["--config", cfg.arg()],
            &[("RUCHY_SERVE_METRICS__ADDRESS", &self.metrics.to_string())],
        )
    }

    fn metrics(&self) -> String {
        blocking_get(self.metrics, "/metrics").unwrap()
    }

    /// The site's certificate directory in the state directory.
    fn cert_dir(&self, first: &str) -> std::path::PathBuf {
        let ca = std::fs::read_dir(self.state.path().join("acme"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        ca.join(first)
    }
}

/// Waits up to `secs` for a daemon log line with `needle`.
fn wait_line(d: &Daemon, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(l) = d.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no line {needle:?} within {secs}s; log:\n{}", d.log_text());
}

/// Waits up to 30 s for the `n`th log line with `needle`.
fn wait_count(d: &Daemon, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(d, needle) < n {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(d: &Daemon, needle: &str) -> usize {
    d.log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .count()
}

/// The leaf's serial (hex) after a verified handshake for `name`, or the
/// handshake's error.
async fn handshake(
    client: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        client.connect(server_name(name), tcp),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    Ok(x509.raw_serial_as_string().replace(':', ""))
}

fn obtained(site: &str) -> String {
    format!("ACME: certificate obtained and serving site={site} ")
}

/// HTTP-01 end to end, then a restart that reuses the stored certificate:
/// Pebble issues nothing more and the daemon orders nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_first_certificate_then_a_restart_orders_nothing() {
    let s = Setup::new();
    let pebble = s.pebble(&[]);
    let (cfg, d) = s.first_certificate(
        &pebble,
        "challenges = [\"http-01\"]",
        &s.site(&["a.example.com", "www.a.example.com"]),
        "a.example.com",
    );
    // Pebble's validation came over HTTP to the plain listener.
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("GET /.well-known/acme-challenge/")
                && l.contains("\" 200 ")
                && l.contains("Pebble")),
        "{log}"
    );
    let client = pebble.client();
    let serial = handshake(&client, s.tls, "a.example.com").await.unwrap();
    assert_eq!(
        handshake(&client, s.tls, "www.a.example.com")
            .await
            .unwrap(),
        serial
    );
    assert_eq!(pebble.issued(), 1);
    // Kept privately, and never logged.
    let dir = s.cert_dir("a.example.com");
    for f in ["cert.pem", "key.pem"] {
        assert_eq!(
            std::fs::metadata(dir.join(f)).unwrap().mode() & 0o777,
            0o600,
            "{f}"
        );
    }
    for d in [dir.as_path(), dir.parent().unwrap()] {
        assert_eq!(
            std::fs::metadata(d).unwrap().mode() & 0o777,
            0o700,
            "{}",
            d.display()
        );
    }
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    let m = s.metrics();
    assert!(
        m.contains("ruchy_serve_acme_orders_total{result=\"issued\",site=\"a.example.com\"} 1"),
        "{m}"
    );
    assert!(
        m.lines().any(
            |l| l.starts_with("ruchy_serve_tls_certificate_expiry_timestamp_seconds{")
                && l.contains("name=\"www.a.example.com\"")
                && l.contains("source=\"acme\"")
        ),
        "{m}"
    );
    drop(d);

    let d = s.spawn(&cfg);
    wait_line(&d, "certificate loaded", 5);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        handshake(&client, s.tls, "a.example.com").await.unwrap(),
        serial
    );
    assert_eq!(pebble.issued(), 1, "{}", pebble.log_text());
    assert_eq!(count(&d, "ACME: ordering"), 0, "{}", d.log_text());
}

/// A TLS-only server (no plain listener, default `challenges`): the
/// manager uses TLS-ALPN-01, Pebble validates in a TLS handshake on the TLS
/// listener; outside an order, a client offering `acme-tls/1` gets no
/// certificate at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_for_a_tls_only_server() {
    let s = Setup::new();
    let pebble = s.pebble(&[]);
    let body = s
        .config(
            &pebble.directory,
            &pebble.ca_root,
            "",
            &s.site(&["b.example.com"]),
        )
        .replace(&format!("[[listen]]\naddress = \"{}\"\n", s.http), "");
    assert!(!body.contains(&s.http.to_string()));
    let cfg = ConfigFile::new(s.root.path(), &body);
    let d = s.spawn(&cfg);
    wait_line(&d, &obtained("b.example.com"), 30);
    assert_eq!(count(&d, "acme-challenge"), 0, "{}", d.log_text());
    assert!(handshake(&pebble.client(), s.tls, "b.example.com")
        .await
        .is_ok());
    // acme-tls/1 with no order running: refused.
    let any = crate::common::pki::insecure_client(&["acme-tls/1"]);
    assert!(handshake(&any, s.tls, "b.example.com").await.is_err());
}

/// A reload that adds a site gets its certificate without a restart, and
/// the first site serves its own certificate throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_site_and_its_certificate() {
    let s = Setup::new();
    let pebble = s.pebble(&[]);
    let one = s.site(&["a.example.com"]);
    let (cfg, d) = s.first_certificate(&pebble, "", &one, "a.example.com");
    let client = pebble.client();
    let a = handshake(&client, s.tls, "a.example.com").await.unwrap();
    assert!(handshake(&client, s.tls, "c.example.com").await.is_err());
    cfg.write(&s.config(
        &pebble.directory,
        &pebble.ca_root,
        "",
        &format!("{one}{}", s.site(&["c.example.com"])),
    ));
    d.signal("HUP");
    wait_line(&d, &obtained("c.example.com"), 30);
    assert!(handshake(&client, s.tls, "c.example.com").await.is_ok());
    assert_eq!(handshake(&client, s.tls, "a.example.com").await.unwrap(), a);
    assert_eq!(pebble.issued(), 2);
    // A name added to a site: its certificate is ordered again, for both.
    cfg.write(&s.config(
        &pebble.directory,
        &pebble.ca_root,
        "",
        &format!(
            "{}{}",
            s.site(&["a.example.com", "www.a.example.com"]),
            s.site(&["c.example.com"])
        ),
    ));
    d.signal("HUP");
    wait_count(&d, &obtained("a.example.com"), 2);
    let both = handshake(&client, s.tls, "www.a.example.com")
        .await
        .unwrap();
    assert_ne!(both, a);
    assert_eq!(
        handshake(&client, s.tls, "a.example.com").await.unwrap(),
        both
    );
    assert_eq!(pebble.issued(), 3);
    assert_eq!(
        count(&d, "certificate for"),
        0,
        "no certificate error: {}",
        d.log_text()
    );
}

/// The CA unreachable at start: a site with its own certificate file
/// serves, the ACME site retries with growing waits (not a storm), a
/// metric counts the failures, and the certificate comes once the CA does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_down_at_start_backs_off_and_the_other_sites_serve() {
    let s = Setup::new();
    let ca_addr = common::free_local_addr();
    let files = TestCa::new();
    let leaf = files.issue(s.state.path(), "f", &["f.example.com"], 7, 30);
    // The CA's root file must exist for the configuration to load; the
    // daemon reads it when it makes its client, so the real one (Pebble's,
    // made when it starts) is copied over it later.
    let placeholder = tempfile::tempdir().unwrap();
    let ca_root = placeholder.path().join("ca.pem");
    std::fs::write(&ca_root, crate::common::pebble::pem(&files.der)).unwrap();
    let file_site = format!(
        "[[sites]]\nnames = [\"f.example.com\"]\nroot = {:?}\n[[sites.certificates]]\ncert = {:?}\nkey = {:?}\n",
        s.root.path().display().to_string(),
        leaf.cert.display().to_string(),
        leaf.key.display().to_string()
    );
    let cfg = ConfigFile::new(
        s.root.path(),
        &s.config(
            &format!("https://{ca_addr}/dir"),
            &ca_root,
            "retry_max = \"4s\"",
            &format!("{}{file_site}", s.site(&["a.example.com"])),
        ),
    );
    let d = s.spawn(&cfg);
    wait_line(&d, "ACME: order failed", 10);
    // The file site serves; the ACME site's names fail their handshakes
    // (not shown the file site's certificate) and HTTP-01 stays open.
    assert_eq!(
        handshake(&files.client(&[], &[]), s.tls, "f.example.com")
            .await
            .unwrap(),
        "07"
    );
    let e = handshake(&files.client(&[], &[]), s.tls, "a.example.com")
        .await
        .unwrap_err();
    assert!(!e.contains("NotValidForName"), "{e}");
    assert!(blocking_get(d.addr, "/")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(3500));
    // Waits of 1, 2 s (less jitter): at most 3 attempts in 3.5 s.
    let attempts = count(&d, "ACME: ordering");
    assert!(
        (2..=3).contains(&attempts),
        "{attempts} attempts:\n{}",
        d.log_text()
    );
    let m = s.metrics();
    let failures = m
        .lines()
        .find(|l| l.starts_with("ruchy_serve_acme_consecutive_failures{site=\"a.example.com\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{m}"));
    assert!(failures >= 2, "{m}");
    assert!(
        m.contains("ruchy_serve_acme_next_attempt_timestamp_seconds{site=\"a.example.com\"}"),
        "{m}"
    );
    // The CA comes up where it was expected.
    let pebble = Pebble::start(Options {
        http_port: s.http.port(),
        tls_port: s.tls.port(),
        listen: Some(ca_addr),
        ..Options::default()
    });
    std::fs::copy(&pebble.ca_root, &ca_root).unwrap();
    wait_line(&d, &obtained("a.example.com"), 30);
    assert!(handshake(&pebble.client(), s.tls, "a.example.com")
        .await
        .is_ok());
    assert!(s
        .metrics()
        .contains("ruchy_serve_acme_consecutive_failures{site=\"a.example.com\"} 0"));
}

/// Pebble rejecting a quarter of all good nonces (`badNonce`; its default
/// is 5%), in `-strict` mode: instant-acme retries each request up to
/// three times, an order that still fails is retried after `retry_min`,
/// and the certificate comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_rejections_are_retried() {
    let s = Setup::new();
    let pebble = s.pebble(&[("PEBBLE_WFE_NONCEREJECT", "25")]);
    let (_cfg, _d) = s.first_certificate(&pebble, "", &s.site(&["n.example.com"]), "n.example.com");
    assert!(handshake(&pebble.client(), s.tls, "n.example.com")
        .await
        .is_ok());
}

/// A state directory that cannot be written: nothing is ordered (the
/// certificate could not be kept, so it would be ordered again at every
/// start), the error names the path, the server serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_directory_orders_nothing() {
    let s = Setup::new();
    let pebble = s.pebble(&[]);
    let blocker = s.state.path().join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let body = s
        .config(
            &pebble.directory,
            &pebble.ca_root,
            "",
            &s.site(&["u.example.com"]),
        )
        .replace(
            &format!("state_dir = {:?}", s.state.path().display().to_string()),
            &format!(
                "state_dir = {:?}",
                blocker.join("state").display().to_string()
            ),
        );
    let cfg = ConfigFile::new(s.root.path(), &body);
    let d = s.spawn(&cfg);
    let line = wait_line(&d, "ACME: order failed", 10);
    assert!(line.contains("not-a-directory/state"), "{line}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pebble.count("/order-plz"), 0, "{}", pebble.log_text());
    assert_eq!(pebble.count("/sign-me-up"), 0, "{}", pebble.log_text());
    assert!(blocking_get(d.addr, "/")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
}

/// Renewal: a reload that makes the certificate due (`renew_before`
/// longer than what is left) renews it without a restart, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_replaces_the_certificate_in_place_once() {
    let s = Setup::new();
    let pebble = s.pebble(&[]);
    let site = s.site(&["r.example.com"]);
    let (cfg, d) = s.first_certificate(&pebble, "", &site, "r.example.com");
    let client = pebble.client();
    let first = handshake(&client, s.tls, "r.example.com").await.unwrap();
    // Pebble's certificates live five years: 2000 days before expiry is now.
    cfg.write(&s.config(
        &pebble.directory,
        &pebble.ca_root,
        "renew_before = \"2000d\"",
        &site,
    ));
    d.signal("HUP");
    wait_count(&d, &obtained("r.example.com"), 2);
    let second = handshake(&client, s.tls, "r.example.com").await.unwrap();
    assert_ne!(first, second);
    // The new certificate is as "due" as the old was, but was just issued:
    // not renewed again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pebble.issued(), 2, "{}", d.log_text());
    assert!(d.log_text().contains("took_ms="));
}

/// HTTP-01 answers come before everything that could turn the request
/// away: a `redirect_https` listener, a host no site has, a location that
/// denies everyone, a redirect of the whole tree. A token not published
/// gets the ordinary answer.
#[tokio::test]
async fn http01_is_answered_before_any_redirect_or_rule() {
    let root = fixture();
    let s = crate::common::TestServer::start_raw(
        root.path(),
        "[[listen]]\naddress = \"127.0.0.1:0\"\nredirect_https = true\n\
         [[sites]]\nnames = [\"a.example.com\"]\nroot = \".\"\n\
         [[sites.locations]]\nprefix = \"/\"\naccess = [\"deny all\"]\n\
         [[sites.redirects]]\nfrom = \"/.well-known/{*all}\"\nto = \"https://elsewhere.example/{all}\"\n",
    )
    .await;
    s.state.acme_http01.insert("tok-1", "tok-1.thumbprint");
    for host in ["a.example.com", "unknown.example.com"] {
        let r = crate::common::get(
            s.addr,
            "/.well-known/acme-challenge/tok-1",
            &[("host", host)],
        )
        .await;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.text(), "tok-1.thumbprint");
    }
    let r = crate::common::get(
        s.addr,
        "/.well-known/acme-challenge/other",
        &[("host", "a.example.com")],
    )
    .await;
    assert_ne!(r.status, 200);
    s.state.acme_http01.remove("tok-1");
    let r = crate::common::get(
        s.addr,
        "/.well-known/acme-challenge/tok-1",
        &[("host", "a.example.com")],
    )
    .await;
    assert_ne!(r.status, 200);
}

/// A CA that requires external account binding: without `eab_kid` and
/// `eab_hmac_key` the account is refused (and said so); with them the
/// certificate comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_account_binding() {
    const KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let s = Setup::new();
    let pebble = Pebble::start(Options {
        http_port: s.http.port(),
        tls_port: s.tls.port(),
        eab: Some(("kid-1", KEY)),
        ..Options::default()
    });
    let site = s.site(&["e.example.com"]);
    let cfg = ConfigFile::new(
        s.root.path(),
        &s.config(&pebble.directory, &pebble.ca_root, "", &site),
    );
    let d = s.spawn(&cfg);
    let line = wait_line(&d, "ACME: order failed", 10);
    assert!(
        line.contains("externalAccountRequired") || line.contains("External account"),
        "{line}"
    );
    drop(d);
    cfg.write(&s.config(
        &pebble.directory,
        &pebble.ca_root,
        &format!("eab_kid = \"kid-1\"\neab_hmac_key = \"{KEY}\""),
        &site,
    ));
    let d = s.spawn(&cfg);
    wait_line(&d, &obtained("e.example.com"), 30);
    assert!(handshake(&pebble.client(), s.tls, "e.example.com")
        .await
        .is_ok());
}

/// README's move from certbot: the old certificate in `[[tls.certificates]]`
/// keeps the site's names while the ACME certificate is ordered beside it;
/// removing the entry and reloading switches to the ACME one. No moment
/// without a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_from_certbot_files_without_a_gap() {
    let s = Setup::new();
    let pebble = s.pebble(&[]);
    let certbot = TestCa::new();
    let old = certbot.issue(s.state.path(), "certbot", &["m.example.com"], 42, 60);
    let entry = format!(
        "\n[[tls.certificates]]\ncert = {:?}\nkey = {:?}\nnames = [\"m.example.com\"]\n",
        old.cert.display().to_string(),
        old.key.display().to_string()
    );
    let site = s.site(&["m.example.com"]);
    let (cfg, d) = s.first_certificate(&pebble, "", &format!("{entry}{site}"), "m.example.com");
    // Ordered and stored, but certbot's certificate still answers.
    let old_client = certbot.client(&[], &[]);
    assert_eq!(
        handshake(&old_client, s.tls, "m.example.com")
            .await
            .unwrap(),
        "2a"
    );
    cfg.write(&s.config(&pebble.directory, &pebble.ca_root, "", &site));
    d.signal("HUP");
    wait_count(&d, "reloaded: serving", 1);
    assert!(handshake(&pebble.client(), s.tls, "m.example.com")
        .await
        .is_ok());
    assert_eq!(pebble.issued(), 1);
}
