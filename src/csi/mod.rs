//! `rbdvol csi`: the engine behind a CSI v1 gRPC server, for Docker
//! Swarm's cluster volumes (`docker volume create --type mount ...`).
//! Like `api`, the handlers parse, check and forward; `error::status` is
//! the one place an error becomes a gRPC status.
//!
//! The map:
//! - `proto`: the protocol, generated from `proto/csi.proto`;
//! - `access`: what Swarm's access modes and types mean for rbdvol;
//! - `request`: the names, paths, sizes and secrets a call carries, checked;
//! - `identity`, `controller`, `node`: the three services;
//! - `server`: the three on a unix socket;
//! - `error`: this layer's errors and their gRPC codes.

pub mod access;
mod controller;
mod error;
mod identity;
mod node;
pub mod proto;
pub mod request;
mod server;

pub use error::CsiError;
pub use server::{serve, Csi, CsiPaths, PLUGIN_NAME};
