//! `[compression]`: files nobody precompressed are compressed once per
//! version, on the blocking pool, and the result is kept (nginx's `gzip on`
//! compresses on every request; this is closer to its `gzip_static` with the
//! twin made for you). See `serve::compress` for how.

use http::header::HeaderValue;

use super::raw::RawCompression;
use super::types::Encoding;
use super::{ConfigError, Ctx};

/// The validated `[compression]` section.
#[derive(Debug, Clone)]
pub struct Compression {
    /// Off: only precompressed twins are sent compressed.
    pub enabled: bool,
    /// Codings offered, in server preference order (ties in the client's
    /// q-values go to the first).
    pub encodings: Vec<Encoding>,
    /// Content types compressed: exact types, and `type/` prefixes for
    /// `type/*`.
    types: Vec<String>,
    /// Files from this size ...
    pub min_size: u64,
    /// ... up to this size are compressed.
    pub max_size: u64,
    /// Levels: gzip 1-9, brotli 0-11, zstd 1-22.
    pub gzip_level: u32,
    /// Brotli quality.
    pub brotli_level: u32,
    /// Zstandard level.
    pub zstd_level: i32,
    /// Bytes of compressed variants kept.
    pub cache_max_bytes: u64,
    /// Compressions running at once.
    pub max_concurrent: usize,
}

impl Compression {
    /// Whether a file of `content_type` and `len` bytes is compressed.
    pub fn applies(&self, content_type: &HeaderValue, len: u64) -> bool {
        if !self.enabled || len < self.min_size || len > self.max_size {
            return false;
        }
        let full = content_type.to_str().unwrap_or("");
        let essence = full.split(';').next().unwrap_or("").trim();
        self.types.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => essence.starts_with(prefix),
            None => essence.eq_ignore_ascii_case(t),
        })
    }

    /// The `types` as configured (lower case; `type/*` patterns kept).
    pub fn types(&self) -> &[String] {
        &self.types
    }

    /// The level for `enc`, as a label for variant ETags.
    pub fn level(&self, enc: Encoding) -> i64 {
        match enc {
            Encoding::Gzip => self.gzip_level as i64,
            Encoding::Brotli => self.brotli_level as i64,
            Encoding::Zstd => self.zstd_level as i64,
        }
    }

    pub(super) fn from_raw(raw: &RawCompression, ctx: &Ctx) -> Result<Compression, ConfigError> {
        let key = |k: &'static str| ["compression", k];
        let range = |k: &'static str, v: i64, lo: i64, hi: i64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(ctx.bad(
                    &key(k),
                    format!("{v} is outside {lo}..={hi}"),
                    &format!("use a value from {lo} to {hi}"),
                ))
            }
        };
        range("gzip_level", raw.gzip_level as i64, 1, 9)?;
        range("brotli_level", raw.brotli_level as i64, 0, 11)?;
        range("zstd_level", raw.zstd_level as i64, 1, 22)?;
        if raw.min_size.bytes() > raw.max_size.bytes() {
            return Err(ctx.bad(
                &key("min_size"),
                format!(
                    "min_size ({} bytes) is above max_size ({} bytes)",
                    raw.min_size.bytes(),
                    raw.max_size.bytes()
                ),
                "e.g. min_size = \"256B\", max_size = \"8MiB\"",
            ));
        }
        let mut types = Vec::new();
        for (i, t) in raw.types.iter().enumerate() {
            let idx = i.to_string();
            let ok = match t.split_once('/') {
                Some((top, sub)) => {
                    !top.is_empty()
                        && !sub.is_empty()
                        && !top.contains('*')
                        && (sub == "*" || !sub.contains('*'))
                        && t.bytes().all(|b| b.is_ascii_graphic())
                }
                None => false,
            };
            if !ok {
                return Err(ctx.bad(
                    &["compression", "types", &idx],
                    format!("`{t}` is not a content type or `type/*`"),
                    "e.g. \"text/*\" or \"application/json\"",
                ));
            }
            types.push(t.to_ascii_lowercase());
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Compression {
            enabled: raw.enabled,
            encodings: raw.encodings.clone(),
            types,
            min_size: raw.min_size.bytes(),
            max_size: raw.max_size.bytes(),
            gzip_level: raw.gzip_level,
            brotli_level: raw.brotli_level,
            zstd_level: raw.zstd_level,
            cache_max_bytes: raw.cache_max_bytes.bytes(),
            max_concurrent: if raw.max_concurrent == 0 {
                cores
            } else {
                raw.max_concurrent
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};
    use super::*;

    #[test]
    fn defaults_cover_text_and_script_types_in_a_size_window() {
        let c = valid("").compression;
        let t = |s: &'static str| HeaderValue::from_static(s);
        assert!(c.applies(&t("text/html; charset=utf-8"), 1024));
        assert!(c.applies(&t("application/javascript"), 64 << 10));
        assert!(c.applies(&t("image/svg+xml"), 300));
        assert!(!c.applies(&t("image/png"), 64 << 10));
        assert!(!c.applies(&t("text/css"), 100), "below min_size");
        assert!(!c.applies(&t("text/css"), 9 << 20), "above max_size");
        let off = valid("[compression]\nenabled = false\n").compression;
        assert!(!off.applies(&t("text/html"), 1024));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (body, key) in [
            ("[compression]\ngzip_level = 10\n", "compression.gzip_level"),
            (
                "[compression]\nbrotli_level = 12\n",
                "compression.brotli_level",
            ),
            ("[compression]\nzstd_level = 0\n", "compression.zstd_level"),
            (
                "[compression]\nmin_size = \"1MiB\"\nmax_size = \"1KiB\"\n",
                "compression.min_size",
            ),
            (
                "[compression]\ntypes = [\"text/*\", \"*/*\"]\n",
                "compression.types[1]",
            ),
            (
                "[compression]\ntypes = [\"json\"]\n",
                "compression.types[0]",
            ),
            (
                "[compression]\nencodings = [\"lzma\"]\n",
                "compression.encodings[0]",
            ),
        ] {
            let e = invalid(body);
            assert_eq!(e.key(), Some(key), "{body}: {e}");
        }
    }
}
