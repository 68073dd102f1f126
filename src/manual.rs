//! The man pages' text beyond what clap knows: ruchy-serve(1)'s sections
//! on signals, exit status, environment and files, and all of
//! ruchy-serve.toml(5), which is generated from the annotated reference
//! configuration (config/ruchy-serve.toml, built in) so that the page and
//! the file the package installs cannot disagree.

/// The reference configuration, as shipped in /etc/ruchy-serve.
pub const REFERENCE: &str = include_str!("../config/ruchy-serve.toml");

/// Text made safe for roff: backslashes escaped, and a line that would
/// start with a control character (`.` or `'`) protected.
pub fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// ruchy-serve(1)'s sections after the options and subcommands.
pub fn page1_sections() -> String {
    let sections: &[(&str, &[(&str, &str)])] = &[
        (
            "SIGNALS",
            &[
                ("SIGHUP", "Re-read and validate the configuration (every file it names, certificates included) and swap it in; a configuration with mistakes is refused, logged, and the old one keeps serving. Under systemd, `systemctl reload ruchy-serve` sends it and waits for the result (Type=notify-reload)."),
                ("SIGUSR1", "Reopen the access-log file (after logrotate moved it)."),
                ("SIGTERM, SIGINT", "Stop accepting, finish in-flight requests for at most shutdown_timeout, then exit 0. A second one exits at once."),
            ],
        ),
        (
            "EXIT STATUS",
            &[
                ("0", "Served and shut down cleanly, or check/config/man/completions succeeded."),
                ("64", "The configuration is invalid (EX_USAGE): every mistake is printed with its file, line, key and a hint, or ruchy-serve refused to run as root without allow_root."),
                ("1", "A failure at run time: a port in use, a socket systemd passed that cannot be used, the runtime could not start."),
            ],
        ),
        (
            "ENVIRONMENT",
            &[
                ("RUCHY_SERVE_<KEY>", "Any configuration key, above the file and below the command line: RUCHY_SERVE_WORKERS=2, RUCHY_SERVE_FILES__CACHE_MAX_BYTES=128MiB (double underscore between table and key). `ruchy-serve config` shows where each value came from."),
                ("LISTEN_FDS, LISTEN_FDNAMES", "Sockets passed by systemd socket activation; [[listen]] address = \"systemd:NAME\" takes one by name."),
                ("NOTIFY_SOCKET, WATCHDOG_USEC", "systemd's notification socket (READY, RELOADING, STOPPING, STATUS) and watchdog interval."),
            ],
        ),
        (
            "FILES",
            &[
                ("/etc/ruchy-serve/ruchy-serve.toml", "The configuration, every key annotated: ruchy-serve.toml(5)."),
                ("/lib/systemd/system/ruchy-serve.service, ruchy-serve*.socket", "The units: socket activation on ports 80, 443 and the metrics port, a dynamic unprivileged user, the hardening options."),
                ("/etc/logrotate.d/ruchy-serve", "Rotation of the access-log file (SIGUSR1 after the move)."),
            ],
        ),
    ];
    let mut out = String::new();
    for (title, items) in sections {
        out.push_str(&format!(".SH \"{title}\"\n"));
        for (term, text) in *items {
            out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(term), roff(text)));
        }
    }
    out.push_str(".SH \"SEE ALSO\"\n");
    out.push_str(
        "\\fBruchy\\-serve.toml\\fR(5), \\fBsystemd.socket\\fR(5), \\fBsystemctl\\fR(1)\n",
    );
    out
}

/// One key of the reference configuration: where it is, its value as
/// shipped, and the comment above it.
#[derive(Debug)]
pub struct Key {
    /// `files.index`, `listen.address`, ...
    pub name: String,
    /// The value as written in the reference file.
    pub value: String,
    /// The comment lines above it, joined.
    pub text: String,
}

/// The reference configuration as (table, its comment, its keys), in file
/// order; the top level is the table "".
pub fn reference_tables() -> Vec<(String, String, Vec<Key>)> {
    let mut tables: Vec<(String, String, Vec<Key>)> =
        vec![(String::new(), String::new(), Vec::new())];
    let mut comment: Vec<String> = Vec::new();
    for line in REFERENCE.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            comment.push(c.trim().to_string());
        } else if t.is_empty() {
            // A blank line ends a comment that belongs to no key: it goes
            // to the table's own text.
            if !comment.is_empty() {
                let table = tables.last_mut().expect("a table");
                if !table.1.is_empty() {
                    table.1.push('\n');
                }
                table.1.push_str(&comment.join(" "));
                comment.clear();
            }
        } else if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').to_string();
            tables.push((name, comment.join(" "), Vec::new()));
            comment.clear();
        } else if let Some((k, v)) = t.split_once('=') {
            let table = tables.last_mut().expect("a table");
            let name = match table.0.is_empty() {
                true => k.trim().to_string(),
                false => format!("{}.{}", table.0, k.trim()),
            };
            table.2.push(Key {
                name,
                value: v.trim().to_string(),
                text: comment.join(" "),
            });
            comment.clear();
        }
    }
    tables
}

/// ruchy-serve.toml(5), whole.
pub fn page5(version: &str) -> String {
    let mut out = format!(
        ".TH ruchy\\-serve.toml 5 \"\" \"ruchy-serve {version}\" \"File Formats\"\n\
         .SH NAME\nruchy\\-serve.toml \\- configuration of the ruchy\\-serve static\\-file HTTP daemon\n\
         .SH SYNOPSIS\n/etc/ruchy\\-serve/ruchy\\-serve.toml\n\
         .SH DESCRIPTION\nA TOML file. Every key is optional but \\fBroot\\fR; a key left out has the value shown here. \
         Sizes are written \"64KiB\", \"4MiB\", \"1GiB\" (or plain bytes), durations \"250ms\", \"30s\", \"5m\". \
         Any key can also be set in the environment as RUCHY_SERVE_<KEY> (tables joined by a double underscore), \
         and `ruchy\\-serve config` prints the effective value of every key and where it came from. \
         `ruchy\\-serve check` validates a file and reports every mistake with its file, line, key and a hint; \
         SIGHUP re\\-reads it, and a file with mistakes leaves the running configuration in place.\n\
         .PP\nThis page is generated from the annotated file the package installs.\n"
    );
    for (table, text, keys) in reference_tables() {
        let title = match table.is_empty() {
            true => "TOP LEVEL".to_string(),
            false => format!("[{table}]"),
        };
        out.push_str(&format!(".SH \"{}\"\n", roff(&title)));
        for para in text.split('\n').filter(|p| !p.is_empty()) {
            out.push_str(&format!(".PP\n{}\n", roff(para)));
        }
        for k in keys {
            out.push_str(&format!(
                ".TP\n\\fB{}\\fR = {}\n{}\n",
                roff(&k.name),
                roff(&k.value),
                roff(&k.text)
            ));
        }
    }
    out.push_str(".SH \"SEE ALSO\"\n\\fBruchy\\-serve\\fR(1)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_reference_file_is_on_the_page() {
        let page = page5("test");
        let mut n = 0;
        for line in REFERENCE.lines() {
            let t = line.trim();
            if t.starts_with('#') || t.starts_with('[') || !t.contains('=') {
                continue;
            }
            let key = t.split('=').next().unwrap().trim();
            assert!(page.contains(&roff(key)), "{key} is not on the page");
            n += 1;
        }
        assert!(n > 40, "only {n} keys read");
        assert!(
            page.contains("\\fBfiles.settle_time\\fR"),
            "keys are named with their table"
        );
    }

    #[test]
    fn roff_control_characters_are_escaped() {
        assert_eq!(roff(".hidden"), "\\&.hidden");
        assert_eq!(roff("a\\b-c"), "a\\eb\\-c");
    }
}

#[cfg(test)]
mod coverage {
    use super::*;

    /// Every key the configuration has is in the reference file (and so on
    /// ruchy-serve.toml(5)): the defaults, serialized, name them all.
    #[test]
    fn the_reference_file_has_every_key() {
        let raw = serde_json::to_value(crate::config::raw::RawConfig::default()).unwrap();
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            if let serde_json::Value::Object(m) = v {
                for (k, v) in m {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match v {
                        serde_json::Value::Object(inner)
                            if !inner.is_empty() && name != "files.mime_types" =>
                        {
                            walk(&name, v, out)
                        }
                        serde_json::Value::Array(items)
                            if items.first().is_some_and(|i| i.is_object()) =>
                        {
                            walk(&name, &items[0], out)
                        }
                        _ => out.push(name),
                    }
                }
            }
        }
        let mut keys = Vec::new();
        walk("", &raw, &mut keys);
        let documented: Vec<String> = reference_tables()
            .into_iter()
            .flat_map(|(_, _, keys)| keys.into_iter().map(|k| k.name))
            .collect();
        let text = REFERENCE;
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| {
                let last = k.rsplit('.').next().unwrap();
                !documented.contains(k)
                    // A key shown only as a commented example counts, and
                    // a table or list of tables by its header.
                    && !text.contains(&format!("# {last} ="))
                    && !text.contains(&format!("#   {last} ="))
                    && !text.contains(&format!("[{k}]"))
                    && !text.contains(&format!("[[{k}]]"))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "not in config/ruchy-serve.toml: {missing:?}"
        );
    }
}
