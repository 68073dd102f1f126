//! Range requests (RFC 9110 section 14), as pure functions of the header and
//! the representation length.

/// An inclusive byte range within a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte, inclusive.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
}

// Inclusive ends make a range at least one byte long, so there is no
// is_empty to offer.
#[allow(clippy::len_without_is_empty)]
impl ByteRange {
    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
}

#[derive(Debug, PartialEq, Eq)]
/// What a Range header asks for, judged against the length.
pub enum RangeOutcome {
    /// Ignore the Range header and send the whole representation (200).
    Full,
    /// One or more satisfiable ranges, in the order the client asked (206).
    Partial(Vec<ByteRange>),
    /// Syntactically fine but nothing overlaps the representation (416).
    Unsatisfiable,
}

/// Evaluates a Range header against a representation of `len` bytes.
///
/// - A unit other than `bytes`, or any malformed range-spec, makes the whole
///   header ignored (RFC 9110 section 14.2: a server MAY ignore Range).
/// - `a-b` is clipped to the end; `a-` runs to the end; `-n` is the last n
///   bytes, the whole representation when n exceeds it.
/// - No satisfiable spec: 416. An empty representation satisfies none.
/// - More than `max_ranges` specs, or satisfiable ranges that overlap, get
///   the full 200 instead: this bounds what one small request can make us send
///   (section 15.5.17 and the overlapping-range denial of service it warns of).
pub fn evaluate(header: &str, len: u64, max_ranges: usize) -> RangeOutcome {
    let Some((unit, specs)) = header.split_once('=') else {
        return RangeOutcome::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Full;
    }
    let mut ranges = Vec::new();
    let mut count = 0usize;
    for spec in specs.split(',') {
        let spec = spec.trim_matches([' ', '\t']);
        if spec.is_empty() {
            continue;
        }
        count += 1;
        if count > max_ranges {
            return RangeOutcome::Full;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return RangeOutcome::Full;
        };
        match (parse_u64(first), parse_u64(last)) {
            (Some(start), Some(end)) => {
                if end < start {
                    return RangeOutcome::Full;
                }
                if start < len {
                    ranges.push(ByteRange {
                        start,
                        end: end.min(len - 1),
                    });
                }
            }
            (Some(start), None) if last.is_empty() => {
                if start < len {
                    ranges.push(ByteRange {
                        start,
                        end: len - 1,
                    });
                }
            }
            (None, Some(suffix)) if first.is_empty() => {
                if suffix > 0 && len > 0 {
                    ranges.push(ByteRange {
                        start: len.saturating_sub(suffix),
                        end: len - 1,
                    });
                }
            }
            _ => return RangeOutcome::Full,
        }
    }
    if count == 0 {
        return RangeOutcome::Full;
    }
    if ranges.is_empty() {
        return RangeOutcome::Unsatisfiable;
    }
    if ranges.len() > 1 {
        let mut sorted = ranges.clone();
        sorted.sort_by_key(|r| r.start);
        if sorted.windows(2).any(|w| w[1].start <= w[0].end) {
            return RangeOutcome::Full;
        }
    }
    RangeOutcome::Partial(ranges)
}

/// Digits only: `+5`, ` 5` or `0x5` are not byte positions.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn closed_open_and_suffix_ranges() {
        assert_eq!(
            evaluate("bytes=0-9", 100, 16),
            RangeOutcome::Partial(vec![r(0, 9)])
        );
        assert_eq!(
            evaluate("bytes=90-", 100, 16),
            RangeOutcome::Partial(vec![r(90, 99)])
        );
        assert_eq!(
            evaluate("bytes=-10", 100, 16),
            RangeOutcome::Partial(vec![r(90, 99)])
        );
    }

    #[test]
    fn end_past_length_is_clipped() {
        assert_eq!(
            evaluate("bytes=50-1000", 100, 16),
            RangeOutcome::Partial(vec![r(50, 99)])
        );
    }

    #[test]
    fn suffix_range_larger_than_file_returns_whole_file_as_range() {
        assert_eq!(
            evaluate("bytes=-500", 100, 16),
            RangeOutcome::Partial(vec![r(0, 99)])
        );
    }

    #[test]
    fn start_at_or_past_length_is_unsatisfiable() {
        assert_eq!(evaluate("bytes=100-", 100, 16), RangeOutcome::Unsatisfiable);
        assert_eq!(
            evaluate("bytes=200-300", 100, 16),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(evaluate("bytes=-0", 100, 16), RangeOutcome::Unsatisfiable);
        assert_eq!(evaluate("bytes=0-0", 0, 16), RangeOutcome::Unsatisfiable);
    }

    #[test]
    fn one_satisfiable_among_unsatisfiable_is_served() {
        assert_eq!(
            evaluate("bytes=500-600, 0-1", 100, 16),
            RangeOutcome::Partial(vec![r(0, 1)])
        );
    }

    #[test]
    fn malformed_or_foreign_unit_is_ignored() {
        for h in [
            "bytes=abc",
            "bytes=5-1",
            "bytes=-",
            "items=0-5",
            "bytes 0-5",
            "bytes=+1-2",
            "bytes=0x1-2",
            "bytes=",
        ] {
            assert_eq!(evaluate(h, 100, 16), RangeOutcome::Full, "{h}");
        }
    }

    #[test]
    fn several_ranges_keep_request_order() {
        assert_eq!(
            evaluate("bytes=50-59, 0-9", 100, 16),
            RangeOutcome::Partial(vec![r(50, 59), r(0, 9)])
        );
    }

    #[test]
    fn too_many_or_overlapping_ranges_send_full() {
        assert_eq!(evaluate("bytes=0-1,2-3,4-5", 100, 2), RangeOutcome::Full);
        assert_eq!(evaluate("bytes=0-50,40-60", 100, 16), RangeOutcome::Full);
        assert_eq!(evaluate("bytes=0-,0-", 100, 16), RangeOutcome::Full);
    }

    #[test]
    fn whitespace_and_empty_elements_are_tolerated() {
        assert_eq!(
            evaluate("bytes= 0-1 ,, 5-6", 100, 16),
            RangeOutcome::Partial(vec![r(0, 1), r(5, 6)])
        );
    }
}
