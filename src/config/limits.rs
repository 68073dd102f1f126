//! `[limits]`: what one client may make the server hold.

use std::time::Duration;

use super::raw::RawLimits;
use super::{ConfigError, Ctx};

/// hyper's HTTP/1 parser refuses buffers below 8 KiB.
const MIN_HEADER_BUFFER: usize = 8192;
/// One HTTP/2 body chunk: a smaller budget could not send a chunk at all.
const MIN_RESPONSE_BUFFER: u64 = 64 << 10;

/// The validated `[limits]` section.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head must arrive within this time.
    pub header_read_timeout: Duration,
    /// An idle connection is closed after this time.
    pub keep_alive_timeout: Duration,
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_size: usize,
    /// Most header fields in one HTTP/1 request.
    pub max_headers: usize,
    /// Longest request target; longer ones get 414.
    pub max_uri_length: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Open connections per listener; past it the listener stops accepting
    /// until one closes (the kernel's backlog holds the newcomers).
    pub max_connections: usize,
    /// Largest request body announced by Content-Length that is answered;
    /// larger ones get 413 and the connection closes. Bodies are never read.
    pub max_request_body: u64,
    /// A response that has made no progress for this long ends its
    /// connection: on HTTP/1 no byte written, on HTTP/2 its body not polled
    /// (control frames such as PING ACKs are not progress).
    pub send_timeout: Duration,
    /// Requests one connection may carry before it is closed gracefully
    /// (Connection: close, GOAWAY); `None`: no limit.
    pub max_requests_per_connection: Option<u64>,
    /// A connection older than this is closed gracefully; `None`: no limit.
    pub max_connection_age: Option<Duration>,
    /// Response body bytes one connection may hold in user memory at once
    /// (file chunks read but not yet written, in-memory bodies not yet
    /// sent); readers wait for room.
    pub max_response_buffer: u64,
    /// What every connection's response bodies together may hold: past it,
    /// bodies wait for room ([`crate::serve::body::Pool`]).
    pub max_response_memory: u64,
    /// Open connections one client address (after a trusted PROXY header)
    /// may have across the server's listeners; `None`: no limit. nginx's
    /// `limit_conn` keyed by `$binary_remote_addr`.
    pub max_connections_per_client: Option<u32>,
}

impl Limits {
    pub(super) fn from_raw(l: &RawLimits, ctx: &Ctx) -> Result<Limits, ConfigError> {
        let max_header_size = l.max_header_size.bytes() as usize;
        if max_header_size < MIN_HEADER_BUFFER {
            return Err(ctx.bad(
                &["limits", "max_header_size"],
                format!("{max_header_size} bytes is below the 8KiB minimum"),
                "use at least \"8KiB\"",
            ));
        }
        let max_response_buffer = l.max_response_buffer.bytes();
        if max_response_buffer < MIN_RESPONSE_BUFFER {
            return Err(ctx.bad(
                &["limits", "max_response_buffer"],
                format!("{max_response_buffer} bytes is below the 64KiB minimum"),
                "use at least \"64KiB\" (the default is \"4MiB\")",
            ));
        }
        let max_response_memory = match l.max_response_memory {
            Some(s) => s.bytes(),
            None => default_response_memory(),
        };
        if max_response_memory < max_response_buffer {
            return Err(ctx.bad(
                &["limits", "max_response_memory"],
                format!(
                    "{max_response_memory} bytes is below limits.max_response_buffer \
                     ({max_response_buffer} bytes): one connection could never fill its budget"
                ),
                "raise it, or leave it out for a quarter of the machine's memory",
            ));
        }
        Ok(Limits {
            header_read_timeout: l.header_read_timeout.get(),
            keep_alive_timeout: l.keep_alive_timeout.get(),
            max_header_size,
            max_headers: l.max_headers.max(1),
            max_uri_length: l.max_uri_length.max(16),
            h2_max_concurrent_streams: l.h2_max_concurrent_streams.max(1),
            max_connections: l.max_connections.max(1),
            max_request_body: l.max_request_body.bytes(),
            send_timeout: l.send_timeout.get(),
            max_requests_per_connection: (l.max_requests_per_connection > 0)
                .then_some(l.max_requests_per_connection),
            max_connection_age: Some(l.max_connection_age.get()).filter(|d| !d.is_zero()),
            max_response_buffer,
            max_response_memory,
            max_connections_per_client: (l.max_connections_per_client > 0)
                .then_some(l.max_connections_per_client),
        })
    }
}

/// The default process-wide bound on response memory: a quarter of what
/// the process may use (the machine's memory, or the cgroup's `memory.max`
/// when systemd's `MemoryMax=` or a container sets a lower one), at least
/// 64 MiB. A quarter leaves the file cache, the kernel's socket buffers and
/// everything else room, as nginx's fixed buffers per connection do not.
pub fn default_response_memory() -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let usable = machine.min(cgroup);
    if usable == u64::MAX {
        return 1 << 30;
    }
    (usable / 4).max(64 << 20)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};
    use super::*;

    #[test]
    fn defaults() {
        let l = valid("").limits;
        assert_eq!(l.header_read_timeout, Duration::from_secs(10));
        assert_eq!(l.keep_alive_timeout, Duration::from_secs(75));
        assert_eq!(l.max_header_size, 16 << 10);
        assert_eq!(l.max_connections, 16384);
        assert_eq!(l.max_request_body, 8 << 10);
    }

    #[test]
    fn zero_counts_become_the_smallest_useful_value() {
        let l = valid(
            "[limits]\nmax_headers = 0\nmax_uri_length = 0\n\
             h2_max_concurrent_streams = 0\nmax_connections = 0\n",
        )
        .limits;
        assert_eq!(
            (
                l.max_headers,
                l.max_uri_length,
                l.h2_max_concurrent_streams,
                l.max_connections
            ),
            (1, 16, 1, 1)
        );
    }

    #[test]
    fn connection_limits_default_to_nginxs_send_timeout_and_no_caps() {
        let l = valid("").limits;
        assert_eq!(l.send_timeout, Duration::from_secs(60));
        assert_eq!(l.max_requests_per_connection, None);
        assert_eq!(l.max_connection_age, None);
        assert_eq!(l.max_response_buffer, 4 << 20);
        let l = valid(
            "[limits]\nmax_requests_per_connection = 1000\nmax_connection_age = \"1h\"\n\
             send_timeout = \"5s\"\nmax_response_buffer = \"256KiB\"\n",
        )
        .limits;
        assert_eq!(l.max_requests_per_connection, Some(1000));
        assert_eq!(l.max_connection_age, Some(Duration::from_secs(3600)));
        assert_eq!(l.send_timeout, Duration::from_secs(5));
        assert_eq!(l.max_response_buffer, 256 << 10);
        assert!(l.max_response_memory >= 64 << 20, "the default");
        let e = invalid("[limits]\nmax_response_memory = \"1MiB\"\n");
        assert_eq!(e.key(), Some("limits.max_response_memory"));
        let e = invalid("[limits]\nmax_response_buffer = \"1KiB\"\n");
        assert_eq!(e.key(), Some("limits.max_response_buffer"));
    }

    #[test]
    fn header_buffer_below_hypers_minimum_is_refused() {
        let e = invalid("[limits]\nmax_header_size = \"1KiB\"\n");
        assert_eq!(e.key(), Some("limits.max_header_size"));
        assert!(e.to_string().contains("below the 8KiB minimum"), "{e}");
    }

    #[test]
    fn durations_and_sizes_are_typed() {
        let e = invalid("[limits]\nheader_read_timeout = \"soon\"\n");
        assert_eq!(e.key(), Some("limits.header_read_timeout"));
        assert!(e.to_string().contains("(hint: write e.g. \"10s\""), "{e}");
        let e = invalid("[limits]\nmax_request_body = \"big\"\n");
        assert_eq!(e.key(), Some("limits.max_request_body"));
    }
}
