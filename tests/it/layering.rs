//! The house's one structural rule, checked on the source: no module
//! imports from a module that imports it, at the top level (`conn`,
//! `handler`, `state`, ...) or between submodules (`serve::etag`,
//! `serve::resolve`, ...). A reference is any `crate::a::b` or `super::x`
//! path outside `#[cfg(test)]` code; the test names the cycle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`serve::etag`) -> source file, for every module under src/.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut mods = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        mods.insert(parts.join("::"), f);
    }
    mods
}

/// The paths a file refers to, with test code and comments left out.
fn references(text: &str) -> Vec<(bool, String)> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        for (prefix, from_super) in [("crate::", false), ("super::", true)] {
            let mut rest = line;
            while let Some(i) = rest.find(prefix) {
                rest = &rest[i + prefix.len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    // `use crate::{a, b::c}`: each item.
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split(',') {
                        out.push((from_super, path_of(item.trim())));
                    }
                } else {
                    out.push((from_super, path_of(rest)));
                }
            }
        }
    }
    out
}

fn path_of(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect::<String>()
        .trim_end_matches(':')
        .to_string()
}

/// `from` -> the modules it refers to (the longest module prefix of each path).
fn graph(top_level: bool) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let level = |m: &str| {
        if top_level {
            m.split("::").next().unwrap().to_string()
        } else {
            m.to_string()
        }
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, file) in &mods {
        let segs: Vec<&str> = m.split("::").collect();
        for (from_super, path) in references(&std::fs::read_to_string(file).unwrap()) {
            let full = if from_super {
                // `super` is the parent module, for a mod.rs and a plain
                // file alike: drop the last segment.
                let parent = &segs[..segs.len() - 1];
                parent
                    .iter()
                    .map(|s| s.to_string())
                    .chain(std::iter::once(path))
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("::")
            } else {
                path
            };
            let parts: Vec<&str> = full.split("::").collect();
            let target = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|c| mods.contains_key(c));
            if let Some(t) = target {
                let (a, b) = (level(m), level(&t));
                if a != b && !m.starts_with(&format!("{t}::")) {
                    g.entry(a).or_default().insert(b);
                }
            }
        }
    }
    g
}

/// A cycle through `start`, if there is one.
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in g.get(&node).into_iter().flatten() {
            if next == start {
                let mut p = path.clone();
                p.push(start.to_string());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

fn assert_acyclic(top_level: bool) {
    let g = graph(top_level);
    assert!(g.len() > 5, "the source was read: {g:?}");
    for m in g.keys() {
        if let Some(c) = cycle_from(&g, m) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn no_import_cycles_between_top_level_modules() {
    assert_acyclic(true);
}

#[test]
fn no_import_cycles_between_submodules() {
    assert_acyclic(false);
}

#[test]
fn state_sits_low() {
    // Nothing that runs connections or the lifecycle is imported by state.
    let g = graph(true);
    let state = &g["state"];
    for upper in ["conn", "handler", "lifecycle", "admin"] {
        assert!(!state.contains(upper), "state imports {upper}");
    }
}
