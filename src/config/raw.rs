//! The configuration exactly as an operator writes it: serde types that figment
//! fills from the TOML file, `RUCHY_SERVE_*` variables and the command line.
//!
//! Sizes, durations and keywords are typed ([`super::types`]), so serde
//! parses them while figment reads the sources and a bad one is reported
//! with its key and line; what needs more than one value to check (or the
//! file system) is left to each section's `from_raw`. Every struct denies
//! unknown fields so a typo is an error instead of a silently ignored
//! setting.

// Every key is documented where operators read it, in the reference
// config/ruchy-serve.toml (and README's configuration table); the structs
// mirror that file, and the fields that need a reason carry one here.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use figment::value::Dict;
use serde::{Deserialize, Serialize};

use super::types::{AccessLog, Encoding, LogFormat, LogTarget, Mode, Size, Span, SymlinkPolicy};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Directory served. Required when a config file is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// How long in-flight requests may run after SIGTERM before we exit anyway.
    pub shutdown_timeout: Span,
    /// Runtime worker threads; 0 means one per CPU core. Read at start only.
    pub workers: usize,
    /// Most threads that wait for the disk at once. Read at start only.
    pub blocking_threads: usize,
    /// Start even when running as root (refused by default).
    pub allow_root: bool,
    /// Peers (CIDR, address, or "unix:") whose PROXY header, X-Forwarded-For
    /// and Forwarded are believed for the client address in logs.
    pub trusted_proxies: Vec<String>,
    /// The one header that names the client behind them.
    pub client_header: super::types::ClientHeader,
    pub listen: Vec<RawListen>,
    pub files: RawFiles,
    pub headers: RawHeaders,
    pub cache: RawCache,
    pub limits: RawLimits,
    pub log: RawLog,
    pub tls: RawTls,
    pub acme: RawAcme,
    pub metrics: RawMetrics,
    pub redirects: Vec<RawRedirect>,
    /// The top-level site's path rules (`config::locations`).
    pub locations: Vec<RawLocation>,
    pub compression: RawCompression,
    /// Requests whose Host names no `[[sites]]` entry go to the top-level
    /// site; `false` answers them 421 instead.
    pub default_site: bool,
    pub sites: Vec<RawSite>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            root: None,
            shutdown_timeout: Span(Duration::from_secs(30)),
            workers: 0,
            blocking_threads: 32,
            allow_root: false,
            trusted_proxies: Vec::new(),
            client_header: super::types::ClientHeader::XForwardedFor,
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
            acme: RawAcme::default(),
            metrics: RawMetrics::default(),
            redirects: Vec::new(),
            locations: Vec::new(),
            compression: RawCompression::default(),
            default_site: true,
            sites: Vec::new(),
        }
    }
}

/// One `[[sites]]` entry (a virtual host). Its `files`, `headers` and
/// `cache` tables are kept as written here and laid over the top-level ones
/// key by key (nginx's http -> server inheritance) by `config::sites`, which
/// then types them; `redirects` and `certificates` are the site's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// Host (and SNI) names: exact, or `*.example.com` for one label more.
    pub names: Vec<String>,
    pub root: PathBuf,
    #[serde(default, skip_serializing_if = "Dict::is_empty")]
    pub files: Dict,
    #[serde(default, skip_serializing_if = "Dict::is_empty")]
    pub headers: Dict,
    #[serde(default, skip_serializing_if = "Dict::is_empty")]
    pub cache: Dict,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<RawRedirect>,
    /// The site's own access-log file (buffer and flush as `log`'s);
    /// unset: the top level's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_path: Option<String>,
    /// On-the-fly compression for this site; unset: `compression.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<bool>,
    /// The site's own path rules (the top level's are the default site's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<RawLocation>,
    /// The site's certificates; their SNI names default to the site's names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<RawCertificate>,
    /// Obtain and renew the site's certificate from `[acme]`'s CA.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acme: bool,
}

/// `[compression]`: on-the-fly compression of files with no twin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCompression {
    pub enabled: bool,
    /// Codings offered, in server preference order.
    pub encodings: Vec<Encoding>,
    /// Content types compressed: exact (`application/json`) or `type/*`.
    pub types: Vec<String>,
    pub min_size: Size,
    pub max_size: Size,
    pub gzip_level: u32,
    pub brotli_level: u32,
    pub zstd_level: i32,
    /// Bytes of compressed variants kept.
    pub cache_max_bytes: Size,
    /// Compressions running at once; 0 means one per CPU core.
    pub max_concurrent: usize,
}

impl Default for RawCompression {
    fn default() -> Self {
        RawCompression {
            enabled: true,
            encodings: vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip],
            types: [
                "text/*",
                "application/javascript",
                "application/json",
                "application/manifest+json",
                "application/wasm",
                "application/xml",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            min_size: Size(256),
            max_size: Size(8 << 20),
            gzip_level: 9,
            brotli_level: 9,
            zstd_level: 12,
            cache_max_bytes: Size(64 << 20),
            max_concurrent: 0,
        }
    }
}

/// One `[[redirects]]` rule (checked and compiled by `config::redirects`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub from: String,
    pub to: String,
    #[serde(default = "permanent_redirect")]
    pub status: u16,
    #[serde(default = "yes")]
    pub keep_query: bool,
}

/// One `[[locations]]` entry: nginx's `location` block (checked and
/// compiled by `config::locations`). Exactly one of `exact`, `prefix`,
/// `glob` and `regex` says which paths it takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLocation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `allow ADDR|CIDR|all` and `deny ...`, first match wins (nginx's order).
    pub access: Vec<String>,
    /// An htpasswd file (bcrypt entries): HTTP Basic authentication here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<PathBuf>,
    /// The realm a browser's password prompt shows (default "Restricted").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Answer with this status instead of a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#return: Option<u16>,
    /// With a 3xx `return`: where to (captures of `regex` as {1} or {name}).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// With a 3xx `return`: append the request's query (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_query: Option<bool>,
    /// With another `return`: the body (text/plain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Response headers added (replacing one of the same name).
    pub headers: BTreeMap<String, String>,
    /// `headers` on every response, not only 2xx and 3xx (nginx's `always`).
    pub always: bool,
    /// Cache-Control on 2xx and 3xx answers here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// nginx's `expires`: Expires and Cache-Control max-age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<Span>,
    /// On-the-fly compression here; unset: the server's `[compression]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<bool>,
    /// `files` keys laid over the site's for paths here.
    #[serde(skip_serializing_if = "Dict::is_empty")]
    pub files: Dict,
}

fn permanent_redirect() -> u16 {
    308
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// `IP:PORT`, `[IPv6]:PORT`, `unix:/path` or `systemd:NAME`.
    pub address: String,
    /// Permission bits of a unix socket file, octal (e.g. "0660").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
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
    pub follow_symlinks: SymlinkPolicy,
    /// Serve names starting with a dot (other than the allowed prefixes)?
    pub dotfiles: bool,
    /// Dot-paths served even when `dotfiles = false`.
    pub dotfiles_allow: Vec<String>,
    pub directory_listing: bool,
    /// Single-page-app fallback: a path inside the root served for unmatched paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// nginx's try_files: what else is tried for a path that is not found,
    /// e.g. ["{path}", "{path}.html", "{path}/index.html"].
    pub r#try: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_found_page: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_error_page: Option<String>,
    /// Precompressed twins looked for beside a file: `br`, `zstd`, `gzip`.
    pub precompressed: Vec<Encoding>,
    /// Files up to this size get an ETag hashed from their content.
    pub etag_hash_limit: Size,
    /// More ranges than this in one request get the whole file (200).
    pub max_ranges: usize,
    /// Extension (without the dot) -> Content-Type, overriding the built-in table.
    pub mime_types: BTreeMap<String, String>,
    /// In-memory cache of small files: total body bytes ("0" turns it off).
    pub cache_max_bytes: Size,
    /// Largest file kept in the cache.
    pub cache_max_file_size: Size,
    /// How long a cached file is trusted before the file system is asked again.
    pub cache_revalidate: Span,
    /// How long after a change a file's identity is not trusted to stand for
    /// its content.
    pub settle_time: Span,
}

impl Default for RawFiles {
    fn default() -> Self {
        RawFiles {
            index: vec!["index.html".into()],
            follow_symlinks: SymlinkPolicy::WithinRoot,
            dotfiles: false,
            dotfiles_allow: vec![".well-known".into()],
            directory_listing: false,
            fallback: None,
            r#try: Vec::new(),
            not_found_page: None,
            server_error_page: None,
            precompressed: vec![Encoding::Brotli, Encoding::Zstd, Encoding::Gzip],
            etag_hash_limit: Size(64 << 20),
            max_ranges: 16,
            mime_types: BTreeMap::new(),
            cache_max_bytes: Size(64 << 20),
            cache_max_file_size: Size(1 << 20),
            cache_revalidate: Span(Duration::from_secs(1)),
            settle_time: Span(crate::fileid::SETTLE),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHeaders {
    pub cross_origin_isolation: bool,
    pub nosniff: bool,
    pub rules: Vec<RawHeaderRule>,
    /// Headers on every response of the site, whatever its status (nginx's
    /// server-level `add_header ... always`).
    pub always: BTreeMap<String, String>,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            cross_origin_isolation: false,
            nosniff: true,
            rules: Vec::new(),
            always: BTreeMap::new(),
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
    pub header_read_timeout: Span,
    pub keep_alive_timeout: Span,
    pub max_header_size: Size,
    pub max_headers: usize,
    pub max_uri_length: usize,
    pub h2_max_concurrent_streams: u32,
    pub max_connections: usize,
    pub max_request_body: Size,
    /// A response whose bytes have not moved this long is ended.
    pub send_timeout: Span,
    /// Requests on one connection before it is closed gracefully; 0: no limit.
    pub max_requests_per_connection: u64,
    /// Age at which a connection is closed gracefully; "0s": no limit.
    pub max_connection_age: Span,
    /// Response bytes one connection may hold in user space.
    pub max_response_buffer: Size,
    /// Response bytes all connections together may hold; unset: a quarter
    /// of the memory the process may use.
    pub max_response_memory: Option<Size>,
    /// Open connections one client address may have; 0: no limit.
    pub max_connections_per_client: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            header_read_timeout: Span(Duration::from_secs(10)),
            keep_alive_timeout: Span(Duration::from_secs(75)),
            max_header_size: Size(16 << 10),
            max_headers: 100,
            max_uri_length: 8192,
            h2_max_concurrent_streams: 128,
            max_connections: 16384,
            max_request_body: Size(8 << 10),
            send_timeout: Span(Duration::from_secs(60)),
            max_requests_per_connection: 0,
            max_connection_age: Span(Duration::ZERO),
            max_response_buffer: Size(4 << 20),
            max_response_memory: None,
            max_connections_per_client: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// A tracing filter directive: `info`, `debug`, `ruchy_serve=debug,warn`.
    pub level: String,
    /// `text` or `json`, for the daemon's own messages.
    pub format: LogFormat,
    /// `combined`, `json` or `off`.
    pub access_log: AccessLog,
    /// `auto` (the journal when stderr is connected to it), `stderr` or `journald`.
    pub target: LogTarget,
    /// A file for the access log; `""`: the access log goes where `target` says.
    pub access_log_path: String,
    /// Bytes gathered before one write to the access-log file.
    pub access_log_buffer: Size,
    /// Longest time a line waits in the buffer before it is written.
    pub access_log_flush: Span,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: LogFormat::Text,
            access_log: AccessLog::Combined,
            target: LogTarget::Auto,
            access_log_path: String::new(),
            access_log_buffer: Size(64 << 10),
            access_log_flush: Span(std::time::Duration::from_secs(1)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub certificates: Vec<RawCertificate>,
    /// A client must finish its handshake within this time.
    pub handshake_timeout: Span,
    /// How often certificate and key files are checked for changes; "0s" off.
    pub watch_interval: Span,
    /// Strict-Transport-Security value on TLS responses; empty sends none.
    pub hsts: String,
    /// The port named in `redirect_https` Locations (omitted when 443).
    pub https_port: u16,
    /// The host `redirect_https` sends every request to; "": its own host.
    pub redirect_host: String,
    /// The status of `redirect_https` answers: 301, 302, 307 or 308.
    pub redirect_status: u16,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            certificates: Vec::new(),
            handshake_timeout: Span(Duration::from_secs(10)),
            watch_interval: Span(Duration::from_secs(10)),
            hsts: String::new(),
            https_port: 443,
            redirect_host: String::new(),
            redirect_status: 308,
        }
    }
}

/// `[acme]`: the CA and account for sites with `acme = true`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAcme {
    /// The CA's directory URL; "": Let's Encrypt's production one.
    pub directory: String,
    /// Account contacts, `mailto:` URLs.
    pub contact: Vec<String>,
    /// The CA's terms of service, agreed to explicitly.
    pub agree_to_terms: bool,
    /// PEM root(s) to trust for the CA's own HTTPS (private or test CAs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_root: Option<PathBuf>,
    /// Account and certificates; unset: `$STATE_DIRECTORY`, else
    /// /var/lib/ruchy-serve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Challenge types, in the order tried.
    pub challenges: Vec<String>,
    /// Renew when this much validity is left; "0s": at two thirds of the
    /// lifetime.
    pub renew_before: Span,
    /// First wait after a failed order (doubling, with jitter).
    pub retry_min: Span,
    /// Longest wait between attempts.
    pub retry_max: Span,
    /// External account binding (CAs that require one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eab_kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eab_hmac_key: Option<String>,
}

impl Default for RawAcme {
    fn default() -> Self {
        RawAcme {
            directory: String::new(),
            contact: Vec::new(),
            agree_to_terms: false,
            ca_root: None,
            state_dir: None,
            challenges: vec!["http-01".into(), "tls-alpn-01".into()],
            renew_before: Span(Duration::ZERO),
            retry_min: Span(Duration::from_secs(60)),
            retry_max: Span(Duration::from_secs(6 * 3600)),
            eab_kid: None,
            eab_hmac_key: None,
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
