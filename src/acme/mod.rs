//! Certificates from an ACME CA (RFC 8555) for sites with `acme = true`:
//! the account and certificates in the state directory ([`store`]), the
//! orders and their schedule ([`manager`]). The answers it publishes live
//! lower in the house, where the handler and the handshake read them:
//! HTTP-01's in [`crate::challenges`], TLS-ALPN-01's in the TLS resolver.
//! The protocol is instant-acme's; storage, scheduling and back-off are
//! ours.

pub mod manager;
pub mod store;
