//! A real ACME CA for tests: Debian's `pebble` with `pebble-challtestsrv`
//! as its DNS server (every name resolves to 127.0.0.1), so Pebble's
//! validation really connects back to the listeners under test: HTTP-01 to
//! `http_port`, TLS-ALPN-01 to `tls_port`. Never its always-valid mode.
//! Pebble's own HTTPS certificate is issued by a [`TestCa`] made here
//! (the package ships none); `ca_root` is that CA's PEM, for
//! `acme.ca_root`. `tests/run` installs the package.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pki::TestCa;

/// Pebble and its DNS server, killed when dropped.
pub struct Pebble {
    /// Its configuration and HTTPS key, removed with it.
    _dir: tempfile::TempDir,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM of the CA behind Pebble's own HTTPS certificate.
    pub ca_root: PathBuf,
    /// Pebble's management interface (roots, certificate status).
    pub management: SocketAddr,
    children: Vec<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

/// How to run Pebble.
pub struct Options<'a> {
    /// Where ruchy-serve's plain listener is (Pebble's `httpPort`).
    pub http_port: u16,
    /// Where its TLS listener is (`tlsPort`).
    pub tls_port: u16,
    /// `-strict`: upcoming protocol changes enforced.
    pub strict: bool,
    /// Environment, e.g. `PEBBLE_WFE_NONCEREJECT`.
    pub env: &'a [(&'a str, &'a str)],
    /// The ACME listener's address; `None`: a free port.
    pub listen: Option<SocketAddr>,
    /// External account binding required, with this key id and base64url
    /// HMAC key.
    pub eab: Option<(&'a str, &'a str)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            http_port: 0,
            tls_port: 0,
            strict: true,
            env: &[],
            listen: None,
            eab: None,
        }
    }
}

/// `der` as a PEM certificate.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn free_port() -> u16 {
    super::free_local_addr().port()
}

impl Pebble {
    pub fn start(o: Options<'_>) -> Pebble {
        for program in ["pebble", "pebble-challtestsrv"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {program}")])
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success(),
                "{program} is not installed: apt-get install pebble (tests/run does)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let leaf = ca.issue(dir.path(), "pebble", &["localhost", "127.0.0.1"], 1, 30);
        let ca_root = dir.path().join("ca.pem");
        std::fs::write(&ca_root, pem(&ca.der)).unwrap();
        let listen = o
            .listen
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"pebble": {{"listenAddress": "{listen}", "managementListenAddress": "{management}",
                "certificate": "{}", "privateKey": "{}", "httpPort": {}, "tlsPort": {},
                "ocspResponderURL": "", {}}}}}"#,
                leaf.cert.display(),
                leaf.key.display(),
                o.http_port,
                o.tls_port,
                match o.eab {
                    None => r#""externalAccountBindingRequired": false"#.to_string(),
                    Some((kid, key)) => format!(
                        r#""externalAccountBindingRequired": true, "externalAccountMACKeys": {{"{kid}": "{key}"}}"#
                    ),
                }
            ),
        )
        .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut children = Vec::new();
        let mut chall = Command::new("pebble-challtestsrv");
        chall
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &dns.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())]);
        children.push(spawn_logged(chall, &log, "challtestsrv"));
        let mut pebble = Command::new("pebble");
        pebble
            .args(["-config", config.to_str().unwrap()])
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env_remove("PEBBLE_VA_ALWAYS_VALID");
        if o.strict {
            pebble.arg("-strict");
        }
        for (k, v) in o.env {
            pebble.env(k, v);
        }
        children.push(spawn_logged(pebble, &log, "pebble"));
        let p = Pebble {
            _dir: dir,
            directory: format!("https://{listen}/dir"),
            ca_root,
            management,
            children,
            log,
        };
        p.wait_for("ACME directory available");
        p
    }

    /// Waits up to 10 s for a log line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("pebble: no line {needle:?}; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// How many certificates Pebble has issued.
    pub fn issued(&self) -> usize {
        self.count("Issued certificate serial")
    }

    /// How many log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Pebble's root (regenerated at every start), as DER: what a client
    /// checks the issued chains against.
    pub fn root(&self) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject as _;
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert", self.ca_root.to_str().unwrap()])
            .arg(format!("https://{}/roots/0", self.management))
            .output()
            .expect("curl (tests/run installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rustls::pki_types::CertificateDer::from_pem_slice(&out.stdout).unwrap()
    }

    /// A TLS client trusting Pebble's root.
    pub fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root()).unwrap();
        let cfg = super::pki::client_builder(&[])
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_logged(mut cmd: Command, log: &Arc<Mutex<Vec<String>>>, who: &str) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {who}: {e}"));
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let log = Arc::clone(log);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line);
            }
        });
    }
    child
}
