//! `[limits]`: what one client may make the server hold.

use std::time::Duration;

use super::raw::RawLimits;
use super::{ConfigError, Ctx};

/// hyper's HTTP/1 parser refuses buffers below 8 KiB.
const MIN_HEADER_BUFFER: usize = 8192;

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
        Ok(Limits {
            header_read_timeout: l.header_read_timeout.get(),
            keep_alive_timeout: l.keep_alive_timeout.get(),
            max_header_size,
            max_headers: l.max_headers.max(1),
            max_uri_length: l.max_uri_length.max(16),
            h2_max_concurrent_streams: l.h2_max_concurrent_streams.max(1),
            max_connections: l.max_connections.max(1),
            max_request_body: l.max_request_body.bytes(),
        })
    }
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
