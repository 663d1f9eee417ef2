//! Test fixtures shared by the system tests and the benchmarks.
#![allow(dead_code)]

pub mod cluster;
pub mod consul;
pub mod csi;
pub mod docker;
pub mod guest;
pub mod managed;
pub mod measure;
pub mod netns;
pub mod plugin;
pub mod swarm;
