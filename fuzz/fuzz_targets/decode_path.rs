//! Request path decoding: whatever the bytes, a decoded path is plain
//! components only, so joining it onto the root cannot leave the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruchy_serve::serve::resolve::decode_path;

fuzz_target!(|raw: &str| {
    if let Some(d) = decode_path(raw) {
        for c in &d.components {
            assert!(!c.is_empty());
            assert!(c.as_slice() != b"." && c.as_slice() != b"..");
            assert!(!c.contains(&b'/') && !c.contains(&b'\\') && !c.contains(&0));
        }
    }
});
