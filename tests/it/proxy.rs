//! Client addresses behind a proxy, against the real binary: PROXY protocol
//! v1 and v2 headers on a `proxy_protocol` listener, refusal of connections
//! without one or from untrusted peers, and X-Forwarded-For / Forwarded
//! believed from `trusted_proxies` only. The logged address is read from the
//! JSON access log.

use std::net::SocketAddr;

use crate::common::{blocking_exchange, command, fixture, ConfigFile, Daemon};

/// The daemon with `body` (which must include its [[listen]]) as config.
fn daemon(root: &std::path::Path, body: &str) -> (ConfigFile, Daemon) {
    let cfg = ConfigFile::new(root, &format!("{body}\n[log]\naccess_log = \"json\"\n"));
    let d = Daemon::spawn(&["--config", cfg.arg()], &[]);
    (cfg, d)
}

/// Sends `bytes` and reads the reply until the server closes.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    blocking_exchange(addr, bytes).unwrap()
}

const GET: &str = "GET /hello.txt?{tag} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";

fn get(tag: &str, extra: &str) -> String {
    format!("{}{extra}\r\n", GET.replace("{tag}", tag))
}

#[test]
fn proxy_protocol_v1_and_v2_give_the_logged_client_address() {
    let root = fixture();
    let (_c, d) = daemon(
        root.path(),
        "trusted_proxies = [\"127.0.0.1\"]\n[[listen]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true",
    );
    let v1 = format!(
        "PROXY TCP4 203.0.113.7 127.0.0.1 51000 80\r\n{}",
        get("v1", "")
    );
    let reply = exchange(d.addr, v1.as_bytes());
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("hello world\n"),
        "{reply}"
    );
    let line = d.wait_for_line("/hello.txt?v1");
    assert!(line.contains("\"remote_addr\":\"203.0.113.7\""), "{line}");

    let mut v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::42]:4000".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:80".parse::<SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    v2.extend_from_slice(get("v2", "").as_bytes());
    let reply = exchange(d.addr, &v2);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let line = d.wait_for_line("/hello.txt?v2");
    assert!(line.contains("\"remote_addr\":\"2001:db8::42\""), "{line}");

    // A LOCAL header (a balancer's health check) keeps the socket's peer.
    let reply = exchange(
        d.addr,
        format!("PROXY UNKNOWN\r\n{}", get("local", "")).as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let line = d.wait_for_line("/hello.txt?local");
    assert!(line.contains("\"remote_addr\":\"127.0.0.1\""), "{line}");
}

#[test]
fn proxy_listener_refuses_missing_headers_and_untrusted_peers() {
    let root = fixture();
    let (_c, d) = daemon(
        root.path(),
        "trusted_proxies = [\"127.0.0.1\"]\n[[listen]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true",
    );
    // Plain HTTP where a header is required: closed without an answer.
    assert_eq!(exchange(d.addr, get("plain", "").as_bytes()), "");
    // A malformed header: closed.
    let bad = format!("PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n{}", get("bad", ""));
    assert_eq!(exchange(d.addr, bad.as_bytes()), "");
    // And the listener keeps serving well-formed connections.
    let ok = format!(
        "PROXY TCP4 198.51.100.1 127.0.0.1 1 80\r\n{}",
        get("ok", "")
    );
    assert!(exchange(d.addr, ok.as_bytes()).starts_with("HTTP/1.1 200"));

    // Peers outside trusted_proxies may not send a header at all.
    let root = fixture();
    let (_c, d) = daemon(
        root.path(),
        "trusted_proxies = [\"10.0.0.0/8\"]\n[[listen]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true",
    );
    let spoof = format!(
        "PROXY TCP4 203.0.113.9 127.0.0.1 1 80\r\n{}",
        get("spoof", "")
    );
    assert_eq!(exchange(d.addr, spoof.as_bytes()), "");
    assert!(!d.log_text().contains("203.0.113.9"));
}

#[test]
fn forwarded_headers_are_believed_from_trusted_proxies_only() {
    let root = fixture();
    let (_c, d) = daemon(
        root.path(),
        "trusted_proxies = [\"127.0.0.1\"]\n[[listen]]\naddress = \"127.0.0.1:0\"",
    );
    // Through a trusted proxy: the rightmost untrusted address. The client
    // itself wrote 6.6.6.6; our proxy appended what it saw.
    let reply = exchange(
        d.addr,
        get("xff", "X-Forwarded-For: 6.6.6.6, 192.0.2.44\r\n").as_bytes(),
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let line = d.wait_for_line("/hello.txt?xff");
    assert!(line.contains("\"remote_addr\":\"192.0.2.44\""), "{line}");
    // Forwarded is not read unless `client_header` names it: a proxy
    // writes one header and passes the other through from the client.
    exchange(
        d.addr,
        get("fwd", "Forwarded: for=\"[2001:db8::9]:1234\"\r\n").as_bytes(),
    );
    let line = d.wait_for_line("/hello.txt?fwd");
    assert!(line.contains("\"remote_addr\":\"127.0.0.1\""), "{line}");
    let root = fixture();
    let (_c, d) = daemon(
        root.path(),
        "trusted_proxies = [\"127.0.0.1\"]\nclient_header = \"forwarded\"\n\
         [[listen]]\naddress = \"127.0.0.1:0\"",
    );
    exchange(
        d.addr,
        get(
            "fwd2",
            "Forwarded: for=\"[2001:db8::9]:1234\"\r\nX-Forwarded-For: 6.6.6.6\r\n",
        )
        .as_bytes(),
    );
    let line = d.wait_for_line("/hello.txt?fwd2");
    assert!(line.contains("\"remote_addr\":\"2001:db8::9\""), "{line}");

    // Without trusted_proxies the same header changes nothing.
    let root = fixture();
    let (_c, d) = daemon(root.path(), "[[listen]]\naddress = \"127.0.0.1:0\"");
    exchange(
        d.addr,
        get("ignored", "X-Forwarded-For: 192.0.2.44\r\n").as_bytes(),
    );
    let line = d.wait_for_line("/hello.txt?ignored");
    assert!(line.contains("\"remote_addr\":\"127.0.0.1\""), "{line}");
}

#[test]
fn proxy_protocol_without_trusted_proxies_is_a_config_error() {
    let root = fixture();
    let cfg = ConfigFile::new(
        root.path(),
        "[[listen]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n",
    );
    let out = command()
        .args(["check", "--config", cfg.arg()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4: key `listen[0].proxy_protocol`"), "{err}");
    assert!(err.contains("trusted_proxies"), "{err}");
    let bad = ConfigFile::new(root.path(), "trusted_proxies = [\"10.0.0.0/33\"]\n");
    let out = command()
        .args(["check", "--config", bad.arg()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`10.0.0.0/33` is not an address or CIDR block"),
        "{err}"
    );
}
