//! ruchy-serve: a static-file HTTP daemon on tokio and hyper 1.x.
//!
//! # Layout
//!
//! A request travels: [`listen`] accepts a socket -> [`conn`] runs HTTP/1.1 or
//! HTTP/2 on it with hyper-util's auto builder -> [`serve`] resolves the path
//! and builds the response -> [`access`] logs it when the body is done.
//!
//! - [`config`]: raw figment/serde settings -> validated immutable [`config::Config`];
//!   no sockets, so `ruchy-serve check` runs it all without binding.
//! - [`listen`]: the [`listen::Listener`] enum (TCP now; unix and systemd fds
//!   plug in as variants) with accept back-off. Knows nothing of HTTP.
//! - [`conn`]: the one accept loop; per-connection limits, idle timer, and the
//!   graceful-shutdown watch.
//! - [`serve`]: static files as a numbered pipeline (resolve, preconditions,
//!   ranges, headers, body); the RFC 9110 logic is pure functions.
//! - [`access`]: per-request access-log records and the counting body.
//! - [`lifecycle`]: phases (Starting, Ready, Draining, Stopped), the shared
//!   configuration snapshot behind an `ArcSwap`, bind-then-serve-then-drain.
//! - [`logging`]: the tracing subscriber, set up once by `main`.
//! - [`metrics`]: the Prometheus registry and typed handles, bounded labels.
//! - [`admin`]: the metrics listener: `/metrics`, `/healthz`, `/readyz`.
//! - [`proxy`]: the client address behind a load balancer (PROXY protocol
//!   header, X-Forwarded-For, Forwarded), believed from `trusted_proxies` only.
//! - [`tls`]: PEM files -> validated certificates chosen by SNI behind a
//!   swappable resolver; the process-wide rustls configuration.

pub mod access;
pub mod addr;
pub mod admin;
pub mod clock;
pub mod config;
pub mod conn;
pub mod fileid;
pub mod handler;
pub mod lifecycle;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod privileges;
pub mod proxy;
pub mod serve;
pub mod state;
pub mod tls;
