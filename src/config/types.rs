//! Typed configuration values: sizes, durations, octal modes and the
//! keyword enums, each parsed by serde while figment reads the sources, so a
//! bad value is reported with its key and the file line it came from (see
//! [`super::load`]) by the same path as any other type error.
//!
//! Each type serializes back to the spelling an operator writes ("64MiB",
//! "75s", "within-root"): the built-in defaults pass through that form, and
//! `ruchy-serve config` prints it.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Separates a value error's message from its hint inside serde's one-string
/// custom error; [`super::load`] splits them again.
pub(super) const HINT_SEPARATOR: char = '\u{1f}';

fn invalid<E: de::Error>(message: String, hint: &str) -> E {
    E::custom(format!("{message}{HINT_SEPARATOR}{hint}"))
}

/// A byte count, written "64KiB", "8 MiB", "1MB" or a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    /// The byte count.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// "64KiB", "8 MiB", "1MB", "512" -> bytes. Binary (KiB) and decimal (KB)
/// units are both accepted because operators write both; a bare `k`, `m`
/// or `g` is not (see [`ambiguous_unit`]).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    num.checked_mul(mult)
}

/// For a size written with a bare `k`, `m` or `g` (`"8m"`): the two
/// sizes it could mean. nginx reads `8m` as 8 MiB, most other tools as
/// 8 MB; a server that picked one would surprise half its operators.
pub fn ambiguous_unit(s: &str) -> Option<(String, String)> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    let (binary, decimal) = match unit {
        "k" | "K" => ("KiB", "KB"),
        "m" | "M" => ("MiB", "MB"),
        "g" | "G" => ("GiB", "GB"),
        _ => return None,
    };
    (!num.is_empty()).then(|| (format!("{num}{binary}"), format!("{num}{decimal}")))
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        let text = match n {
            0 => "0".to_string(),
            n if n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
            n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
            n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
            n => n.to_string(),
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64KiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| self.visit_str::<E>(&v.to_string()).unwrap_err())
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                if let Some((binary, decimal)) = ambiguous_unit(s) {
                    return Err(invalid(
                        format!(
                            "`{s}` is ambiguous: nginx reads it as {binary}, most tools as {decimal}"
                        ),
                        "write the unit in full, e.g. \"8MiB\" (nginx's 8m) or \"8MB\"",
                    ));
                }
                parse_size(s).map(Size).ok_or_else(|| {
                    invalid(
                        format!("`{s}` is not a size"),
                        "write e.g. \"64KiB\", \"8MiB\" or a number of bytes",
                    )
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration, written "10s", "500ms", "2m" (humantime's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let text = if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else if d.subsec_nanos() % 1_000_000 == 0 {
            format!("{}ms", d.as_millis())
        } else {
            humantime::format_duration(d).to_string()
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Span).map_err(|e| {
            invalid(
                format!("`{s}` is not a duration: {e}"),
                "write e.g. \"10s\", \"500ms\" or \"2m\"",
            )
        })
    }
}

/// Permission bits of a unix socket file, written in octal ("0660").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let m = String::deserialize(d)?;
        u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(Mode)
            .ok_or_else(|| {
                invalid(
                    format!("`{m}` is not an octal permission mode"),
                    "write e.g. \"0660\"",
                )
            })
    }
}

/// A configuration keyword enum: each variant's spelling, an error that
/// names what kind of value was wrong ("unknown policy `x`") and a hint that
/// lists the spellings.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// The configuration spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let s = String::deserialize(d)?;
                match s.as_str() {
                    $( $text => Ok($name::$variant), )+
                    other => Err(invalid(
                        format!(concat!("unknown ", $what, " `{}`"), other),
                        &one_of(&[$( $text ),+]),
                    )),
                }
            }
        }
    };
}

/// `use "a", "b" or "c"`.
fn one_of(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("\"{o}\"")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => {
            format!("use {} or {last}", rest.join(", "))
        }
        _ => format!("use {}", quoted.join("")),
    }
}

keyword_enum! {
    /// Which symlinks are followed.
    SymlinkPolicy, "policy" {
        /// Follow a symlink only while its target stays inside the root.
        WithinRoot = "within-root",
        /// Follow every symlink.
        Always = "always",
        /// Refuse any path with a symlink in it.
        Never = "never",
    }
}

keyword_enum! {
    /// A content coding for which precompressed twins are looked for.
    Encoding, "encoding" {
        /// Brotli, `.br`.
        Brotli = "br",
        /// Zstandard, `.zst`.
        Zstd = "zstd",
        /// gzip, `.gz`.
        Gzip = "gzip",
    }
}

impl Encoding {
    /// The Content-Encoding token.
    pub fn token(self) -> &'static str {
        self.as_str()
    }
    /// The file-name suffix of the precompressed twin.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Zstd => ".zst",
            Encoding::Gzip => ".gz",
        }
    }
}

keyword_enum! {
    /// The one header that names the client behind `trusted_proxies`
    /// (nginx's `real_ip_header`).
    ClientHeader, "header" {
        /// `X-Forwarded-For`.
        XForwardedFor = "x-forwarded-for",
        /// `Forwarded` (RFC 7239) `for=`.
        Forwarded = "forwarded",
    }
}

impl Default for ClientHeader {
    /// nginx's usual `real_ip_header X-Forwarded-For`.
    fn default() -> Self {
        ClientHeader::XForwardedFor
    }
}

keyword_enum! {
    /// The format of the daemon's own log messages.
    LogFormat, "format" {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
}

keyword_enum! {
    /// The access log's format, or none.
    AccessLog, "access log format" {
        /// nginx's `combined` line plus the duration.
        Combined = "combined",
        /// The same with the site first (Apache's `vhost_combined`): the
        /// site's first name, or `default` / `none`.
        VhostCombined = "vhost_combined",
        /// One JSON object per request.
        Json = "json",
        /// No access log.
        Off = "off",
    }
}

keyword_enum! {
    /// Where log messages go.
    LogTarget, "log target" {
        /// The journal when stderr is connected to it (JOURNAL_STREAM), else stderr.
        Auto = "auto",
        /// Standard error.
        Stderr = "stderr",
        /// The systemd journal.
        Journald = "journald",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct One<T> {
        v: T,
    }

    fn parse<T: for<'de> Deserialize<'de>>(toml: &str) -> Result<T, String> {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(toml))
            .extract::<One<T>>()
            .map(|o| o.v)
            .map_err(|e| e.kind.to_string())
    }

    /// How the value reads in `ruchy-serve config`: `v = "..."`.
    fn show<T: Serialize>(v: T) -> String {
        use figment::providers::Serialized;
        let value = figment::Figment::from(Serialized::defaults(One { v }))
            .find_value("v")
            .unwrap();
        format!("v = {:?}", value.as_str().unwrap())
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("8 MiB"), Some(8 << 20));
        assert_eq!(parse_size("1MB"), Some(1_000_000));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("KiB"), None);
        // nginx's 8m is 8 MiB, most tools' 8 MB: refused, naming both.
        assert_eq!(parse_size("8m"), None);
        assert_eq!(
            ambiguous_unit("8m"),
            Some(("8MiB".to_string(), "8MB".to_string()))
        );
        assert_eq!(ambiguous_unit("8MiB"), None);
        let e = parse::<Size>("v = \"8m\"").unwrap_err();
        assert!(e.contains("ambiguous") && e.contains("8MiB"), "{e}");
        assert_eq!(parse::<Size>("v = 4096"), Ok(Size(4096)));
        let e = parse::<Size>("v = \"lots\"").unwrap_err();
        assert!(e.starts_with("`lots` is not a size"), "{e}");
    }

    #[test]
    fn sizes_print_in_the_largest_whole_binary_unit() {
        assert_eq!(show(Size(64 << 20)), "v = \"64MiB\"");
        assert_eq!(show(Size(16 << 10)), "v = \"16KiB\"");
        assert_eq!(show(Size(1000)), "v = \"1000\"");
    }

    #[test]
    fn durations_round_trip_in_the_operators_spelling() {
        assert_eq!(
            parse::<Span>("v = \"75s\""),
            Ok(Span(Duration::from_secs(75)))
        );
        assert_eq!(show(Span(Duration::from_secs(75))), "v = \"75s\"");
        assert_eq!(show(Span(Duration::from_millis(250))), "v = \"250ms\"");
        let e = parse::<Span>("v = \"soon\"").unwrap_err();
        assert!(e.starts_with("`soon` is not a duration"), "{e}");
        assert!(e.contains(HINT_SEPARATOR), "{e}");
    }

    #[test]
    fn modes_are_octal_and_at_most_0777() {
        assert_eq!(parse::<Mode>("v = \"0660\""), Ok(Mode(0o660)));
        assert_eq!(show(Mode(0o660)), "v = \"0660\"");
        assert!(parse::<Mode>("v = \"1777\"").is_err());
        assert!(parse::<Mode>("v = \"rw\"").is_err());
    }

    #[test]
    fn keywords_name_the_kind_and_list_the_spellings() {
        assert_eq!(
            parse::<SymlinkPolicy>("v = \"within-root\""),
            Ok(SymlinkPolicy::WithinRoot)
        );
        let e = parse::<SymlinkPolicy>("v = \"sometimes\"").unwrap_err();
        let (msg, hint) = e.split_once(HINT_SEPARATOR).unwrap();
        assert_eq!(msg, "unknown policy `sometimes`");
        assert_eq!(hint, "use \"within-root\", \"always\" or \"never\"");
        assert_eq!(show(AccessLog::Combined), "v = \"combined\"");
        assert_eq!(Encoding::Zstd.token(), "zstd");
    }
}
