//! Accept-Encoding negotiation for precompressed twins (RFC 9110 section 12.5.3).

use crate::config::Encoding;

/// Picks the coding to send among the `available` twins (in server preference
/// order), or `None` for the identity file.
///
/// - No Accept-Encoding: identity. The RFC would allow any coding, but
///   clients that do not send the header are mostly tools that cannot decode.
/// - The highest q-value wins; ties go to the server's order (br before gzip
///   by default, since it is smaller). `q=0` excludes a coding, and `*` gives
///   its q-value to codings not listed by name. `x-gzip` means gzip.
pub fn negotiate(accept_encoding: Option<&str>, available: &[Encoding]) -> Option<Encoding> {
    let header = accept_encoding?;
    if available.is_empty() {
        return None;
    }
    let weights = Weights::parse(header);
    let mut best: Option<(Encoding, u16)> = None;
    for &enc in available {
        let q = weights.of(enc);
        if q > 0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((enc, q));
        }
    }
    best.map(|(e, _)| e)
}

/// The q-values (in thousandths) one Accept-Encoding header gives the codings
/// we can serve, from a single pass over the header.
struct Weights {
    /// br, zstd, gzip: the highest q-value given by name.
    named: [Option<u16>; 3],
    /// The q-value of `*`, for codings not named.
    wildcard: Option<u16>,
}

fn index(enc: Encoding) -> usize {
    match enc {
        Encoding::Brotli => 0,
        Encoding::Zstd => 1,
        Encoding::Gzip => 2,
    }
}

impl Weights {
    fn parse(header: &str) -> Weights {
        let mut w = Weights {
            named: [None; 3],
            wildcard: None,
        };
        for item in header.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let mut q = 1000;
            for param in parts {
                if let Some((k, val)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = parse_q(val.trim()).unwrap_or(0);
                    }
                }
            }
            let named = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip]
                .into_iter()
                .find(|e| coding.eq_ignore_ascii_case(e.token()))
                .or_else(|| {
                    coding
                        .eq_ignore_ascii_case("x-gzip")
                        .then_some(Encoding::Gzip)
                });
            match named {
                Some(enc) => {
                    let slot = &mut w.named[index(enc)];
                    *slot = Some(slot.map_or(q, |n| n.max(q)));
                }
                None if coding == "*" => w.wildcard = Some(q),
                None => {}
            }
        }
        w
    }

    fn of(&self, enc: Encoding) -> u16 {
        self.named[index(enc)].or(self.wildcard).unwrap_or(0)
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`
fn parse_q(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .enumerate()
    {
        thousandths += (b - b'0') as u16 * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::*;

    const ALL: &[Encoding] = &[Brotli, Zstd, Gzip];

    #[test]
    fn absent_header_means_identity() {
        assert_eq!(negotiate(None, ALL), None);
    }

    #[test]
    fn server_preference_breaks_ties() {
        assert_eq!(
            negotiate(Some("gzip, deflate, br, zstd"), ALL),
            Some(Brotli)
        );
        assert_eq!(negotiate(Some("gzip, zstd"), ALL), Some(Zstd));
    }

    #[test]
    fn higher_q_value_wins() {
        assert_eq!(negotiate(Some("br;q=0.5, gzip;q=0.9"), ALL), Some(Gzip));
        assert_eq!(negotiate(Some("br;q=1.0, gzip;q=0.999"), ALL), Some(Brotli));
    }

    #[test]
    fn q_zero_excludes_a_coding() {
        assert_eq!(negotiate(Some("br;q=0, gzip"), ALL), Some(Gzip));
        assert_eq!(negotiate(Some("gzip;q=0"), &[Gzip]), None);
        assert_eq!(negotiate(Some("*;q=0"), ALL), None);
    }

    #[test]
    fn wildcard_covers_unlisted_codings() {
        assert_eq!(negotiate(Some("*"), &[Gzip]), Some(Gzip));
        assert_eq!(negotiate(Some("br;q=0, *"), ALL), Some(Zstd));
    }

    #[test]
    fn only_available_twins_are_chosen() {
        assert_eq!(negotiate(Some("br"), &[Gzip]), None);
        assert_eq!(negotiate(Some("x-gzip"), &[Gzip]), Some(Gzip));
    }

    #[test]
    fn malformed_q_values_exclude() {
        assert_eq!(negotiate(Some("gzip;q=2"), &[Gzip]), None);
        assert_eq!(negotiate(Some("gzip;q=0.1234"), &[Gzip]), None);
        assert_eq!(negotiate(Some("gzip;q=abc"), &[Gzip]), None);
        assert_eq!(negotiate(Some("gzip;q=0.001"), &[Gzip]), Some(Gzip));
    }
}
