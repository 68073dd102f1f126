//! Response header policy: content type, Cache-Control and extra-header rules,
//! and the security headers every response carries.

use http::header::{self, HeaderMap, HeaderValue};

use crate::config::Headers;

/// Names of one type that mean the same to a browser; a server sends one
/// of them.
const ALIASES: &[&[&str]] = &[
    &[
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
    ],
    &["application/xml", "text/xml"],
    &["image/x-icon", "image/vnd.microsoft.icon"],
];

/// What `check` says of `types` (`compression.types`) under `overrides`
/// (`files.mime_types`): an exact entry that no file is served as
/// compresses nothing, and an entry whose alias is what files are served
/// as (`application/javascript` while `.js` is `text/javascript`) misses
/// them. `type/*` patterns are not judged.
pub fn compression_type_warnings(
    types: &[String],
    overrides: &std::collections::HashMap<String, HeaderValue>,
) -> Vec<String> {
    let essence = |v: &HeaderValue| {
        v.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    let covered = |m: &str| {
        types.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => m.starts_with(prefix),
            None => t == m,
        })
    };
    // The extensions files of type `m` have: the built-in table's and the
    // overrides'; of those, the ones actually served as `m`.
    let served_as = |m: &str| -> Vec<String> {
        let mut exts: Vec<String> = mime_guess::get_mime_extensions_str(m)
            .unwrap_or(&[])
            .iter()
            .map(|e| e.to_string())
            .collect();
        exts.extend(
            overrides
                .iter()
                .filter(|(_, v)| essence(v) == m)
                .map(|(e, _)| e.clone()),
        );
        exts.sort();
        exts.dedup();
        exts.retain(|e| essence(&content_type(&format!("x.{e}"), overrides)) == m);
        exts
    };
    let mut out = Vec::new();
    for t in types.iter().filter(|t| !t.ends_with('*')) {
        let aliases = ALIASES.iter().find(|set| set.contains(&t.as_str()));
        let mut missed = Vec::new();
        for a in aliases
            .into_iter()
            .flat_map(|set| set.iter())
            .filter(|a| **a != t)
        {
            let exts = served_as(a);
            if !covered(a) && !exts.is_empty() {
                let list: Vec<String> = exts.iter().map(|e| format!(".{e}")).collect();
                missed.push(format!(
                    "compression.types lists {t} but not {a}, which {} files are served as: they are not compressed (hint: add \"{a}\")",
                    list.join(", ")
                ));
            }
        }
        if served_as(t).is_empty() && missed.is_empty() {
            out.push(format!(
                "compression.types lists {t}, which no file is served as: it compresses nothing (hint: list the type files are served as, or map an extension to {t} in [files.mime_types])"
            ));
        }
        out.extend(missed);
    }
    out
}

/// Content-Type for a file path: config overrides first, then mime_guess's
/// table; text types get `charset=utf-8` so browsers do not sniff an encoding.
pub fn content_type(
    rel_path: &str,
    overrides: &std::collections::HashMap<String, HeaderValue>,
) -> HeaderValue {
    let ext = rel_path
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    if let Some(ext) = &ext {
        if let Some(v) = overrides.get(ext) {
            return v.clone();
        }
    }
    let mime = ext
        .as_deref()
        .and_then(|e| mime_guess::from_ext(e).first_raw())
        .unwrap_or("application/octet-stream");
    if is_text(mime) {
        HeaderValue::from_str(&format!("{mime}; charset=utf-8"))
            .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"))
    } else {
        HeaderValue::from_static(mime)
    }
}

fn is_text(mime: &str) -> bool {
    mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/manifest+json"
                | "image/svg+xml"
        )
}

/// Headers on every response, file or error: nosniff and the cross-origin
/// isolation preset (COOP + COEP + CORP, what SharedArrayBuffer needs).
pub fn apply_common(cfg: &Headers, h: &mut HeaderMap) {
    if cfg.nosniff {
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    if cfg.cross_origin_isolation {
        h.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
        h.insert(
            "cross-origin-embedder-policy",
            HeaderValue::from_static("require-corp"),
        );
        h.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("same-origin"),
        );
    }
}

/// Cache-Control for a path: the first matching rule, else the default.
pub fn cache_control<'a>(cfg: &'a Headers, rel_path: &str) -> Option<&'a HeaderValue> {
    cfg.cache_rules
        .iter()
        .find(|r| r.glob.is_match(rel_path))
        .map(|r| &r.value)
        .or(cfg.cache_default.as_ref())
}

/// Extra headers from every matching rule, in order (later rules override).
pub fn apply_rules(cfg: &Headers, rel_path: &str, h: &mut HeaderMap) {
    for rule in cfg.rules.iter().filter(|r| r.glob.is_match(rel_path)) {
        for (name, value) in &rule.value {
            h.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_types_are_judged_by_what_files_are_served_as() {
        let none = std::collections::HashMap::new();
        let w = compression_type_warnings(&["application/javascript".to_string()], &none);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("but not text/javascript, which .ecma, .es, .js, .jsm, .jsx files"),
            "{w:?}"
        );
        let w = compression_type_warnings(
            &[
                "text/*".to_string(),
                "application/javascript".to_string(),
                "image/svg+xml".to_string(),
            ],
            &none,
        );
        assert_eq!(w.len(), 0, "{w:?}");
    }
    use crate::config::Rule;
    use globset::Glob;

    fn rule<T>(g: &str, value: T) -> Rule<T> {
        Rule {
            glob: Glob::new(g).unwrap().compile_matcher(),
            value,
        }
    }

    fn headers() -> Headers {
        Headers {
            always: Vec::new(),
            cross_origin_isolation: false,
            nosniff: true,
            cache_rules: vec![
                rule("*.html", HeaderValue::from_static("no-cache")),
                rule(
                    "assets/**",
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                rule("assets/**", HeaderValue::from_static("never-reached")),
            ],
            cache_default: Some(HeaderValue::from_static("max-age=60")),
            rules: vec![
                rule(
                    "*.js",
                    vec![(
                        header::HeaderName::from_static("x-a"),
                        HeaderValue::from_static("1"),
                    )],
                ),
                rule(
                    "assets/*",
                    vec![(
                        header::HeaderName::from_static("x-a"),
                        HeaderValue::from_static("2"),
                    )],
                ),
            ],
        }
    }

    #[test]
    fn first_matching_cache_rule_wins_then_default() {
        let h = headers();
        assert_eq!(cache_control(&h, "index.html").unwrap(), "no-cache");
        assert_eq!(cache_control(&h, "docs/a/page.html").unwrap(), "no-cache");
        assert_eq!(
            cache_control(&h, "assets/app.123.js").unwrap(),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cache_control(&h, "robots.txt").unwrap(), "max-age=60");
    }

    #[test]
    fn later_header_rules_override_earlier() {
        let mut map = HeaderMap::new();
        apply_rules(&headers(), "assets/app.js", &mut map);
        assert_eq!(map["x-a"], "2");
        let mut map = HeaderMap::new();
        apply_rules(&headers(), "app.js", &mut map);
        assert_eq!(map["x-a"], "1");
    }

    #[test]
    fn content_types_with_charset_and_overrides() {
        let mut o = std::collections::HashMap::new();
        assert_eq!(content_type("a/b.html", &o), "text/html; charset=utf-8");
        assert_eq!(content_type("m.wasm", &o), "application/wasm");
        assert_eq!(content_type("x.JS", &o), "text/javascript; charset=utf-8");
        assert_eq!(content_type("noext", &o), "application/octet-stream");
        o.insert(
            "js".into(),
            HeaderValue::from_static("application/x-custom"),
        );
        assert_eq!(content_type("x.js", &o), "application/x-custom");
    }
}
