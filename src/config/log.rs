//! `[log]`: the daemon's own messages and the access log.

use super::raw::RawLog;
use super::types::{AccessLog, LogFormat, LogTarget};
use super::{ConfigError, Ctx};

/// The validated `[log]` section.
#[derive(Debug, Clone)]
pub struct Log {
    /// A tracing filter directive, checked to parse.
    pub level: String,
    /// The format of the daemon's own messages.
    pub format: LogFormat,
    /// The access log's format, or off.
    pub access_log: AccessLog,
    /// Where messages go.
    pub target: LogTarget,
}

impl Log {
    pub(super) fn from_raw(raw: &RawLog, ctx: &Ctx) -> Result<Log, ConfigError> {
        let level = raw.level.clone();
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(ctx.bad(
                &["log", "level"],
                format!("`{level}` is not a log filter"),
                "use trace, debug, info, warn or error (or target=level pairs)",
            ));
        }
        Ok(Log {
            level,
            format: raw.format,
            access_log: raw.access_log,
            target: raw.target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};
    use super::*;

    #[test]
    fn keywords_and_filters() {
        let l = valid("[log]\nlevel = \"ruchy_serve=debug,warn\"\nformat = \"json\"\naccess_log = \"off\"\ntarget = \"stderr\"\n").log;
        assert_eq!(l.format, LogFormat::Json);
        assert_eq!(l.access_log, AccessLog::Off);
        assert_eq!(l.target, LogTarget::Stderr);
        let e = invalid("[log]\nlevel = \"loud=[\"\n");
        assert_eq!(e.key(), Some("log.level"));
        let e = invalid("[log]\naccess_log = \"apache\"\n");
        assert!(
            e.to_string().contains("unknown access log format `apache`"),
            "{e}"
        );
        let e = invalid("[log]\ntarget = \"syslog\"\n");
        assert!(e.to_string().contains("unknown log target `syslog`"), "{e}");
    }
}
