//! HTML directory listings (`directory_listing = true`): sorted, escaped,
//! with sizes and dates, like nginx's autoindex.

use std::fmt::Write;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters escaped in an href path segment.
const SEGMENT: &AsciiSet = &CONTROLS
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
    .add(b'\'');

/// Renders the listing of `dir`, requested as `request_path` (decoded, ends in `/`).
pub fn render(dir: &Path, request_path: &str, show_dotfiles: bool) -> io::Result<String> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !show_dotfiles && name.starts_with('.') {
            continue;
        }
        // Follow symlinks for display; a dangling one is shown without size.
        let meta = std::fs::metadata(entry.path()).ok();
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        let size = meta.as_ref().filter(|m| m.is_file()).map(|m| m.len());
        let modified = meta.and_then(|m| m.modified().ok());
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
            "<tr><td><a href=\"{href}{slash}\">{}{slash}</a></td><td>{}</td><td>{}</td></tr>",
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

    #[test]
    fn names_are_escaped_and_sorted_directories_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b<script>.txt"), b"12345").unwrap();
        std::fs::write(dir.path().join("a.txt"), b"1").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"1").unwrap();
        std::fs::create_dir(dir.path().join("zdir")).unwrap();
        let html = render(dir.path(), "/x/", false).unwrap();
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
}
