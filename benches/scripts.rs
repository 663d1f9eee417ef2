//! The data-path benchmarks are shell scripts (fio against librbd and
//! Ceph's own user-space path); this runs them with the binary cargo built.
//!
//!   cargo bench --bench scripts        (both, full size: ~20 minutes)
//!   benches/datapath.sh, benches/apppath.sh  (one, after cargo build --release)
//!
//! Under `cargo test` each runs one small round, to prove it works.

use std::process::Command;

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let small: &[(&str, &str)] = if bench_mode {
        &[]
    } else {
        &[("ROUNDS", "1"), ("SEQ_TOTAL", "64M"), ("RAND_TOTAL", "16M"), ("SEQ", "64M"), ("RAND", "16M"), ("RUNTIME", "1"), ("NFILES", "50")]
    };
    for script in ["datapath.sh", "apppath.sh"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/").to_string() + script;
        let out = Command::new(&path)
            .env("RBDVOL_BIN", env!("CARGO_BIN_EXE_rbdvol"))
            .envs(small.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("run {path}: {e}"));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "{script} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
}
