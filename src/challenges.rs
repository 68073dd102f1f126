//! The HTTP-01 answers the ACME manager (`crate::acme`) publishes while an
//! order is being validated (RFC 8555 section 8.3): token -> key
//! authorization. Low in the house (the state holds it, the handler reads
//! it); only the manager writes, one entry per name being validated, removed when the order ends,
//! so a client can make it hold nothing.

use std::collections::HashMap;

use arc_swap::ArcSwap;
use bytes::Bytes;

/// The path prefix HTTP-01 validation requests.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens being validated now; swapped whole by the manager, so a request
/// (any client can ask for any token) never takes a lock.
#[derive(Debug, Default)]
pub struct Http01 {
    tokens: ArcSwap<HashMap<String, Bytes>>,
}

impl Http01 {
    /// Publishes `key_authorization` for `token`.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        let answer = Bytes::copy_from_slice(key_authorization.as_bytes());
        self.tokens.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(token.to_string(), answer.clone());
            map
        });
    }

    /// Withdraws `token`.
    pub fn remove(&self, token: &str) {
        self.tokens.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(token);
            map
        });
    }

    /// The answer to a request for `path`, if it asks for a published
    /// token: a prefix compare, and under [`PREFIX`] one lookup in the
    /// current map.
    pub fn answer(&self, path: &str) -> Option<Bytes> {
        let token = path.strip_prefix(PREFIX)?;
        self.tokens.load().get(token).cloned()
    }
}
