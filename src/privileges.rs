//! The root-privilege policy, applied by `main` before anything is bound:
//! once its sockets are open a static file server needs no privilege, so
//! running as root is refused unless the operator says otherwise.

use crate::config::{self, Config};

/// Whether a process with effective user id `euid` may serve `cfg`.
///
/// Root is refused unless `allow_root = true`: once its sockets are open a
/// static file server needs no privilege, and as root any file the root
/// directory links to (or a mistake in `root` itself) is readable. The one
/// exception is the bundled demo tree with no configuration of its own, so
/// that the README's first command works on a fresh machine where the user is
/// root; it is logged as a warning.
pub fn check(cfg: &Config, euid: u32) -> Result<Option<String>, String> {
    if euid != 0 || cfg.allow_root {
        return Ok(None);
    }
    let demo = std::fs::canonicalize(config::demo_root()).ok();
    if cfg.source.is_none() && demo.as_deref() == Some(cfg.root.as_path()) {
        return Ok(Some(
            "running as root, allowed for the bundled demo tree only; \
             a configured root is refused as root unless allow_root = true"
                .into(),
        ));
    }
    Err(format!(
        "refusing to run as root (serving {}). Run it as an unprivileged user: \
         the systemd units in deploy/ do (DynamicUser=yes, with sockets passed by \
         systemd), or `setpriv --reuid=www-data --regid=www-data --init-groups \
         ruchy-serve ...`. Set allow_root = true (or RUCHY_SERVE_ALLOW_ROOT=true) \
         to override.",
        cfg.root.display()
    ))
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(sources: &config::Sources) -> Config {
        config::load(sources).expect("config")
    }

    #[test]
    fn non_root_is_always_allowed() {
        let cfg = load(&config::Sources::default());
        assert_eq!(check(&cfg, 1000), Ok(None));
    }

    #[test]
    fn root_is_allowed_for_the_bundled_demo_with_a_warning() {
        let cfg = load(&config::Sources::default());
        let warning = check(&cfg, 0).expect("demo allowed").expect("a warning");
        assert!(warning.contains("demo tree"), "{warning}");
    }

    #[test]
    fn root_is_refused_for_a_configured_root_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let mut sources = config::Sources {
            root: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err = check(&load(&sources), 0).unwrap_err();
        assert!(err.contains("allow_root = true"), "{err}");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!("root = {:?}\nallow_root = true\n", dir.path()),
        )
        .unwrap();
        sources.config_file = Some(file);
        assert_eq!(check(&load(&sources), 0), Ok(None));
    }
}
