//! `[files]`: what is served from the root and how.

use std::collections::HashMap;
use std::time::Duration;

use http::header::HeaderValue;

use super::raw::RawFiles;
use super::types::{Encoding, SymlinkPolicy};
use super::{ConfigError, Ctx};

/// The validated `[files]` section.
#[derive(Debug, Clone)]
pub struct Files {
    /// Index file names tried in a directory, in order.
    pub index: Vec<String>,
    /// Which symlinks are followed.
    pub follow_symlinks: SymlinkPolicy,
    /// Serve names starting with a dot.
    pub dotfiles: bool,
    /// Dot-paths served even when `dotfiles` is off, without slashes around.
    pub dotfiles_allow: Vec<String>,
    /// List directories without an index.
    pub directory_listing: bool,
    /// Request paths (starting with `/`) inside the root.
    pub fallback: Option<String>,
    /// `files.try` after its `{path}` entry: each a text to put before and
    /// after the request path, tried in order when the path itself is not
    /// found (`("", ".html")` for `"{path}.html"`).
    pub try_files: Vec<(String, String)>,
    /// The page answering 404.
    pub not_found_page: Option<String>,
    /// The page answering 5xx.
    pub server_error_page: Option<String>,
    /// Twins in server preference order.
    pub precompressed: Vec<Encoding>,
    /// Files up to this size get a content-hash ETag.
    pub etag_hash_limit: u64,
    /// More ranges than this in one request get the whole file.
    pub max_ranges: usize,
    /// Extension (lower case, no dot) -> Content-Type.
    pub mime_types: HashMap<String, HeaderValue>,
    /// Total bytes of the file cache; 0 turns it off.
    pub cache_max_bytes: u64,
    /// Largest file kept in the cache.
    pub cache_max_file_size: u64,
    /// How long a cached file is trusted before it is checked again.
    pub cache_revalidate: Duration,
    /// Within this time of a file's last change its ETag is hashed again
    /// and its bytes read again on each revalidation ([`crate::fileid::FileId::settled`]).
    pub settle_time: Duration,
}

impl Files {
    pub(super) fn from_raw(f: &RawFiles, ctx: &Ctx) -> Result<Files, ConfigError> {
        if f.index.iter().any(|i| i.is_empty() || i.contains('/')) {
            return Err(ctx.bad(
                &["files", "index"],
                "index names must be plain file names".into(),
                "e.g. [\"index.html\", \"index.htm\"]",
            ));
        }
        let mut mime_types = HashMap::new();
        for (ext, ty) in &f.mime_types {
            let key = ["files", "mime_types", ext.as_str()];
            mime_types.insert(
                ext.trim_start_matches('.').to_ascii_lowercase(),
                ctx.header_value(&key, ty)?,
            );
        }
        let site_path = |key: &str, s: &Option<String>| -> Result<Option<String>, ConfigError> {
            match s {
                None => Ok(None),
                Some(p) if p.is_empty() => Ok(None),
                Some(p) if p.contains("..") || p.contains('\0') => Err(ctx.bad(
                    &["files", key],
                    format!("`{p}` must be a plain path inside the root"),
                    "write it as a request path such as \"/index.html\"",
                )),
                Some(p) => Ok(Some(format!("/{}", p.trim_start_matches('/')))),
            }
        };
        Ok(Files {
            try_files: try_files(&f.r#try, ctx)?,
            index: f.index.clone(),
            follow_symlinks: f.follow_symlinks,
            dotfiles: f.dotfiles,
            dotfiles_allow: f
                .dotfiles_allow
                .iter()
                .map(|p| p.trim_matches('/').to_string())
                .collect(),
            directory_listing: f.directory_listing,
            fallback: site_path("fallback", &f.fallback)?,
            not_found_page: site_path("not_found_page", &f.not_found_page)?,
            server_error_page: site_path("server_error_page", &f.server_error_page)?,
            precompressed: f.precompressed.clone(),
            etag_hash_limit: f.etag_hash_limit.bytes(),
            max_ranges: f.max_ranges.max(1),
            mime_types,
            cache_max_bytes: f.cache_max_bytes.bytes(),
            cache_max_file_size: f.cache_max_file_size.bytes(),
            cache_revalidate: f.cache_revalidate.get(),
            settle_time: f.settle_time.get(),
        })
    }
}

/// `files.try`: every entry has `{path}` once and stays a path inside the
/// root; the path itself, when listed, must come first (it is always tried
/// first: `files.try` says what follows it).
fn try_files(entries: &[String], ctx: &Ctx) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let idx = i.to_string();
        let bad = |message: String, hint: &str| ctx.bad(&["files", "try", &idx], message, hint);
        let Some((before, after)) = entry.split_once("{path}") else {
            return Err(bad(
                format!("`{entry}` does not contain {{path}}"),
                "each entry is the request path with something around it, e.g. \"{path}.html\"",
            ));
        };
        if after.contains("{path}") || format!("{before}{after}").contains(['{', '}']) {
            return Err(bad(
                format!("`{entry}` may name {{path}} once and nothing else in braces"),
                "e.g. \"{path}/index.html\"",
            ));
        }
        if !before.is_empty() && !before.starts_with('/') {
            return Err(bad(
                format!("`{entry}` does not start with {{path}} or `/`"),
                "e.g. \"/pages{path}.html\"",
            ));
        }
        if entry.split('/').any(|s| s == "..") || entry.contains(['?', '#', '\0']) {
            return Err(bad(
                format!("`{entry}` must stay a path inside the root"),
                "no `..`, `?` or `#`",
            ));
        }
        if before.is_empty() && after.is_empty() {
            if i != 0 {
                return Err(bad(
                    "\"{path}\" is always tried first; list it first or not at all".into(),
                    "e.g. [\"{path}\", \"{path}.html\"]",
                ));
            }
            continue;
        }
        out.push((before.to_string(), after.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};
    use super::*;

    #[test]
    fn defaults() {
        let f = valid("").files;
        assert_eq!(f.index, ["index.html"]);
        assert_eq!(f.follow_symlinks, SymlinkPolicy::WithinRoot);
        assert_eq!(
            f.precompressed,
            [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip]
        );
        assert_eq!(f.etag_hash_limit, 64 << 20);
        assert_eq!(f.cache_revalidate, Duration::from_secs(1));
        assert_eq!(f.dotfiles_allow, [".well-known"]);
    }

    #[test]
    fn typed_values_parse() {
        let f = valid(
            "[files]\nfollow_symlinks = \"never\"\nprecompressed = [\"gzip\"]\n\
             cache_max_bytes = \"1MB\"\ncache_revalidate = \"250ms\"\nmax_ranges = 0\n",
        )
        .files;
        assert_eq!(f.follow_symlinks, SymlinkPolicy::Never);
        assert_eq!(f.precompressed, [Encoding::Gzip]);
        assert_eq!(f.cache_max_bytes, 1_000_000);
        assert_eq!(f.cache_revalidate, Duration::from_millis(250));
        assert_eq!(f.max_ranges, 1, "at least one range");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = invalid("[files]\nprecompressed = [\"br\", \"lzma\"]\n");
        assert_eq!(e.key(), Some("files.precompressed[1]"));
        assert!(e.to_string().contains("unknown encoding `lzma`"), "{e}");
        let e = invalid("[files]\nindex = [\"a/b.html\"]\n");
        assert_eq!(e.key(), Some("files.index"));
        let e = invalid("[files]\nfallback = \"/../etc/passwd\"\n");
        assert_eq!(e.key(), Some("files.fallback"));
        let e = invalid("[files.mime_types]\nwasm = \"bad\\nvalue\"\n");
        assert_eq!(e.key(), Some("files.mime_types.wasm"));
    }

    #[test]
    fn try_entries_are_checked_and_split_around_the_path() {
        let f =
            valid("[files]\ntry = [\"{path}\", \"{path}.html\", \"{path}/index.html\"]\n").files;
        assert_eq!(
            f.try_files,
            [
                ("".into(), ".html".into()),
                ("".into(), "/index.html".into())
            ]
        );
        for (entry, idx) in [
            ("\"x.html\"", 0),
            ("\"{path}{path}\"", 0),
            ("\"{path}.{ext}\"", 0),
            ("\"pages{path}\"", 0),
            ("\"{path}/../x\"", 0),
            ("\"{path}.html\", \"{path}\"", 1),
        ] {
            let e = invalid(&format!("[files]\ntry = [{entry}]\n"));
            assert_eq!(
                e.key(),
                Some(format!("files.try[{idx}]").as_str()),
                "{entry}: {e}"
            );
        }
    }

    #[test]
    fn site_paths_gain_a_leading_slash_and_mime_keys_lose_their_dot() {
        let f = valid(
            "[files]\nfallback = \"index.html\"\nnot_found_page = \"\"\n\
             [files.mime_types]\n\".WASM\" = \"application/wasm\"\n",
        )
        .files;
        assert_eq!(f.fallback.as_deref(), Some("/index.html"));
        assert_eq!(f.not_found_page, None);
        assert_eq!(f.mime_types["wasm"], "application/wasm");
    }
}
