//! The configuration exactly as an operator writes it: serde types that figment
//! fills from the TOML file, `RUCHY_SERVE_*` variables and the command line.
//!
//! Durations and sizes stay strings here so that [`super::validate`] can parse
//! them and name the key in its error; every struct denies unknown fields so a
//! typo is an error instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Directory served. Required when a config file is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// How long in-flight requests may run after SIGTERM before we exit anyway.
    pub shutdown_timeout: String,
    /// Runtime worker threads; 0 means one per CPU core. Read at start only.
    pub workers: usize,
    /// Start even when running as root (refused by default).
    pub allow_root: bool,
    /// Peers (CIDR, address, or "unix:") whose PROXY header, X-Forwarded-For
    /// and Forwarded are believed for the client address in logs.
    pub trusted_proxies: Vec<String>,
    pub listen: Vec<RawListen>,
    pub files: RawFiles,
    pub headers: RawHeaders,
    pub cache: RawCache,
    pub limits: RawLimits,
    pub log: RawLog,
    pub tls: RawTls,
    pub metrics: RawMetrics,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            root: None,
            shutdown_timeout: "30s".into(),
            workers: 0,
            allow_root: false,
            trusted_proxies: Vec::new(),
            listen: vec![RawListen {
                address: "127.0.0.1:8080".into(),
                mode: None,
                tls: false,
                redirect_https: false,
                proxy_protocol: false,
            }],
            files: RawFiles::default(),
            headers: RawHeaders::default(),
            cache: RawCache::default(),
            limits: RawLimits::default(),
            log: RawLog::default(),
            tls: RawTls::default(),
            metrics: RawMetrics::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// `IP:PORT`, `[IPv6]:PORT`, `unix:/path` or `systemd:NAME`.
    pub address: String,
    /// Permission bits of a unix socket file, octal (e.g. "0660").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Serve HTTPS on this socket with the certificates of `[tls]`.
    #[serde(default)]
    pub tls: bool,
    /// Answer every request with a 308 to the same host and path over https.
    #[serde(default)]
    pub redirect_https: bool,
    /// Expect a PROXY protocol (v1 or v2) header first, from `trusted_proxies` only.
    #[serde(default)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFiles {
    pub index: Vec<String>,
    /// `within-root`, `always` or `never`.
    pub follow_symlinks: String,
    /// Serve names starting with a dot (other than the allowed prefixes)?
    pub dotfiles: bool,
    /// Dot-paths served even when `dotfiles = false`.
    pub dotfiles_allow: Vec<String>,
    pub directory_listing: bool,
    /// Single-page-app fallback: a path inside the root served for unmatched paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_found_page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_error_page: Option<String>,
    /// Precompressed twins looked for beside a file: `br`, `zstd`, `gzip`.
    pub precompressed: Vec<String>,
    /// Files up to this size get an ETag hashed from their content.
    pub etag_hash_limit: String,
    /// More ranges than this in one request get the whole file (200).
    pub max_ranges: usize,
    /// Extension (without the dot) -> Content-Type, overriding the built-in table.
    pub mime_types: BTreeMap<String, String>,
    /// In-memory cache of small files: total body bytes ("0" turns it off).
    pub cache_max_bytes: String,
    /// Largest file kept in the cache.
    pub cache_max_file_size: String,
    /// How long a cached file is trusted before the file system is asked again.
    pub cache_revalidate: String,
}

impl Default for RawFiles {
    fn default() -> Self {
        RawFiles {
            index: vec!["index.html".into()],
            follow_symlinks: "within-root".into(),
            dotfiles: false,
            dotfiles_allow: vec![".well-known".into()],
            directory_listing: false,
            fallback: None,
            not_found_page: None,
            server_error_page: None,
            precompressed: vec!["br".into(), "zstd".into(), "gzip".into()],
            etag_hash_limit: "64MiB".into(),
            max_ranges: 16,
            mime_types: BTreeMap::new(),
            cache_max_bytes: "64MiB".into(),
            cache_max_file_size: "1MiB".into(),
            cache_revalidate: "1s".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHeaders {
    pub cross_origin_isolation: bool,
    pub nosniff: bool,
    pub rules: Vec<RawHeaderRule>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            cross_origin_isolation: false,
            nosniff: true,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRule {
    pub glob: String,
    pub set: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    /// Cache-Control for files that match no rule; empty sends none.
    pub default: String,
    pub rules: Vec<RawCacheRule>,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            default: "no-cache".into(),
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheRule {
    pub glob: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub header_read_timeout: String,
    pub keep_alive_timeout: String,
    pub max_header_size: String,
    pub max_headers: usize,
    pub max_uri_length: usize,
    pub h2_max_concurrent_streams: u32,
    pub max_connections: usize,
    pub max_request_body: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            header_read_timeout: "10s".into(),
            keep_alive_timeout: "75s".into(),
            max_header_size: "16KiB".into(),
            max_headers: 100,
            max_uri_length: 8192,
            h2_max_concurrent_streams: 128,
            max_connections: 16384,
            max_request_body: "8KiB".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// A tracing filter directive: `info`, `debug`, `ruchy_serve=debug,warn`.
    pub level: String,
    /// `text` or `json`, for the daemon's own messages.
    pub format: String,
    /// `combined`, `json` or `off`.
    pub access_log: String,
    /// `auto` (the journal when stderr is connected to it), `stderr` or `journald`.
    pub target: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "text".into(),
            access_log: "combined".into(),
            target: "auto".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub certificates: Vec<RawCertificate>,
    /// A client must finish its handshake within this time.
    pub handshake_timeout: String,
    /// How often certificate and key files are checked for changes; "0s" off.
    pub watch_interval: String,
    /// Strict-Transport-Security value on TLS responses; empty sends none.
    pub hsts: String,
    /// The port named in `redirect_https` Locations (omitted when 443).
    pub https_port: u16,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            certificates: Vec::new(),
            handshake_timeout: "10s".into(),
            watch_interval: "10s".into(),
            hsts: String::new(),
            https_port: 443,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM: the certificate followed by its chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Server names (SNI) this certificate answers, `*.example.com` allowed.
    /// Empty: the certificate's own DNS names.
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Listener for /metrics, /healthz and /readyz; "" turns it off.
    pub address: String,
    /// Also answer /healthz and /readyz on the main listeners.
    pub main_health_paths: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            address: "127.0.0.1:9898".into(),
            main_health_paths: false,
        }
    }
}
