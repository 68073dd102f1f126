#![warn(missing_docs)]
//! ruchy-serve: a static-file HTTP daemon on tokio and hyper 1.x.
//!
//! # Layout
//!
//! A request travels: [`listen`] accepts a socket -> [`conn`] takes it
//! through the PROXY header, TLS and protocol detection and runs hyper on it
//! with the connection's timers -> [`handler`] decides what the request gets
//! (guard, health, redirect, serve, headers, accounting) -> [`serve`] resolves
//! the path and builds the response -> the handler's accounting body records
//! it in [`metrics`] and the [`access`] log when the body is done.
//!
//! Low modules first; no module imports one that imports it
//! (`tests/it/layering.rs` checks):
//! - [`addr`]: listen addresses and peers; imports nothing of ours.
//! - [`clients`]: open connections by client address
//!   (`limits.max_connections_per_client`).
//! - [`clock`]: Unix seconds, the coarse monotonic clock, log timestamps.
//! - [`fileid`]: the identity of a file version, for every cache and watch.
//! - [`config`]: raw figment/serde settings -> validated immutable
//!   [`config::Config`], one module per section; no sockets, so
//!   `ruchy-serve check` runs it all without binding.
//! - [`tls`]: PEM files -> validated certificates chosen by SNI behind a
//!   swappable resolver; the process-wide rustls configuration.
//! - [`serve`]: static files as a numbered pipeline (resolve, preconditions,
//!   ranges, headers, body); the RFC 9110 logic is pure functions.
//! - [`metrics`]: the Prometheus registry and typed handles, bounded labels.
//! - [`state`]: the server state every connection shares: the configuration
//!   generation, the lifecycle phase, the health answers.
//! - [`access`]: the access-log record and line.
//! - [`proxy`]: the client address behind a load balancer (PROXY protocol
//!   header, X-Forwarded-For, Forwarded), believed from `trusted_proxies` only.
//! - [`admin`]: what the metrics listener answers (`/metrics`, `/healthz`,
//!   `/readyz`).
//! - [`handler`]: one per connection, one method per request.
//! - [`listen`]: the [`listen::Listener`] enum (TCP, unix, systemd sockets)
//!   with accept back-off. Knows nothing of HTTP.
//! - [`conn`]: the one accept loop for every listener (site and metrics), a
//!   connection's slot, PROXY header, TLS, protocol, idle timer and drain
//!   watch.
//! - [`lifecycle`]: phases, the listener set, reload, signals, watchdog,
//!   certificate watch, sd_notify.
//! - [`logging`]: the tracing subscriber, set up once by `main`.
//! - [`manual`]: the man pages' own text; ruchy-serve.toml(5) from the
//!   reference configuration.
//! - [`privileges`]: the root policy `main` applies before serving.

pub mod access;
pub mod acme;
pub mod addr;
pub mod admin;
pub mod challenges;
pub mod clients;
pub mod clock;
pub mod config;
pub mod conn;
pub mod explain;
pub mod fileid;
pub mod handler;
pub mod lifecycle;
pub mod listen;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod privileges;
pub mod proxy;
pub mod serve;
pub mod state;
pub mod tls;
