//! Logging set-up, once, from `main`: the daemon's own messages and the
//! access log are two tracing layers on stderr with their own formats.
//! Handlers only emit events; nothing else configures logging.

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::access::TARGET;
use crate::config::{AccessLog, Log, LogFormat};

pub fn init(log: &Log) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    // The access target is routed to its own layer only.
    let filter = EnvFilter::try_new(format!("{},{TARGET}=off", log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let app = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .flatten_event(true)
            .boxed(),
    }
    .with_filter(filter);

    let only_access = filter_fn(|meta| meta.target() == TARGET);
    let access = match log.access_log {
        AccessLog::Off => None,
        // The combined line is the whole message: no timestamp or level prefix.
        AccessLog::Combined => Some(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .without_time()
                .with_level(false)
                .with_target(false)
                .with_filter(only_access)
                .boxed(),
        ),
        AccessLog::Json => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .flatten_event(true)
                .with_filter(only_access)
                .boxed(),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(app)
        .with(access)
        .try_init();
}
