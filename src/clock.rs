//! Time, in the forms the server needs: Unix seconds (validators, metrics,
//! certificate expiry), a cheap monotonic clock for the per-connection idle
//! timer, and nginx's `$time_local` for the access log. One place, so no
//! module carries its own copy of the epoch arithmetic.

use std::time::SystemTime;

/// Whole seconds since the Unix epoch; times before it count as 0.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current time in Unix seconds.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Milliseconds on CLOCK_MONOTONIC_COARSE: a few milliseconds of resolution
/// and no TSC read. The idle timer touches the clock on every read and write
/// of a connection, where `Instant::now` showed up in profiles
/// (benches/README.md).
pub fn coarse_now_ms() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// At most one event a minute: for log lines a client or a failing disk
/// could otherwise repeat on every request.
#[derive(Debug)]
pub struct RateLimit(std::sync::atomic::AtomicU64);

impl RateLimit {
    /// Due at once, then once a minute.
    pub const fn new() -> RateLimit {
        RateLimit(std::sync::atomic::AtomicU64::new(0))
    }

    /// Whether the event may happen now (and, if so, starts the next minute).
    pub fn due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = unix_now();
        let last = self.0.load(Ordering::Relaxed);
        now >= last + 60
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new()
    }
}

/// Year, month (1-12), day, hour, minute, second of a Unix time, UTC.
fn civil(t: SystemTime) -> (i64, i64, i64, i64, i64, i64) {
    let secs = unix_secs(t) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// nginx's `$time_local` in UTC: `27/Nov/2026:06:31:31 +0000`.
pub fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, h, m, s) = civil(t);
    format!(
        "{day:02}/{}/{year}:{h:02}:{m:02}:{s:02} +0000",
        MONTHS[(month - 1) as usize],
    )
}

/// nginx's `$time_iso8601` in UTC: `2026-11-27T06:31:31Z`.
pub fn iso_time(t: SystemTime) -> String {
    let (year, month, day, h, m, s) = civil(t);
    format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clf_time_matches_nginx_format() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_761_091);
        assert_eq!(clf_time(t), "27/Nov/2026:06:31:31 +0000");
        assert_eq!(
            clf_time(SystemTime::UNIX_EPOCH),
            "01/Jan/1970:00:00:00 +0000"
        );
        assert_eq!(iso_time(t), "2026-11-27T06:31:31Z");
    }

    #[test]
    fn times_before_the_epoch_count_as_zero() {
        let t = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(unix_secs(t), 0);
    }

    #[test]
    fn coarse_clock_moves_forward() {
        let a = coarse_now_ms();
        std::thread::sleep(Duration::from_millis(20));
        assert!(coarse_now_ms() > a);
    }
}
