//! Names the commit a binary was built from in `ruchy_serve_build_info`:
//! `RUCHY_BUILD_COMMIT` when the packaging sets it (not `RUCHY_SERVE_...`:
//! cargo hands this variable to test and run processes too, and every
//! `RUCHY_SERVE_` variable is configuration), else the checkout's
//! `git rev-parse --short=12 HEAD` (a build outside a checkout, or without
//! git, says "unknown").

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RUCHY_BUILD_COMMIT");
    if std::env::var_os("RUCHY_BUILD_COMMIT").is_some() {
        return;
    }
    let git = Path::new(".git");
    if !git.exists() {
        return;
    }
    // Rebuilt when the checkout moves: HEAD, and the branch it points at.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            if git.join(r).exists() {
                println!("cargo:rerun-if-changed=.git/{r}");
            }
        }
    }
    if git.join("packed-refs").exists() {
        println!("cargo:rerun-if-changed=.git/packed-refs");
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    if let Ok(out) = out {
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !commit.is_empty() {
            println!("cargo:rustc-env=RUCHY_BUILD_COMMIT={commit}");
        }
    }
}
