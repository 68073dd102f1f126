//! HTML directory listings (`directory_listing = true`): sorted, escaped,
//! with sizes and dates, like nginx's autoindex.
//!
//! Anyone who can create a file in a listed directory chooses a name, so
//! names are data: every href starts with `./` (a name like
//! `javascript:alert(1)` cannot become a scheme) and is percent-encoded, and
//! the text is HTML-escaped. Entries follow the symlink policy: a link the
//! server would refuse to serve is not listed, so its target's size and date
//! do not leak.

use std::fmt::Write;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::tree::Tree;
use crate::config::Config;

/// Characters escaped in an href path segment. `&` too: in an attribute
/// `&amp;` or `&lt` is a character reference, so `a&amp;b.txt` would link
/// to `a&b.txt`.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b'&')
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'\\')
    .add(b'\'')
    .add(b':');

/// Renders the listing of `dir`, requested as `request_path` (decoded, ends
/// in `/`), with the dotfile and symlink policies of `cfg`.
pub fn render(dir: &Path, request_path: &str, cfg: &Config) -> io::Result<String> {
    use rustix::fs::{AtFlags, FileType};
    // Read through a handle opened below the root without following
    // symlinks: a directory swapped for a link since resolution fails to
    // open rather than listing somewhere else.
    let tree = Tree::open(cfg, super::tree::Wait::Disk)?;
    let fd = tree.open_dir(dir)?;
    let mut entries = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let name = String::from_utf8_lossy(raw).into_owned();
        if !cfg.files.dotfiles && name.starts_with('.') {
            continue;
        }
        let Ok(st) = rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue; // gone since it was read
        };
        let (is_dir, size, modified) = if FileType::from_raw_mode(st.st_mode).is_symlink() {
            let link = dir.join(std::ffi::OsStr::from_bytes(raw));
            match tree.check(&link) {
                // Followed for display, by the same policy as serving; a
                // dangling link is shown without size.
                Ok(Some((_, m))) => (
                    m.is_dir(),
                    m.is_file().then_some(m.len()),
                    m.modified().ok(),
                ),
                Ok(None) => continue,
                Err(_) => (false, None, None),
            }
        } else {
            let kind = FileType::from_raw_mode(st.st_mode);
            let modified = SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(
                st.st_mtime.max(0) as u64,
                st.st_mtime_nsec as u32,
            ));
            (
                kind.is_dir(),
                kind.is_file().then_some(st.st_size as u64),
                modified,
            )
        };
        entries.push((is_dir, name, size, modified));
    }
    // Directories first, then by name, like nginx's autoindex.
    entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));

    let title = escape(request_path);
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n"
    );
    if request_path != "/" {
        html.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for (is_dir, name, size, modified) in entries {
        let slash = if is_dir { "/" } else { "" };
        let href = utf8_percent_encode(&name, SEGMENT);
        let _ = writeln!(
            html,
            "<tr><td><a href=\"./{href}{slash}\">{}{slash}</a></td><td>{}</td><td>{}</td></tr>",
            escape(&name),
            size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            modified.map(fmt_date).unwrap_or_default(),
        );
    }
    html.push_str("</table></body></html>\n");
    Ok(html)
}

fn fmt_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// HTML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration whose root is `root`.
    fn config(root: &Path, extra: &str) -> Config {
        let file = root.join("c.toml");
        std::fs::write(&file, format!("root = {root:?}\n{extra}")).unwrap();
        crate::config::load(&crate::config::Sources {
            config_file: Some(file),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn names_are_escaped_and_sorted_directories_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b<script>.txt"), b"12345").unwrap();
        std::fs::write(dir.path().join("a.txt"), b"1").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"1").unwrap();
        std::fs::create_dir(dir.path().join("zdir")).unwrap();
        let html = render(dir.path(), "/x/", &config(dir.path(), "")).unwrap();
        assert!(html.contains("b&lt;script&gt;.txt"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains(".hidden"));
        let (z, a, b) = (
            html.find("zdir/").unwrap(),
            html.find("a.txt").unwrap(),
            html.find("b&lt;").unwrap(),
        );
        assert!(z < a && a < b);
        assert!(html.contains("<td>5</td>"));
    }

    #[test]
    fn a_name_cannot_become_a_script_url() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("javascript:alert(document.domain)"), b"x").unwrap();
        let html = render(dir.path(), "/", &config(dir.path(), "")).unwrap();
        assert!(!html.contains("href=\"javascript:"), "{html}");
        assert!(
            html.contains("href=\"./javascript%3Aalert(document.domain)\""),
            "{html}"
        );
    }

    /// A name holding what reads as a character reference links to itself
    /// (it linked to `a&b.txt` and `x<.txt`).
    #[test]
    fn an_ampersand_in_a_name_is_encoded_in_its_href() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a&amp;b.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("x&lt.txt"), b"x").unwrap();
        let html = render(dir.path(), "/", &config(dir.path(), "")).unwrap();
        assert!(html.contains("href=\"./a%26amp;b.txt\""), "{html}");
        assert!(html.contains("href=\"./x%26lt.txt\""), "{html}");
        assert!(html.contains(">a&amp;amp;b.txt<"), "{html}");
    }

    #[test]
    fn links_the_policy_refuses_are_not_listed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), vec![0u8; 4242]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inside.txt"), b"1").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("inside.txt"), dir.path().join("in")).unwrap();
        let html = render(dir.path(), "/", &config(dir.path(), "")).unwrap();
        assert!(
            !html.contains("4242") && !html.contains("\"./out\""),
            "{html}"
        );
        assert!(html.contains("\"./in\""), "{html}");
        let never = config(dir.path(), "[files]\nfollow_symlinks = \"never\"\n");
        let html = render(dir.path(), "/", &never).unwrap();
        assert!(!html.contains("\"./in\""), "{html}");
    }
}
