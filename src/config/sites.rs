//! `[[sites]]`: virtual hosts, nginx's `server` blocks chosen by Host (and
//! SNI). The top level of the file is the default site; each `[[sites]]`
//! entry names its hosts, its own `root`, and may set any key of `files`,
//! `headers` and `cache`, laid over the top level's key by key (nginx's
//! http -> server inheritance: a list or a single value the site sets
//! replaces the top level's, a table such as `files.mime_types` adds to it).
//! Its `redirects` and `certificates` are its own. What is one per process
//! (listeners, limits, logs, the file cache's and compression's budgets)
//! stays at the top level; a site that sets one of those is refused.
//!
//! Each site becomes a whole [`Config`] (the top level's with the site's
//! root and tables), so the request pipeline serves a site exactly as it
//! serves the default one, and a reload swaps every site at once.

use std::sync::Arc;

use figment::providers::Serialized;
use figment::value::Dict;
use figment::Figment;
use serde::{Deserialize, Serialize};

use super::raw::{RawCache, RawConfig, RawFiles, RawHeaders, RawSite};
use super::{root, Config, ConfigError, Ctx, Files, Headers, Locations, Redirects};

/// The `site` metric label of the top-level site. No site may take it as a
/// name (nor [`NONE_LABEL`]), so every label names one thing.
pub const DEFAULT_LABEL: &str = "default";
/// The `site` label of requests no site answered (421 for an unknown name).
pub const NONE_LABEL: &str = "none";

/// `files` keys that are one per process, not per site.
const SERVER_WIDE_FILES: [&str; 3] = ["cache_max_bytes", "cache_max_file_size", "cache_revalidate"];

/// One `[[sites]]` entry, validated.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// The names it answers, lower case, as configured.
    pub names: Names,
    /// The whole configuration requests for it are served under.
    pub config: Arc<Config>,
}

/// A site's host names: exact ones and `*.parent` wildcards (one label more
/// than the parent, as for certificates).
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Every name as written (lower case, no trailing dot); the first is
    /// the site's `site` metric label.
    pub all: Vec<String>,
}

impl Names {
    /// The site's `site` label in metrics: its first name.
    pub fn label(&self) -> &str {
        &self.all[0]
    }
}

/// The tables a site may lay over the top level's.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tables {
    files: RawFiles,
    headers: RawHeaders,
    cache: RawCache,
}

/// What the site wrote of those tables.
#[derive(Serialize)]
struct Own<'a> {
    files: &'a Dict,
    headers: &'a Dict,
    cache: &'a Dict,
}

/// Every `[[sites]]` entry, checked and built over the top-level `top`.
pub(super) fn from_raw(
    raw: &RawConfig,
    top: &Config,
    ctx: &Ctx,
) -> Result<Vec<VirtualHost>, ConfigError> {
    if !raw.default_site && raw.sites.is_empty() {
        return Err(ctx.bad(
            &["default_site"],
            "`default_site = false` with no [[sites]] would answer every request 421".into(),
            "add [[sites]] entries with `names` and `root`, or remove default_site",
        ));
    }
    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut out = Vec::with_capacity(raw.sites.len());
    for (i, site) in raw.sites.iter().enumerate() {
        let ctx = Ctx {
            layered: ctx.layered,
            site: Some(i),
            location: None,
        };
        let names = names(site, i, &mut seen, &ctx)?;
        for key in SERVER_WIDE_FILES {
            if site.files.contains_key(key) {
                return Err(ctx.bad(
                    &["files", key],
                    format!("`files.{key}` is one per server, not per site"),
                    "set it at the top level of the file",
                ));
            }
        }
        let tables = tables(raw, site, i, &ctx)?;
        let mut config = top.clone();
        config.root = root(&Some(site.root.clone()), &ctx)?;
        config.files = Files::from_raw(&tables.files, &ctx)?;
        config.headers = Headers::from_raw(&tables.headers, &tables.cache, &ctx)?;
        config.redirects = Redirects::from_raw(&site.redirects, &ctx)?;
        config.sites = Vec::new();
        if let Some(path) = &site.access_log_path {
            config.log.access_file = Some(super::log::site_file(path, &raw.log, &ctx)?);
        }
        if let Some(on) = site.compression {
            config.compression.enabled = on;
        }
        config.locations = Locations::default();
        config.locations = Locations::from_raw(&site.locations, &tables.files, &config, &ctx)?;
        out.push(VirtualHost {
            names,
            config: Arc::new(config),
        });
    }
    Ok(out)
}

/// The site's tables: the top level's, with what the site wrote laid over.
/// A bad key is reported as the site's (`sites[i].files.index`).
fn tables(raw: &RawConfig, site: &RawSite, i: usize, ctx: &Ctx) -> Result<Tables, ConfigError> {
    let inherited = Tables {
        files: raw.files.clone(),
        headers: raw.headers.clone(),
        cache: raw.cache.clone(),
    };
    let own = Own {
        files: &site.files,
        headers: &site.headers,
        cache: &site.cache,
    };
    Figment::from(Serialized::defaults(inherited))
        .merge(Serialized::defaults(own))
        .extract()
        .map_err(|e| ctx.layered.explain_at(e, &["sites".into(), i.to_string()]))
}

/// `names`, checked: at least one, each a host name or `*.` and one, none
/// claimed by an earlier site.
fn names(
    site: &RawSite,
    index: usize,
    seen: &mut Vec<(String, usize)>,
    ctx: &Ctx,
) -> Result<Names, ConfigError> {
    if site.names.is_empty() {
        return Err(ctx.bad(
            &["names"],
            "a site needs at least one name".into(),
            "e.g. names = [\"example.com\", \"www.example.com\"]",
        ));
    }
    let mut all = Vec::with_capacity(site.names.len());
    for (j, written) in site.names.iter().enumerate() {
        let idx = j.to_string();
        let key = ["names", idx.as_str()];
        let name = normalized(written);
        if !valid_name(&name) {
            return Err(ctx.bad(
                &key,
                format!("`{written}` is not a host name"),
                "write a name such as \"example.com\" or \"*.example.com\", without scheme, port or path",
            ));
        }
        if name == DEFAULT_LABEL || name == NONE_LABEL {
            return Err(ctx.bad(
                &key,
                format!("`{name}` is reserved for the `site` metric label"),
                "the top-level settings are the default site; set default_site = true",
            ));
        }
        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
            let whose = match *other == index {
                true => "this site".to_string(),
                false => format!("sites[{other}]"),
            };
            return Err(ctx.bad(
                &key,
                format!("`{name}` is already a name of {whose}"),
                "each name belongs to one site",
            ));
        }
        seen.push((name.clone(), index));
        all.push(name);
    }
    Ok(Names { all })
}

/// A configured name as requests are matched against it: lower case, no
/// trailing dot. A site's first name so written is its label, in metrics
/// and on its certificates (`CertSpec::site`).
pub(super) fn normalized(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS name (letters, digits, `-`, dots between labels), an IPv4 address
/// or a bracketed IPv6 one, optionally `*.` before a name.
fn valid_name(name: &str) -> bool {
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};

    /// A config with two site roots made under the test's temp dir.
    fn two_sites(extra: &str) -> String {
        let a = tempfile::tempdir().unwrap().keep();
        let b = tempfile::tempdir().unwrap().keep();
        format!(
            "[files]\nindex = [\"home.html\"]\nmime_types = {{ md = \"text/markdown\" }}\n\
             [cache]\ndefault = \"max-age=60\"\n\
             [[sites]]\nnames = [\"a.test\", \"*.a.test\"]\nroot = {a:?}\n\
             [sites.files]\ndirectory_listing = true\nmime_types = {{ log = \"text/plain\" }}\n\
             [[sites.redirects]]\nfrom = \"/old\"\nto = \"/new\"\n\
             [[sites]]\nnames = [\"B.test.\"]\nroot = {b:?}\n{extra}"
        )
    }

    #[test]
    fn sites_inherit_the_top_level_key_by_key() {
        let cfg = valid(&two_sites(""));
        assert_eq!(cfg.sites.len(), 2);
        let a = &cfg.sites[0];
        assert_eq!(a.names.all, ["a.test", "*.a.test"]);
        assert_eq!(a.names.label(), "a.test");
        // Set by the site.
        assert!(a.config.files.directory_listing);
        // Inherited.
        assert_eq!(a.config.files.index, ["home.html"]);
        assert_eq!(
            a.config.headers.cache_default.as_ref().unwrap(),
            "max-age=60"
        );
        // A table adds to the top level's.
        assert!(a.config.files.mime_types.contains_key("md"));
        assert!(a.config.files.mime_types.contains_key("log"));
        // Redirects are the site's own.
        assert!(!a.config.redirects.is_empty());
        assert!(cfg.redirects.is_empty());
        let b = &cfg.sites[1];
        assert_eq!(b.names.all, ["b.test"]);
        assert!(!b.config.files.directory_listing);
        assert!(b.config.redirects.is_empty());
        assert_ne!(a.config.root, b.config.root);
        assert!(a.config.sites.is_empty());
    }

    #[test]
    fn bad_sites_name_the_key() {
        let e = invalid(&two_sites("[sites.files]\nindex = \"x\"\n"));
        assert_eq!(e.key(), Some("sites[1].files.index"), "{e}");
        let e = invalid(&two_sites("[sites.files]\ntypo = 1\n"));
        assert_eq!(e.key(), Some("sites[1].files.typo"), "{e}");
        let e = invalid(&two_sites("[sites.files]\ncache_max_bytes = \"1MiB\"\n"));
        assert_eq!(e.key(), Some("sites[1].files.cache_max_bytes"), "{e}");
        assert!(e.to_string().contains("one per server"), "{e}");
        let e = invalid(&two_sites(
            "[[sites.redirects]]\nfrom = \"/a\"\nto = \"/a\"\n",
        ));
        assert_eq!(e.key(), Some("sites[1].redirects[0].to"), "{e}");
        let e = invalid(&two_sites("[sites.cache]\ndefault = \"a\\nb\"\n"));
        assert_eq!(e.key(), Some("sites[1].cache.default"), "{e}");
        assert!(e.to_string().contains("c.toml:"), "{e}");
    }

    #[test]
    fn names_are_checked() {
        let root = tempfile::tempdir().unwrap().keep();
        let site = |names: &str| format!("[[sites]]\nnames = {names}\nroot = {root:?}\n");
        for (names, key) in [
            ("[]", "sites[0].names"),
            ("[\"https://a.test\"]", "sites[0].names[0]"),
            ("[\"a.test:8080\"]", "sites[0].names[0]"),
            ("[\"a.*.test\"]", "sites[0].names[0]"),
            ("[\"default\"]", "sites[0].names[0]"),
            ("[\"a.test\", \"A.test\"]", "sites[0].names[1]"),
        ] {
            let e = invalid(&site(names));
            assert_eq!(e.key(), Some(key), "{names}: {e}");
        }
        let e = invalid(&format!("{}{}", site("[\"a.test\"]"), site("[\"a.test\"]")));
        assert_eq!(e.key(), Some("sites[1].names[0]"), "{e}");
        assert!(e.to_string().contains("sites[0]"), "{e}");
        let ok = valid(&site("[\"127.0.0.1\", \"[::1]\", \"*.a.test\"]"));
        assert_eq!(ok.sites[0].names.all.len(), 3);
        let e = invalid("[[sites]]\nnames = [\"a.test\"]\nroot = \"/nonexistent/x\"\n");
        assert_eq!(e.key(), Some("sites[0].root"), "{e}");
        let e = invalid("[[sites]]\nnames = [\"a.test\"]\n");
        assert_eq!(e.key(), Some("sites[0].root"), "{e}");
    }

    #[test]
    fn without_a_default_site() {
        let e = invalid("default_site = false\n");
        assert_eq!(e.key(), Some("default_site"), "{e}");
        // No top-level root needed then.
        let dir = tempfile::tempdir().unwrap().keep();
        let cfg = valid(&format!(
            "root = {dir:?}\ndefault_site = false\n[[sites]]\nnames = [\"a.test\"]\nroot = {dir:?}\n"
        ));
        assert!(!cfg.default_site);
    }
}
