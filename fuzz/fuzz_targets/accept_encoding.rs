//! Accept-Encoding negotiation: never panics, and only ever picks a coding
//! that is available.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruchy_serve::config::Encoding;
use ruchy_serve::serve::encoding::negotiate;

fuzz_target!(|input: (&str, u8)| {
    let (header, mask) = input;
    let all = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];
    let available: Vec<Encoding> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, e)| *e)
        .collect();
    if let Some(chosen) = negotiate(Some(header), &available) {
        assert!(available.contains(&chosen));
    }
});
