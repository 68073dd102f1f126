//! HTTP Basic authentication for a location (`basic_auth`, RFC 7617),
//! against the bcrypt entries of its htpasswd file
//! ([`crate::config::htpasswd`]).
//!
//! bcrypt is slow on purpose (each step of an entry's cost doubles the
//! work of a check), so a client must not be able to make us run it at
//! will:
//! - a check runs on the blocking pool, and at most one per core at once
//!   ([`VERIFYING`]); the others wait in a bounded queue ([`QUEUE`] in
//!   all, [`PER_CLIENT`] from one client: an IPv4 address or an IPv6 /64),
//!   where each client has one check at a time waiting for a core, so
//!   clients take turns: a newcomer's first check waits for one check of
//!   each client ahead of it, however many each sent. Past either bound
//!   the request is answered 429 with `Retry-After` and counted;
//! - a password that verified is remembered per user as a keyed BLAKE3
//!   digest (key drawn at start, compared in constant time), so a browser
//!   sending the same credentials on every request costs one hash, not one
//!   bcrypt; a user's entry holds one digest, so the memory is bounded by
//!   the file;
//! - an unknown user is checked against the file's costliest hash, so the
//!   time taken does not tell which users exist (users with cheaper hashes
//!   can still be told apart by timing: the load warns when costs differ).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use http::header::HeaderValue;
use tokio::sync::Semaphore;

use crate::config::htpasswd::Users;

/// bcrypt checks running at once, process-wide: one per core.
static VERIFYING: OnceLock<Semaphore> = OnceLock::new();

/// Checks waiting or running at once, process-wide: a bound on memory
/// (a waiting check holds its request), not on fairness, which the turns
/// below give.
pub const QUEUE: usize = 1024;
/// Checks one client may have waiting or running at once.
pub const PER_CLIENT: u32 = 4;

/// Who has checks in the queue, and how many in all.
static QUEUED: Mutex<Option<Queued>> = Mutex::new(None);

#[derive(Default)]
struct Queued {
    total: usize,
    /// Per client: its checks queued or running, and its turn: one check
    /// of a client at a time waits for a core, so the cores' queue holds
    /// at most one check per client and a newcomer waits for one round of
    /// the clients ahead of it, not for every check they sent.
    by_client: HashMap<Client, (u32, Arc<Semaphore>)>,
}

/// Who a check is counted for: an IPv4 address, an IPv6 /64 (one host's
/// usual share of addresses), or a unix-socket peer.
type Client = Option<[u8; 8]>;

fn client_of(ip: Option<IpAddr>) -> Client {
    ip.map(|ip| match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, 0, 0, 0, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]]
        }
    })
}

/// A place in the queue, given back when dropped.
struct Place {
    client: Client,
    /// The client's turn: held while its check waits for a core and runs.
    turn: Arc<Semaphore>,
}

impl Place {
    /// A place for `client`, if the queue and its share have room.
    fn take(client: Option<IpAddr>) -> Option<Place> {
        let client = client_of(client);
        let mut q = QUEUED.lock().expect("queue lock");
        let q = q.get_or_insert_with(Queued::default);
        let total = q.total;
        let (mine, turn) = q
            .by_client
            .entry(client)
            .or_insert_with(|| (0, Arc::new(Semaphore::new(1))));
        if total >= QUEUE || *mine >= PER_CLIENT {
            return None;
        }
        *mine += 1;
        let turn = Arc::clone(turn);
        q.total += 1;
        Some(Place { client, turn })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut q = QUEUED.lock().expect("queue lock");
        let Some(q) = q.as_mut() else { return };
        q.total -= 1;
        if let Some((n, _)) = q.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                q.by_client.remove(&self.client);
            }
        }
    }
}

/// One location's users and what has been verified of them.
#[derive(Debug)]
pub struct Gate {
    /// The file as last read: replaced whole when it changes.
    users: arc_swap::ArcSwap<Users>,
    /// The BLAKE3 key of remembered digests.
    key: [u8; 32],
    /// User -> digest of the password that last verified.
    verified: Mutex<HashMap<String, blake3::Hash>>,
}

/// What a request's credentials come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A user of the file, with its password.
    Admitted,
    /// No `Authorization: Basic` header: the browser has not asked yet.
    Missing,
    /// Credentials that are not a user's with its password (or malformed).
    Refused,
    /// The password checks' queue, or this client's share of it, is full:
    /// 429, try again later.
    Busy,
}

impl Gate {
    /// A gate for `users`.
    pub fn new(users: Arc<Users>) -> Gate {
        let mut key = [0u8; 32];
        // The system's random source through the TLS provider; should it
        // fail, a key from the clock still keeps digests of one process
        // apart from another's.
        if !crate::tls::fill_random(&mut key) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            key[..16].copy_from_slice(&now.as_nanos().to_le_bytes());
        }
        for p in &users.problems {
            tracing::warn!("basic_auth: {p}");
        }
        Gate {
            users: arc_swap::ArcSwap::new(users),
            key,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the file again if it changed since it was read: its users
    /// apply from now on and nothing verified before is remembered. A file
    /// emptied, deleted or unreadable admits nobody until it is fixed
    /// (logged once per change), as nginx's; a bad line fails only its
    /// user.
    pub fn refresh(&self) {
        let users = self.users.load();
        if !users.changed() {
            return;
        }
        match crate::config::htpasswd::read(&users.file, &users.realm) {
            Ok(fresh) => {
                for p in &fresh.problems {
                    tracing::warn!("basic_auth: {p}");
                }
                tracing::info!(
                    file = %fresh.file.display(),
                    users = fresh.hashes.len(),
                    "basic_auth file changed: read again"
                );
                self.users.store(Arc::new(fresh));
                self.verified.lock().expect("verified lock").clear();
            }
            Err((message, _)) => {
                // Emptied, deleted or unreadable: nobody gets in until it is
                // fixed (the users read before may be the ones it removed).
                tracing::error!(
                    "basic_auth: {message}; every request to its locations is refused until it is fixed"
                );
                let mut none = (**users).clone();
                none.hashes.clear();
                // Not read again until it changes once more.
                none.id = std::fs::metadata(&none.file)
                    .ok()
                    .map(|m| crate::fileid::FileId::of(&m));
                self.users.store(Arc::new(none));
                self.verified.lock().expect("verified lock").clear();
            }
        }
    }

    /// The `WWW-Authenticate` value of a 401 here.
    pub fn challenge(&self) -> HeaderValue {
        self.users.load().challenge.clone()
    }

    /// Checks `authorization` (the request's header) from `client` (after
    /// `trusted_proxies`; `None` on a unix socket).
    pub async fn check(
        &self,
        authorization: Option<&HeaderValue>,
        client: Option<IpAddr>,
    ) -> Verdict {
        let Some(value) = authorization else {
            return Verdict::Missing;
        };
        let Some((user, password)) = basic(value.as_bytes()) else {
            return Verdict::Refused;
        };
        let digest = blake3::keyed_hash(&self.key, &password);
        let remembered = self
            .verified
            .lock()
            .expect("verified lock")
            .get(&user)
            .copied();
        // blake3::Hash compares in constant time.
        if remembered == Some(digest) {
            return Verdict::Admitted;
        }
        let users = self.users.load();
        let (known, hash) = match users.hashes.get(&user) {
            Some(h) => (true, h.clone()),
            // The costliest hash: at least the work of any real user's.
            None => (
                false,
                users
                    .hashes
                    .values()
                    .max_by_key(|h| cost(h))
                    .cloned()
                    .unwrap_or_default(),
            ),
        };
        let Some(place) = Place::take(client) else {
            return Verdict::Busy;
        };
        let Ok(_turn) = place.turn.acquire().await else {
            return Verdict::Refused;
        };
        let slots = VERIFYING.get_or_init(|| {
            Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
        });
        let Ok(_slot) = slots.acquire().await else {
            return Verdict::Refused;
        };
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        // Remembered only while the file is still the one checked against:
        // a user removed meanwhile must not come back through a digest.
        let current = Arc::ptr_eq(&users, &self.users.load());
        if verified && known && current {
            self.verified
                .lock()
                .expect("verified lock")
                .insert(user, digest);
            return Verdict::Admitted;
        }
        Verdict::Refused
    }
}

/// A bcrypt hash's cost (`$2b$12$...`: 12); 0 when it has none.
pub fn cost(hash: &str) -> u32 {
    hash.split('$')
        .nth(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `Basic base64(user:password)`: the user (UTF-8) and the password bytes.
fn basic(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii();
    // 8 KiB of header at most already; a password past 1 KiB is no one's.
    if token.len() > 2048 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_string();
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Logs a refusal, at most once a second, with how many went unlogged.
pub fn log_refusal(
    site: &str,
    path: &str,
    client: Option<IpAddr>,
    authorization: Option<&HeaderValue>,
) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let now = crate::clock::unix_secs(std::time::SystemTime::now());
    let last = LAST.load(Ordering::Relaxed);
    if last == now
        || LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        QUIET.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let unlogged = QUIET.swap(0, Ordering::Relaxed);
    let client = client.map_or_else(|| "unix".to_string(), |ip| ip.to_string());
    // The user as sent, escaped and cut: a client chooses it.
    let user: String = authorization
        .and_then(|v| basic(v.as_bytes()))
        .map_or_else(String::new, |(u, _)| {
            u.chars().take(64).flat_map(char::escape_debug).collect()
        });
    tracing::warn!(
        site,
        path,
        client,
        user,
        unlogged,
        "basic authentication failed (at most one such line a second; `unlogged` counts the others)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(users: &[(&str, &str)]) -> Gate {
        let hashes = users
            .iter()
            .map(|(u, p)| (u.to_string(), bcrypt::hash(p, 4).unwrap()))
            .collect();
        Gate::new(Arc::new(Users {
            file: "htpasswd".into(),
            hashes,
            challenge: HeaderValue::from_static("Basic realm=\"t\""),
            realm: "t".into(),
            problems: Vec::new(),
            id: None,
        }))
    }

    fn header(cred: &str) -> HeaderValue {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(cred)
        );
        HeaderValue::from_str(&v).unwrap()
    }

    #[tokio::test]
    async fn a_verified_password_is_remembered_and_only_that_one() {
        let g = gate(&[("alice", "one"), ("bob", "two")]);
        assert_eq!(g.check(None, None).await, Verdict::Missing);
        assert_eq!(
            g.check(Some(&header("alice:two")), None).await,
            Verdict::Refused
        );
        assert_eq!(
            g.check(Some(&header("carol:one")), None).await,
            Verdict::Refused
        );
        assert!(
            g.verified.lock().unwrap().is_empty(),
            "nothing remembered of refusals"
        );
        assert_eq!(
            g.check(Some(&header("alice:one")), None).await,
            Verdict::Admitted
        );
        assert_eq!(g.verified.lock().unwrap().len(), 1);
        // Remembered: answered from the digest (bob's hash is not alice's).
        assert_eq!(
            g.check(Some(&header("alice:one")), None).await,
            Verdict::Admitted
        );
        assert_eq!(
            g.check(Some(&header("alice:onex")), None).await,
            Verdict::Refused
        );
        assert_eq!(
            g.check(Some(&header("bob:two")), None).await,
            Verdict::Admitted
        );
    }

    /// The queue's places: [`PER_CLIENT`] for one address, then none for
    /// it while another address still gets one; given back when dropped.
    #[test]
    fn one_client_gets_its_share_of_the_queue_and_no_more() {
        let a = Some("192.0.2.1".parse().unwrap());
        let b = Some("192.0.2.2".parse().unwrap());
        let mine: Vec<Place> = (0..PER_CLIENT).map(|_| Place::take(a).unwrap()).collect();
        assert!(Place::take(a).is_none());
        let other = Place::take(b).expect("another client still gets a place");
        drop(mine);
        assert!(Place::take(a).is_some());
        drop(other);
    }

    #[test]
    fn costs_are_read_from_the_hash() {
        assert_eq!(cost("$2b$12$abcdefghijklmnopqrstuv"), 12);
        assert_eq!(cost("$2y$04$x"), 4);
        assert_eq!(cost("nonsense"), 0);
    }

    #[test]
    fn basic_credentials_parse_and_nothing_else_does() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let v = format!("Basic {}", enc("alice:pa:ss"));
        assert_eq!(
            basic(v.as_bytes()),
            Some(("alice".into(), b"pa:ss".to_vec()))
        );
        let v = format!("basic  {}", enc("bob:"));
        assert_eq!(basic(v.as_bytes()), Some(("bob".into(), Vec::new())));
        assert_eq!(basic(format!("Bearer {}", enc("a:b")).as_bytes()), None);
        assert_eq!(basic(b"Basic !!!"), None);
        assert_eq!(basic(format!("Basic {}", enc("nocolon")).as_bytes()), None);
        assert_eq!(basic(b"Basic"), None);
        // Past 2 KiB of token: refused before decoding, never a bcrypt.
        let long = format!("Basic {}", enc(&format!("alice:{}", "x".repeat(1600))));
        assert!(long.len() > 2048 + 6);
        assert_eq!(basic(long.as_bytes()), None);
    }
}
