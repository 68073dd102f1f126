//! Precondition evaluation (If-Match, If-None-Match, If-Modified-Since,
//! If-Unmodified-Since, If-Range) on arbitrary header values: never panics,
//! and a request carrying the current ETag in If-None-Match is never sent
//! the body again.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use ruchy_serve::serve::conditional::{evaluate, if_range_allows, Decision, Preconditions, Validators};

fuzz_target!(|input: (&str, &str, &str, &str, &str, u32)| {
    let (im, inm, ims, ius, ir, secs) = input;
    let v = Validators {
        etag: "\"0123abcd\"",
        last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(secs)),
    };
    let pre = Preconditions {
        if_match: Some(im),
        if_none_match: Some(inm),
        if_modified_since: Some(ims),
        if_unmodified_since: Some(ius),
    };
    let _ = evaluate(&pre, &v);
    let _ = if_range_allows(ir, &v);
    let matching = Preconditions {
        if_none_match: Some("\"0123abcd\""),
        if_modified_since: Some(ims),
        ..Preconditions::default()
    };
    assert_eq!(evaluate(&matching, &v), Decision::NotModified);
});
