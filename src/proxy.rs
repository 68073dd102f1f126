//! The client's address behind a load balancer: the PROXY protocol header
//! (v1 text or v2 binary, parsed by the `ppp` crate) at the start of a
//! connection, and X-Forwarded-For / Forwarded on requests. Both are believed
//! only from `trusted_proxies`; the address they give is used for logs (and
//! nothing else: no access decision depends on it).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::addr::Peer;
use crate::config::TrustedProxies;

/// The longest header we wait for: a v1 line is at most 107 bytes; v2 with
/// TLVs can be longer, but a load balancer sends a few hundred at most.
const MAX_HEADER: usize = 4096;

/// Why a PROXY listener dropped a connection (the `reason` label of
/// `http_connections_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The peer is not in `trusted_proxies`.
    Untrusted,
    /// No valid header (plain HTTP, TLS, garbage, or too long).
    Invalid,
    /// Nothing complete within the header read timeout.
    Timeout,
}

impl Rejected {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Untrusted => "proxy_untrusted",
            Rejected::Invalid => "proxy_header_invalid",
            Rejected::Timeout => "proxy_header_timeout",
        }
    }
}

/// Reads the PROXY header from the start of `io`. Returns the client address
/// it carries (`None` for a LOCAL/UNKNOWN header, such as a balancer's own
/// health check: the connection's own peer stands) and the bytes read past the
/// header, which belong to the HTTP stream.
pub async fn read_header<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> Result<(Option<SocketAddr>, Bytes), Rejected> {
    let mut buf = BytesMut::with_capacity(256);
    let read = async {
        loop {
            if io.read_buf(&mut buf).await.map_err(|_| Rejected::Invalid)? == 0 {
                return Err(Rejected::Invalid);
            }
            let parsed = HeaderResult::parse(&buf);
            if parsed.is_incomplete() {
                if buf.len() >= MAX_HEADER {
                    return Err(Rejected::Invalid);
                }
                continue;
            }
            let (len, addr) = match parsed {
                HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
                HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h)),
                _ => return Err(Rejected::Invalid),
            };
            return Ok((len, addr));
        }
    };
    let (len, addr) = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Rejected::Timeout)??;
    let rest = buf.split_off(len).freeze();
    Ok((addr, rest))
}

fn v1_source(a: &v1::Addresses) -> Option<SocketAddr> {
    match a {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &v2::Header<'_>) -> Option<SocketAddr> {
    if h.command != v2::Command::Proxy {
        return None;
    }
    match h.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v2::Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        _ => None,
    }
}

/// The address to log for a request on a connection from `peer`: the one the
/// forwarding headers give when `peer` is a trusted proxy, else `peer`.
pub fn client<B>(req: &http::Request<B>, peer: Peer, trusted: &TrustedProxies) -> Peer {
    if trusted.is_empty() || !trusted.trusts(&peer) {
        return peer;
    }
    forwarded_client(req.headers(), trusted).map_or(peer, |ip| Peer::Tcp(SocketAddr::new(ip, 0)))
}

/// The client address that the configured header (`client_header`:
/// X-Forwarded-For, or Forwarded; never both) gives, when the direct peer
/// is a trusted proxy: walking from the right, the first
/// address that is not itself a trusted proxy (nginx's `real_ip_recursive
/// on`), so a client cannot pick its logged address by sending the header
/// itself. `None` when there is no usable header.
pub fn forwarded_client(headers: &HeaderMap, trusted: &TrustedProxies) -> Option<IpAddr> {
    let mut chain: Vec<IpAddr> = Vec::new();
    if trusted.header == crate::config::ClientHeader::XForwardedFor {
        for v in headers.get_all("x-forwarded-for") {
            let Ok(v) = v.to_str() else { return None };
            for part in v.split(',') {
                chain.push(parse_node(part)?);
            }
        }
    } else {
        for v in headers.get_all(http::header::FORWARDED) {
            let Ok(v) = v.to_str() else { return None };
            for element in v.split(',') {
                for pair in element.split(';') {
                    let Some((k, val)) = pair.trim().split_once('=') else {
                        continue;
                    };
                    if k.trim().eq_ignore_ascii_case("for") {
                        chain.push(parse_node(val)?);
                    }
                }
            }
        }
    }
    let first = *chain.first()?;
    Some(
        chain
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains_ip(*ip))
            .unwrap_or(first),
    )
}

/// One address from X-Forwarded-For (`1.2.3.4`, `::1`) or a Forwarded `for=`
/// value (`"[2001:db8::1]:4711"`, `192.0.2.60:80`). Obfuscated or unknown
/// nodes give `None`, which makes the whole header unusable.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies {
            nets: nets.iter().map(|n| n.parse().unwrap()).collect(),
            unix: false,
            header: crate::config::ClientHeader::XForwardedFor,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn rightmost_untrusted_address_wins() {
        let t = trusted(&["10.0.0.0/8"]);
        // The client wrote "1.1.1.1" itself; 203.0.113.7 is what our proxy saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.2")]);
        assert_eq!(forwarded_client(&h, &t), "203.0.113.7".parse().ok());
        // All trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 10.0.0.2")]);
        assert_eq!(forwarded_client(&h, &t), "10.1.1.1".parse().ok());
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "10.0.0.9"),
        ]);
        assert_eq!(forwarded_client(&h, &t), "198.51.100.1".parse().ok());
    }

    /// Only the configured header is read: a proxy that writes one passes
    /// the other through from the client (the review: with Forwarded
    /// written and X-Forwarded-For passed, the client chose its address).
    #[test]
    fn only_the_configured_header_names_the_client() {
        let both = headers(&[
            ("forwarded", "for=192.0.2.9"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        let mut t = trusted(&["127.0.0.1/32"]);
        assert_eq!(forwarded_client(&both, &t), "10.1.1.1".parse().ok());
        t.header = crate::config::ClientHeader::Forwarded;
        assert_eq!(forwarded_client(&both, &t), "192.0.2.9".parse().ok());
        let xff_only = headers(&[("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(forwarded_client(&xff_only, &t), None);
    }

    #[test]
    fn forwarded_header_forms() {
        let mut t = trusted(&["10.0.0.0/8"]);
        t.header = crate::config::ClientHeader::Forwarded;
        let h = headers(&[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")]);
        assert_eq!(forwarded_client(&h, &t), "192.0.2.60".parse().ok());
        let h = headers(&[(
            "forwarded",
            "for=\"[2001:db8:cafe::17]:4711\", for=10.0.0.3",
        )]);
        assert_eq!(forwarded_client(&h, &t), "2001:db8:cafe::17".parse().ok());
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(forwarded_client(&h, &t), None);
        assert_eq!(forwarded_client(&headers(&[]), &t), None);
        t.header = crate::config::ClientHeader::XForwardedFor;
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(forwarded_client(&h, &t), None);
    }

    #[tokio::test]
    async fn reads_v1_and_v2_headers_and_keeps_the_rest() {
        let mut v1 = &b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\nGET / HTTP/1.1\r\n"[..];
        let (addr, rest) = read_header(&mut v1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(addr, "203.0.113.7:51234".parse().ok());
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");

        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "[2001:db8::7]:4000".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:443".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let mut input = header.clone();
        input.extend_from_slice(b"GET");
        let (addr, rest) = read_header(&mut &input[..], Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(addr, "[2001:db8::7]:4000".parse().ok());
        assert_eq!(&rest[..], b"GET");

        let mut plain = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        assert_eq!(
            read_header(&mut plain, Duration::from_secs(1)).await,
            Err(Rejected::Invalid)
        );
        let mut local = &b"PROXY UNKNOWN\r\nGET"[..];
        let (addr, rest) = read_header(&mut local, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((addr, &rest[..]), (None, &b"GET"[..]));
    }
}
