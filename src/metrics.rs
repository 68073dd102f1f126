//! Prometheus metrics: one [`Metrics`] value (its own `Registry`, no globals)
//! shared through [`crate::lifecycle::Shared`], typed handles, and labels from
//! fixed sets only: the configured listener address, a normalized method, a
//! 3-digit status code. Never the raw path, host or user agent, which would
//! let any client grow the series count without bound.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Request-duration buckets for static serving: cached small files answer in
/// tens of microseconds, disk reads in milliseconds, big downloads to slow
/// clients in seconds. From 50 µs to 10 s, roughly x2.5 per step.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// The access-log file's counters (process-wide), handed to its writer.
#[derive(Debug, Clone)]
pub struct AccessLogCounters {
    /// Lines dropped because the buffer was full.
    pub dropped_full: prometheus::IntCounter,
    /// Lines lost with a write that failed.
    pub dropped_error: prometheus::IntCounter,
    /// Writes (and reopens) that failed.
    pub write_errors: prometheus::IntCounter,
}

/// The ACME manager's series, by site (its first name).
#[derive(Debug, Clone)]
pub struct AcmeMetrics {
    /// Orders by result.
    pub orders: IntCounterVec,
    /// Failed attempts since the last success.
    pub failures: IntGaugeVec,
    /// The next order or retry, Unix seconds.
    pub next_attempt: GaugeVec,
}

/// Every metric the server exports, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// `http_requests_total` by listener, method and status.
    pub requests: IntCounterVec,
    /// Request durations by listener, until the body is sent.
    pub duration: HistogramVec,
    /// Response body bytes sent, by listener.
    pub body_bytes: IntCounterVec,
    /// Connections accepted, by listener and scheme.
    pub conns_accepted: IntCounterVec,
    /// Connections open now, by listener.
    pub conns_open: IntGaugeVec,
    /// Of those, HTTP/1 connections waiting for a request with only their
    /// socket (before the first, or quiet since the last): nginx's "Waiting".
    pub conns_waiting: IntGaugeVec,
    /// Connections refused before HTTP (PROXY header, TLS), by reason.
    pub conns_rejected: IntCounterVec,
    /// Connections a deadline or limit ended, by reason.
    pub conns_closed: IntCounterVec,
    /// Times a listener hit `max_connections`.
    pub conns_limited: IntCounterVec,
    /// TLS handshakes by result and protocol version.
    pub tls_handshakes: IntCounterVec,
    /// Certificate expiry times, by name, site and source (file, acme).
    pub cert_expiry: GaugeVec,
    /// Unusable certificates (and uncovered names), by site and file.
    pub cert_errors: IntGaugeVec,
    /// The ACME manager's handles.
    pub acme: AcmeMetrics,
    /// Configuration reloads by result.
    pub reloads: IntCounterVec,
    /// When the configuration last loaded, Unix seconds.
    pub last_reload_success: Gauge,
    /// The configuration generation serving now.
    pub generation: IntGauge,
    /// The file cache counters.
    pub file_cache: crate::serve::cache::Stats,
    /// On-the-fly compression, across generations.
    pub compression: std::sync::Arc<crate::serve::compress::Stats>,
    /// The access-log file's counters.
    pub access_log: AccessLogCounters,
    /// The process-wide response-memory pool's handles.
    pub response_memory: crate::serve::body::PoolStats,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The methods counted by name; anything else is `other`.
pub fn method_label(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("valid metric definition");
                registry
                    .register(Box::new(m.clone()))
                    .expect("unique metric");
                m
            }};
        }
        let requests = reg!(IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by listener, method, status code and site."
            ),
            &["listener", "method", "code", "site"]
        ));
        let duration = reg!(HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request head to the last body byte handed to the socket."
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["listener"]
        ));
        let body_bytes = reg!(IntCounterVec::new(
            Opts::new(
                "http_response_body_bytes_total",
                "Response body bytes sent, by listener and site."
            ),
            &["listener", "site"]
        ));
        let conns_accepted = reg!(IntCounterVec::new(
            Opts::new("http_connections_accepted_total", "Connections accepted."),
            &["listener", "protocol"]
        ));
        let conns_open = reg!(IntGaugeVec::new(
            Opts::new("http_connections_open", "Connections open now."),
            &["listener"]
        ));
        let conns_waiting = reg!(IntGaugeVec::new(
            Opts::new(
                "http_connections_waiting",
                "Open connections waiting for their next request with no buffers held."
            ),
            &["listener"]
        ));
        let conns_rejected = reg!(IntCounterVec::new(
            Opts::new(
                "http_connections_rejected_total",
                "Connections closed before any request, by reason."
            ),
            &["listener", "reason"]
        ));
        let conns_closed = reg!(IntCounterVec::new(
            Opts::new(
                "http_connections_closed_total",
                "Connections ended by a deadline or limit (first_request_timeout, header_timeout, \
                 idle, send_timeout, max_age, max_requests, h2_flood)."
            ),
            &["listener", "reason"]
        ));
        let conns_limited = reg!(IntCounterVec::new(
            Opts::new(
                "http_connections_limit_reached_total",
                "Times a listener stopped accepting because limits.max_connections were open."
            ),
            &["listener"]
        ));
        let tls_handshakes = reg!(IntCounterVec::new(
            Opts::new(
                "ruchy_serve_tls_handshakes_total",
                "TLS handshakes by result and protocol version."
            ),
            &["listener", "result", "version"]
        ));
        let cert_expiry = reg!(GaugeVec::new(
            Opts::new(
                "ruchy_serve_tls_certificate_expiry_timestamp_seconds",
                "Certificate notAfter, Unix time."
            ),
            &["name", "site", "source"]
        ));
        let cert_errors = reg!(IntGaugeVec::new(
            Opts::new(
                "ruchy_serve_tls_certificate_errors",
                "Problems with a configured certificate (unreadable, expired, wrong key, names it does not cover); its names fail their handshakes."
            ),
            &["site", "cert"]
        ));
        let acme = AcmeMetrics {
            orders: reg!(IntCounterVec::new(
                Opts::new(
                    "ruchy_serve_acme_orders_total",
                    "ACME certificate orders by site and result (issued, failed)."
                ),
                &["site", "result"]
            )),
            failures: reg!(IntGaugeVec::new(
                Opts::new(
                    "ruchy_serve_acme_consecutive_failures",
                    "Failed ACME attempts for a site since its last success."
                ),
                &["site"]
            )),
            next_attempt: reg!(GaugeVec::new(
                Opts::new(
                    "ruchy_serve_acme_next_attempt_timestamp_seconds",
                    "When the ACME manager next orders (or retries) a site's certificate, Unix time."
                ),
                &["site"]
            )),
        };
        let reloads = reg!(IntCounterVec::new(
            Opts::new(
                "ruchy_serve_config_reloads_total",
                "Configuration reloads by result."
            ),
            &["result"]
        ));
        let last_reload_success = reg!(Gauge::new(
            "ruchy_serve_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load."
        ));
        let generation = reg!(IntGauge::new(
            "ruchy_serve_config_generation",
            "Configuration generation in use."
        ));
        let file_cache = crate::serve::cache::Stats {
            hits: reg!(prometheus::IntCounter::new(
                "ruchy_serve_file_cache_hits_total",
                "Requests answered from the in-memory file cache."
            )),
            misses: reg!(prometheus::IntCounter::new(
                "ruchy_serve_file_cache_misses_total",
                "File requests that had to go to the file system."
            )),
            evictions: reg!(prometheus::IntCounter::new(
                "ruchy_serve_file_cache_evictions_total",
                "Cache entries dropped: the least recently used past cache_max_bytes, or unused for a minute."
            )),
            bytes: reg!(IntGauge::new(
                "ruchy_serve_file_cache_bytes",
                "Bytes held by the file cache: keys, headers, bodies and a fixed overhead per entry."
            )),
            stale_twins: reg!(prometheus::IntCounter::new(
                "ruchy_serve_file_stale_twins_skipped_total",
                "Precompressed files (.br, .zst, .gz) not served because their original is newer \
                 or they do not decode to it; the original is served until the twin is rebuilt."
            )),
            ran: {
                let ran = reg!(IntCounterVec::new(
                    Opts::new(
                        "ruchy_serve_file_work_total",
                        "File-system work (a request's resolution, or a chunk of a streamed file) \
                         by where it ran: inline from the kernel's caches, or on the blocking pool \
                         because it had to wait for the disk."
                    ),
                    &["ran"]
                ));
                crate::serve::body::Ran {
                    inline: ran.with_label_values(&["inline"]),
                    pool: ran.with_label_values(&["pool"]),
                }
            },
            auth_failures: reg!(prometheus::IntCounter::new(
                "ruchy_serve_auth_failures_total",
                "Requests with Basic credentials a location's basic_auth refused \
                 (wrong password, unknown user or malformed); requests without any are not counted."
            )),
            auth_busy: reg!(prometheus::IntCounter::new(
                "ruchy_serve_auth_busy_total",
                "Requests with Basic credentials answered 429: the password checks' queue, or the \
                 client address's share of it, was full."
            )),
        };
        let compression = std::sync::Arc::new(crate::serve::compress::Stats {
            made: reg!(prometheus::IntCounter::new(
                "ruchy_serve_compression_variants_made_total",
                "Compressed variants made on the fly (once per file version and coding)."
            )),
            busy: reg!(prometheus::IntCounter::new(
                "ruchy_serve_compression_busy_total",
                "Responses sent uncompressed because every compression slot was busy."
            )),
            running: reg!(prometheus::IntGauge::new(
                "ruchy_serve_compression_running",
                "Compressions running now (at most compression.max_concurrent)."
            )),
            bytes: reg!(prometheus::IntGauge::new(
                "ruchy_serve_compression_cache_bytes",
                "Bytes of compressed variants kept (compression.cache_max_bytes)."
            )),
        });
        let dropped = reg!(IntCounterVec::new(
            Opts::new(
                "ruchy_serve_access_log_dropped_total",
                "Access-log lines not written: buffer_full (the disk did not keep up), write_error."
            ),
            &["reason"]
        ));
        let access_log = AccessLogCounters {
            dropped_full: dropped.with_label_values(&["buffer_full"]),
            dropped_error: dropped.with_label_values(&["write_error"]),
            write_errors: reg!(prometheus::IntCounter::new(
                "ruchy_serve_access_log_write_errors_total",
                "Writes and reopens of the access-log file that failed."
            )),
        };
        let response_memory = crate::serve::body::PoolStats {
            bytes: reg!(IntGauge::new(
                "ruchy_serve_response_memory_bytes",
                "Response body bytes held in user memory now, across all connections \
                 (file chunks, cached files and compressed variants being sent, listings)."
            )),
            limit: reg!(IntGauge::new(
                "ruchy_serve_response_memory_limit_bytes",
                "limits.max_response_memory: what response bodies may hold together."
            )),
            waits: reg!(prometheus::IntCounter::new(
                "ruchy_serve_response_memory_waits_total",
                "Response bodies that waited for room under limits.max_response_memory."
            )),
        };
        let build_info = reg!(IntGaugeVec::new(
            Opts::new("ruchy_serve_build_info", "Build information; always 1."),
            &["version", "commit"]
        ));
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("RUCHY_BUILD_COMMIT").unwrap_or("unknown"),
            ])
            .set(1);
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(ProcessMetrics::new()))
            .expect("process collector");
        Metrics {
            registry,
            requests,
            duration,
            body_bytes,
            conns_accepted,
            conns_open,
            conns_waiting,
            conns_rejected,
            conns_closed,
            conns_limited,
            tls_handshakes,
            cert_expiry,
            cert_errors,
            acme,
            reloads,
            last_reload_success,
            generation,
            file_cache,
            compression,
            access_log,
            response_memory,
        }
    }

    /// Replaces the certificate expiry and error series with the current
    /// set.
    pub fn set_certificates(&self, store: &crate::tls::CertStore) {
        self.cert_expiry.reset();
        self.cert_errors.reset();
        for c in &store.certs {
            let site = c.spec.site.as_deref().unwrap_or("");
            for name in &c.names {
                self.cert_expiry
                    .with_label_values(&[name, site, c.spec.source.label()])
                    .set(c.not_after as f64);
            }
        }
        for p in store.problems() {
            let site = p.spec.site.as_deref().unwrap_or("");
            let cert = p.spec.cert.display().to_string();
            self.cert_errors.with_label_values(&[site, &cert]).inc();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// One connection's metric handles, resolved once when it is accepted: the
/// listener label is fixed per connection, so per request only the status
/// and method vary, and the common GET 200 needs no label lookup at all.
pub struct ConnMetrics {
    all: std::sync::Arc<Metrics>,
    listener: std::sync::Arc<str>,
    duration: prometheus::Histogram,
    body_bytes: prometheus::IntCounter,
    get_200: prometheus::IntCounter,
}

impl ConnMetrics {
    /// Resolves the handles for connections on `listener`.
    pub fn new(all: std::sync::Arc<Metrics>, listener: std::sync::Arc<str>) -> ConnMetrics {
        ConnMetrics {
            duration: all.duration.with_label_values(&[&*listener]),
            body_bytes: all
                .body_bytes
                .with_label_values(&[&*listener, crate::config::DEFAULT_LABEL]),
            get_200: all.requests.with_label_values(&[
                &*listener,
                "GET",
                "200",
                crate::config::DEFAULT_LABEL,
            ]),
            all,
            listener,
        }
    }

    /// One answered request; `site` is its site's label, `None` for the
    /// top-level site (whose common series are looked up once, here).
    pub fn request(
        &self,
        method: &'static str,
        status: u16,
        seconds: f64,
        bytes: u64,
        site: Option<&str>,
    ) {
        let default = site.is_none();
        let site = site.unwrap_or(crate::config::DEFAULT_LABEL);
        if default && method == "GET" && status == 200 {
            self.get_200.inc();
        } else {
            // as_str reads a static table: no allocation per request.
            let code = http::StatusCode::from_u16(status)
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            self.all
                .requests
                .with_label_values(&[&*self.listener, method, code.as_str(), site])
                .inc();
        }
        self.duration.observe(seconds);
        match default {
            true => self.body_bytes.inc_by(bytes),
            false => self
                .all
                .body_bytes
                .with_label_values(&[&*self.listener, site])
                .inc_by(bytes),
        }
    }
}

/// The standard `process_*` metrics, read from `/proc/self` at each scrape.
/// Our own rather than the prometheus crate's collector, which exports
/// `process_cpu_seconds_total` in whole seconds (0 for a process that had
/// used 0.18 s; its issues 451 and 560): a rate over it is a staircase.
#[cfg(target_os = "linux")]
struct ProcessMetrics {
    cpu: prometheus::Counter,
    open_fds: IntGauge,
    max_fds: IntGauge,
    virtual_memory: IntGauge,
    resident_memory: IntGauge,
    start_time: Gauge,
    descs: Vec<prometheus::core::Desc>,
}

#[cfg(target_os = "linux")]
impl ProcessMetrics {
    fn new() -> ProcessMetrics {
        let cpu = prometheus::Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.");
        let max_fds = gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        );
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        );
        let resident_memory = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        );
        let start_time = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )
        .expect("valid metric");
        use prometheus::core::Collector;
        let descs = [
            cpu.desc(),
            open_fds.desc(),
            max_fds.desc(),
            virtual_memory.desc(),
            resident_memory.desc(),
            start_time.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        ProcessMetrics {
            cpu,
            open_fds,
            max_fds,
            virtual_memory,
            resident_memory,
            start_time,
            descs,
        }
    }

    /// Reads `/proc/self/stat` and friends into the handles.
    fn refresh(&self) {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which may hold spaces: the
            // first is field 3 (state), so field n is at n - 3.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
            if let (Some(utime), Some(stime)) = (num(14), num(15)) {
                let now = (utime + stime) as f64 / ticks;
                let before = self.cpu.get();
                if now > before {
                    self.cpu.inc_by(now - before);
                }
            }
            if let Some(v) = num(23) {
                self.virtual_memory.set(v as i64);
            }
            if let Some(pages) = num(24) {
                self.resident_memory
                    .set((pages * rustix::param::page_size() as u64) as i64);
            }
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            });
            if let (Some(boot), Some(start)) = (boot, num(22)) {
                self.start_time.set(boot as f64 + start as f64 / ticks);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        if let Some(max) = limit.current {
            self.max_fds.set(max as i64);
        }
    }
}

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.refresh();
        [
            self.cpu.collect(),
            self.open_fds.collect(),
            self.max_fds.collect(),
            self.virtual_memory.collect(),
            self.resident_memory.collect(),
            self.start_time.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build from a git checkout names its commit (it said "unknown").
    #[test]
    fn build_info_names_the_commit_of_a_checkout() {
        let checkout = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.git")).exists();
        let text = String::from_utf8(Metrics::new().render()).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("ruchy_serve_build_info{"))
            .unwrap();
        if checkout
            && std::process::Command::new("git")
                .arg("--version")
                .output()
                .is_ok()
        {
            assert!(!line.contains("commit=\"unknown\""), "{line}");
        }
    }

    /// CPU time is exported with its fraction (the crate's collector
    /// rounded it down to whole seconds), and the other process metrics
    /// are there.
    #[cfg(target_os = "linux")]
    #[test]
    fn process_cpu_seconds_keep_their_fraction() {
        let m = Metrics::new();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let text = String::from_utf8(m.render()).unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .parse()
                .unwrap()
        };
        let cpu = value("process_cpu_seconds_total");
        assert!(cpu > 0.0 && cpu.fract() != 0.0, "{cpu}");
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_open_fds") > 0.0);
        assert!(value("process_max_fds") > 0.0);
        assert!(value("process_start_time_seconds") > 1.7e9);
        assert!(value("process_virtual_memory_bytes") > 0.0);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "other"
        );
        assert_eq!(
            method_label(&http::Method::from_bytes(b"get").unwrap()),
            "other"
        );
    }

    #[test]
    fn exposition_names_follow_conventions() {
        let m = Metrics::new();
        m.requests
            .with_label_values(&["a", "GET", "200", "default"])
            .inc();
        m.duration.with_label_values(&["a"]).observe(0.001);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            "http_requests_total{code=\"200\",listener=\"a\",method=\"GET\",site=\"default\"} 1"
        ));
        assert!(
            text.contains("http_request_duration_seconds_bucket{listener=\"a\",le=\"0.00005\"} 0")
        );
        assert!(text.contains("ruchy_serve_build_info{"));
        assert!(text.contains("ruchy_serve_config_reloads_total{result=\"failure\"} 0"));
    }
}
