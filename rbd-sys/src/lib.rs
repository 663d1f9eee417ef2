//! Raw bindings to librados and librbd as shipped by Debian 12 (Ceph 16.2:
//! librados 2, librbd 1.16). Generated with bindgen by `generate.sh` and
//! checked in, so building needs no libclang; `build.rs` only links `rbd` and
//! `rados`. The safe layer is `rbdvol::ceph`; nothing else should use this.
//! The layout tests bindgen emits (`bindgen_test_layout_*`) check every struct
//! against the C layout the headers describe.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all)]
#![allow(deref_nullptr)]

include!("bindings.rs");
