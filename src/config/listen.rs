//! `[[listen]]` and `trusted_proxies`: where connections come from and whose
//! word about the client address is believed.

use std::path::PathBuf;

use super::raw::RawListen;
use super::{ConfigError, Ctx};
use crate::addr::{ListenAddr, Peer};

/// One `[[listen]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Where to accept connections.
    pub addr: ListenAddr,
    /// Serve HTTPS with the certificates of `[tls]`.
    pub tls: bool,
    /// Answer every request with a 308 to the same URL over https.
    pub redirect_https: bool,
    /// Expect a PROXY protocol header first (from `trusted_proxies` only).
    pub proxy_protocol: bool,
}

impl Listen {
    /// Every entry, checked: at least one, no address twice, a mode only on
    /// unix sockets, TLS and redirect not on the same socket.
    pub(super) fn from_raw(raw: &[RawListen], ctx: &Ctx) -> Result<Vec<Listen>, ConfigError> {
        if raw.is_empty() {
            return Err(ctx.bad(
                &["listen"],
                "no listen address".into(),
                "add a [[listen]] table with address = \"127.0.0.1:8080\"",
            ));
        }
        let mut listen: Vec<Listen> = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let idx = i.to_string();
            let mode = l.mode.map(|m| m.0);
            let addr = parse_listen_addr(&l.address, mode)
                .map_err(|(msg, hint)| ctx.bad(&["listen", &idx, "address"], msg, hint))?;
            if l.mode.is_some() && !matches!(addr, ListenAddr::Unix { .. }) {
                return Err(ctx.bad(
                    &["listen", &idx, "mode"],
                    "mode applies to unix sockets only".into(),
                    "remove mode, or use address = \"unix:/path\"",
                ));
            }
            if listen.iter().any(|a| a.addr.conflicts(&addr)) {
                return Err(ctx.bad(
                    &["listen", &idx, "address"],
                    format!("{addr} is listed twice"),
                    "remove the duplicate [[listen]] entry",
                ));
            }
            if l.tls && l.redirect_https {
                return Err(ctx.bad(
                    &["listen", &idx, "redirect_https"],
                    "a listener cannot both serve TLS and redirect to it".into(),
                    "set redirect_https on the plain-HTTP listener only",
                ));
            }
            listen.push(Listen {
                addr,
                tls: l.tls,
                redirect_https: l.redirect_https,
                proxy_protocol: l.proxy_protocol,
            });
        }
        Ok(listen)
    }
}

/// Peers whose word about the client address is believed (in a PROXY
/// header, X-Forwarded-For or Forwarded). Everyone else's is ignored.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    /// Trusted networks, host bits cleared.
    pub nets: Vec<ipnet::IpNet>,
    /// Connections on unix sockets (a proxy on the same machine).
    pub unix: bool,
    /// The one header read for the client (`client_header`): a proxy
    /// writes one and passes the other through from the client, so
    /// reading both would let a client choose its address.
    pub header: super::types::ClientHeader,
}

impl TrustedProxies {
    /// Parses `trusted_proxies`; a PROXY protocol listener needs at least one.
    pub(super) fn from_raw(
        raw: &[String],
        header: super::types::ClientHeader,
        listen: &[Listen],
        ctx: &Ctx,
    ) -> Result<TrustedProxies, ConfigError> {
        let mut trusted = TrustedProxies {
            header,
            ..TrustedProxies::default()
        };
        for (i, t) in raw.iter().enumerate() {
            let t = t.trim();
            if t == "unix:" {
                trusted.unix = true;
                continue;
            }
            let net = t
                .parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ctx.bad(
                        &["trusted_proxies", &i.to_string()],
                        format!("`{t}` is not an address or CIDR block"),
                        "write e.g. \"10.0.0.0/8\", \"127.0.0.1\", \"::1\" or \"unix:\"",
                    )
                })?;
            trusted.nets.push(net.trunc());
        }
        if let Some(i) = listen.iter().position(|l| l.proxy_protocol) {
            if trusted.is_empty() {
                return Err(ctx.bad(
                    &["listen", &i.to_string(), "proxy_protocol"],
                    "a PROXY protocol listener needs trusted_proxies: a header from anyone else \
                     would let any client choose its logged address"
                        .into(),
                    "list the load balancers' addresses, e.g. trusted_proxies = [\"10.0.0.0/8\"]",
                ));
            }
        }
        Ok(trusted)
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && !self.unix
    }

    /// Whether `ip` is in a trusted network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains_ip(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether a connection from `peer` is a trusted proxy.
    pub fn trusts(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Tcp(a) => self.contains_ip(a.ip()),
            Peer::Unix => self.unix,
        }
    }
}

/// `IP:PORT`, `unix:/path` or `systemd:NAME`; errors as (message, hint).
pub(super) fn parse_listen_addr(
    address: &str,
    mode: Option<u32>,
) -> Result<ListenAddr, (String, &'static str)> {
    if let Some(path) = address.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err((
                format!("`{address}` needs an absolute socket path"),
                "write e.g. \"unix:/run/ruchy-serve/http.sock\"",
            ));
        }
        Ok(ListenAddr::Unix {
            path: PathBuf::from(path),
            mode,
        })
    } else if let Some(name) = address.strip_prefix("systemd:") {
        if name.is_empty() || name.len() > 255 || name.contains(':') {
            return Err((
                format!("`{address}` needs a FileDescriptorName"),
                "write e.g. \"systemd:http\" to match FileDescriptorName=http in the .socket unit",
            ));
        }
        Ok(ListenAddr::Systemd(name.to_string()))
    } else {
        address.parse().map(ListenAddr::Tcp).map_err(|_| {
            (
                format!("`{address}` is not a listen address"),
                "write e.g. \"127.0.0.1:8080\", \"[::]:80\", \"unix:/run/ruchy-serve/http.sock\" or \"systemd:http\"",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};

    #[test]
    fn addresses_of_every_kind() {
        let cfg = valid(
            "[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[listen]]\naddress = \"unix:/run/x.sock\"\nmode = \"0660\"\n\
             [[listen]]\naddress = \"systemd:http\"\n",
        );
        assert_eq!(cfg.listen.len(), 3);
        assert_eq!(cfg.listen[1].addr.to_string(), "unix:/run/x.sock");
        assert_eq!(cfg.listen[2].addr.to_string(), "systemd:http");
    }

    #[test]
    fn bad_addresses_name_the_entry() {
        let e = invalid("[[listen]]\naddress = \"localhost\"\n");
        assert_eq!(e.key(), Some("listen[0].address"));
        let e = invalid("[[listen]]\naddress = \"unix:relative.sock\"\n");
        assert!(e.to_string().contains("absolute socket path"), "{e}");
        let e = invalid("[[listen]]\naddress = \"systemd:\"\n");
        assert!(e.to_string().contains("FileDescriptorName"), "{e}");
    }

    #[test]
    fn mode_only_on_unix_sockets() {
        let e = invalid("[[listen]]\naddress = \"127.0.0.1:1\"\nmode = \"0660\"\n");
        assert_eq!(e.key(), Some("listen[0].mode"));
        let e = invalid("[[listen]]\naddress = \"unix:/x.sock\"\nmode = \"0999\"\n");
        assert!(
            e.to_string().contains("not an octal permission mode"),
            "{e}"
        );
    }

    #[test]
    fn duplicates_but_not_port_zero() {
        let e = invalid(
            "[[listen]]\naddress = \"127.0.0.1:1\"\n[[listen]]\naddress = \"127.0.0.1:1\"\n",
        );
        assert_eq!(e.key(), Some("listen[1].address"));
        valid("[[listen]]\naddress = \"127.0.0.1:0\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n");
    }

    #[test]
    fn tls_and_redirect_exclude_each_other() {
        let e =
            invalid("[[listen]]\naddress = \"127.0.0.1:1\"\ntls = true\nredirect_https = true\n");
        assert_eq!(e.key(), Some("listen[0].redirect_https"));
    }

    #[test]
    fn trusted_proxies_parse_and_gate_proxy_protocol() {
        let cfg = valid("trusted_proxies = [\"10.1.2.3/8\", \"::1\", \"unix:\"]\n");
        let t = &cfg.trusted_proxies;
        assert_eq!(t.nets[0].to_string(), "10.0.0.0/8", "host bits cleared");
        assert!(t.unix);
        assert!(t.contains_ip("::ffff:10.9.9.9".parse().unwrap()));
        let e = invalid("trusted_proxies = [\"10.0.0.0/33\"]\n");
        assert_eq!(e.key(), Some("trusted_proxies[0]"));
        let e = invalid("[[listen]]\naddress = \"127.0.0.1:1\"\nproxy_protocol = true\n");
        assert_eq!(e.key(), Some("listen[0].proxy_protocol"));
    }
}
