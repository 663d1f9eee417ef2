//! The README's quick start, run as a new user would: `scripts/quickstart.sh`
//! boots its own cluster and `rbdvol serve` as the driver `rbd` on the
//! running dockerd, then every line it prints is run exactly as printed —
//! the docker lines, `rbd ls`, and the closing `rbdvol ... ls`, which must
//! list the volume. The debug build stands in for the release one
//! (QUICKSTART_PROFILE=dev): the script's path is otherwise the same.
//!
//! dockerd remembers a legacy driver it used (here `rbd`) until it restarts,
//! and then waits ~15 s for its socket at every `docker volume ls`: this
//! binary runs after every other one that uses dockerd (cargo runs them in
//! name order), and CI's dockerd is its own.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::docker::require_dockerd;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart.sh")
}

fn sh(line: &str) -> Output {
    Command::new("sh").arg("-c").arg(line).output().expect("run sh")
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Stops what the quick start started, however the test ends.
struct QuickStart;

impl Drop for QuickStart {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg("-c").arg("docker volume rm -f demo").output();
        let _ = Command::new(script()).arg("stop").env("QUICKSTART_PROFILE", "dev").output();
    }
}

#[test]
fn every_line_the_quick_start_prints_works_as_printed_the_admin_cli_included() {
    require_dockerd();
    assert!(!PathBuf::from("/run/docker/plugins/rbd.sock").exists(), "a driver 'rbd' already runs here: the quick start needs its socket");
    let _stop = QuickStart;
    let out = Command::new(script()).env("QUICKSTART_PROFILE", "dev").output().expect("run scripts/quickstart.sh");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "quickstart.sh failed: {}", said(&out));
    let commands: Vec<&str> = printed.lines().filter_map(|l| l.strip_prefix("  ")).collect();
    let last = *commands.last().unwrap_or_else(|| panic!("no command printed: {printed}"));
    assert!(last.ends_with(" ls") && last.contains("rbdvol"), "the printout ends with the admin CLI's ls: {printed}");
    assert_eq!(printed.trim_end().lines().last().map(str::trim), Some(last), "{printed}");

    // The docker lines and rbd, as printed, but the removal: then the
    // admin CLI lists the volume the user just made.
    for line in commands.iter().filter(|l| !l.starts_with("docker volume rm") && **l != last) {
        let out = sh(line);
        assert!(out.status.success(), "`{line}` failed: {}", said(&out));
        if line.contains("cat /data/hello") {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
        }
    }
    let out = sh(last);
    assert!(out.status.success(), "`{last}` failed: {}", said(&out));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let demo = listed.lines().find(|l| l.starts_with("demo ")).unwrap_or_else(|| panic!("`{last}` does not list demo: {listed}"));
    assert!(demo.contains("1.0 GiB") || demo.contains("1 GiB") || demo.contains("1024"), "{demo}");

    let rm = commands.iter().find(|l| l.starts_with("docker volume rm")).expect("the printout removes the volume");
    let out = sh(rm);
    assert!(out.status.success(), "`{rm}` failed: {}", said(&out));
}
