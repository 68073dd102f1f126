//! Logging set-up, once, from `main`. Handlers only emit events; nothing else
//! configures logging, except [`apply`] at reload (level and access-log mode).
//!
//! Destinations: the systemd journal when `log.target = "journald"`, or when
//! `"auto"` and stderr is connected to the journal (JOURNAL_STREAM names
//! stderr's device and inode, which systemd sets for StandardError=journal);
//! otherwise stderr, as text or JSON. Access-log events carry structured fields
//! (journald upper-cases them: HTTP_STATUS, HTTP_METHOD, REQUEST_PATH,
//! REMOTE_ADDR, DURATION_US) and the combined line as their message.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::access::TARGET;
use crate::config::{AccessLog, Log, LogFormat, LogTarget};

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The access-log mode as an [`AccessLog`] discriminant; read by the layer
/// filters so reload can switch between combined, JSON and off.
static ACCESS: AtomicU8 = AtomicU8::new(1);

fn access_code(a: AccessLog) -> u8 {
    match a {
        AccessLog::Off => 0,
        AccessLog::Combined | AccessLog::VhostCombined => 1,
        AccessLog::Json => 2,
    }
}

/// The global filter: the operator's level for our own messages, and the
/// access target always let through at INFO unless the access log is off
/// (the access layers pick their format by [`ACCESS`]).
fn filter(log: &Log) -> EnvFilter {
    let access = if log.access_log == AccessLog::Off {
        "off"
    } else {
        "info"
    };
    EnvFilter::try_new(format!("{},{TARGET}={access}", log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether stderr is the journal's stream (systemd's StandardError=journal).
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

/// Installs the process-wide subscriber for `log`; call once, before the runtime starts.
pub fn init(log: &Log) {
    use std::io::IsTerminal;
    let (level, handle) = reload::Layer::new(filter(log));
    let _ = LEVEL.set(handle);
    ACCESS.store(access_code(log.access_log), Ordering::Relaxed);

    let journal = match log.target {
        LogTarget::Journald => true,
        LogTarget::Stderr => false,
        LogTarget::Auto => stderr_is_journal(),
    };
    let journald = if journal {
        match tracing_journald::layer() {
            Ok(layer) => Some(
                layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("ruchy-serve".into())
                    .with_priority_mappings(tracing_journald::PriorityMappings {
                        // The journal's own meanings: INFO is 6, not 5 (notice).
                        info: tracing_journald::Priority::Informational,
                        debug: tracing_journald::Priority::Debug,
                        ..Default::default()
                    }),
            ),
            Err(e) => {
                eprintln!("ruchy-serve: cannot reach the journal ({e}); logging to stderr");
                None
            }
        }
    } else {
        None
    };

    let ansi = std::io::stderr().is_terminal();
    let not_access = filter_fn(|meta| meta.target() != TARGET);
    let (app, combined, json) = if journald.is_some() {
        (None, None, None)
    } else {
        let app = match log.format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_target(false)
                .with_filter(not_access)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .flatten_event(true)
                .with_filter(not_access)
                .boxed(),
        };
        // The combined line is the whole output: no timestamp, level or fields.
        let combined = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                |w, field, value| {
                    if field.name() == "message" {
                        write!(w, "{value:?}")
                    } else {
                        Ok(())
                    }
                },
            ))
            .with_filter(filter_fn(|meta| {
                meta.target() == TARGET && ACCESS.load(Ordering::Relaxed) == 1
            }))
            .boxed();
        let json = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .flatten_event(true)
            .with_filter(filter_fn(|meta| {
                meta.target() == TARGET && ACCESS.load(Ordering::Relaxed) == 2
            }))
            .boxed();
        (Some(app), Some(combined), Some(json))
    };
    let _ = tracing_subscriber::registry()
        .with(level)
        .with(journald)
        .with(app)
        .with(combined)
        .with(json)
        .try_init();
}

/// Applies what may change at reload: the level and the access-log mode.
/// The format and destination are fixed for the life of the process.
pub fn apply(log: &Log) {
    ACCESS.store(access_code(log.access_log), Ordering::Relaxed);
    if let Some(handle) = LEVEL.get() {
        if let Err(e) = handle.reload(filter(log)) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}
