//! `[tls]`: certificates (loaded and checked here, so `check` and reload
//! refuse a bad one before anything is swapped), handshake and HSTS.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;

use super::listen::Listen;
use super::raw::{RawSite, RawTls};
use super::{ConfigError, Ctx};
use crate::tls::{CertSpec, CertStore, Source};

/// The validated `[tls]` section.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Every certificate, loaded and validated.
    pub store: Arc<CertStore>,
    /// A client must finish its handshake within this time.
    pub handshake_timeout: Duration,
    /// How often certificate files are checked for changes; zero: never.
    pub watch_interval: Duration,
    /// Strict-Transport-Security on TLS responses.
    pub hsts: Option<HeaderValue>,
    /// The port named in `redirect_https` Locations (omitted when 443).
    pub https_port: u16,
    /// The one host `redirect_https` sends to (lower case); `None`: each
    /// request's own, when it is a site's name.
    pub redirect_host: Option<String>,
    /// The status of `redirect_https` answers.
    pub redirect_status: http::StatusCode,
}

impl Tls {
    /// `[tls]` with the certificates of every `[[sites]]` entry after the
    /// top level's (so the first top-level one, when there is one, is what
    /// a client without SNI gets). A site's certificate answers the site's
    /// names unless it lists its own.
    pub(super) fn from_raw(
        raw: &RawTls,
        sites: &[RawSite],
        acme: Option<&super::acme::Acme>,
        listen: &[Listen],
        ctx: &Ctx,
    ) -> Result<Tls, ConfigError> {
        let mut specs: Vec<CertSpec> = Vec::new();
        for c in &raw.certificates {
            specs.push(CertSpec {
                cert: c.cert.clone(),
                key: c.key.clone(),
                names: c.names.clone(),
                site: None,
                source: Source::File,
            });
        }
        for site in sites {
            for c in &site.certificates {
                let names = match c.names.is_empty() {
                    true => site.names.clone(),
                    false => c.names.clone(),
                };
                specs.push(CertSpec {
                    cert: c.cert.clone(),
                    key: c.key.clone(),
                    names,
                    site: site.names.first().map(|n| super::sites::normalized(n)),
                    source: Source::File,
                });
            }
        }
        // ACME sites' certificates, after the configured files (a file's
        // claim on a name wins).
        specs.extend(acme.iter().flat_map(|a| a.sites.iter().cloned()));
        // A certificate that fails is that site's problem, not the
        // server's: its names fail their handshakes and the rest serve
        // (logged at start and reload, listed by `check`).
        let store = CertStore::load(&specs);
        if let Some(idx) = listen.iter().position(|l| l.tls) {
            // A site asking for ACME has one coming (or its own error).
            if specs.is_empty() && !sites.iter().any(|s| s.acme) {
                return Err(ctx.bad(
                    &["listen", &idx.to_string(), "tls"],
                    "a TLS listener needs a certificate".into(),
                    "add [[tls.certificates]] (or [[sites.certificates]]) with cert = \"/path/fullchain.pem\" and key = \"/path/key.pem\", or acme = true on a site (README \"Automatic HTTPS\")",
                ));
            }
        }
        Ok(Tls {
            store: Arc::new(store),
            handshake_timeout: raw.handshake_timeout.get(),
            watch_interval: raw.watch_interval.get(),
            hsts: if raw.hsts.is_empty() {
                None
            } else {
                Some(ctx.header_value(&["tls", "hsts"], &raw.hsts)?)
            },
            https_port: raw.https_port,
            redirect_host: redirect_host(&raw.redirect_host, ctx)?,
            redirect_status: match raw.redirect_status {
                301 | 302 | 307 | 308 => {
                    http::StatusCode::from_u16(raw.redirect_status).expect("a valid code")
                }
                other => {
                    return Err(ctx.bad(
                        &["tls", "redirect_status"],
                        format!("{other} is not a redirect status"),
                        "use 301 or 308 (permanent), 302 or 307 (temporary)",
                    ))
                }
            },
        })
    }
}

/// `tls.redirect_host`: a host name (a port is `https_port`'s).
fn redirect_host(raw: &str, ctx: &Ctx) -> Result<Option<String>, ConfigError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let name = super::sites::normalized(raw);
    let valid = !name.starts_with('-')
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid || name.len() > 253 {
        return Err(ctx.bad(
            &["tls", "redirect_host"],
            format!("`{raw}` is not a host name"),
            "write the canonical name only, e.g. \"example.com\" (the port is tls.https_port)",
        ));
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};

    #[test]
    fn tls_listener_needs_a_certificate() {
        let e = invalid("[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n");
        assert_eq!(e.key(), Some("listen[0].tls"));
        // An ACME site's certificate counts; without the terms agreed to,
        // that is the one error reported.
        let site = "[[sites]]\nnames = [\"a.example.com\"]\nroot = \".\"\nacme = true\n";
        let e = invalid(&format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = true\n{site}"
        ));
        assert_eq!(e.key(), Some("sites[0].acme"), "{e}");
        assert!(!e.to_string().contains("listen[0].tls"), "{e}");
    }

    #[test]
    fn a_missing_certificate_is_that_certificate_s_problem() {
        let c = valid(
            "[[tls.certificates]]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\nnames = [\"a.test\"]\n",
        );
        let problems = c.tls.store.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("/nonexistent.pem"),
            "{}",
            problems[0].message
        );
        assert!(
            problems[0].message.contains("a.test"),
            "{}",
            problems[0].message
        );
        assert!(c.tls.store.select(Some("a.test")).is_none());
    }

    #[test]
    fn the_redirect_host_and_status_are_checked() {
        let t = valid("[tls]\nredirect_host = \"Example.COM.\"\nredirect_status = 301\n").tls;
        assert_eq!(t.redirect_host.as_deref(), Some("example.com"));
        assert_eq!(t.redirect_status, 301);
        assert_eq!(valid("").tls.redirect_status, 308);
        let e = invalid("[tls]\nredirect_host = \"https://example.com/\"\n");
        assert_eq!(e.key(), Some("tls.redirect_host"));
        let e = invalid("[tls]\nredirect_status = 303\n");
        assert_eq!(e.key(), Some("tls.redirect_status"));
    }

    #[test]
    fn hsts_is_a_header_value() {
        let t = valid("[tls]\nhsts = \"max-age=60\"\n").tls;
        assert_eq!(t.hsts.unwrap(), "max-age=60");
        assert!(valid("").tls.hsts.is_none());
        let e = invalid("[tls]\nhsts = \"a\\nb\"\n");
        assert_eq!(e.key(), Some("tls.hsts"));
    }
}
