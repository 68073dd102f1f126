//! A location's `basic_auth` file: Apache's htpasswd format, bcrypt
//! entries only (`htpasswd -B`). Read when the configuration loads, so a
//! reload re-reads it and a bad file keeps the old configuration serving.
//! Weak schemes (MD5-crypt `$apr1$`, `{SHA}`, DES crypt, plain text) are
//! refused with the file's line: an entry that cannot be verified safely
//! is a configuration error, not a silent refusal of every password.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use http::header::HeaderValue;

/// The users of one `basic_auth` file and the realm they are asked for.
#[derive(Debug, Clone)]
pub struct Users {
    /// The file, for messages.
    pub file: PathBuf,
    /// User -> bcrypt hash.
    pub hashes: HashMap<String, String>,
    /// `WWW-Authenticate`: `Basic realm="...", charset="UTF-8"`.
    pub challenge: HeaderValue,
}

/// Why a file is refused: the message and a hint.
pub type Refusal = (String, &'static str);

/// Reads `file`; `realm` is shown by browsers in their password prompt.
pub fn read(file: &Path, realm: &str) -> Result<Users, Refusal> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        (
            format!("cannot read {}: {e}", file.display()),
            "create it with `htpasswd -B -c FILE USER` (apache2-utils), readable by the service user",
        )
    })?;
    let hashes = parse(&text).map_err(|(line, why)| {
        (
            format!("{}:{line}: {why}", file.display()),
            "write bcrypt entries only: `htpasswd -B FILE USER`",
        )
    })?;
    if hashes.is_empty() {
        return Err((
            format!(
                "{} has no users: every request would be refused",
                file.display()
            ),
            "add one with `htpasswd -B FILE USER`",
        ));
    }
    if realm.is_empty() || realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        return Err((
            format!("realm `{realm}` cannot be sent in WWW-Authenticate"),
            "a short text without quotes or backslashes, e.g. \"Private\"",
        ));
    }
    let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
        .map_err(|_| {
        (
            format!("realm `{realm}` is not a valid header value"),
            "use visible ASCII characters",
        )
    })?;
    Ok(Users {
        file: file.to_path_buf(),
        hashes,
        challenge,
    })
}

/// `user:hash` lines (blank lines and `#` comments skipped); the first bad
/// line's number and why.
fn parse(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err((n + 1, "not `user:hash`".into()));
        };
        let scheme = match hash {
            h if h.starts_with("$2y$") || h.starts_with("$2b$") || h.starts_with("$2a$") => None,
            h if h.starts_with("$apr1$") => Some("MD5-crypt ($apr1$)"),
            h if h.starts_with("{SHA}") => Some("unsalted SHA-1 ({SHA})"),
            h if h.starts_with("$1$") || h.starts_with("$5$") || h.starts_with("$6$") => {
                Some("crypt(3) MD5/SHA")
            }
            _ => Some("DES crypt or plain text"),
        };
        if let Some(weak) = scheme {
            return Err((
                n + 1,
                format!("user `{user}` has a {weak} entry, which ruchy-serve does not accept"),
            ));
        }
        if bcrypt_parts(hash).is_none() {
            return Err((n + 1, format!("user `{user}` has a malformed bcrypt hash")));
        }
        if out.insert(user.to_string(), hash.to_string()).is_some() {
            return Err((n + 1, format!("user `{user}` is listed twice")));
        }
    }
    Ok(out)
}

/// A bcrypt hash's cost, if the hash is well formed (`$2b$NN$` and 53
/// characters of salt and hash).
fn bcrypt_parts(hash: &str) -> Option<u32> {
    let rest = &hash.get(4..)?;
    let (cost, tail) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok()?;
    ((4..=31).contains(&cost) && tail.len() == 53).then_some(cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_only_and_each_refusal_names_its_line() {
        let good = "$2y$05$abcdefghijklmnopqrstuuWvBhV7F1zi0hN3YEkBmcJy4cAL5F4HO";
        let ok = parse(&format!("# users\n\nalice:{good}\n")).unwrap();
        assert_eq!(ok["alice"], good);
        for (text, line, what) in [
            (format!("alice:{good}\nbob:$apr1$x$y\n"), 2, "MD5-crypt"),
            ("carol:{SHA}abc=\n".to_string(), 1, "SHA-1"),
            ("dave:plaintext\n".to_string(), 1, "plain text"),
            ("erin:$6$salt$hash\n".to_string(), 1, "crypt(3)"),
            ("nocolon\n".to_string(), 1, "not `user:hash`"),
            ("frank:$2y$05$short\n".to_string(), 1, "malformed"),
            (format!("a:{good}\na:{good}\n"), 2, "twice"),
        ] {
            let (n, why) = parse(&text).unwrap_err();
            assert_eq!(n, line, "{text}");
            assert!(why.contains(what), "{why}");
        }
    }
}
