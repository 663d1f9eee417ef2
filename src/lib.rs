//! rbdvol: a Docker volume plugin for Ceph RBD.
//!
//! Layers, each using only those below it:
//! `main → cli/api/daemon → engine → host → ceph → rbd-sys`, with `config`,
//! `state` and `metrics` at the bottom. `main` and `cli` are the binary's (the only
//! place `anyhow` is used); `daemon` is `rbdvol serve` once its arguments
//! are parsed, serving `api` on the plugin socket.

pub mod api;
pub mod ceph;
pub mod config;
pub mod csi;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod metrics;
pub mod settings;
pub mod state;
