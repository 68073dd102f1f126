//! Configuration in two layers: [`raw`] is what the operator wrote (figment +
//! serde, with sizes, durations and keywords typed by [`types`]), [`Config`]
//! is the validated, immutable value the server runs on: paths
//! canonicalized, globs compiled, header values pre-built. Each section
//! validates itself (`Files::from_raw`, `Limits::from_raw`, ...) and every
//! error names the file, line and key it is about. Nothing here binds a
//! socket, so `ruchy-serve check` can run it all like `nginx -t`.
//!
//! A running server holds its `Config` behind an `Arc`; reload builds a
//! whole new one and swaps it, nothing edits a `Config` in place.

pub mod acme;
mod compression;
mod error;
mod files;
mod headers;
pub mod htpasswd;
mod limits;
mod listen;
mod load;
pub mod locations;
mod log;
mod metrics;
pub mod raw;
mod redirects;
mod sites;
mod tls;
pub mod types;

use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderValue;

pub use crate::addr::ListenAddr;
pub use compression::Compression;
pub use error::{ConfigError, Origin};
pub use files::Files;
pub use headers::{Headers, Rule};
pub use limits::Limits;
pub use listen::{Listen, TrustedProxies};
pub use load::{demo_root, Layered, Sources, ENV_PREFIX};
pub use locations::{Location, Locations};
pub use log::{AccessFile, Log};
pub use metrics::MetricsConfig;
pub use redirects::Redirects;
pub use sites::{Names, VirtualHost, DEFAULT_LABEL, NONE_LABEL};
pub use tls::Tls;
pub use types::{
    parse_size, AccessLog, ClientHeader, Encoding, LogFormat, LogTarget, SymlinkPolicy,
};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from, if any (reload re-reads it).
    pub source: Option<PathBuf>,
    /// Canonical root; every served path must stay below it.
    pub root: PathBuf,
    /// The `[[listen]]` entries, in order.
    pub listen: Vec<Listen>,
    /// How long in-flight requests may run after SIGTERM.
    pub shutdown_timeout: Duration,
    /// Runtime worker threads (0: one per core).
    pub workers: usize,
    /// Most blocking-pool threads: the file-system work that has to wait
    /// for the disk, compression, configuration loads (at least 1).
    pub blocking_threads: usize,
    /// Whether starting as root is allowed (checked by `main`).
    pub allow_root: bool,
    /// Whose word about the client address is believed.
    pub trusted_proxies: TrustedProxies,
    /// `[files]`.
    pub files: Files,
    /// `[headers]` and `[cache]`.
    pub headers: Headers,
    /// `[limits]`.
    pub limits: Limits,
    /// `[log]`.
    pub log: Log,
    /// `[tls]`.
    pub tls: Tls,
    /// `[acme]`, when a site asks for ACME.
    pub acme: Option<acme::Acme>,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[[redirects]]`, in order.
    pub redirects: Redirects,
    /// `[[locations]]`: this site's path rules.
    pub locations: Locations,
    /// `[compression]`.
    pub compression: Compression,
    /// Whether requests for names no site has go to this top-level site
    /// (else 421).
    pub default_site: bool,
    /// `[[sites]]`, in order; each holds a whole configuration of its own
    /// (this one with the site's root and tables).
    pub sites: Vec<VirtualHost>,
}

impl Config {
    /// What is served, for the ready line and `check`: the root, and each
    /// site's first name and root (`/srv/www; sites: a.test /srv/a`).
    pub fn served(&self) -> String {
        let mut out = match self.default_site {
            true => self.root.display().to_string(),
            false => "no default site (421 for other names)".to_string(),
        };
        if !self.sites.is_empty() {
            let sites: Vec<String> = self
                .sites
                .iter()
                .map(|s| format!("{} {}", s.names.all.join(","), s.config.root.display()))
                .collect();
            out.push_str(&format!("; sites: {}", sites.join(", ")));
        }
        out
    }
}

/// Reads and validates the configuration; touches no socket.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let layered = Layered::new(sources)?;
    validate(&layered)
}

/// Turns a problem with the value at a key into an error that points where
/// that value came from (file and line, variable or flag).
pub(crate) struct Ctx<'a> {
    layered: &'a Layered,
    /// Checking `sites[i]`: keys are relative to it, and a key the site
    /// does not set was inherited from the top level.
    site: Option<usize>,
    /// Checking `locations[j]` (of the top level, or of `site`): keys are
    /// relative to it, and all of them are its own.
    location: Option<usize>,
}

impl Ctx<'_> {
    /// The same, for `locations[j]` of this context's site.
    fn location(&self, j: usize) -> Ctx<'_> {
        Ctx {
            layered: self.layered,
            site: self.site,
            location: Some(j),
        }
    }

    /// Where the value at `path` (in this site's tables, else the top
    /// level's) came from.
    fn origin(&self, path: &[&str]) -> Origin {
        let owned = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if let Some(i) = self.site {
            let index = i.to_string();
            let own: Vec<&str> = ["sites", index.as_str()]
                .into_iter()
                .chain(path.iter().copied())
                .collect();
            if self.layered.has(&owned(&own)) {
                return self.layered.origin(&owned(&own));
            }
        }
        self.layered.origin(&owned(path))
    }

    fn bad(&self, path: &[&str], message: String, hint: &str) -> ConfigError {
        let hint = (!hint.is_empty()).then(|| hint.to_string());
        if let Some(j) = self.location {
            let mut own: Vec<String> = Vec::new();
            if let Some(i) = self.site {
                own.extend(["sites".to_string(), i.to_string()]);
            }
            own.extend(["locations".to_string(), j.to_string()]);
            own.extend(path.iter().map(|s| s.to_string()));
            let own: Vec<&str> = own.iter().map(String::as_str).collect();
            return self.layered.invalid(&own, message, hint);
        }
        let Some(i) = self.site else {
            return self.layered.invalid(path, message, hint);
        };
        let index = i.to_string();
        let own: Vec<&str> = ["sites", index.as_str()]
            .into_iter()
            .chain(path.iter().copied())
            .collect();
        let owned = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if !self.layered.has(&owned(&own)) && self.layered.has(&owned(path)) {
            // The top level's value, bad for this site.
            let message = format!("{message} (in sites[{i}], which inherits it)");
            return self.layered.invalid(path, message, hint);
        }
        self.layered.invalid(&own, message, hint)
    }

    fn header_value(&self, path: &[&str], s: &str) -> Result<HeaderValue, ConfigError> {
        HeaderValue::from_str(s).map_err(|_| {
            self.bad(
                path,
                format!("`{s}` is not a valid header value"),
                "use visible ASCII characters only",
            )
        })
    }
}

/// The whole configuration from its layers: types first (while figment
/// reads), then each section.
pub fn validate(layered: &Layered) -> Result<Config, ConfigError> {
    let raw = layered.extract()?;
    let ctx = Ctx {
        layered,
        site: None,
        location: None,
    };
    // Every section is checked, and every section's mistake reported at
    // once; sections that need the listeners are checked when those are
    // right (their mistakes come in the next round).
    let mut errors = Vec::new();
    let root = keep(
        &mut errors,
        match (&raw.root, raw.sites.first()) {
            // With no default site, the top level needs no root of its own.
            (None, Some(first)) if !raw.default_site => root(&Some(first.root.clone()), &ctx),
            _ => root(&raw.root, &ctx),
        },
    );
    let listen = keep(&mut errors, Listen::from_raw(&raw.listen, &ctx));
    let files = keep(&mut errors, Files::from_raw(&raw.files, &ctx));
    let headers = keep(
        &mut errors,
        Headers::from_raw(&raw.headers, &raw.cache, &ctx),
    );
    let limits = keep(&mut errors, Limits::from_raw(&raw.limits, &ctx));
    let log = keep(&mut errors, Log::from_raw(&raw.log, &ctx));
    let redirects = keep(&mut errors, Redirects::from_raw(&raw.redirects, &ctx));
    let compression = keep(&mut errors, Compression::from_raw(&raw.compression, &ctx));
    let acme = keep(&mut errors, acme::from_raw(&raw.acme, &raw.sites, &ctx));
    let (trusted_proxies, metrics, tls) = match &listen {
        Some(listen) => (
            keep(
                &mut errors,
                TrustedProxies::from_raw(&raw.trusted_proxies, raw.client_header, listen, &ctx),
            ),
            keep(
                &mut errors,
                MetricsConfig::from_raw(&raw.metrics, listen, &ctx),
            ),
            keep(
                &mut errors,
                Tls::from_raw(
                    &raw.tls,
                    &raw.sites,
                    acme.as_ref().and_then(|a| a.as_ref()),
                    listen,
                    &ctx,
                ),
            ),
        ),
        None => (None, None, None),
    };
    let (
        Some(root),
        Some(listen),
        Some(trusted_proxies),
        Some(files),
        Some(headers),
        Some(limits),
        Some(log),
        Some(metrics),
        Some(tls),
        Some(redirects),
        Some(compression),
        Some(acme),
    ) = (
        root,
        listen,
        trusted_proxies,
        files,
        headers,
        limits,
        log,
        metrics,
        tls,
        redirects,
        compression,
        acme,
    )
    else {
        return Err(ConfigError::all(errors));
    };
    let mut config = Config {
        source: layered.config_file().map(|p| p.to_path_buf()),
        root,
        listen,
        shutdown_timeout: raw.shutdown_timeout.get(),
        workers: raw.workers,
        blocking_threads: raw.blocking_threads.max(1),
        allow_root: raw.allow_root,
        trusted_proxies,
        files,
        headers,
        limits,
        log,
        tls,
        acme,
        metrics,
        redirects,
        locations: Locations::default(),
        compression,
        default_site: raw.default_site,
        sites: Vec::new(),
    };
    config.locations = Locations::from_raw(&raw.locations, &raw.files, &config, &ctx)?;
    config.sites = sites::from_raw(&raw, &config, &ctx)?;
    Ok(config)
}

/// `r`'s value, or `None` with its error kept in `errors`.
fn keep<T>(errors: &mut Vec<ConfigError>, r: Result<T, ConfigError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// The root, canonicalized once: every served path is checked against it.
fn root(raw: &Option<PathBuf>, ctx: &Ctx) -> Result<PathBuf, ConfigError> {
    let Some(root) = raw else {
        return Err(ctx.bad(
            &["root"],
            "no root directory is set".into(),
            "add `root = \"/srv/www\"` to the config file or pass --root DIR",
        ));
    };
    // A relative root written in the config file is the file's neighbour
    // (as nginx's is its prefix's), not the current directory's: the same
    // file then serves the same tree from any directory, `/` included.
    // From --root or the environment it stays the caller's.
    let root = match (root.is_relative(), ctx.origin(&["root"])) {
        (true, Origin::File { path, .. }) => path
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .join(root),
        _ => root.clone(),
    };
    match root.canonicalize() {
        Ok(p) if p.is_dir() => Ok(p),
        Ok(_) => Err(ctx.bad(
            &["root"],
            format!("{} is not a directory", root.display()),
            "root must name the directory to serve",
        )),
        Err(e) => Err(ctx.bad(
            &["root"],
            format!("cannot open {}: {e}", root.display()),
            "create the directory or correct the path",
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Loads `body` from a real file, after `root = <a temp dir>` unless
    /// `body` sets its own root.
    fn load_body(body: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let text = if body.starts_with("root = ") {
            body.to_string()
        } else {
            format!("root = {:?}\n{body}", dir.path())
        };
        std::fs::write(&file, text).unwrap();
        load(&Sources {
            config_file: Some(file),
            ..Default::default()
        })
    }

    /// `body` must be valid.
    pub(crate) fn valid(body: &str) -> Config {
        load_body(body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `body` must be refused; the error names file, line and key.
    pub(crate) fn invalid(body: &str) -> ConfigError {
        let e = load_body(body).expect_err("should be refused");
        assert!(e.to_string().contains("c.toml"), "names the file: {e}");
        e
    }

    /// A relative root in the file is the file's neighbour, whatever the
    /// current directory (it was the current directory's: a config that
    /// passed `check` from one directory failed from `/`).
    #[test]
    fn a_relative_root_is_the_config_files_neighbour() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "root = \"www\"\n").unwrap();
        let cfg = load(&Sources {
            config_file: Some(file),
            ..Default::default()
        })
        .expect("a root beside the file");
        assert_eq!(cfg.root, dir.path().join("www").canonicalize().unwrap());
    }

    #[test]
    fn root_must_be_an_existing_directory() {
        let e = invalid("root = \"/nonexistent/ruchy\"\n");
        assert!(
            e.to_string().contains("cannot open /nonexistent/ruchy"),
            "{e}"
        );
        let e = invalid("root = \"/etc/hostname\"\n");
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }

    #[test]
    fn typed_errors_carry_the_line_and_a_hint() {
        let e = invalid("[limits]\n\nheader_read_timeout = \"soon\"\n");
        let text = e.to_string();
        assert!(
            text.contains("c.toml:4: key `limits.header_read_timeout`"),
            "{text}"
        );
        assert!(text.contains("`soon` is not a duration"), "{text}");
        assert!(text.contains("(hint: write e.g."), "{text}");
    }

    #[test]
    fn shutdown_timeout_and_workers() {
        let cfg = valid("shutdown_timeout = \"2m\"\nworkers = 1\n");
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(120));
        assert_eq!(cfg.workers, 1);
    }
}
