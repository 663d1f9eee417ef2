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
    if !bench_mode {
        a_failed_fio_job_fails_the_benchmark();
    }
}

/// fio that fails its job after printing its JSON (as fio does on an I/O
/// error) must fail the script, never become a figure.
fn a_failed_fio_job_fails_the_benchmark() {
    let dir = std::env::temp_dir().join(format!("rbdvol-fake-fio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("fio");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho '{\"jobs\":[{\"error\":5,\"write\":{\"io_bytes\":4096,\"iops\":1,\"bw_bytes\":1,\"clat_ns\":{}},\"read\":{\"io_bytes\":0}}]}'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/apppath.sh"))
        .env("RBDVOL_BIN", env!("CARGO_BIN_EXE_rbdvol"))
        .env("PATH", path)
        .envs([("ROUNDS", "1"), ("SEQ", "64M"), ("RAND", "16M"), ("RUNTIME", "1"), ("NFILES", "10")])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "apppath.sh passed with every fio job failing:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(said.contains("fio job failed: error 5"), "{said}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("medians"), "a table was printed from failed jobs");
}
