//! `limits.max_connections_per_client`: open connections by client
//! address, across every listener (held in [`crate::state::State`]). Only
//! counted when the limit is set, so a server without it pays nothing per
//! connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::addr::Peer;

/// A client already has its `max_connections_per_client` open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit;

/// Open connections by client address.
#[derive(Debug, Default)]
pub struct Clients {
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl Clients {
    /// A slot for one more connection from `peer` if it has fewer than
    /// `max` open; unix-socket peers have no address and are not limited.
    pub fn admit(self: &Arc<Self>, peer: Peer, max: u32) -> Result<Option<ClientSlot>, OverLimit> {
        let Peer::Tcp(addr) = peer else {
            return Ok(None);
        };
        // An IPv4 client on a dual-stack socket is one client, however the
        // socket spells it.
        let ip = addr.ip().to_canonical();
        let mut open = self.open.lock().expect("clients lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return Err(OverLimit);
        }
        *n += 1;
        Ok(Some(ClientSlot {
            clients: Arc::clone(self),
            ip,
        }))
    }

    /// Addresses with connections open now (for tests).
    pub fn addresses(&self) -> usize {
        self.open.lock().expect("clients lock").len()
    }
}

/// One connection counted for its client; given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().expect("clients lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_max_slots_and_each_one_given_back_frees_one() {
        let c = Arc::new(Clients::default());
        let a = Peer::Tcp("10.0.0.1:1000".parse().unwrap());
        let mapped = Peer::Tcp("[::ffff:10.0.0.1]:1001".parse().unwrap());
        let b = Peer::Tcp("10.0.0.2:1000".parse().unwrap());
        let s1 = c.admit(a, 2).unwrap();
        let s2 = c.admit(mapped, 2).unwrap();
        assert!(
            c.admit(a, 2).is_err(),
            "the mapped spelling is the same client"
        );
        assert!(c.admit(b, 2).unwrap().is_some(), "another client is not");
        drop(s1);
        let s3 = c.admit(a, 2).unwrap();
        assert!(c.admit(Peer::Unix, 2).unwrap().is_none());
        drop((s2, s3));
        assert_eq!(c.addresses(), 0);
    }
}
