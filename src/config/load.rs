//! Layering (defaults -> file -> environment -> command line) with figment, and
//! mapping every figment error back to the file line, variable or flag that
//! caused it. figment records which provider gave each value; it does not know
//! lines, so we find them in the TOML document ourselves with toml_edit spans.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use toml_edit::{ImDocument, Item, TableLike};

use super::error::{ConfigError, Origin};
use super::raw::{RawConfig, RawListen};
use super::types::HINT_SEPARATOR;

/// Environment variables with this prefix set keys (`__` between levels).
pub const ENV_PREFIX: &str = "RUCHY_SERVE_";
const DEFAULT_NAME: &str = "built-in default";
const DEMO_NAME: &str = "built-in demo default";
const CLI_NAME: &str = "command line";

/// The bundled demo tree, served when neither `--config` nor `--root` is given.
pub fn demo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/demo"))
}

/// The demo's departures from the production defaults: the bundled tree, a
/// 404 page, and cross-origin isolation for its WebAssembly threads page.
#[derive(serde::Serialize)]
struct DemoOverlay {
    root: PathBuf,
    headers: DemoHeaders,
    files: DemoFiles,
}

#[derive(serde::Serialize)]
struct DemoHeaders {
    cross_origin_isolation: bool,
}

#[derive(serde::Serialize)]
struct DemoFiles {
    not_found_page: &'static str,
}

impl DemoOverlay {
    fn new() -> Self {
        DemoOverlay {
            root: demo_root(),
            headers: DemoHeaders {
                cross_origin_isolation: true,
            },
            files: DemoFiles {
                not_found_page: "/404.html",
            },
        }
    }
}

/// What the command line contributes to the configuration.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The `--config` file.
    pub config_file: Option<PathBuf>,
    /// `--root`, overriding the file.
    pub root: Option<PathBuf>,
    /// `--listen` (repeatable), replacing every `[[listen]]`.
    pub listen: Vec<String>,
}

/// A figment together with what is needed to explain its values.
pub struct Layered {
    /// The layers, for lookups of values and their origins.
    pub figment: Figment,
    file: Option<(PathBuf, String)>,
}

/// Gives a provider a fixed name, so provenance reads "command line" instead
/// of figment's generic "Serialized".
struct Named<P> {
    name: &'static str,
    inner: P,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

impl Layered {
    /// Stacks defaults, the file, the environment and the flags; reads the file.
    pub fn new(sources: &Sources) -> Result<Layered, ConfigError> {
        let mut figment = Figment::new().merge(Named {
            name: DEFAULT_NAME,
            inner: Serialized::defaults(RawConfig::default()),
        });
        if sources.config_file.is_none() && sources.root.is_none() {
            // No config and no root: the demo, which needs cross-origin
            // isolation for its WebAssembly threads page.
            figment = figment.merge(Named {
                name: DEMO_NAME,
                inner: Serialized::defaults(DemoOverlay::new()),
            });
        }
        let mut file = None;
        if let Some(path) = &sources.config_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            if let Err(e) = ImDocument::parse(text.as_str()) {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                let (line, column) = line_col(&text, offset);
                return Err(ConfigError::Syntax {
                    path: path.clone(),
                    line,
                    column,
                    message: e.message().trim().replace('\n', "; "),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
            file = Some((path.clone(), text));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        if let Some(root) = &sources.root {
            figment = figment.merge(Named {
                name: CLI_NAME,
                inner: Serialized::global("root", root),
            });
        }
        if !sources.listen.is_empty() {
            let listen: Vec<RawListen> = sources
                .listen
                .iter()
                .map(|a| RawListen {
                    address: a.clone(),
                    mode: None,
                    tls: false,
                    redirect_https: false,
                    proxy_protocol: false,
                })
                .collect();
            figment = figment.merge(Named {
                name: CLI_NAME,
                inner: Serialized::global("listen", listen),
            });
        }
        Ok(Layered { figment, file })
    }

    /// The raw configuration, typed; a bad value is reported with its origin.
    pub fn extract(&self) -> Result<RawConfig, ConfigError> {
        self.figment
            .extract()
            .map_err(|first| self.every_mistake(self.explain(first)))
    }

    /// `first` (the whole file's first mistake) and every other section's:
    /// serde stops at the first error, so each table is read again on its
    /// own and its mistake kept, and one round of `check` shows them all.
    fn every_mistake(&self, first: ConfigError) -> ConfigError {
        use super::raw::*;
        let mut errors = vec![first];
        let mut section = |key: &str, err: Option<figment::Error>| {
            if let Some(mut e) = err {
                // figment names the table last in an inner extraction's
                // path; it goes first, as in the whole file's.
                if let Some(i) = e.path.iter().rposition(|p| p == key) {
                    e.path.remove(i);
                }
                let e = self.explain_at(e, &[key.to_string()]);
                if !errors.iter().any(|k| k.to_string() == e.to_string()) {
                    errors.push(e);
                }
            }
        };
        let f = &self.figment;
        macro_rules! read {
            ($key:literal, $t:ty) => {
                if f.contains($key) {
                    section($key, f.extract_inner::<$t>($key).err());
                }
            };
        }
        read!("listen", Vec<RawListen>);
        read!("files", RawFiles);
        read!("headers", RawHeaders);
        read!("cache", RawCache);
        read!("limits", RawLimits);
        read!("log", RawLog);
        read!("tls", RawTls);
        read!("metrics", RawMetrics);
        read!("redirects", Vec<RawRedirect>);
        read!("locations", Vec<RawLocation>);
        read!("compression", RawCompression);
        read!("sites", Vec<RawSite>);
        ConfigError::all(errors)
    }

    /// The config file, if one was given.
    pub fn config_file(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    fn explain(&self, err: figment::Error) -> ConfigError {
        self.explain_at(err, &[])
    }

    /// An error from extracting a part of the configuration on its own
    /// (a `[[sites]]` entry's tables laid over the top level's,
    /// `config::sites`): its path is relative to `prefix`, and where the
    /// value came from is found in these layers.
    pub(super) fn explain_at(&self, err: figment::Error, prefix: &[String]) -> ConfigError {
        use figment::error::Kind;
        let mut path: Vec<String> = prefix.iter().cloned().chain(err.path.clone()).collect();
        let (message, hint) = match &err.kind {
            Kind::UnknownField(field, expected) => {
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                (
                    format!("unknown key `{field}`"),
                    Some(format!("expected one of: {}", expected.join(", "))),
                )
            }
            Kind::MissingField(field) => {
                path.push(field.to_string());
                (
                    "required key is missing".to_string(),
                    Some("see config/ruchy-serve.toml for every key".to_string()),
                )
            }
            Kind::InvalidType(_, expected) => (err.kind.to_string(), Some(type_hint(expected))),
            // A typed value's own error: "message<separator>hint".
            Kind::Message(m) => match m.split_once(HINT_SEPARATOR) {
                Some((message, hint)) => (message.to_string(), Some(hint.to_string())),
                None => (m.clone(), None),
            },
            other => (other.to_string(), None),
        };
        let origin = match &err.metadata {
            _ if !prefix.is_empty() => self.origin(&path),
            Some(md) => self.origin_from_metadata(md, &path),
            None => Origin::Default(DEFAULT_NAME),
        };
        ConfigError::Invalid {
            origin,
            key: display_key(&path),
            message,
            hint,
        }
    }

    /// An error about the value at `path`, pointing where that value came from.
    pub fn invalid(&self, path: &[&str], message: String, hint: Option<String>) -> ConfigError {
        let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        ConfigError::Invalid {
            origin: self.origin(&owned),
            key: display_key(&owned),
            message,
            hint,
        }
    }

    /// Whether any layer sets the value at `path`.
    pub fn has(&self, path: &[String]) -> bool {
        let Ok(mut value) = self.figment.find_value("") else {
            return false;
        };
        for seg in path {
            let next = match &value {
                Value::Dict(_, d) => d.get(seg.as_str()).cloned(),
                Value::Array(_, a) => seg.parse::<usize>().ok().and_then(|i| a.get(i).cloned()),
                _ => None,
            };
            match next {
                Some(v) => value = v,
                None => return false,
            }
        }
        true
    }

    /// Where the value at `path` came from (its file line, variable or flag).
    pub fn origin(&self, path: &[String]) -> Origin {
        let merged = match self.figment.find_value("") {
            Ok(v) => v,
            Err(_) => return Origin::Default(DEFAULT_NAME),
        };
        // Walk down as far as the path exists; an absent leaf is explained by
        // its parent's origin.
        let mut value = &merged;
        for seg in path {
            let next = match value {
                Value::Dict(_, d) => d.get(seg.as_str()),
                Value::Array(_, a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            match next {
                Some(v) => value = v,
                // Absent from every layer: the file is where it belongs.
                None if self.file.is_some() && std::ptr::eq(value, &merged) => {
                    let (file, _) = self.file.as_ref().expect("checked");
                    return Origin::File {
                        path: file.clone(),
                        line: None,
                    };
                }
                None => break,
            }
        }
        match self.figment.get_metadata(value.tag()) {
            Some(md) => self.origin_from_metadata(md, path),
            None => Origin::Default(DEFAULT_NAME),
        }
    }

    fn origin_from_metadata(&self, md: &Metadata, path: &[String]) -> Origin {
        match &md.source {
            Some(Source::File(file)) => {
                let line = self
                    .file
                    .as_ref()
                    .and_then(|(_, text)| locate_line(text, path));
                Origin::File {
                    path: file.clone(),
                    line,
                }
            }
            _ if md.name == CLI_NAME => Origin::Cli(match path.first().map(String::as_str) {
                Some("listen") => "--listen".into(),
                _ => "--root".into(),
            }),
            _ if md.name == DEFAULT_NAME => Origin::Default(DEFAULT_NAME),
            _ if md.name == DEMO_NAME => Origin::Default(DEMO_NAME),
            _ => Origin::Env(env_var_name(path)),
        }
    }

    /// Every leaf of the effective configuration with its origin, in key order:
    /// what `ruchy-serve config` prints.
    pub fn provenance(&self) -> Vec<(String, String, Origin)> {
        let mut out = Vec::new();
        if let Ok(root) = self.figment.find_value("") {
            self.walk(&root, &mut Vec::new(), &mut out);
        }
        out
    }

    fn walk(&self, value: &Value, path: &mut Vec<String>, out: &mut Vec<(String, String, Origin)>) {
        match value {
            Value::Dict(_, dict) if !dict.is_empty() => {
                for (k, v) in dict {
                    path.push(k.clone());
                    self.walk(v, path, out);
                    path.pop();
                }
            }
            Value::Array(_, items) if items.iter().any(|v| matches!(v, Value::Dict(..))) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    self.walk(v, path, out);
                    path.pop();
                }
            }
            leaf => {
                let origin = match self.figment.get_metadata(leaf.tag()) {
                    Some(md) => self.origin_from_metadata(md, path),
                    None => Origin::Default(DEFAULT_NAME),
                };
                out.push((display_key(path), toml_value(leaf), origin));
            }
        }
    }
}

/// How to write a value of the type serde expected.
fn type_hint(expected: &str) -> String {
    let how = if ["usize", "u64", "u32", "u16", "u8", "i64", "i32"].contains(&expected) {
        "a whole number without quotes, e.g. 16"
    } else if expected.contains("bool") {
        "true or false, without quotes"
    } else if expected.contains("string") {
        "a quoted string"
    } else if expected.contains("sequence") {
        "a list, e.g. [\"a\", \"b\"]"
    } else if expected.contains("map") || expected.contains("struct") {
        "a table, e.g. [section] or { key = \"value\" }"
    } else {
        "the type shown in config/ruchy-serve.toml"
    };
    format!("write {how}")
}

/// `cache.rules.2.glob` -> `cache.rules[2].glob`, the way an operator reads it.
pub fn display_key(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn env_var_name(path: &[String]) -> String {
    format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
}

fn toml_value(v: &Value) -> String {
    match v {
        Value::String(_, s) => format!("{s:?}"),
        Value::Char(_, c) => format!("\"{c}\""),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(..) => v
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| v.to_i128().map(|n| n.to_string()))
            .or_else(|| v.to_f64().map(|n| n.to_string()))
            .unwrap_or_default(),
        Value::Empty(..) => "\"\"".into(),
        Value::Dict(_, d) if d.is_empty() => "{}".into(),
        Value::Dict(_, d) => format!(
            "{{ {} }}",
            d.iter()
                .map(|(k, v)| format!("{k:?} = {}", toml_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(_, a) => format!(
            "[{}]",
            a.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// The line of the deepest part of `path` that the TOML document spells out.
pub fn locate_line(text: &str, path: &[String]) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut table: &dyn TableLike = doc.as_table();
    let mut span = None;
    let mut segs = path.iter().peekable();
    while let Some(seg) = segs.next() {
        let Some((key, item)) = table.get_key_value(seg) else {
            break;
        };
        span = key.span().or(span);
        let item = match (item, segs.peek().and_then(|s| s.parse::<usize>().ok())) {
            (Item::ArrayOfTables(aot), Some(i)) => {
                segs.next();
                match aot.get(i) {
                    Some(t) => {
                        span = t.span().or(span);
                        t as &dyn TableLike
                    }
                    None => break,
                }
            }
            (item, _) => match item.as_table_like() {
                Some(t) => t,
                None => break,
            },
        };
        table = item;
    }
    span.map(|s| line_col(text, s.start).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(String::from).collect()
    }

    #[test]
    fn locates_keys_in_tables_and_arrays_of_tables() {
        let text = "root = \"/srv\"\n\n[files]\nindex = [\"a\"]\n\n[[cache.rules]]\nglob = \"a\"\nvalue = \"b\"\n\n[[cache.rules]]\nglob = \"[\"\nvalue = \"c\"\n";
        assert_eq!(locate_line(text, &p("root")), Some(1));
        assert_eq!(locate_line(text, &p("files.index")), Some(4));
        assert_eq!(locate_line(text, &p("cache.rules.1.glob")), Some(11));
        assert_eq!(locate_line(text, &p("cache.rules.0.value")), Some(8));
        // A key the file does not have points at its nearest spelled-out parent.
        assert_eq!(locate_line(text, &p("files.nothing")), Some(3));
    }

    #[test]
    fn display_key_brackets_indexes() {
        assert_eq!(display_key(&p("cache.rules.2.glob")), "cache.rules[2].glob");
    }
}
