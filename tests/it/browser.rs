//! A real browser: headless Debian Chromium loads the demo's WebAssembly page
//! from the real binary and reports what the page computed. `tests/run`
//! installs Chromium; without it this test fails rather than skipping.

use std::process::Command;

use crate::common::Daemon;

/// Loads `url` headlessly and returns the DOM after the page's promises ran.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("90")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chromium() -> String {
    for name in ["chromium", "chromium-browser"] {
        if Command::new("which")
            .arg(name)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name.to_string();
        }
    }
    panic!("Chromium is not installed: run tests/run, which installs Debian's chromium package");
}

/// The text of the `<td id="...">` cell.
fn cell(dom: &str, id: &str) -> String {
    let open = format!("id=\"{id}\">");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in DOM:\n{dom}"))
        + open.len();
    let end = dom[start..].find('<').unwrap() + start;
    dom[start..end].to_string()
}

#[test]
fn demo_page_is_cross_origin_isolated_and_runs_wasm() {
    let d = Daemon::spawn(&["--listen", "127.0.0.1:0"], &[]);
    let dom = dump_dom(&format!("http://{}/wasm/", d.addr));
    assert_eq!(cell(&dom, "isolated"), "true", "{dom}");
    assert_eq!(cell(&dom, "sab"), "true", "{dom}");
    assert_eq!(cell(&dom, "wasm"), "6765", "{dom}");
}

#[test]
fn without_the_preset_the_page_is_not_isolated() {
    let d = Daemon::spawn(
        &["--listen", "127.0.0.1:0"],
        &[("RUCHY_SERVE_HEADERS__CROSS_ORIGIN_ISOLATION", "false")],
    );
    let dom = dump_dom(&format!("http://{}/wasm/", d.addr));
    assert_eq!(cell(&dom, "isolated"), "false", "{dom}");
    assert_eq!(cell(&dom, "sab"), "false", "{dom}");
    // The module itself still loads: only isolation is missing.
    assert_eq!(cell(&dom, "wasm"), "6765", "{dom}");
}

/// Clean URLs (`files.try`): Chromium opens `/about`, which is `about.html`,
/// and the page's own stylesheet and script load beside it.
#[test]
fn a_clean_url_page_loads_with_its_assets() {
    let root = tempfile::tempdir().unwrap();
    let w = |p: &str, data: &str| {
        let path = root.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    w(
        "about.html",
        "<!doctype html><html><head><link rel=\"stylesheet\" href=\"/css/site.css\">\
         <script src=\"/js/app.js\"></script></head>\
         <body><table><tr><td id=\"script\">no</td><td id=\"color\"></td></tr></table></body></html>",
    );
    w("css/site.css", "body { color: rgb(1, 2, 3); }\n");
    w(
        "js/app.js",
        "document.addEventListener('DOMContentLoaded', () => {\n\
         document.getElementById('script').textContent = 'ran';\n\
         document.getElementById('color').textContent = getComputedStyle(document.body).color;\n});\n",
    );
    let d = Daemon::serving(
        root.path(),
        &[(
            "RUCHY_SERVE_FILES__TRY",
            "[\"{path}\", \"{path}.html\", \"{path}/index.html\"]",
        )],
    );
    let dom = dump_dom(&format!("http://{}/about", d.addr));
    assert_eq!(cell(&dom, "script"), "ran", "{dom}");
    assert_eq!(cell(&dom, "color"), "rgb(1, 2, 3)", "{dom}");
}
