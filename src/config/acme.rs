//! `[acme]` and `acme = true` on `[[sites]]`: which sites get their
//! certificates from an ACME CA (RFC 8555), from which CA, and where the
//! account and certificates are kept. The orders themselves are
//! `crate::acme`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawAcme, RawSite};
use super::{ConfigError, Ctx};
use crate::tls::{CertSpec, Source};

/// Let's Encrypt's production directory: what `acme = true` uses unless
/// `acme.directory` names another CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where the state lives without `acme.state_dir`: systemd's
/// `StateDirectory=` (`$STATE_DIRECTORY`), else this.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ruchy-serve";

/// A challenge type ruchy-serve can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `http://NAME/.well-known/acme-challenge/TOKEN` on a plain listener.
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on a TLS listener.
    TlsAlpn01,
}

/// The validated `[acme]` table, present when at least one site asks for
/// ACME.
#[derive(Debug, Clone)]
pub struct Acme {
    /// The CA's directory URL.
    pub directory: String,
    /// Account contacts (`mailto:` URLs).
    pub contact: Vec<String>,
    /// Extra PEM roots the CA's own HTTPS certificate is checked against
    /// (a private or test CA); the system's roots are always trusted.
    pub ca_root: Option<PathBuf>,
    /// The state directory; account and certificates live under
    /// [`Acme::ca_dir`].
    pub state_dir: PathBuf,
    /// Challenge types in the order tried; each only where a listener can
    /// answer it.
    pub challenges: Vec<Challenge>,
    /// Renew when this much validity is left; `None`: at two thirds of the
    /// certificate's lifetime.
    pub renew_before: Option<Duration>,
    /// First wait after a failed order; doubles per failure up to
    /// `retry_max`.
    pub retry_min: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// External account binding: key id and HMAC key.
    pub eab: Option<(String, Vec<u8>)>,
    /// One entry per `acme = true` site: its names and where its
    /// certificate is kept.
    pub sites: Vec<CertSpec>,
}

impl Acme {
    /// This CA's directory under the state directory (one per CA, so
    /// moving from staging to production starts a fresh account).
    pub fn ca_dir(&self) -> PathBuf {
        ca_dir(&self.state_dir, &self.directory)
    }

    /// The account credentials' file.
    pub fn account_file(&self) -> PathBuf {
        self.ca_dir().join("account.json")
    }
}

fn ca_dir(state: &Path, directory: &str) -> PathBuf {
    let trimmed = directory
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let name: String = trimmed
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '-',
        })
        .collect();
    state.join("acme").join(name.trim_matches('-'))
}

/// Reads `[acme]` and the sites' `acme` keys; `None` when no site asks.
pub(super) fn from_raw(
    raw: &RawAcme,
    sites: &[RawSite],
    ctx: &Ctx,
) -> Result<Option<Acme>, ConfigError> {
    let asking: Vec<(usize, &RawSite)> = sites.iter().enumerate().filter(|(_, s)| s.acme).collect();
    if asking.is_empty() {
        return Ok(None);
    }
    let (first, _) = asking[0];
    if !raw.agree_to_terms {
        return Err(ctx.bad(
            &["sites", &first.to_string(), "acme"],
            "ACME needs the CA's terms of service agreed to".into(),
            "read the CA's terms (Let's Encrypt: https://letsencrypt.org/repository/) and set `agree_to_terms = true` in [acme]",
        ));
    }
    let directory = match raw.directory.as_str() {
        "" => LETS_ENCRYPT.to_string(),
        d if d.starts_with("https://") => d.to_string(),
        d => return Err(ctx.bad(
            &["acme", "directory"],
            format!("`{d}` is not an https:// URL"),
            "name the CA's directory URL, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"",
        )),
    };
    for (i, c) in raw.contact.iter().enumerate() {
        if !c.starts_with("mailto:") || c.len() <= "mailto:".len() || c.contains([' ', ',']) {
            return Err(ctx.bad(
                &["acme", "contact", &i.to_string()],
                format!("`{c}` is not a mailto: URL"),
                "write contacts as \"mailto:ops@example.com\"",
            ));
        }
    }
    let ca_root = match &raw.ca_root {
        None => None,
        Some(p) => match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Some(p.clone()),
            _ => {
                return Err(ctx.bad(
                    &["acme", "ca_root"],
                    format!("cannot read {}", p.display()),
                    "name a PEM file with the CA's root certificate",
                ))
            }
        },
    };
    let state_dir = match &raw.state_dir {
        Some(p) => p.clone(),
        None => std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                // systemd may list several, colon-separated: ours is first.
                let v = v.to_string_lossy().split(':').next()?.to_string();
                (!v.is_empty()).then(|| PathBuf::from(v))
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
    };
    if !state_dir.is_absolute() {
        return Err(ctx.bad(
            &["acme", "state_dir"],
            format!("{} is not an absolute path", state_dir.display()),
            "write it as /var/lib/ruchy-serve (systemd's StateDirectory=ruchy-serve)",
        ));
    }
    let mut challenges = Vec::new();
    for (i, c) in raw.challenges.iter().enumerate() {
        let c = match c.as_str() {
            "http-01" => Challenge::Http01,
            "tls-alpn-01" => Challenge::TlsAlpn01,
            other => {
                return Err(ctx.bad(
                    &["acme", "challenges", &i.to_string()],
                    format!("unknown challenge type `{other}`"),
                    "use \"http-01\" and/or \"tls-alpn-01\"",
                ))
            }
        };
        if !challenges.contains(&c) {
            challenges.push(c);
        }
    }
    if challenges.is_empty() {
        return Err(ctx.bad(
            &["acme", "challenges"],
            "no challenge type".into(),
            "use [\"http-01\", \"tls-alpn-01\"]",
        ));
    }
    let eab = match (&raw.eab_kid, &raw.eab_hmac_key) {
        (None, None) => None,
        (Some(kid), Some(key)) => {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key.trim_end_matches('='))
                .map_err(|_| {
                    ctx.bad(
                        &["acme", "eab_hmac_key"],
                        "not base64url".into(),
                        "paste the HMAC key exactly as the CA gave it",
                    )
                })?;
            Some((kid.clone(), decoded))
        }
        (Some(_), None) => {
            return Err(ctx.bad(
                &["acme", "eab_kid"],
                "eab_kid without eab_hmac_key".into(),
                "set both, as the CA gave them",
            ))
        }
        (None, Some(_)) => {
            return Err(ctx.bad(
                &["acme", "eab_hmac_key"],
                "eab_hmac_key without eab_kid".into(),
                "set both, as the CA gave them",
            ))
        }
    };
    let (retry_min, retry_max) = (raw.retry_min.get(), raw.retry_max.get());
    if retry_min.is_zero() || retry_max < retry_min {
        return Err(ctx.bad(
            &["acme", "retry_min"],
            "retry_min must be above zero and at most retry_max".into(),
            "the defaults are retry_min = \"1m\", retry_max = \"6h\"",
        ));
    }
    let cas = ca_dir(&state_dir, &directory);
    let mut specs = Vec::new();
    for (i, site) in asking {
        let key = |k: &str| -> Vec<String> { vec!["sites".into(), i.to_string(), k.into()] };
        if !site.certificates.is_empty() {
            let k = key("acme");
            return Err(ctx.bad(
                &k.iter().map(String::as_str).collect::<Vec<_>>(),
                "a site gets its certificate either from ACME or from [[sites.certificates]], not both".into(),
                "remove one",
            ));
        }
        let names: Vec<String> = site
            .names
            .iter()
            .map(|n| super::sites::normalized(n))
            .collect();
        for (j, n) in names.iter().enumerate() {
            let bad = if n.starts_with("*.") {
                Some(
                    "a wildcard name needs the DNS-01 challenge, which ruchy-serve does not answer",
                )
            } else if n.parse::<std::net::IpAddr>().is_ok() {
                Some("an IP address is not a name a CA validates here")
            } else if !n.contains('.') {
                Some(
                    "a name without a dot (localhost, an intranet name) gets no public certificate",
                )
            } else {
                None
            };
            if let Some(why) = bad {
                return Err(ctx.bad(
                    &["sites", &i.to_string(), "names", &j.to_string()],
                    format!("`{n}` cannot get an ACME certificate: {why}"),
                    "give this name a certificate of its own in [[sites.certificates]], or drop it from this site",
                ));
            }
        }
        let dir = cas.join(&names[0]);
        specs.push(CertSpec {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            names: names.clone(),
            site: names.first().cloned(),
            source: Source::Acme,
        });
    }
    Ok(Some(Acme {
        directory,
        contact: raw.contact.clone(),
        ca_root,
        state_dir,
        challenges,
        renew_before: (!raw.renew_before.get().is_zero()).then(|| raw.renew_before.get()),
        retry_min,
        retry_max,
        eab,
        sites: specs,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{invalid, valid};

    const SITE: &str =
        "[[sites]]\nnames = [\"a.example.com\", \"b.example.com\"]\nroot = \".\"\nacme = true\n";

    #[test]
    fn acme_needs_the_terms_agreed_to() {
        let e = invalid(SITE);
        assert_eq!(e.key(), Some("sites[0].acme"), "{e}");
        let c = valid(&format!(
            "[acme]\nagree_to_terms = true\nstate_dir = \"/tmp/st\"\n{SITE}"
        ));
        let a = c.acme.unwrap();
        assert_eq!(a.directory, super::LETS_ENCRYPT);
        assert_eq!(a.sites.len(), 1);
        assert_eq!(a.sites[0].names, ["a.example.com", "b.example.com"]);
        assert_eq!(
            a.sites[0].cert,
            std::path::Path::new(
                "/tmp/st/acme/acme-v02.api.letsencrypt.org-directory/a.example.com/cert.pem"
            )
        );
        // The ACME site's certificate is one of the set, waiting.
        assert!(c.tls.store.failed.iter().any(|f| f.pending));
        assert!(c.tls.store.problems().is_empty());
    }

    #[test]
    fn names_a_ca_cannot_validate_are_refused() {
        for (name, key) in [
            ("*.example.com", "sites[0].names[0]"),
            ("localhost", "sites[0].names[0]"),
            ("127.0.0.1", "sites[0].names[0]"),
        ] {
            let e = invalid(&format!("[acme]\nagree_to_terms = true\n[[sites]]\nnames = [\"{name}\"]\nroot = \".\"\nacme = true\n"));
            assert_eq!(e.key(), Some(key), "{name}: {e}");
        }
    }

    #[test]
    fn bad_keys_are_named() {
        for (body, key) in [
            ("directory = \"http://ca/dir\"\n", "acme.directory"),
            ("contact = [\"ops@example.com\"]\n", "acme.contact[0]"),
            ("challenges = [\"dns-01\"]\n", "acme.challenges[0]"),
            ("eab_kid = \"k\"\n", "acme.eab_kid"),
            ("state_dir = \"relative\"\n", "acme.state_dir"),
            ("ca_root = \"/nonexistent.pem\"\n", "acme.ca_root"),
        ] {
            let e = invalid(&format!("[acme]\nagree_to_terms = true\n{body}{SITE}"));
            assert_eq!(e.key(), Some(key), "{body}: {e}");
        }
    }
}
