//! Range header evaluation: never panics, and every range it grants lies
//! inside the representation, in at most `max_ranges` pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruchy_serve::serve::range::{evaluate, RangeOutcome};

fuzz_target!(|input: (u32, u8, &str)| {
    let (len, max, header) = input;
    let len = u64::from(len);
    let max = usize::from(max % 32) + 1;
    if let RangeOutcome::Partial(ranges) = evaluate(header, len, max) {
        assert!(!ranges.is_empty() && ranges.len() <= max);
        for r in ranges {
            assert!(r.start <= r.end && r.end < len);
        }
    }
});
