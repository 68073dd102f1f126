//! A location's `basic_auth` file: Apache's htpasswd format, bcrypt
//! entries only (`htpasswd -B`). Read when the configuration loads, and
//! again whenever the file changes (the certificate watch's interval).
//! A bad line fails only its own user, as one bad certificate fails only
//! its names: weak schemes (MD5-crypt `$apr1$`, `{SHA}`, DES crypt, plain
//! text), malformed or repeated entries are reported with the file's line
//! (at load, at each change, by `check`) and that user is refused, while
//! every other user of the file applies: a file edited to remove a user
//! and that gains a typo elsewhere never keeps the removed user in. A file
//! with no usable user is refused at load; emptied or deleted later, it
//! admits nobody.

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
    /// The realm, to read the file again.
    pub realm: String,
    /// The lines that failed their user: `FILE:LINE: why`.
    pub problems: Vec<String>,
    /// The file's identity when read: a change is read again.
    pub id: Option<crate::fileid::FileId>,
}

impl Users {
    /// Whether the file is no longer the one read (a stat).
    pub fn changed(&self) -> bool {
        let now = std::fs::metadata(&self.file)
            .ok()
            .map(|m| crate::fileid::FileId::of(&m));
        now != self.id
    }
}

/// Why a file is refused: the message and a hint.
pub type Refusal = (String, &'static str);

/// Reads `file`; `realm` is shown by browsers in their password prompt.
pub fn read(file: &Path, realm: &str) -> Result<Users, Refusal> {
    let id = std::fs::metadata(file)
        .ok()
        .map(|m| crate::fileid::FileId::of(&m));
    let text = std::fs::read_to_string(file).map_err(|e| {
        (
            format!("cannot read {}: {e}", file.display()),
            "create it with `htpasswd -B -c FILE USER` (apache2-utils), readable by the service user",
        )
    })?;
    let (hashes, bad) = parse(&text);
    let problems: Vec<String> = bad
        .into_iter()
        .map(|(line, why)| format!("{}:{line}: {why}", file.display()))
        .collect();
    if hashes.is_empty() {
        let why = match problems.first() {
            Some(p) => format!(" ({p})"),
            None => String::new(),
        };
        return Err((
            format!(
                "{} has no usable users: every request would be refused{why}",
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
        realm: realm.to_string(),
        problems,
        id,
    })
}

/// `user:hash` lines (blank lines and `#` comments skipped): the good
/// users, and each bad line's number and why. A user with any bad line
/// (a weak scheme, a malformed hash, a second entry) is left out whole.
fn parse(text: &str) -> (HashMap<String, String>, Vec<(usize, String)>) {
    let mut out = HashMap::new();
    let mut bad = Vec::new();
    let mut failed = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        match entry(line) {
            Ok(None) => {}
            Ok(Some((user, hash))) => {
                if out.insert(user.to_string(), hash.to_string()).is_some() {
                    failed.insert(user.to_string());
                    bad.push((n + 1, format!("user `{user}` is listed twice: refused")));
                }
            }
            Err((user, why)) => {
                failed.extend(user.map(str::to_string));
                bad.push((n + 1, why));
            }
        }
    }
    out.retain(|u, _| !failed.contains(u));
    (out, bad)
}

/// A line that fails: its user, if it names one, and why.
type BadLine<'l> = (Option<&'l str>, String);

/// One line: `None` for a blank or a comment; else the user and its hash,
/// or (the user, if any) and why the line fails.
fn entry(line: &str) -> Result<Option<(&str, &str)>, BadLine<'_>> {
    {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(None);
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err((None, "not `user:hash`".into()));
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
                Some(user),
                format!(
                    "user `{user}` has a {weak} entry, which ruchy-serve does not accept: refused \
                     (write bcrypt entries: `htpasswd -B FILE USER`)"
                ),
            ));
        }
        if bcrypt_parts(hash).is_none() {
            return Err((
                Some(user),
                format!("user `{user}` has a malformed bcrypt hash: refused"),
            ));
        }
        Ok(Some((user, hash)))
    }
}

/// The costs of the file's hashes, when they are not all the same: an
/// unknown user is checked at the highest, so a user with a cheaper hash
/// answers faster than one who does not exist.
pub fn mixed_costs(users: &Users) -> Option<(u32, u32)> {
    let costs = users.hashes.values().filter_map(|h| bcrypt_parts(h));
    let (lo, hi) = costs.fold((u32::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)));
    (lo < hi).then_some((lo, hi))
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
        let (ok, bad) = parse(&format!("# users\n\nalice:{good}\n"));
        assert!(bad.is_empty());
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
            let (users, bad) = parse(&text);
            let (n, why) = &bad[0];
            assert_eq!(*n, line, "{text}");
            assert!(why.contains(what), "{why}");
            // The bad line's user is out; the good ones stay (`a`, listed
            // twice, is out whole).
            assert_eq!(
                users.contains_key("alice"),
                text.starts_with("alice:$2y"),
                "{text}"
            );
            assert!(
                !users.contains_key("a") && !users.contains_key("bob"),
                "{text}"
            );
        }
    }

    /// A file with no usable user is refused at load, empty or not.
    #[test]
    fn a_file_with_no_usable_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["", "garbage\n", "bob:$apr1$x$y\n"] {
            let f = dir.path().join("h");
            std::fs::write(&f, text).unwrap();
            let (m, _) = read(&f, "r").unwrap_err();
            assert!(m.contains("no usable users"), "{text:?}: {m}");
        }
    }

    /// A user refused for one bad line is refused, even when an earlier
    /// line of the same name was good: a typo never keeps anyone in.
    #[test]
    fn a_bad_line_fails_its_user_and_no_other() {
        let good = "$2y$05$abcdefghijklmnopqrstuuWvBhV7F1zi0hN3YEkBmcJy4cAL5F4HO";
        let (users, bad) = parse(&format!("alice:{good}\nbob:{good}\nbob:$apr1$x$y\n"));
        assert_eq!(bad.len(), 1);
        assert!(users.contains_key("alice") && !users.contains_key("bob"));
    }
}
