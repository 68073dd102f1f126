//! The integration tests: one binary, a module per area. Each starts the
//! real server (in-process on 127.0.0.1:0, or the real binary) and talks to
//! it with real clients; `common` holds what they share.

mod common;

mod access_log;
mod acme;
mod browser;
mod budgets;
mod caching;
mod cli;
mod compression;
mod deadlines;
mod differential;
mod disk;
mod faults;
mod files;
mod hostile;
mod idle;
mod layering;
mod limits;
mod locations;
mod metrics;
mod properties;
mod proxy;
mod redirects;
mod serving;
mod sites;
mod systemd;
mod tls;
mod traversal;
