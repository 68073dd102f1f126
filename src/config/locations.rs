//! `[[locations]]`: nginx's `location` blocks, path rules inside a site
//! (the top level's belong to the default site; a `[[sites]]` entry has its
//! own and inherits none, as an nginx `server` inherits no `location`).
//!
//! Which location a request path is in, one at most (nginx's order):
//! 1. an `exact` location equal to the path;
//! 2. else the first `regex` or `glob` location, in the order written, that
//!    matches it;
//! 3. else the longest `prefix` location the path starts with.
//!
//! The path matched is the one the server resolves (percent-decoded, `//`,
//! `.` and `..` segments removed), as `[[redirects]]` see it, so
//! `/private/%73ecret` and `/x/../private/secret` are in `prefix =
//! "/private/"` like `/private/secret`. Regexes use the `regex` crate
//! (linear time, no backtracking), compiled at load and refused past
//! [`REGEX_SIZE_LIMIT`]; `(?i)` makes one case-insensitive (nginx's `~*`).
//! Globs are `[[headers.rules]]`'s, matched against the path without its
//! leading `/`.
//!
//! What a location does, in the order a request meets it: `access` (403),
//! `return` (a status, a text body or a redirect), then the file, served
//! with the location's `files` keys laid over the site's; `headers`,
//! `cache_control` and `expires` are added to 2xx and 3xx answers, and
//! with `always = true` `headers` go on every answer (nginx's `add_header
//! ... always`), 4xx and 5xx included.
//!
//! Checked at load, each with its file and line: a location no path can
//! reach (a path not starting with `/`, `..` segments, a regex anchored to
//! something other than `/`), one that repeats an earlier one, a `return`
//! that cannot work. A `prefix` that a regex or glob would take every
//! probed path from is reported as a warning ([`Locations::warnings`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use figment::providers::Serialized;
use figment::Figment;
use globset::{Glob, GlobMatcher};
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use regex::bytes::{RegexSet, RegexSetBuilder};
use regex::{Regex, RegexBuilder};

use super::htpasswd::{self, Users};
use super::raw::{RawFiles, RawLocation};
use super::redirects::{fill, template, Part};
use super::{Config, ConfigError, Ctx, Files};

/// Largest compiled regex, in bytes of the regex crate's program: a
/// pattern past it (`(a{100}){100}` and the like) is refused at load
/// rather than costing memory and time on every request.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Largest compiled size of all of a site's regexes and globs together:
/// one each under [`REGEX_SIZE_LIMIT`] is not a bound when a site may
/// have a thousand (1,000 Unicode regexes took 432 MB at load).
pub const PATTERNS_SIZE_LIMIT: usize = 32 << 20;

/// `files` keys that are one per server (refused in a location as in a site).
const SERVER_WIDE_FILES: [&str; 4] = [
    "cache_max_bytes",
    "cache_max_file_size",
    "cache_revalidate",
    "settle_time",
];

/// A site's locations, compiled for matching.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    /// Every location, in the order written.
    pub all: Vec<Location>,
    /// `exact` paths -> index.
    exact: HashMap<String, usize>,
    /// `regex` and `glob` locations, in the order written.
    patterns: Vec<usize>,
    /// The regexes and globs as one automaton (one pass over the path for
    /// all of them; a glob as globset writes it, after the path's leading
    /// `/`): its `k`th pattern is location `patterns[k]`.
    pattern_set: Option<RegexSet>,
    /// `prefix` locations, longest first.
    prefixes: Vec<usize>,
    /// Those ending in `/`, by their text: a path is looked up at each of
    /// its `/` from the longest, one hash each, instead of compared with
    /// every prefix.
    slash_prefixes: HashMap<String, usize>,
    /// The others (`/img` takes `/img.png` and `/img/a`), longest first:
    /// compared one by one.
    other_prefixes: Vec<(String, usize)>,
    /// What `check` says about them: locations that are never or seldom
    /// reached, each with its file and line.
    pub warnings: Vec<String>,
}

/// One location.
#[derive(Debug, Clone)]
pub struct Location {
    /// Which paths it takes.
    pub matcher: Matcher,
    /// `access`, in order: the first rule whose network holds the client
    /// decides; none matching allows.
    pub access: Vec<Access>,
    /// `basic_auth`: the users who may have what is here.
    pub auth: Option<Arc<Users>>,
    /// `return`: what answers instead of a file.
    pub action: Option<Return>,
    /// A redirecting `return` appends the request's query.
    pub keep_query: bool,
    /// `headers`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `headers` on every status, not only 2xx and 3xx.
    pub always: bool,
    /// `cache_control`, or `max-age` for `expires`.
    pub cache_control: Option<HeaderValue>,
    /// `expires`: Expires is now plus this, and Cache-Control max-age.
    pub expires: Option<Duration>,
    /// The configuration files here are served under, when `files` or
    /// `compression` change it; `None`: the site's.
    pub config: Option<Arc<Config>>,
}

/// How a location takes paths, as written.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// The path, whole.
    Exact(String),
    /// Paths starting with it.
    Prefix(String),
    /// A glob over the path without its leading `/`.
    Glob(String, GlobMatcher),
    /// A regex over the path.
    Regex(Regex),
}

/// One `access` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// `allow` (else `deny`).
    pub allow: bool,
    /// The network; `None` for `all`.
    pub net: Option<ipnet::IpNet>,
}

/// `return`.
#[derive(Debug, Clone)]
pub enum Return {
    /// A 3xx to `to`, with the path and captures filled in.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: StatusCode,
        /// `to`, compiled: captures are the whole path (`{path}`), then
        /// the regex's groups by number, then by name.
        to: Vec<Part>,
    },
    /// Any other status, with an optional text body.
    Status {
        /// The status.
        status: StatusCode,
        /// `body`; `None`: the server's own text for the status.
        body: Option<Bytes>,
    },
}

/// Statuses nginx's `add_header` (without `always`) and `expires` apply to.
pub fn adds_headers(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    )
}

impl Matcher {
    /// Whether `path` (resolved, starting with `/`) is in it.
    pub fn is_match(&self, path: &str) -> bool {
        match self {
            Matcher::Exact(p) => p == path,
            Matcher::Prefix(p) => path.starts_with(p.as_str()),
            // As the one automaton: regexes and globs also try the path
            // without a final newline.
            Matcher::Glob(_, g) => {
                let p = path.trim_start_matches('/');
                g.is_match(p) || p.strip_suffix('\n').is_some_and(|p| g.is_match(p))
            }
            Matcher::Regex(r) => {
                r.is_match(path) || path.strip_suffix('\n').is_some_and(|p| r.is_match(p))
            }
        }
    }

    /// As written in the configuration: `prefix = "/assets/"`.
    pub fn written(&self) -> String {
        match self {
            Matcher::Exact(p) => format!("exact = {p:?}"),
            Matcher::Prefix(p) => format!("prefix = {p:?}"),
            Matcher::Glob(g, _) => format!("glob = {g:?}"),
            Matcher::Regex(r) => format!("regex = {:?}", r.as_str()),
        }
    }
}

impl Location {
    /// Whether it keeps its paths from some requests (`access`,
    /// `basic_auth`) or answers them itself (`return`).
    pub fn guards(&self) -> bool {
        !self.access.is_empty() || self.auth.is_some() || self.action.is_some()
    }

    /// Whether `client` may have what this location serves (nginx's
    /// `allow`/`deny`: the first rule that holds the address decides). A
    /// client on a unix socket is held by `all` only.
    pub fn admits(&self, client: Option<std::net::IpAddr>) -> bool {
        let client = client.map(|ip| ip.to_canonical());
        for rule in &self.access {
            let holds = match (rule.net, client) {
                (None, _) => true,
                (Some(net), Some(ip)) => net.contains(&ip),
                (Some(_), None) => false,
            };
            if holds {
                return rule.allow;
            }
        }
        true
    }

    /// The `Location` of a redirecting `return` for `path`.
    pub fn redirect_target(&self, to: &[Part], path: &str) -> String {
        let mut caught: Vec<&str> = vec![path];
        if let Matcher::Regex(r) = &self.matcher {
            if let Some(c) = r.captures(path) {
                let groups = (1..c.len()).map(|i| c.get(i).map_or("", |m| m.as_str()));
                caught.extend(groups);
                let named = r.capture_names().enumerate().filter(|(_, n)| n.is_some());
                caught.extend(named.map(|(i, _)| c.get(i).map_or("", |m| m.as_str())));
            }
        }
        fill(to, &caught)
    }
}

impl Locations {
    /// Whether there are none (a request then skips matching).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The index of the location `path` (resolved) is in, if any.
    pub fn find(&self, path: &str) -> Option<usize> {
        if !self.exact.is_empty() {
            if let Some(&i) = self.exact.get(path) {
                return Some(i);
            }
        }
        // The first regex or glob in the order written: the lowest index
        // the set matches. Most paths match none: `is_match` first, which
        // allocates nothing.
        if let Some(set) = &self.pattern_set {
            let first = |p: &[u8]| match set.is_match(p) {
                true => set.matches(p).iter().next(),
                false => None,
            };
            let mut k = first(path.as_bytes());
            // PCRE's `$` (nginx's) also holds before a final newline: a
            // name ending in one is tried without it too, so it cannot
            // slip past a regex guard nginx's would hold.
            if let Some(trimmed) = path.as_bytes().strip_suffix(b"\n") {
                k = match (k, first(trimmed)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if let Some(k) = k {
                return Some(self.patterns[k]);
            }
        }
        // The longest prefix: the longest one ending in `/` that the path
        // has up to one of its `/`, unless a longer other one matches.
        let mut best: Option<(usize, usize)> = None;
        if !self.slash_prefixes.is_empty() {
            let mut rest = path;
            while let Some(k) = rest.rfind('/') {
                if let Some(&i) = self.slash_prefixes.get(&path[..=k]) {
                    best = Some((k + 1, i));
                    break;
                }
                rest = &path[..k];
            }
        }
        let longer = |p: &&(String, usize)| best.is_none_or(|(len, _)| p.0.len() > len);
        let other = self
            .other_prefixes
            .iter()
            .take_while(longer)
            .find(|(p, _)| path.starts_with(p.as_str()));
        match other {
            Some(&(_, i)) => Some(i),
            None => best.map(|(_, i)| i),
        }
    }

    /// Every location the order they are tried in: exact ones, then
    /// regexes and globs as written, then prefixes longest first (for
    /// `check` and `explain`), as (index, written).
    pub fn in_order(&self) -> Vec<(usize, String)> {
        let mut exact: Vec<usize> = self.exact.values().copied().collect();
        exact.sort_unstable();
        exact
            .into_iter()
            .chain(self.patterns.iter().copied())
            .chain(self.prefixes.iter().copied())
            .map(|i| (i, self.all[i].matcher.written()))
            .collect()
    }

    /// Compiles `raw`, the locations of the site whose configuration is
    /// `site` and whose `files` table (before its own checks) is `files`.
    pub(super) fn from_raw(
        raw: &[RawLocation],
        files: &RawFiles,
        site: &Config,
        ctx: &Ctx,
    ) -> Result<Locations, ConfigError> {
        let mut out = Locations::default();
        for (j, r) in raw.iter().enumerate() {
            let ctx = ctx.location(j);
            let location = compile(r, files, site, &ctx)?;
            if let Some(users) = &location.auth {
                out.warnings.extend(users.problems.iter().cloned());
                if let Some((lo, hi)) = htpasswd::mixed_costs(users) {
                    out.warnings.push(format!(
                        "{}: bcrypt costs from {lo} to {hi}: a user with a cheaper hash answers \
                         faster than one who does not exist (rehash with one cost: htpasswd -B -C {hi})",
                        users.file.display()
                    ));
                }
            }
            let i = out.all.len();
            let same = out
                .all
                .iter()
                .position(|earlier| same_paths(&earlier.matcher, &location.matcher));
            if let Some(k) = same {
                let key = match &location.matcher {
                    Matcher::Exact(_) => "exact",
                    Matcher::Prefix(_) => "prefix",
                    Matcher::Glob(..) => "glob",
                    Matcher::Regex(_) => "regex",
                };
                return Err(ctx.bad(
                    &[key],
                    format!(
                        "this location can never match: locations[{k}] ({}) takes the same paths",
                        out.all[k].matcher.written()
                    ),
                    "merge the two locations into one",
                ));
            }
            match &location.matcher {
                Matcher::Exact(p) => {
                    out.exact.insert(p.clone(), i);
                }
                Matcher::Prefix(_) => out.prefixes.push(i),
                Matcher::Glob(..) | Matcher::Regex(_) => out.patterns.push(i),
            }
            out.all.push(location);
        }
        let mut patterns = Vec::with_capacity(out.patterns.len());
        for &i in &out.patterns {
            match &out.all[i].matcher {
                Matcher::Regex(r) => patterns.push(r.as_str().to_string()),
                Matcher::Glob(g, _) => {
                    let glob = Glob::new(g.trim_start_matches('/')).expect("compiled once already");
                    // globset writes `(?-u)^...$` for the path without
                    // its `/`; every resolved path has exactly one first.
                    let re = glob.regex();
                    let body = re.strip_prefix("(?-u)").unwrap_or(re);
                    // `s`: globset matches with `.` taking a newline too,
                    // so `vault/**` holds `/vault/a%0Ab.txt` here as well.
                    let (flags, body) = match body.strip_prefix("(?i)") {
                        Some(rest) => ("is-u", rest),
                        None => ("s-u", body),
                    };
                    let body = body.strip_prefix('^').unwrap_or(body);
                    patterns.push(format!("^/(?{flags}:{body})"));
                }
                _ => {}
            }
        }
        if !patterns.is_empty() {
            let set = RegexSetBuilder::new(&patterns)
                .dot_matches_new_line(true)
                .size_limit(PATTERNS_SIZE_LIMIT)
                .dfa_size_limit(PATTERNS_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    ctx.bad(
                        &["locations"],
                        format!(
                            "the regexes and globs of these locations together do not compile: {e}"
                        ),
                        "fewer or smaller patterns: a site's patterns together may take 32 MiB \
                         compiled (a Unicode class such as \\w is large: write [a-zA-Z0-9_] \
                         or (?-u:\\w) where ASCII is meant)",
                    )
                })?;
            out.pattern_set = Some(set);
        }
        out.prefixes.sort_by_key(|&i| match &out.all[i].matcher {
            Matcher::Prefix(p) => std::cmp::Reverse(p.len()),
            _ => std::cmp::Reverse(0),
        });
        for &i in &out.prefixes {
            if let Matcher::Prefix(p) = &out.all[i].matcher {
                match p.ends_with('/') {
                    true => drop(out.slash_prefixes.insert(p.clone(), i)),
                    false => out.other_prefixes.push((p.clone(), i)),
                }
            }
        }
        // A prefix whose every probed path a regex or glob takes first.
        for &i in &out.prefixes {
            let Matcher::Prefix(p) = &out.all[i].matcher else {
                continue;
            };
            let probes = [
                p.clone(),
                format!("{p}x"),
                format!("{p}a/b.html"),
                format!("{p}Z_9-~.x/y z"),
            ];
            let taker = out.patterns.iter().find(|&&k| {
                probes
                    .iter()
                    .all(|probe| out.all[k].matcher.is_match(probe))
            });
            if let Some(&k) = taker {
                let e = ctx.location(i).bad(
                    &["prefix"],
                    format!(
                        "locations[{i}] ({}) is reached by few paths if any: locations[{k}] ({}) is tried first and took every path probed under it",
                        out.all[i].matcher.written(),
                        out.all[k].matcher.written()
                    ),
                    "narrow the regex or glob, or make this an exact location",
                );
                out.warnings.push(e.to_string());
            }
        }
        Ok(out)
    }
}

/// Whether two matchers take exactly the same paths as written.
fn same_paths(a: &Matcher, b: &Matcher) -> bool {
    match (a, b) {
        (Matcher::Exact(x), Matcher::Exact(y)) | (Matcher::Prefix(x), Matcher::Prefix(y)) => x == y,
        (Matcher::Glob(x, _), Matcher::Glob(y, _)) => {
            x.trim_start_matches('/') == y.trim_start_matches('/')
        }
        (Matcher::Regex(x), Matcher::Regex(y)) => x.as_str() == y.as_str(),
        _ => false,
    }
}

fn compile(
    r: &RawLocation,
    files: &RawFiles,
    site: &Config,
    ctx: &Ctx,
) -> Result<Location, ConfigError> {
    let matcher = matcher(r, ctx)?;
    let mut access = Vec::with_capacity(r.access.len());
    for (k, rule) in r.access.iter().enumerate() {
        let idx = k.to_string();
        access.push(access_rule(rule).ok_or_else(|| {
            ctx.bad(
                &["access", &idx],
                format!("`{rule}` is not an access rule"),
                "write \"allow 10.0.0.0/8\", \"deny 192.0.2.1\" or \"deny all\"; the first rule that holds the client decides",
            )
        })?);
    }
    let action = action(r, &matcher, ctx)?;
    let auth = match &r.basic_auth {
        Some(file) => {
            let realm = r.realm.as_deref().unwrap_or("Restricted");
            let users =
                htpasswd::read(file, realm).map_err(|(m, h)| ctx.bad(&["basic_auth"], m, h))?;
            Some(Arc::new(users))
        }
        None if r.realm.is_some() => {
            return Err(ctx.bad(
                &["realm"],
                "`realm` belongs with `basic_auth`".into(),
                "add basic_auth = \"/etc/ruchy-serve/htpasswd\"",
            ))
        }
        None => None,
    };
    let mut headers = Vec::with_capacity(r.headers.len());
    for (name, value) in &r.headers {
        let key = ["headers", name.as_str()];
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ctx.bad(
                &key,
                format!("`{name}` is not a valid header name"),
                "header names are tokens such as \"X-Frame-Options\"",
            )
        })?;
        headers.push((header, ctx.header_value(&key, value)?));
    }
    // `headers` may not set what `cache_control` or `expires` send: one
    // would silently replace the other.
    if let Some(name) = r.headers.keys().find(|n| {
        (n.eq_ignore_ascii_case("cache-control") || n.eq_ignore_ascii_case("expires"))
            && (r.cache_control.is_some() || r.expires.is_some())
    }) {
        return Err(ctx.bad(
            &["headers", name.as_str()],
            format!("`{name}` in `headers` beside `cache_control`/`expires`: one would replace the other"),
            "keep `cache_control` (or `expires`) and remove the header",
        ));
    }
    let cache_control = match &r.cache_control {
        Some(v) => Some(ctx.header_value(&["cache_control"], v)?),
        None => None,
    };
    let expires = r.expires.map(|s| s.get());
    if cache_control.is_some() && expires.is_some() {
        return Err(ctx.bad(
            &["expires"],
            "`expires` and `cache_control` both set Cache-Control".into(),
            "keep one: expires = \"365d\" sends Expires and Cache-Control: max-age=31536000",
        ));
    }
    // `expires` sends a Cache-Control of its own, made here once.
    let cache_control = match expires {
        Some(d) => {
            Some(HeaderValue::from_str(&format!("max-age={}", d.as_secs())).expect("ASCII digits"))
        }
        None => cache_control,
    };
    let config = derived(r, files, site, ctx)?;
    if action.is_some() && config.is_some() {
        return Err(ctx.bad(
            &["return"],
            "a location with `return` serves no file, so its `files` and `compression` would do nothing".into(),
            "remove `files`/`compression` here, or the `return`",
        ));
    }
    Ok(Location {
        matcher,
        access,
        auth,
        action,
        keep_query: r.keep_query.unwrap_or(true),
        headers,
        always: r.always,
        cache_control,
        expires,
        config,
    })
}

fn matcher(r: &RawLocation, ctx: &Ctx) -> Result<Matcher, ConfigError> {
    let given: Vec<(&str, &String)> = [
        ("exact", &r.exact),
        ("prefix", &r.prefix),
        ("glob", &r.glob),
        ("regex", &r.regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let (key, text) = match given.as_slice() {
        [one] => *one,
        [] => {
            return Err(ctx.bad(
                &[],
                "a location needs one of `exact`, `prefix`, `glob` or `regex`".into(),
                "e.g. prefix = \"/assets/\"",
            ))
        }
        [_, (second, _), ..] => {
            return Err(ctx.bad(
                &[second],
                "a location takes one of `exact`, `prefix`, `glob` and `regex`".into(),
                "split it into two locations",
            ))
        }
    };
    let never = |why: &str| {
        Err(ctx.bad(
            &[key],
            format!("`{text}` can never match a request path: {why}"),
            "paths are matched as the server resolves them: starting with `/`, decoded, without `//`, `.` and `..`",
        ))
    };
    match key {
        "exact" | "prefix" => {
            if !text.starts_with('/') {
                return never("it does not start with `/`");
            }
            if text.contains(['?', '#']) {
                return never("`?` and `#` are not part of a path");
            }
            let segments: Vec<&str> = text.split('/').collect();
            let inner = &segments[1..segments.len() - 1];
            if text.contains("//")
                || inner
                    .iter()
                    .chain(segments.last())
                    .any(|s| *s == "." || *s == "..")
            {
                return never("paths are matched without `//`, `.` and `..` segments");
            }
            Ok(match key {
                "exact" => Matcher::Exact(text.clone()),
                _ => Matcher::Prefix(text.clone()),
            })
        }
        "glob" => Glob::new(text.trim_start_matches('/'))
            .map(|g| Matcher::Glob(text.clone(), g.compile_matcher()))
            .map_err(|e| {
                ctx.bad(
                    &["glob"],
                    format!("glob `{text}` does not compile: {}", e.kind()),
                    "globs use *, ** and {a,b}; e.g. \"*.html\" or \"assets/**\"",
                )
            }),
        _ => {
            // `.` takes a newline too (nginx's PCRE does not): a name
            // with a newline in it cannot slip past a regex guard.
            let regex = RegexBuilder::new(text)
                .dot_matches_new_line(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    let why = match &e {
                        regex::Error::CompiledTooBig(limit) => format!(
                            "`{text}` compiles to more than {limit} bytes: too large a pattern to run on every request"
                        ),
                        other => format!("`{text}` does not compile: {other}"),
                    };
                    ctx.bad(
                        &["regex"],
                        why,
                        "the regex crate's syntax (no backreferences or lookaround); e.g. \"^/blog/(\\\\d+)/(.*)$\"",
                    )
                })?;
            if anchored_off_path(text) {
                return never(
                    "it is anchored with `^` to text that does not start with `/` \
                     (every path does: write '^/...')",
                );
            }
            Ok(Matcher::Regex(regex))
        }
    }
}

/// Whether `text` (a regex that compiles) is anchored at the start to
/// literal text none of whose spellings starts with `/`: `^admin/`,
/// `^(admin|staff)/`, `(?i)^Admin`. No path can match it.
fn anchored_off_path(text: &str) -> bool {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    use regex_syntax::hir::Look;
    let Ok(hir) = regex_syntax::Parser::new().parse(text) else {
        return false;
    };
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return false;
    }
    let prefixes = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    prefixes.literals().is_some_and(|lits| {
        !lits.is_empty()
            && lits
                .iter()
                .all(|l| l.as_bytes().first().is_some_and(|&b| b != b'/'))
    })
}

/// `access` rule text: `allow|deny all|ADDR|CIDR`.
fn access_rule(text: &str) -> Option<Access> {
    let (verb, what) = text.trim().split_once(char::is_whitespace)?;
    let allow = match verb {
        "allow" => true,
        "deny" => false,
        _ => return None,
    };
    let what = what.trim();
    let net = match what {
        "all" => None,
        _ => Some(
            what.parse::<ipnet::IpNet>()
                .or_else(|_| what.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .ok()?
                .trunc(),
        ),
    };
    Some(Access { allow, net })
}

fn action(r: &RawLocation, matcher: &Matcher, ctx: &Ctx) -> Result<Option<Return>, ConfigError> {
    let Some(code) = r.r#return else {
        for (key, set) in [
            ("to", r.to.is_some()),
            ("body", r.body.is_some()),
            ("keep_query", r.keep_query.is_some()),
        ] {
            if set {
                return Err(ctx.bad(
                    &[key],
                    format!("`{key}` belongs with `return`"),
                    "e.g. return = 301 with to = \"/new\", or return = 403 with body = \"no\"",
                ));
            }
        }
        return Ok(None);
    };
    let status = match StatusCode::from_u16(code) {
        Ok(s) if (200..600).contains(&code) => s,
        _ => {
            return Err(ctx.bad(
                &["return"],
                format!("{code} is not a status a location can return"),
                "use 200-599, e.g. 403, 404, 410 or 301",
            ))
        }
    };
    if matches!(code, 301 | 302 | 303 | 307 | 308) {
        let Some(to) = &r.to else {
            return Err(ctx.bad(
                &["return"],
                format!("a {code} needs `to`"),
                "e.g. to = \"/new/path\" or \"https://example.com{path}\"",
            ));
        };
        if r.body.is_some() {
            return Err(ctx.bad(
                &["body"],
                "a redirect has no body of ours".into(),
                "remove `body`",
            ));
        }
        let names = capture_names(matcher);
        // `{path}` is the resolved path: it starts with `/` (and has no
        // `//`), so `https://example.com{path}` cannot change the host.
        let parts = template(to, &names, &[0]).map_err(|(m, h)| ctx.bad(&["to"], m, h))?;
        // A target this location takes again: a loop. A fixed one as it
        // is; `{path}` filled with a path of a prefix or exact location
        // (`to = "/{path}"` sends `/r1/x` to `/r1/x`).
        let sample = match matcher {
            Matcher::Prefix(p) => Some(format!("{p}x")),
            Matcher::Exact(p) => Some(p.clone()),
            _ => None,
        };
        let filled = match parts.as_slice() {
            [Part::Text(t)] => Some(t.clone()),
            _ => sample.map(|p| super::redirects::fill(&parts, &[p.as_str()])),
        };
        if let Some(target) = filled.filter(|t| t.starts_with('/')) {
            let path = target.split('?').next().unwrap_or_default();
            let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
            let mut clean = String::with_capacity(decoded.len());
            for c in decoded.chars() {
                if !(c == '/' && clean.ends_with('/')) {
                    clean.push(c);
                }
            }
            if matcher.is_match(&clean) {
                return Err(ctx.bad(
                    &["to"],
                    format!("`{to}` is in this location again ({clean}): a redirect loop"),
                    "point `to` outside the location",
                ));
            }
        }
        return Ok(Some(Return::Redirect { status, to: parts }));
    }
    if (300..400).contains(&code) {
        return Err(ctx.bad(
            &["return"],
            format!("{code} is not a redirect a location can send"),
            "use 301, 302, 303, 307 or 308 with `to`",
        ));
    }
    if r.to.is_some() {
        return Err(ctx.bad(
            &["to"],
            format!("`to` needs a redirect status, and {code} is not one"),
            "use return = 301 (or 302, 303, 307, 308), or `body` for a text answer",
        ));
    }
    Ok(Some(Return::Status {
        status,
        body: r.body.clone().map(Bytes::from),
    }))
}

/// What `to` may name: `path`, then the regex's groups by number, then by
/// name ([`Location::redirect_target`] fills them in that order).
fn capture_names(matcher: &Matcher) -> Vec<String> {
    let mut names = vec!["path".to_string()];
    if let Matcher::Regex(r) = matcher {
        names.extend((1..r.captures_len()).map(|i| i.to_string()));
        names.extend(r.capture_names().flatten().map(str::to_string));
    }
    names
}

/// The site's configuration with the location's `files` and `compression`,
/// if it sets either.
fn derived(
    r: &RawLocation,
    files: &RawFiles,
    site: &Config,
    ctx: &Ctx,
) -> Result<Option<Arc<Config>>, ConfigError> {
    if r.files.is_empty() && r.compression.is_none() {
        return Ok(None);
    }
    for key in SERVER_WIDE_FILES {
        if r.files.contains_key(key) {
            return Err(ctx.bad(
                &["files", key],
                format!("`files.{key}` is one per server, not per location"),
                "set it at the top level of the file",
            ));
        }
    }
    let mut config = site.clone();
    config.sites = Vec::new();
    config.locations = Locations::default();
    if !r.files.is_empty() {
        let merged: RawFiles = Figment::from(Serialized::defaults(files.clone()))
            .merge(Serialized::defaults(&r.files))
            .extract()
            .map_err(|e| {
                let mut prefix: Vec<String> = Vec::new();
                if let Some(i) = ctx.site {
                    prefix.extend(["sites".to_string(), i.to_string()]);
                }
                let j = ctx.location.unwrap_or_default();
                prefix.extend(["locations".to_string(), j.to_string(), "files".to_string()]);
                ctx.layered.explain_at(e, &prefix)
            })?;
        config.files = Files::from_raw(&merged, ctx)?;
    }
    if let Some(on) = r.compression {
        config.compression.enabled = on;
    }
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};
    use super::*;

    fn path_of(cfg: &Config, path: &str) -> Option<String> {
        cfg.locations
            .find(path)
            .map(|i| cfg.locations.all[i].matcher.written())
    }

    #[test]
    fn exact_then_patterns_in_order_then_the_longest_prefix() {
        let cfg = valid(
            "[[locations]]\nprefix = \"/\"\n\
             [[locations]]\nprefix = \"/assets/\"\n\
             [[locations]]\nprefix = \"/assets/img/\"\n\
             [[locations]]\nregex = \"\\\\.php$\"\nreturn = 404\n\
             [[locations]]\nglob = \"**/*.map\"\nreturn = 404\n\
             [[locations]]\nexact = \"/assets/x.php\"\n",
        );
        assert_eq!(path_of(&cfg, "/a").unwrap(), "prefix = \"/\"");
        assert_eq!(
            path_of(&cfg, "/assets/a.css").unwrap(),
            "prefix = \"/assets/\""
        );
        assert_eq!(
            path_of(&cfg, "/assets/img/a.png").unwrap(),
            "prefix = \"/assets/img/\""
        );
        assert_eq!(
            path_of(&cfg, "/assets/img/a.php").unwrap(),
            "regex = \"\\\\.php$\""
        );
        assert_eq!(
            path_of(&cfg, "/assets/img/a.js.map").unwrap(),
            "glob = \"**/*.map\""
        );
        assert_eq!(
            path_of(&cfg, "/assets/x.php").unwrap(),
            "exact = \"/assets/x.php\""
        );
        let order: Vec<String> = cfg
            .locations
            .in_order()
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        assert_eq!(order[0], "exact = \"/assets/x.php\"");
        assert_eq!(order[3], "prefix = \"/assets/img/\"");
        assert_eq!(order[5], "prefix = \"/\"");
        // nginx's `~*` is `(?i)` (the regex crate's unicode-case feature).
        let cfg = valid("[[locations]]\nregex = '(?i)\\.php$'\nreturn = 404\n");
        assert!(cfg.locations.find("/a/B.PHP").is_some());
    }

    /// The hashed lookup agrees with comparing every prefix, longest first.
    #[test]
    fn the_longest_prefix_is_found_as_by_comparing_each() {
        let prefixes = [
            "/", "/a/", "/a/b/", "/a/b", "/a/bc/", "/img", "/img/x/", "/z/y/x/",
        ];
        let body: String = prefixes
            .iter()
            .map(|p| format!("[[locations]]\nprefix = {p:?}\n"))
            .collect();
        let cfg = valid(&body);
        let paths = [
            "/",
            "/a",
            "/a/",
            "/a/b",
            "/a/b/",
            "/a/bc",
            "/a/bc/d",
            "/a/b/c/d.html",
            "/a/bx",
            "/img",
            "/img.png",
            "/img/x",
            "/img/x/y",
            "/z/y/x",
            "/z/y/x/w",
            "/q/a/b/",
        ];
        for path in paths {
            let naive = prefixes
                .iter()
                .filter(|p| path.starts_with(**p))
                .max_by_key(|p| p.len())
                .map(|p| format!("prefix = {p:?}"));
            assert_eq!(path_of(&cfg, path), naive, "{path}");
        }
    }

    /// The one automaton picks what trying each glob and regex in order
    /// would.
    #[test]
    fn the_pattern_set_agrees_with_each_pattern_in_order() {
        let patterns = [
            "glob = \"*.map\"",
            "regex = '^/blog/(\\d+)/'",
            "glob = \"assets/**\"",
            "glob = \"**/{a,b}.TXT\"",
            "regex = '(?i)\\.php$'",
            "glob = \"/docs/*/index.html\"",
            "glob = \"**\"",
        ];
        let body: String = patterns
            .iter()
            .map(|p| format!("[[locations]]\n{p}\nreturn = 404\n"))
            .collect();
        let cfg = valid(&body);
        let l = &cfg.locations;
        for path in [
            "/",
            "/a.js.map",
            "/x/a.js.map",
            "/blog/12/x",
            "/blog/x/12/",
            "/assets/",
            "/assets/a/b.css",
            "/q/a.TXT",
            "/a.TXT",
            "/q/a.txt",
            "/x.PHP",
            "/docs/v1/index.html",
            "/docs/v1/v2/index.html",
            "/caf\u{e9}.map",
            "/z",
            "/assets/a\nb.css",
            "/x\n.map",
            "/q/\n/a.TXT",
            "/a.js.map\n",
            "/blog/12/x\n",
        ] {
            let naive = l
                .patterns
                .iter()
                .copied()
                .find(|&i| l.all[i].matcher.is_match(path));
            assert_eq!(l.find(path), naive, "{path}");
        }
    }

    /// A regex's `.` takes a newline too: `^/reports/.*\.html$` holds
    /// `/reports/x\ny.html` (nginx's does not; the review served it).
    #[test]
    fn a_regex_holds_names_with_a_newline() {
        let cfg = valid("[[locations]]\nregex = '^/reports/.*\\.html$'\naccess = [\"deny all\"]\n");
        assert_eq!(cfg.locations.find("/reports/x\ny.html"), Some(0));
        // And `$` before a final newline, as PCRE's (the second review
        // got `/reports/a.html%0A` served).
        assert_eq!(cfg.locations.find("/reports/a.html\n"), Some(0));
    }

    /// A name with a newline is in the glob that holds it (the automaton
    /// once said no where the glob said yes: `/vault/a%0Ab.txt` was served).
    #[test]
    fn a_glob_holds_names_with_a_newline() {
        let cfg = valid("[[locations]]\nglob = \"vault/**\"\naccess = [\"deny all\"]\n");
        assert_eq!(cfg.locations.find("/vault/a\nb.txt"), Some(0));
        assert_eq!(cfg.locations.find("/vault/\n"), Some(0));
    }

    /// A site's patterns together have one bound: 200 regexes with a
    /// Unicode class each are refused at load with the key and the fix.
    #[test]
    fn a_sites_patterns_together_are_bounded() {
        let body: String = (0..200)
            .map(|i| format!("[[locations]]\nregex = '^/p{i}/\\w{{8}}$'\nreturn = 404\n"))
            .collect();
        let e = invalid(&body);
        assert_eq!(e.key(), Some("locations"), "{e}");
        assert!(e.to_string().contains("32 MiB"), "{e}");
        // The same in ASCII is fine.
        let ascii: String = (0..200)
            .map(|i| format!("[[locations]]\nregex = '^/p{i}/[a-z0-9_]{{8}}$'\nreturn = 404\n"))
            .collect();
        assert_eq!(valid(&ascii).locations.all.len(), 200);
    }

    #[test]
    fn a_cache_control_header_beside_expires_is_refused() {
        let e = invalid(
            "[[locations]]\nprefix = \"/a/\"\nexpires = \"1d\"\nheaders = { \"Cache-Control\" = \"no-store\" }\n",
        );
        assert_eq!(e.key(), Some("locations[0].headers.Cache-Control"), "{e}");
    }

    #[test]
    fn access_rules_go_in_order_and_the_first_that_holds_decides() {
        let cfg = valid(
            "[[locations]]\nprefix = \"/a/\"\naccess = [\"deny 10.0.0.1\", \"allow 10.0.0.0/8\", \"allow ::1\", \"deny all\"]\n",
        );
        let l = &cfg.locations.all[0];
        let ip = |s: &str| Some(s.parse().unwrap());
        assert!(!l.admits(ip("10.0.0.1")));
        assert!(l.admits(ip("10.9.9.9")));
        assert!(l.admits(ip("::ffff:10.9.9.9")), "mapped IPv4 is IPv4");
        assert!(l.admits(ip("::1")));
        assert!(!l.admits(ip("192.0.2.1")));
        assert!(
            !l.admits(None),
            "a unix-socket client is held by `all` only"
        );
    }

    #[test]
    fn regex_redirects_fill_numbered_and_named_captures_encoded_for_their_place() {
        let cfg = valid(
            "[[locations]]\nregex = \"^/blog/(\\\\d+)/(?P<slug>.*)$\"\nreturn = 301\nto = \"/posts/{1}-{slug}?from={path}\"\n",
        );
        let l = &cfg.locations.all[0];
        let Some(Return::Redirect { to, status }) = &l.action else {
            panic!("a redirect")
        };
        assert_eq!(*status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            l.redirect_target(to, "/blog/12/a b?c"),
            "/posts/12-a%20b%3Fc?from=%2Fblog%2F12%2Fa%20b%3Fc"
        );
        assert!(cfg.locations.find("/blog/abc/x").is_none());
    }

    #[test]
    fn a_capture_cannot_choose_the_host() {
        let e =
            invalid("[[locations]]\nregex = \"^/(.*)$\"\nreturn = 302\nto = \"https://{1}/x\"\n");
        assert_eq!(e.key(), Some("locations[0].to"));
    }

    /// Regexes that can match a path are kept, anchored or not.
    #[test]
    fn regexes_a_path_can_match_are_kept() {
        for re in [
            "^/(admin|staff)/",
            "(?i)^/admin",
            "\\.php$",
            "^.*\\.map$",
            "^(/a|/b)",
            "admin",
        ] {
            valid(&format!("[[locations]]\nregex = '{re}'\nreturn = 404\n"));
        }
    }

    #[test]
    fn locations_that_can_never_match_are_refused_with_their_key() {
        for (body, key) in [
            ("[[locations]]\nprefix = \"assets/\"\n", "locations[0].prefix"),
            ("[[locations]]\nexact = \"/a/../b\"\n", "locations[0].exact"),
            ("[[locations]]\nregex = \"^blog\"\n", "locations[0].regex"),
            ("[[locations]]\nregex = '^(admin|staff)/'\n", "locations[0].regex"),
            ("[[locations]]\nregex = '(?i)^Admin'\n", "locations[0].regex"),
            ("[[locations]]\nprefix = \"/a/\"\n[[locations]]\nprefix = \"/a/\"\n", "locations[1].prefix"),
            ("[[locations]]\nprefix = \"/a/\"\nexact = \"/a\"\n", "locations[0].prefix"),
            ("[[locations]]\naccess = [\"deny all\"]\n", "locations[0]"),
            ("[[locations]]\nprefix = \"/\"\naccess = [\"deny 10.0.0.300\"]\n", "locations[0].access[0]"),
            ("[[locations]]\nprefix = \"/\"\nreturn = 301\n", "locations[0].return"),
            ("[[locations]]\nprefix = \"/\"\nreturn = 301\nto = \"/x\"\n", "locations[0].to"),
            ("[[locations]]\nprefix = \"/r1/\"\nreturn = 301\nto = \"/{path}\"\n", "locations[0].to"),
            ("[[locations]]\nprefix = \"/r2/\"\nreturn = 301\nto = \"//{path}\"\n", "locations[0].to"),
            ("[[locations]]\nprefix = \"/\"\nto = \"/x\"\n", "locations[0].to"),
            ("[[locations]]\nprefix = \"/\"\nreturn = 404\nfiles = { directory_listing = true }\n", "locations[0].return"),
            ("[[locations]]\nprefix = \"/\"\nfiles = { cache_max_bytes = \"1MiB\" }\n", "locations[0].files.cache_max_bytes"),
            ("[[locations]]\nprefix = \"/\"\nfiles = { index = [\"a/b\"] }\n", "locations[0].files.index"),
            ("[[locations]]\nprefix = \"/\"\nheaders = { \"Bad Name\" = \"v\" }\n", "locations[0].headers.Bad Name"),
        ] {
            let e = invalid(body);
            assert_eq!(e.key(), Some(key), "{body}: {e}");
        }
    }

    #[test]
    fn huge_regexes_are_refused_at_load() {
        // Unicode `\w` is large: 100 of them compile to a few MiB, which
        // the regex crate's own 10 MiB default would take.
        let e = invalid("[[locations]]\nregex = \"^/\\\\w{100}$\"\nreturn = 404\n");
        assert_eq!(e.key(), Some("locations[0].regex"));
        assert!(e.to_string().contains("compiles to more than"), "{e}");
        // What people write still fits.
        valid("[[locations]]\nregex = '^/blog/(\\d+)/(\\w{1,20})-(.*)$'\nreturn = 404\n");
    }

    #[test]
    fn a_prefix_a_regex_takes_whole_is_warned_about() {
        let cfg = valid(
            "[[locations]]\nregex = \"^/assets/\"\nreturn = 404\n[[locations]]\nprefix = \"/assets/\"\n[[locations]]\nprefix = \"/img/\"\n",
        );
        assert_eq!(
            cfg.locations.warnings.len(),
            1,
            "{:?}",
            cfg.locations.warnings
        );
        assert!(cfg.locations.warnings[0].contains("locations[1]"));
    }

    #[test]
    fn a_location_lays_its_files_keys_over_the_sites() {
        let cfg = valid(
            "[files]\nindex = [\"home.html\"]\n\
             [[locations]]\nprefix = \"/downloads/\"\nfiles = { directory_listing = true }\ncompression = false\n",
        );
        let derived = cfg.locations.all[0].config.as_ref().unwrap();
        assert!(derived.files.directory_listing);
        assert_eq!(derived.files.index, ["home.html"], "the rest is the site's");
        assert!(!derived.compression.enabled);
        assert!(!cfg.files.directory_listing);
    }
}
