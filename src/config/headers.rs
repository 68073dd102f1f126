//! `[headers]` and `[cache]`: response headers by glob rule, compiled once.

use globset::{Glob, GlobMatcher};
use http::header::{HeaderName, HeaderValue};

use super::raw::{RawCache, RawHeaders};
use super::{ConfigError, Ctx};

/// A compiled glob rule, matched against the path relative to the root.
#[derive(Debug, Clone)]
pub struct Rule<T> {
    /// The compiled glob.
    pub glob: GlobMatcher,
    /// What the rule gives a matching path.
    pub value: T,
}

/// The validated `[headers]` and `[cache]` sections.
#[derive(Debug, Clone)]
pub struct Headers {
    /// COOP and COEP on every response.
    pub cross_origin_isolation: bool,
    /// `X-Content-Type-Options: nosniff` on every response.
    pub nosniff: bool,
    /// Cache-Control rules, first match wins.
    pub cache_rules: Vec<Rule<HeaderValue>>,
    /// Cache-Control for paths no rule matches.
    pub cache_default: Option<HeaderValue>,
    /// Extra headers; every matching rule applies, later ones override.
    pub rules: Vec<Rule<Vec<(HeaderName, HeaderValue)>>>,
    /// `headers.always`: on every response of the site, any status.
    pub always: Vec<(HeaderName, HeaderValue)>,
}

impl Headers {
    pub(super) fn from_raw(
        headers: &RawHeaders,
        cache: &RawCache,
        ctx: &Ctx,
    ) -> Result<Headers, ConfigError> {
        let glob = |path: &[&str], s: &str| {
            Glob::new(s.trim_start_matches('/'))
                .map(|g| g.compile_matcher())
                .map_err(|e| {
                    ctx.bad(
                        path,
                        format!("glob `{s}` does not compile: {}", e.kind()),
                        "globs use *, ** and {a,b}; e.g. \"*.html\" or \"assets/**\"",
                    )
                })
        };
        let mut cache_rules = Vec::new();
        for (i, r) in cache.rules.iter().enumerate() {
            let idx = i.to_string();
            cache_rules.push(Rule {
                glob: glob(&["cache", "rules", &idx, "glob"], &r.glob)?,
                value: ctx.header_value(&["cache", "rules", &idx, "value"], &r.value)?,
            });
        }
        let cache_default = if cache.default.is_empty() {
            None
        } else {
            Some(ctx.header_value(&["cache", "default"], &cache.default)?)
        };
        let mut rules = Vec::new();
        for (i, r) in headers.rules.iter().enumerate() {
            let idx = i.to_string();
            let mut set = Vec::new();
            for (name, value) in &r.set {
                let key = ["headers", "rules", idx.as_str(), "set", name.as_str()];
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ctx.bad(
                        &key,
                        format!("`{name}` is not a valid header name"),
                        "header names are tokens such as \"X-Frame-Options\"",
                    )
                })?;
                set.push((name, ctx.header_value(&key, value)?));
            }
            rules.push(Rule {
                glob: glob(&["headers", "rules", &idx, "glob"], &r.glob)?,
                value: set,
            });
        }
        let mut always = Vec::with_capacity(headers.always.len());
        for (name, value) in &headers.always {
            let key = ["headers", "always", name.as_str()];
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ctx.bad(
                    &key,
                    format!("`{name}` is not a valid header name"),
                    "header names are tokens such as \"Strict-Transport-Security\"",
                )
            })?;
            always.push((header, ctx.header_value(&key, value)?));
        }
        Ok(Headers {
            always,
            cross_origin_isolation: headers.cross_origin_isolation,
            nosniff: headers.nosniff,
            cache_rules,
            cache_default,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};

    #[test]
    fn rules_compile_in_order() {
        let h = valid(
            "[[cache.rules]]\nglob = \"/assets/**\"\nvalue = \"max-age=31536000\"\n\
             [[headers.rules]]\nglob = \"*.html\"\nset = { \"X-Frame-Options\" = \"DENY\" }\n",
        )
        .headers;
        assert!(
            h.cache_rules[0].glob.is_match("assets/app.js"),
            "leading slash dropped"
        );
        assert_eq!(h.cache_default.as_ref().unwrap(), "no-cache");
        assert_eq!(h.rules[0].value[0].0, "x-frame-options");
    }

    #[test]
    fn empty_default_sends_none() {
        assert!(valid("[cache]\ndefault = \"\"\n")
            .headers
            .cache_default
            .is_none());
    }

    #[test]
    fn bad_rules_name_the_rule_and_field() {
        let e = invalid("[[cache.rules]]\nglob = \"a\"\nvalue = \"b\"\n[[cache.rules]]\nglob = \"[\"\nvalue = \"c\"\n");
        assert_eq!(e.key(), Some("cache.rules[1].glob"));
        let e = invalid("[[headers.rules]]\nglob = \"*\"\nset = { \"Bad Name\" = \"v\" }\n");
        assert_eq!(e.key(), Some("headers.rules[0].set.Bad Name"));
        let e = invalid("[cache]\ndefault = \"bad\\nvalue\"\n");
        assert_eq!(e.key(), Some("cache.default"));
    }
}
