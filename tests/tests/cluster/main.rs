//! Cluster-level tests over real `cairn serve` processes on loopback, in one
//! test binary to keep link time down.

mod abuse;
mod authoring;
mod chaos;
mod dashboard;
mod deployment;
mod handoff;
mod keys;
mod membership;
mod operations;
mod partition;
mod plugins;
mod repair;
mod security;
