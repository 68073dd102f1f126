//! Conditional requests (RFC 9110 section 13) as pure functions of the request
//! headers and the representation's validators.

use std::time::SystemTime;

use crate::clock::unix_secs;

/// The validators of the selected representation.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The strong entity-tag, quotes included: `"abc"`.
    pub etag: &'a str,
    /// Last modification, which we send (and compare) at one-second precision.
    pub last_modified: SystemTime,
}

/// The precondition header fields of a request, raw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Preconditions<'a> {
    /// If-Match.
    pub if_match: Option<&'a str>,
    /// If-None-Match.
    pub if_none_match: Option<&'a str>,
    /// If-Modified-Since.
    pub if_modified_since: Option<&'a str>,
    /// If-Unmodified-Since.
    pub if_unmodified_since: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
/// What the preconditions decide.
pub enum Decision {
    /// Send the representation (possibly partial).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates preconditions in the order of RFC 9110 section 13.2.2, for GET
/// and HEAD (the only methods that reach here):
///
/// 1. If-Match present and false -> 412.
/// 2. Else If-Unmodified-Since present and false -> 412.
/// 3. If-None-Match present and false -> 304 (it would be 412 for other methods).
/// 4. Else (no If-None-Match) If-Modified-Since present and false -> 304.
///
/// Step 5, If-Range, is [`if_range_allows`]. Dates that do not parse are
/// ignored, as the RFC requires.
pub fn evaluate(pre: &Preconditions<'_>, v: &Validators<'_>) -> Decision {
    let modified = unix_secs(v.last_modified);
    if let Some(im) = pre.if_match {
        if !if_match(im, v.etag) {
            return Decision::Failed;
        }
    } else if let Some(date) = pre.if_unmodified_since.and_then(parse_date) {
        if modified > date {
            return Decision::Failed;
        }
    }
    if let Some(inm) = pre.if_none_match {
        if if_none_match_matches(inm, v.etag) {
            return Decision::NotModified;
        }
    } else if let Some(date) = pre.if_modified_since.and_then(parse_date) {
        if modified <= date {
            return Decision::NotModified;
        }
    }
    Decision::Proceed
}

/// RFC 9110 section 13.1.5: a Range applies only when If-Range names the
/// current representation: an entity-tag by strong comparison, or a date equal
/// to Last-Modified. Anything else (including a weak tag) means "send it all".
pub fn if_range_allows(if_range: &str, v: &Validators<'_>) -> bool {
    let if_range = if_range.trim();
    if if_range.starts_with('"') || if_range.starts_with("W/") {
        return strong_eq(if_range, v.etag);
    }
    match parse_date(if_range) {
        Some(date) => date == unix_secs(v.last_modified),
        None => false,
    }
}

/// If-Match: `*` or any listed tag equal by strong comparison.
fn if_match(header: &str, etag: &str) -> bool {
    if header.trim() == "*" {
        return true;
    }
    entity_tags(header).any(|t| strong_eq(t, etag))
}

/// If-None-Match is "false" (so we answer 304) when `*` or any listed tag
/// matches by weak comparison.
fn if_none_match_matches(header: &str, etag: &str) -> bool {
    if header.trim() == "*" {
        return true;
    }
    entity_tags(header).any(|t| weak_eq(t, etag))
}

fn strong_eq(a: &str, b: &str) -> bool {
    !a.starts_with("W/") && !b.starts_with("W/") && a == b
}

fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

/// Splits an entity-tag list. Commas may appear inside quoted tags, so this
/// walks quotes rather than splitting on `,`. Malformed members are dropped.
fn entity_tags(header: &str) -> impl Iterator<Item = &str> {
    let bytes = header.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        let start = i;
        if header[i..].starts_with("W/") {
            i += 2;
        }
        if i < bytes.len() && bytes[i] == b'"' {
            match header[i + 1..].find('"') {
                Some(close) => {
                    i = i + 1 + close + 1;
                    tags.push(&header[start..i]);
                }
                None => break,
            }
        } else {
            // Skip a malformed member up to the next comma.
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
        }
    }
    tags.into_iter()
}

fn parse_date(s: &str) -> Option<u64> {
    httpdate::parse_http_date(s.trim()).ok().map(unix_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ETAG: &str = "\"abc\"";
    fn v() -> Validators<'static> {
        Validators {
            etag: ETAG,
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
        }
    }
    fn date(offset: i64) -> String {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs((1_000_000_000 + offset) as u64);
        httpdate::fmt_http_date(t)
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let pre = Preconditions {
            if_none_match: Some("\"x\", W/\"abc\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::NotModified);
        let pre = Preconditions {
            if_none_match: Some("\"x\", \"y\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Proceed);
    }

    #[test]
    fn if_none_match_star_matches_any_representation() {
        let pre = Preconditions {
            if_none_match: Some("*"),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::NotModified);
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        // The tag does not match, so the (matching) date must be ignored.
        let d = date(10);
        let pre = Preconditions {
            if_none_match: Some("\"other\""),
            if_modified_since: Some(&d),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Proceed);
    }

    #[test]
    fn if_modified_since_compares_whole_seconds() {
        for (offset, expect) in [
            (0, Decision::NotModified),
            (5, Decision::NotModified),
            (-1, Decision::Proceed),
        ] {
            let d = date(offset);
            let pre = Preconditions {
                if_modified_since: Some(&d),
                ..Default::default()
            };
            assert_eq!(evaluate(&pre, &v()), expect, "offset {offset}");
        }
    }

    #[test]
    fn invalid_dates_are_ignored() {
        let pre = Preconditions {
            if_modified_since: Some("yesterday"),
            if_unmodified_since: Some("not a date"),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Proceed);
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        let pre = Preconditions {
            if_match: Some("W/\"abc\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Failed);
        let pre = Preconditions {
            if_match: Some("\"zzz\", \"abc\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Proceed);
        let pre = Preconditions {
            if_match: Some("*"),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Proceed);
    }

    #[test]
    fn if_match_takes_precedence_over_if_unmodified_since() {
        // If-Match passes, so a failing If-Unmodified-Since is not evaluated.
        let d = date(-100);
        let pre = Preconditions {
            if_match: Some(ETAG),
            if_unmodified_since: Some(&d),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Proceed);
    }

    #[test]
    fn if_unmodified_since_fails_for_newer_representation() {
        let d = date(-100);
        let pre = Preconditions {
            if_unmodified_since: Some(&d),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Failed);
    }

    #[test]
    fn failed_if_match_beats_matching_if_none_match() {
        let pre = Preconditions {
            if_match: Some("\"nope\""),
            if_none_match: Some(ETAG),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &v()), Decision::Failed);
    }

    #[test]
    fn if_range_needs_strong_etag_or_exact_date() {
        assert!(if_range_allows(ETAG, &v()));
        assert!(!if_range_allows("W/\"abc\"", &v()));
        assert!(!if_range_allows("\"old\"", &v()));
        assert!(if_range_allows(&date(0), &v()));
        assert!(!if_range_allows(&date(1), &v()));
        assert!(!if_range_allows("garbage", &v()));
    }

    #[test]
    fn entity_tag_lists_tolerate_commas_inside_tags() {
        let tags: Vec<_> = entity_tags("\"a,b\", W/\"c\" ,junk, \"d\"").collect();
        assert_eq!(tags, vec!["\"a,b\"", "W/\"c\"", "\"d\""]);
    }
}
