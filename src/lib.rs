//! rbdvol: a Docker volume plugin for Ceph RBD.
//!
//! Layers, each using only those below it:
//! `main/cli → api → engine → host → ceph → rbd-sys`, with `config` and
//! `state` at the bottom.

pub mod api;
pub mod ceph;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod settings;
pub mod state;
