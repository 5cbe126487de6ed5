//! Cairn: a Dynamo-style replicated key/value store in which every table
//! chooses how concurrent versions are reconciled.
//!
//! Crate map:
//! - [`core`]: the sans-IO protocol: ring, versions, objects, quorums, request state machines, gossip
//!   (its own map lists the file of each concept).
//! - [`storage`]: the node's LMDB environment and volatile tables, with group commit.
//! - [`net`]: peer transport over persistent framed TCP connections.
//! - [`http`]: the HTTP API.
//! - [`plugin`]: the sandboxed WebAssembly plugin host (wasmtime).
//! - [`runtime`]: the node loop joining the core to the clock, sockets and storage.
//! - [`cli`]: the `cairn` command line.
//! - [`sim`]: a seeded whole-cluster simulator over the core, for tests; its
//!   invariants (no acknowledged write lost, bounds, draining, convergence) in `sim/check.rs`.

pub mod cli;
pub mod core;
pub mod fuzz;
pub mod http;
pub mod metrics;
pub mod net;
pub mod plugin;
pub mod runtime;
pub mod sim;
pub mod storage;
