//! The HTTP-01 answers the ACME manager (`crate::acme`) publishes while an
//! order is being validated (RFC 8555 section 8.3): token -> key
//! authorization. Low in the house (the state holds it, the handler reads
//! it); only the manager writes, one entry per name being validated, removed when the order ends,
//! so a client can make it hold nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// The path prefix HTTP-01 validation requests.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens being validated now.
#[derive(Debug, Default)]
pub struct Http01 {
    tokens: Mutex<HashMap<String, Bytes>>,
}

impl Http01 {
    /// Publishes `key_authorization` for `token`.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.lock().insert(
            token.to_string(),
            Bytes::copy_from_slice(key_authorization.as_bytes()),
        );
    }

    /// Withdraws `token`.
    pub fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    /// The answer to a request for `path`, if it asks for a published
    /// token. Cheap when nothing is published (one lock of an empty map,
    /// and only for paths under [`PREFIX`]).
    pub fn answer(&self, path: &str) -> Option<Bytes> {
        let token = path.strip_prefix(PREFIX)?;
        self.lock().get(token).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bytes>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}
