//! Configuration in two layers: [`raw`] is what the operator wrote (figment +
//! serde), [`Config`] is the validated, immutable value the server runs on:
//! paths canonicalized, globs compiled, header values pre-built. Nothing here
//! binds a socket, so `ruchy-serve check` can run it all like `nginx -t`.
//!
//! A running server holds its `Config` behind an `Arc`; reload (systemd issue)
//! builds a whole new one and swaps it, nothing edits a `Config` in place.

mod error;
mod load;
pub mod raw;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use http::header::{HeaderName, HeaderValue};

pub use crate::addr::ListenAddr;
pub use error::{ConfigError, Origin};
pub use load::{demo_root, Layered, Sources, ENV_PREFIX};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from, if any (reload re-reads it).
    pub source: Option<PathBuf>,
    /// Canonical root; every served path must stay below it.
    pub root: PathBuf,
    pub listen: Vec<Listen>,
    pub shutdown_timeout: Duration,
    /// Runtime worker threads (0: one per core).
    pub workers: usize,
    /// Whether starting as root is allowed (checked by `main`).
    pub allow_root: bool,
    pub trusted_proxies: TrustedProxies,
    pub files: Files,
    pub headers: Headers,
    pub limits: Limits,
    pub log: Log,
    pub tls: Tls,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// None: no metrics listener.
    pub address: Option<ListenAddr>,
    pub main_health_paths: bool,
}

/// One `[[listen]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: ListenAddr,
    pub tls: bool,
    pub redirect_https: bool,
    pub proxy_protocol: bool,
}

/// Peers whose word about the client address is believed (in a PROXY
/// header, X-Forwarded-For or Forwarded). Everyone else's is ignored.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    pub nets: Vec<ipnet::IpNet>,
    /// Connections on unix sockets (a proxy on the same machine).
    pub unix: bool,
}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && !self.unix
    }
    pub fn contains_ip(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
    pub fn trusts(&self, peer: &crate::addr::Peer) -> bool {
        match peer {
            crate::addr::Peer::Tcp(a) => self.contains_ip(a.ip()),
            crate::addr::Peer::Unix => self.unix,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tls {
    /// Loaded and validated at configuration time, so `check` and reload
    /// refuse a bad certificate before anything is swapped.
    pub store: std::sync::Arc<crate::tls::CertStore>,
    pub handshake_timeout: Duration,
    /// Zero: no file watch.
    pub watch_interval: Duration,
    pub hsts: Option<HeaderValue>,
    pub https_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymlinkPolicy {
    /// Follow a symlink only while its target stays inside the root.
    WithinRoot,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Zstd,
    Gzip,
}

impl Encoding {
    /// The Content-Encoding token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
    /// The file-name suffix of the precompressed twin.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Zstd => ".zst",
            Encoding::Gzip => ".gz",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Files {
    pub index: Vec<String>,
    pub follow_symlinks: SymlinkPolicy,
    pub dotfiles: bool,
    pub dotfiles_allow: Vec<String>,
    pub directory_listing: bool,
    /// Request paths (starting with `/`) inside the root.
    pub fallback: Option<String>,
    pub not_found_page: Option<String>,
    pub server_error_page: Option<String>,
    /// Twins in server preference order.
    pub precompressed: Vec<Encoding>,
    pub etag_hash_limit: u64,
    pub max_ranges: usize,
    pub mime_types: HashMap<String, HeaderValue>,
    pub cache_max_bytes: u64,
    pub cache_max_file_size: u64,
    pub cache_revalidate: Duration,
}

/// A compiled glob rule, matched against the path relative to the root.
#[derive(Debug, Clone)]
pub struct Rule<T> {
    pub glob: GlobMatcher,
    pub value: T,
}

#[derive(Debug, Clone)]
pub struct Headers {
    pub cross_origin_isolation: bool,
    pub nosniff: bool,
    /// Cache-Control rules, first match wins.
    pub cache_rules: Vec<Rule<HeaderValue>>,
    pub cache_default: Option<HeaderValue>,
    /// Extra headers; every matching rule applies, later ones override.
    pub rules: Vec<Rule<Vec<(HeaderName, HeaderValue)>>>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub max_uri_length: usize,
    pub h2_max_concurrent_streams: u32,
    /// Open connections per listener; past it the listener stops accepting
    /// until one closes (the kernel's backlog holds the newcomers).
    pub max_connections: usize,
    /// Largest request body announced by Content-Length that is answered;
    /// larger ones get 413 and the connection closes. Bodies are never read.
    pub max_request_body: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Combined,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub level: String,
    pub format: LogFormat,
    pub access_log: AccessLog,
    pub target: LogTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The journal when stderr is connected to it (JOURNAL_STREAM), else stderr.
    Auto,
    Stderr,
    Journald,
}

/// Reads and validates the configuration; touches no socket.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let layered = Layered::new(sources)?;
    validate(&layered)
}

/// hyper's HTTP/1 parser refuses buffers below 8 KiB.
const MIN_HEADER_BUFFER: usize = 8192;

pub fn validate(layered: &Layered) -> Result<Config, ConfigError> {
    let raw = layered.extract()?;
    let bad = |path: &[&str], msg: String, hint: &str| {
        layered.invalid(path, msg, (!hint.is_empty()).then(|| hint.to_string()))
    };

    let root = match &raw.root {
        None => {
            return Err(bad(
                &["root"],
                "no root directory is set".into(),
                "add `root = \"/srv/www\"` to the config file or pass --root DIR",
            ))
        }
        Some(root) => match root.canonicalize() {
            Ok(p) if p.is_dir() => p,
            Ok(_) => {
                return Err(bad(
                    &["root"],
                    format!("{} is not a directory", root.display()),
                    "root must name the directory to serve",
                ))
            }
            Err(e) => {
                return Err(bad(
                    &["root"],
                    format!("cannot open {}: {e}", root.display()),
                    "create the directory or correct the path",
                ))
            }
        },
    };

    if raw.listen.is_empty() {
        return Err(bad(
            &["listen"],
            "no listen address".into(),
            "add a [[listen]] table with address = \"127.0.0.1:8080\"",
        ));
    }
    let mut listen = Vec::new();
    for (i, l) in raw.listen.iter().enumerate() {
        let idx = i.to_string();
        let key = ["listen", idx.as_str(), "address"];
        let mode = match &l.mode {
            None => None,
            Some(m) => Some(
                u32::from_str_radix(m.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        bad(
                            &["listen", &idx, "mode"],
                            format!("`{m}` is not an octal permission mode"),
                            "write e.g. \"0660\"",
                        )
                    })?,
            ),
        };
        let addr =
            parse_listen_addr(&l.address, mode).map_err(|(msg, hint)| bad(&key, msg, hint))?;
        if l.mode.is_some() && !matches!(addr, ListenAddr::Unix { .. }) {
            return Err(bad(
                &["listen", &idx, "mode"],
                "mode applies to unix sockets only".into(),
                "remove mode, or use address = \"unix:/path\"",
            ));
        }
        if listen.iter().any(|a: &Listen| a.addr.conflicts(&addr)) {
            return Err(bad(
                &["listen", &idx, "address"],
                format!("{addr} is listed twice"),
                "remove the duplicate [[listen]] entry",
            ));
        }
        if l.tls && l.redirect_https {
            return Err(bad(
                &["listen", &idx, "redirect_https"],
                "a listener cannot both serve TLS and redirect to it".into(),
                "set redirect_https on the plain-HTTP listener only",
            ));
        }
        listen.push(Listen {
            addr,
            tls: l.tls,
            redirect_https: l.redirect_https,
            proxy_protocol: l.proxy_protocol,
        });
    }

    let mut trusted_proxies = TrustedProxies::default();
    for (i, t) in raw.trusted_proxies.iter().enumerate() {
        let t = t.trim();
        if t == "unix:" {
            trusted_proxies.unix = true;
            continue;
        }
        let net = t
            .parse::<ipnet::IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                bad(
                    &["trusted_proxies", &i.to_string()],
                    format!("`{t}` is not an address or CIDR block"),
                    "write e.g. \"10.0.0.0/8\", \"127.0.0.1\", \"::1\" or \"unix:\"",
                )
            })?;
        trusted_proxies.nets.push(net.trunc());
    }
    if let Some(i) = listen.iter().position(|l| l.proxy_protocol) {
        if trusted_proxies.is_empty() {
            return Err(bad(
                &["listen", &i.to_string(), "proxy_protocol"],
                "a PROXY protocol listener needs trusted_proxies: a header from anyone else \
                 would let any client choose its logged address"
                    .into(),
                "list the load balancers' addresses, e.g. trusted_proxies = [\"10.0.0.0/8\"]",
            ));
        }
    }

    let duration = |path: &[&str], s: &str| {
        humantime::parse_duration(s).map_err(|e| {
            bad(
                path,
                format!("`{s}` is not a duration: {e}"),
                "write e.g. \"10s\", \"500ms\" or \"2m\"",
            )
        })
    };
    let size = |path: &[&str], s: &str| {
        parse_size(s).ok_or_else(|| {
            bad(
                path,
                format!("`{s}` is not a size"),
                "write e.g. \"64KiB\", \"8MiB\" or a number of bytes",
            )
        })
    };
    let glob = |path: &[&str], s: &str| {
        Glob::new(s.trim_start_matches('/'))
            .map(|g| g.compile_matcher())
            .map_err(|e| {
                bad(
                    path,
                    format!("glob `{s}` does not compile: {}", e.kind()),
                    "globs use *, ** and {a,b}; e.g. \"*.html\" or \"assets/**\"",
                )
            })
    };
    let header_value = |path: &[&str], s: &str| {
        HeaderValue::from_str(s).map_err(|_| {
            bad(
                path,
                format!("`{s}` is not a valid header value"),
                "use visible ASCII characters only",
            )
        })
    };
    let site_path = |path: &[&str], s: &Option<String>| -> Result<Option<String>, ConfigError> {
        match s {
            None => Ok(None),
            Some(p) if p.is_empty() => Ok(None),
            Some(p) if p.contains("..") || p.contains('\0') => Err(bad(
                path,
                format!("`{p}` must be a plain path inside the root"),
                "write it as a request path such as \"/index.html\"",
            )),
            Some(p) => Ok(Some(format!("/{}", p.trim_start_matches('/')))),
        }
    };

    let f = &raw.files;
    let follow_symlinks = match f.follow_symlinks.as_str() {
        "within-root" => SymlinkPolicy::WithinRoot,
        "always" => SymlinkPolicy::Always,
        "never" => SymlinkPolicy::Never,
        other => {
            return Err(bad(
                &["files", "follow_symlinks"],
                format!("unknown policy `{other}`"),
                "use \"within-root\", \"always\" or \"never\"",
            ))
        }
    };
    let mut precompressed = Vec::new();
    for (i, e) in f.precompressed.iter().enumerate() {
        precompressed.push(match e.as_str() {
            "br" => Encoding::Brotli,
            "zstd" => Encoding::Zstd,
            "gzip" => Encoding::Gzip,
            other => {
                return Err(bad(
                    &["files", "precompressed", &i.to_string()],
                    format!("unknown encoding `{other}`"),
                    "use \"br\", \"zstd\" or \"gzip\"",
                ))
            }
        });
    }
    if f.index.iter().any(|i| i.is_empty() || i.contains('/')) {
        return Err(bad(
            &["files", "index"],
            "index names must be plain file names".into(),
            "e.g. [\"index.html\", \"index.htm\"]",
        ));
    }
    let mut mime_types = HashMap::new();
    for (ext, ty) in &f.mime_types {
        let key = ["files", "mime_types", ext.as_str()];
        mime_types.insert(
            ext.trim_start_matches('.').to_ascii_lowercase(),
            header_value(&key, ty)?,
        );
    }
    let files = Files {
        index: f.index.clone(),
        follow_symlinks,
        dotfiles: f.dotfiles,
        dotfiles_allow: f
            .dotfiles_allow
            .iter()
            .map(|p| p.trim_matches('/').to_string())
            .collect(),
        directory_listing: f.directory_listing,
        fallback: site_path(&["files", "fallback"], &f.fallback)?,
        not_found_page: site_path(&["files", "not_found_page"], &f.not_found_page)?,
        server_error_page: site_path(&["files", "server_error_page"], &f.server_error_page)?,
        precompressed,
        etag_hash_limit: size(&["files", "etag_hash_limit"], &f.etag_hash_limit)?,
        max_ranges: f.max_ranges.max(1),
        mime_types,
        cache_max_bytes: size(&["files", "cache_max_bytes"], &f.cache_max_bytes)?,
        cache_max_file_size: size(&["files", "cache_max_file_size"], &f.cache_max_file_size)?,
        cache_revalidate: duration(&["files", "cache_revalidate"], &f.cache_revalidate)?,
    };

    let mut cache_rules = Vec::new();
    for (i, r) in raw.cache.rules.iter().enumerate() {
        let idx = i.to_string();
        cache_rules.push(Rule {
            glob: glob(&["cache", "rules", &idx, "glob"], &r.glob)?,
            value: header_value(&["cache", "rules", &idx, "value"], &r.value)?,
        });
    }
    let cache_default = if raw.cache.default.is_empty() {
        None
    } else {
        Some(header_value(&["cache", "default"], &raw.cache.default)?)
    };
    let mut rules = Vec::new();
    for (i, r) in raw.headers.rules.iter().enumerate() {
        let idx = i.to_string();
        let mut set = Vec::new();
        for (name, value) in &r.set {
            let key = ["headers", "rules", idx.as_str(), "set", name.as_str()];
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                bad(
                    &key,
                    format!("`{name}` is not a valid header name"),
                    "header names are tokens such as \"X-Frame-Options\"",
                )
            })?;
            set.push((name, header_value(&key, value)?));
        }
        rules.push(Rule {
            glob: glob(&["headers", "rules", &idx, "glob"], &r.glob)?,
            value: set,
        });
    }
    let headers = Headers {
        cross_origin_isolation: raw.headers.cross_origin_isolation,
        nosniff: raw.headers.nosniff,
        cache_rules,
        cache_default,
        rules,
    };

    let l = &raw.limits;
    let max_header_size = size(&["limits", "max_header_size"], &l.max_header_size)? as usize;
    if max_header_size < MIN_HEADER_BUFFER {
        return Err(bad(
            &["limits", "max_header_size"],
            format!("{max_header_size} bytes is below the 8KiB minimum"),
            "use at least \"8KiB\"",
        ));
    }
    let limits = Limits {
        header_read_timeout: duration(&["limits", "header_read_timeout"], &l.header_read_timeout)?,
        keep_alive_timeout: duration(&["limits", "keep_alive_timeout"], &l.keep_alive_timeout)?,
        max_header_size,
        max_headers: l.max_headers.max(1),
        max_uri_length: l.max_uri_length.max(16),
        h2_max_concurrent_streams: l.h2_max_concurrent_streams.max(1),
        max_connections: l.max_connections.max(1),
        max_request_body: size(&["limits", "max_request_body"], &l.max_request_body)?,
    };

    let level = raw.log.level.clone();
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(bad(
            &["log", "level"],
            format!("`{level}` is not a log filter"),
            "use trace, debug, info, warn or error (or target=level pairs)",
        ));
    }
    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(bad(
                &["log", "format"],
                format!("unknown format `{other}`"),
                "use \"text\" or \"json\"",
            ))
        }
    };
    let access_log = match raw.log.access_log.as_str() {
        "off" => AccessLog::Off,
        "combined" => AccessLog::Combined,
        "json" => AccessLog::Json,
        other => {
            return Err(bad(
                &["log", "access_log"],
                format!("unknown access log format `{other}`"),
                "use \"combined\", \"json\" or \"off\"",
            ))
        }
    };

    let metrics = MetricsConfig {
        address: match raw.metrics.address.as_str() {
            "" => None,
            a => Some(
                parse_listen_addr(a, None)
                    .map_err(|(msg, hint)| bad(&["metrics", "address"], msg, hint))?,
            ),
        },
        main_health_paths: raw.metrics.main_health_paths,
    };
    if let Some(m) = &metrics.address {
        if let Some(i) = listen.iter().position(|l| l.addr.conflicts(m)) {
            return Err(bad(
                &["metrics", "address"],
                format!("{m} is also listen[{i}]"),
                "give the metrics listener its own address, or set main_health_paths = true",
            ));
        }
    }

    let mut specs = Vec::new();
    for c in &raw.tls.certificates {
        specs.push(crate::tls::CertSpec {
            cert: c.cert.clone(),
            key: c.key.clone(),
            names: c.names.clone(),
        });
    }
    let store = crate::tls::CertStore::load(&specs).map_err(|e| {
        use crate::tls::TlsError;
        // Point at the entry and the file the error is about.
        let failed = match &e {
            TlsError::Read { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::BadCertificate { path, .. }
            | TlsError::Expired { path, .. }
            | TlsError::NoNames { path }
            | TlsError::NoKey { path }
            | TlsError::BadKey { path, .. } => path.clone(),
            TlsError::KeyMismatch { key, .. } => key.clone(),
        };
        let index = specs
            .iter()
            .position(|s| s.cert == failed || s.key == failed)
            .unwrap_or(0);
        let field = if specs
            .get(index)
            .is_some_and(|s| s.key == failed && s.cert != failed)
        {
            "key"
        } else {
            "cert"
        };
        bad(
            &["tls", "certificates", &index.to_string(), field],
            e.to_string(),
            "",
        )
    })?;
    if listen.iter().any(|l| l.tls) && store.certs.is_empty() {
        let idx = listen.iter().position(|l| l.tls).unwrap_or(0).to_string();
        return Err(bad(
            &["listen", &idx, "tls"],
            "a TLS listener needs a certificate".into(),
            "add [[tls.certificates]] with cert = \"/path/fullchain.pem\" and key = \"/path/key.pem\"",
        ));
    }
    let tls = Tls {
        store: std::sync::Arc::new(store),
        handshake_timeout: duration(&["tls", "handshake_timeout"], &raw.tls.handshake_timeout)?,
        watch_interval: duration(&["tls", "watch_interval"], &raw.tls.watch_interval)?,
        hsts: if raw.tls.hsts.is_empty() {
            None
        } else {
            Some(header_value(&["tls", "hsts"], &raw.tls.hsts)?)
        },
        https_port: raw.tls.https_port,
    };

    let target = match raw.log.target.as_str() {
        "auto" => LogTarget::Auto,
        "stderr" => LogTarget::Stderr,
        "journald" => LogTarget::Journald,
        other => {
            return Err(bad(
                &["log", "target"],
                format!("unknown log target `{other}`"),
                "use \"auto\", \"stderr\" or \"journald\"",
            ))
        }
    };

    Ok(Config {
        source: layered.config_file().map(|p| p.to_path_buf()),
        root,
        listen,
        shutdown_timeout: duration(&["shutdown_timeout"], &raw.shutdown_timeout)?,
        workers: raw.workers,
        allow_root: raw.allow_root,
        trusted_proxies,
        files,
        headers,
        limits,
        log: Log {
            level,
            format,
            access_log,
            target,
        },
        tls,
        metrics,
    })
}

/// `IP:PORT`, `unix:/path` or `systemd:NAME`; errors as (message, hint).
fn parse_listen_addr(
    address: &str,
    mode: Option<u32>,
) -> Result<ListenAddr, (String, &'static str)> {
    if let Some(path) = address.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err((
                format!("`{address}` needs an absolute socket path"),
                "write e.g. \"unix:/run/ruchy-serve/http.sock\"",
            ));
        }
        Ok(ListenAddr::Unix {
            path: PathBuf::from(path),
            mode,
        })
    } else if let Some(name) = address.strip_prefix("systemd:") {
        if name.is_empty() || name.len() > 255 || name.contains(':') {
            return Err((
                format!("`{address}` needs a FileDescriptorName"),
                "write e.g. \"systemd:http\" to match FileDescriptorName=http in the .socket unit",
            ));
        }
        Ok(ListenAddr::Systemd(name.to_string()))
    } else {
        address.parse().map(ListenAddr::Tcp).map_err(|_| {
            (
                format!("`{address}` is not a listen address"),
                "write e.g. \"127.0.0.1:8080\", \"[::]:80\", \"unix:/run/ruchy-serve/http.sock\" or \"systemd:http\"",
            )
        })
    }
}

/// "64KiB", "8 MiB", "1MB", "512" -> bytes. Binary (KiB) and decimal (KB)
/// units are both accepted because operators write both.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    num.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("8 MiB"), Some(8 << 20));
        assert_eq!(parse_size("1MB"), Some(1_000_000));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("KiB"), None);
    }
}
