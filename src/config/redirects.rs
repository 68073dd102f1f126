//! `[[redirects]]`: nginx's `return 301` and `rewrite ... permanent`, as
//! rules an operator can read. Each rule is compiled and checked here, at
//! load, so a rule that cannot work (a capture `to` names but `from` lacks,
//! a `from` no request path can ever have, a rule that redirects to itself)
//! is a configuration error with its file, line and key, never a surprise
//! at request time.
//!
//! `from` is matched against the request path as the server resolves it
//! (percent-decoded, `//` and `.` segments removed: one spelling per file),
//! so `/a%20b` and `/a b` are one path, as they are one file. It is an
//! exact path, or a pattern of literal text and captures: `{name}` takes
//! one or more characters of one path segment, a final `{*name}` the rest
//! of the path (possibly empty). `to` is a path or an absolute URL and may
//! use `{name}`; each capture is percent-encoded where a path needs it, so
//! a request cannot put a line break or a `?` into the `Location` it gets.
//! The first rule that matches answers.

use http::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use regex::Regex;

use super::raw::RawRedirect;
use super::{ConfigError, Ctx};

/// What a captured value is encoded against in a `Location` path: controls,
/// space and the characters that would end or change the path.
const CAPTURE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// The configured redirects, in order.
#[derive(Debug, Clone, Default)]
pub struct Redirects {
    rules: Vec<Redirect>,
}

/// One `[[redirects]]` rule.
#[derive(Debug, Clone)]
pub struct Redirect {
    from: Pattern,
    to: Vec<Part>,
    /// 301, 302, 307 or 308.
    pub status: StatusCode,
    /// Whether the request's query string is carried to the new location.
    pub keep_query: bool,
}

/// `from`, compiled.
#[derive(Debug, Clone)]
enum Pattern {
    /// No captures: compared as a string.
    Exact(String),
    /// Captures: an anchored regex whose groups are the captures in order,
    /// and the pattern as written (a capture is `None`).
    Captures {
        regex: Regex,
        pieces: Vec<Option<String>>,
    },
}

/// A piece of `to`.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// The capture with this index in `from`, and where in `to` it lands.
    Capture(usize, Place),
}

/// Where a capture lands in `to`, which says how it is encoded: a value is
/// encoded for the place it lands, so a request can add no path to a query
/// and no parameter to a query. (A capture can never land in the scheme,
/// host or port: such a `to` is refused at load.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In the path: `/` is kept (a `{*rest}` spans segments), `?` and `#`
    /// and what a path cannot hold are encoded.
    Path,
    /// In the query: everything but unreserved characters is encoded, so
    /// `&`, `=` and `+` stay inside the value.
    Query,
}

/// What a capture landing in a query value keeps: unreserved characters.
const QUERY_VALUE: &AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Redirects {
    /// Whether no rule is configured (the request path then skips them).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The status and `Location` of the first rule matching `path` (the
    /// resolved request path), carrying `query` where the rule keeps it.
    pub fn find(&self, path: &str, query: Option<&str>) -> Option<(StatusCode, String)> {
        self.rules.iter().find_map(|r| {
            let location = r.location(path)?;
            Some((
                r.status,
                with_query(location, query.filter(|_| r.keep_query)),
            ))
        })
    }

    pub(super) fn from_raw(raw: &[RawRedirect], ctx: &Ctx) -> Result<Redirects, ConfigError> {
        let mut rules: Vec<Redirect> = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let idx = i.to_string();
            let key = |field: &'static str| ["redirects", idx.as_str(), field];
            let (from, names) = Pattern::parse(&r.from)
                .map_err(|(message, hint)| ctx.bad(&key("from"), message, hint))?;
            let to = template(&r.to, &names, &[])
                .map_err(|(message, hint)| ctx.bad(&key("to"), message, hint))?;
            let status = match r.status {
                301 | 302 | 307 | 308 => StatusCode::from_u16(r.status).expect("a valid code"),
                other => {
                    return Err(ctx.bad(
                        &key("status"),
                        format!("{other} is not a redirect status"),
                        "use 301 or 308 (permanent), 302 or 307 (temporary); 308 and 307 keep the method",
                    ))
                }
            };
            let rule = Redirect {
                from,
                to,
                status,
                keep_query: r.keep_query,
            };
            if let Some(sample) = rule.loops() {
                return Err(ctx.bad(
                    &key("to"),
                    format!(
                        "`{}` redirects `{sample}` to a path `from` matches again: a redirect loop",
                        r.to
                    ),
                    "point `to` outside what `from` matches",
                ));
            }
            if let Some(j) = rules.iter().position(|earlier| earlier.shadows(&rule)) {
                return Err(ctx.bad(
                    &key("from"),
                    format!(
                        "`{}` can never match: redirects[{j}] takes every path it would",
                        r.from
                    ),
                    "remove one of the two rules, or put the narrower one first",
                ));
            }
            rules.push(rule);
        }
        let redirects = Redirects { rules };
        if let Some((chain, start)) = redirects.cycle() {
            let last = *chain.last().expect("a cycle has a rule");
            let hops: Vec<String> = chain.iter().map(|j| format!("redirects[{j}]")).collect();
            return Err(ctx.bad(
                &["redirects", last.to_string().as_str(), "to"],
                format!(
                    "`{start}` goes round a redirect loop: {} and back",
                    hops.join(" -> ")
                ),
                "point one of these rules' `to` at a path no rule matches",
            ));
        }
        Ok(redirects)
    }

    /// A loop across rules: the rules a path goes through (by index) until
    /// it comes back to a path already seen, and the path it started from.
    /// Each rule's sample path is followed through [`Redirects::find`], as
    /// a client following the redirects would, for at most one hop per rule.
    fn cycle(&self) -> Option<(Vec<usize>, String)> {
        for rule in &self.rules {
            let start = rule.sample();
            let mut seen = vec![start.clone()];
            let mut chain = Vec::new();
            let mut path = start.clone();
            for _ in 0..=self.rules.len() {
                let Some((j, target)) = self
                    .rules
                    .iter()
                    .enumerate()
                    .find_map(|(j, r)| Some((j, r.location(&path)?)))
                else {
                    break;
                };
                chain.push(j);
                let next = target.split('?').next().unwrap_or_default().to_string();
                if !next.starts_with('/') {
                    break;
                }
                if seen.contains(&next) {
                    return Some((chain, start));
                }
                seen.push(next.clone());
                path = next;
            }
        }
        None
    }
}

impl Redirect {
    /// Where `path` goes, if this rule matches it.
    fn location(&self, path: &str) -> Option<String> {
        let caught: Vec<&str> = match &self.from {
            Pattern::Exact(p) => {
                if p != path {
                    return None;
                }
                Vec::new()
            }
            Pattern::Captures { regex, .. } => {
                let c = regex.captures(path)?;
                (1..c.len())
                    .map(|i| c.get(i).map_or("", |m| m.as_str()))
                    .collect()
            }
        };
        Some(fill(&self.to, &caught))
    }

    /// A sample path this rule sends back into itself, if there is one: the
    /// target of a path made of `from` with each capture filled in, when it
    /// is a path (not another host) that `from` matches again.
    fn loops(&self) -> Option<String> {
        let sample = self.sample();
        let target = self.location(&sample)?;
        let path = target.split('?').next().unwrap_or_default();
        (path.starts_with('/') && self.location(path).is_some()).then_some(sample)
    }

    /// A path this rule matches: `from` with each capture filled in.
    fn sample(&self) -> String {
        match &self.from {
            Pattern::Exact(p) => p.clone(),
            Pattern::Captures { pieces, .. } => {
                pieces.iter().map(|p| p.as_deref().unwrap_or("x")).collect()
            }
        }
    }

    /// Whether every path `later` matches is taken by this earlier rule
    /// (told for exact `from`s only: the same path twice, or an exact path
    /// an earlier pattern covers).
    fn shadows(&self, later: &Redirect) -> bool {
        match &later.from {
            Pattern::Exact(p) => self.location(p).is_some(),
            Pattern::Captures { .. } => false,
        }
    }
}

impl Pattern {
    /// Compiles `from`; the capture names in order, or what is wrong and
    /// how to fix it.
    fn parse(from: &str) -> Result<(Pattern, Vec<String>), (String, &'static str)> {
        let never = |why: &str| {
            Err((
                format!("`{from}` can never match a request path: {why}"),
                "write the path as it is served, e.g. \"/old/page.html\" or \"/blog/{year}/{slug}\"",
            ))
        };
        if !from.starts_with('/') {
            return never("it does not start with `/`");
        }
        if from.contains(['?', '#']) {
            return never("`?` and `#` are not part of a path (the query is kept by `keep_query`)");
        }
        if from.contains("//") || from.split('/').any(|s| s == "." || s == "..") {
            return never("paths are matched without `//`, `.` and `..` segments");
        }
        let mut pattern = String::from("^");
        let mut names: Vec<String> = Vec::new();
        let mut pieces: Vec<Option<String>> = Vec::new();
        let mut rest = from;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err((
                    format!("`{from}` has a `}}` with no `{{`"),
                    "captures are written {name}",
                ));
            }
            pattern.push_str(&regex::escape(&rest[..open]));
            pieces.push(Some(rest[..open].to_string()));
            let Some(close) = rest[open..].find('}') else {
                return Err((
                    format!("`{from}` has a `{{` with no `}}`"),
                    "captures are written {name}",
                ));
            };
            let inner = &rest[open + 1..open + close];
            let (star, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if !valid_name(name) {
                return Err((
                    format!("`{{{inner}}}` in `{from}` is not a capture name"),
                    "names are letters, digits and `_`, e.g. {slug} or {*rest}",
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err((
                    format!("`{from}` names the capture `{name}` twice"),
                    "give each capture its own name",
                ));
            }
            rest = &rest[open + close + 1..];
            if star {
                if !rest.is_empty() {
                    return Err((
                        format!("`{{*{name}}}` in `{from}` is not at the end"),
                        "{*name} takes the rest of the path, so it must come last",
                    ));
                }
                pattern.push_str("((?s:.*))");
            } else {
                pattern.push_str("([^/]+)");
            }
            names.push(name.to_string());
            pieces.push(None);
        }
        pattern.push_str(&regex::escape(rest));
        pieces.push(Some(rest.to_string()));
        pattern.push('$');
        if names.is_empty() {
            return Ok((Pattern::Exact(from.to_string()), names));
        }
        let regex =
            Regex::new(&pattern).map_err(|e| (format!("`{from}` does not compile: {e}"), ""))?;
        Ok((Pattern::Captures { regex, pieces }, names))
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `to` with the `caught` values (by capture index) filled in, each
/// encoded for where it lands.
pub(super) fn fill(to: &[Part], caught: &[&str]) -> String {
    let mut out = String::new();
    for part in to {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Capture(i, Place::Path) => out.extend(utf8_percent_encode(caught[*i], CAPTURE)),
            Part::Capture(i, Place::Query) => {
                out.extend(utf8_percent_encode(caught[*i], QUERY_VALUE))
            }
        }
    }
    // A path target whose capture begins with `/` (`to = "/{rest}"`)
    // would start `//`: a URL of another host. One `/` it is.
    if out.starts_with("//") {
        let slashes = out.len() - out.trim_start_matches('/').len();
        out.replace_range(..slashes - 1, "");
    }
    out
}

/// Compiles `to` against the capture `names` of its `from`.
/// `rooted`: the captures that always start with `/` (a location's
/// `{path}`), which may follow the host directly.
pub(super) fn template(
    to: &str,
    names: &[String],
    rooted: &[usize],
) -> Result<Vec<Part>, (String, &'static str)> {
    let absolute = to.starts_with("https://") || to.starts_with("http://");
    if !absolute && !to.starts_with('/') {
        return Err((
            format!("`{to}` is neither a path nor an absolute URL"),
            "write \"/new/path\" or \"https://example.com/path\"",
        ));
    }
    // nginx habits that would be sent as written: `$1`, `$uri`, `$host`.
    if let Some(at) = to.find('$').filter(|&at| {
        to[at + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '{')
    }) {
        let var: String = to[at..]
            .chars()
            .take_while(|&c| c == '$' || c.is_ascii_alphanumeric() || c == '_')
            .collect();
        return Err((
            format!(
                "`{to}` has `{var}`, an nginx variable: it would be sent as those letters, \
                 not replaced"
            ),
            "write captures as {1} or {name} and the resolved path as {path}; a literal `$` as %24",
        ));
    }
    if to.contains('\\') {
        return Err((
            format!(
                "`{to}` has a `\\`: browsers read it as `/` (`/\\evil.example` leaves the site)"
            ),
            "remove it, or percent-encode it as %5C",
        ));
    }
    let mut parts = Vec::new();
    let mut rest = to;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err((
                format!("`{to}` has a `{{` with no `}}`"),
                "captures are written {name}",
            ));
        };
        let name = &rest[open + 1..open + close];
        let Some(i) = names.iter().position(|n| n == name) else {
            let known = if names.is_empty() {
                "`from` has no captures".to_string()
            } else {
                format!("`from` captures {}", names.join(", "))
            };
            return Err((
                format!("`{to}` uses `{{{name}}}`, which `from` does not capture ({known})"),
                "use a name `from` captures",
            ));
        };
        // The literal text before this capture says where it lands.
        let before = &to[..to.len() - rest.len() + open];
        let place = if before.contains('?') {
            Place::Query
        } else {
            Place::Path
        };
        let after_scheme = &before[before.find("://").map_or(0, |i| i + 3)..];
        if absolute && after_scheme.is_empty() {
            // `https://{path}` is `https:///evil.example/x`: browsers go
            // to evil.example.
            return Err((
                format!("`{to}` has no host before `{{{name}}}`: the request would choose it"),
                "name the host, e.g. \"https://example.com{path}\"",
            ));
        }
        if absolute && !rooted.contains(&i) && !after_scheme.contains('/') {
            {
                return Err((
                    format!(
                        "`{to}` puts `{{{name}}}` in the host part: a request could choose the \
                         host or port it is sent to (`{{{name}}}` = `@evil.example`)"
                    ),
                    "put a `/` between the host and the capture, e.g. \"https://example.com/{rest}\"",
                ));
            }
        }
        parts.push(Part::Capture(i, place));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    // Every capture filled in, the result must be a URI a Location can carry.
    let sample: String = parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.as_str(),
            Part::Capture(..) => "x",
        })
        .collect();
    if sample.parse::<http::Uri>().is_err() || http::HeaderValue::from_str(&sample).is_err() {
        return Err((
            format!("`{to}` is not a valid URL"),
            "percent-encode spaces and other special characters, e.g. %20",
        ));
    }
    Ok(parts)
}

/// `location` with the request's `query` appended.
fn with_query(mut location: String, query: Option<&str>) -> String {
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(q);
    }
    location
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};
    use super::*;

    fn rules(body: &str) -> Redirects {
        valid(body).redirects
    }

    fn rule(from: &str, to: &str) -> String {
        format!("[[redirects]]\nfrom = \"{from}\"\nto = \"{to}\"\n")
    }

    /// nginx habits that would do nothing (or worse) are refused with the
    /// fix: `$1` and `$uri` sent as letters, a host the request chooses,
    /// a backslash browsers read as `/`.
    #[test]
    fn nginx_variables_and_request_chosen_hosts_are_refused() {
        for (from, to, says) in [
            ("/blog/{a}/{b}", "/posts/$1-$2", "`$1`, an nginx variable"),
            ("/old/{rest}", "https://example.com$uri", "`$uri`"),
        ] {
            let e = invalid(&rule(from, to));
            assert_eq!(e.key(), Some("redirects[0].to"), "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = invalid("[[locations]]\nprefix = \"/x/\"\nreturn = 301\nto = \"https://{path}\"\n");
        assert_eq!(e.key(), Some("locations[0].to"), "{e}");
        assert!(e.to_string().contains("no host"), "{e}");
        let e =
            invalid("[[locations]]\nprefix = \"/x/\"\nreturn = 301\nto = \"/\\\\evil.example\"\n");
        assert!(e.to_string().contains("`\\`"), "{e}");
        // A `$` that is no variable is fine, and so is a named host.
        rules(&rule("/a", "/price$"));
        valid(
            "[[locations]]\nprefix = \"/x/\"\nreturn = 301\nto = \"https://example.com{path}\"\n",
        );
    }

    #[test]
    fn exact_paths_and_the_default_status() {
        let r = rules(&rule("/old.html", "/new.html"));
        assert_eq!(
            r.find("/old.html", None),
            Some((StatusCode::PERMANENT_REDIRECT, "/new.html".into()))
        );
        assert_eq!(r.find("/old.htm", None), None);
        assert_eq!(r.find("/old.html/", None), None);
    }

    #[test]
    fn captures_take_one_segment_and_rest_takes_the_remainder() {
        let r = rules(&rule("/blog/{year}/{slug}", "/posts/{year}-{slug}"));
        assert_eq!(
            r.find("/blog/2024/hello", None).unwrap().1,
            "/posts/2024-hello"
        );
        assert_eq!(
            r.find("/blog/2024/hello/more", None),
            None,
            "one segment each"
        );
        assert_eq!(
            r.find("/blog/2024/", None),
            None,
            "a capture is never empty"
        );
        let r = rules(&rule("/docs/{*rest}", "https://docs.example.com/{rest}"));
        assert_eq!(
            r.find("/docs/a/b.html", None).unwrap().1,
            "https://docs.example.com/a/b.html"
        );
        assert_eq!(
            r.find("/docs/", None).unwrap().1,
            "https://docs.example.com/"
        );
        let r = rules(&rule("/p-{id}.html", "/post/{id}"));
        assert_eq!(r.find("/p-42.html", None).unwrap().1, "/post/42");
    }

    #[test]
    fn a_capture_cannot_inject_into_the_location() {
        let r = rules(&rule("/go/{*rest}", "/to/{rest}"));
        // The resolved path is decoded: what was %0d%0a, %3f, %20 in the
        // request arrives here as the characters themselves.
        let (_, loc) = r.find("/go/a\r\nSet-Cookie: x?y z#w", None).unwrap();
        assert_eq!(loc, "/to/a%0D%0ASet-Cookie:%20x%3Fy%20z%23w");
        assert!(http::HeaderValue::from_str(&loc).is_ok());
        let (_, loc) = r.find("/go/é", None).unwrap();
        assert_eq!(loc, "/to/%C3%A9");
    }

    #[test]
    fn the_query_is_kept_unless_told_otherwise() {
        let r = rules(&rule("/a", "/b"));
        assert_eq!(r.find("/a", Some("x=1")).unwrap().1, "/b?x=1");
        let r = rules(&rule("/a", "/b?from=a"));
        assert_eq!(r.find("/a", Some("x=1")).unwrap().1, "/b?from=a&x=1");
        let r = rules(&format!("{}keep_query = false\n", rule("/a", "/b")));
        assert_eq!(r.find("/a", Some("x=1")).unwrap().1, "/b");
    }

    #[test]
    fn statuses_and_order() {
        let body = format!(
            "{}status = 302\n{}status = 301\n",
            rule("/a/{x}", "/one/{x}"),
            rule("/a/{x}/{y}", "/two")
        );
        let r = rules(&body);
        assert_eq!(
            r.find("/a/1", None),
            Some((StatusCode::FOUND, "/one/1".into()))
        );
        assert_eq!(
            r.find("/a/1/2", None),
            Some((StatusCode::MOVED_PERMANENTLY, "/two".into()))
        );
        let e = invalid(&format!("{}status = 200\n", rule("/a", "/b")));
        assert_eq!(e.key(), Some("redirects[0].status"));
    }

    /// A capture is encoded for where it lands: the host never changes, a
    /// query value cannot add parameters, a path cannot become `//host`.
    #[test]
    fn captures_cannot_turn_a_rule() {
        let r = rules(&format!(
            "{}{}{}",
            rule("/blog/{*rest}", "https://blog.example.com/{rest}"),
            rule("/search/{q}", "/find?q={q}"),
            rule("/go{*rest}", "/{rest}"),
        ));
        let to = |p: &str| r.find(p, None).map(|(_, l)| l);
        assert_eq!(
            to("/blog/@evil.example").as_deref(),
            Some("https://blog.example.com/@evil.example")
        );
        assert_eq!(
            to("/search/cats&lang=xx&admin=1").as_deref(),
            Some("/find?q=cats%26lang%3Dxx%26admin%3D1")
        );
        assert_eq!(to("/go/evil.example/x").as_deref(), Some("/evil.example/x"));
        for p in ["/blog/@evil.example", "/go/evil.example/x", "/go//x"] {
            let l = to(p).unwrap();
            let uri: http::Uri = l.parse().unwrap();
            assert!(
                uri.host().is_none_or(|h| h == "blog.example.com"),
                "{p} -> {l}"
            );
        }
    }

    #[test]
    fn every_bad_rule_names_its_key() {
        let cases = [
            (rule("old", "/new"), "redirects[0].from"),
            (rule("/a?b=1", "/new"), "redirects[0].from"),
            (rule("/a//b", "/new"), "redirects[0].from"),
            (rule("/a/../b", "/new"), "redirects[0].from"),
            (rule("/a/{x", "/new"), "redirects[0].from"),
            (rule("/a/x}", "/new"), "redirects[0].from"),
            (rule("/a/{}", "/new"), "redirects[0].from"),
            (rule("/a/{1x}", "/new"), "redirects[0].from"),
            (rule("/a/{x}/{x}", "/new"), "redirects[0].from"),
            (rule("/a/{*x}/b", "/new"), "redirects[0].from"),
            (rule("/a/{x}", "/new/{y}"), "redirects[0].to"),
            (rule("/a", "/new/{y}"), "redirects[0].to"),
            (rule("/a", "new"), "redirects[0].to"),
            (rule("/a", "/with space"), "redirects[0].to"),
            // Loops: to itself, and to a path the pattern takes again.
            (rule("/a", "/a"), "redirects[0].to"),
            (rule("/docs/{*rest}", "/docs/v2/{rest}"), "redirects[0].to"),
            (rule("/x/{n}", "/x/{n}"), "redirects[0].to"),
            // Across rules: two, and three with a pattern.
            (
                format!("{}{}", rule("/loopa", "/loopb"), rule("/loopb", "/loopa")),
                "redirects[1].to",
            ),
            (
                format!(
                    "{}{}{}",
                    rule("/p/{x}", "/q/{x}"),
                    rule("/q/{x}", "/r/{x}"),
                    rule("/r/{x}", "/p/{x}")
                ),
                "redirects[2].to",
            ),
            // Shadowed: the same path twice, an exact path a pattern covers.
            (
                format!("{}{}", rule("/a", "/b"), rule("/a", "/c")),
                "redirects[1].from",
            ),
            (
                format!("{}{}", rule("/a/{x}", "/b/{x}"), rule("/a/y", "/c")),
                "redirects[1].from",
            ),
        ];
        for (body, key) in cases {
            let e = invalid(&body);
            assert_eq!(e.key(), Some(key), "{body}: {e}");
        }
        // A capture can reach the host or port: refused.
        let e = invalid(&rule("/blog{*rest}", "https://blog.example.com{rest}"));
        assert_eq!(e.key(), Some("redirects[0].to"), "{e}");
        let e = invalid(&rule("/u/{name}", "https://{name}.example.com/"));
        assert_eq!(e.key(), Some("redirects[0].to"), "{e}");
        // Not a loop: a different tree, or another host, or a chain that
        // ends.
        rules(&rule("/docs/{*rest}", "/manual/{rest}"));
        rules(&format!("{}{}", rule("/a", "/b"), rule("/b", "/c")));
        rules(&rule("/a", "https://example.com/a"));
    }
}
