//! The CSI v1 protocol, generated at build time from `proto/csi.proto`.
#![allow(clippy::all, missing_docs, rustdoc::all)]
tonic::include_proto!("csi.v1");
