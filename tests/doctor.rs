//! `rbdvol doctor` against a real throwaway cluster: a healthy host passes,
//! a wrong key and missing monitors fail naming the setting to fix, the
//! host checks run either way, and the key is never printed.

mod common;

use std::process::{Command, Output};

use base64::Engine as _;
use common::cluster::{unique, TestCluster, POOL};
use common::plugin::{bin, Plugin};

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

/// Runs `rbdvol doctor --json` with exactly these settings (and a state
/// and run directory of its own unless `args` give them).
fn doctor(env: &[(&str, &str)], args: &[&str]) -> (Output, serde_json::Value) {
    let dir = std::env::temp_dir().join(unique("rbdvol-doctor"));
    let mut cmd = Command::new(bin());
    cmd.args(["doctor", "--json"]).args(args);
    if !args.contains(&"--state-dir") {
        cmd.arg("--state-dir").arg(dir.join("state"));
    }
    cmd.arg("--run-dir").arg(dir.join("run")).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run rbdvol doctor");
    let _ = std::fs::remove_dir_all(&dir);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}):\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (out, json)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The check named `name`: (status, detail).
fn check(report: &serde_json::Value, name: &str) -> (String, String) {
    let c = report["checks"]
        .as_array()
        .expect("checks is a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check named {name}: {report:#}"));
    (c["status"].as_str().unwrap().to_string(), c["detail"].as_str().unwrap().to_string())
}

fn failing(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["detail"].as_str().unwrap().to_string()))
        .collect()
}

/// Another well-formed cephx key: the same header, another secret.
fn other_key(key: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(key.trim()).expect("the admin key is base64");
    let n = raw.len();
    for b in &mut raw[n - 16..] {
        *b ^= 0x5a;
    }
    b64.encode(raw)
}

#[test]
fn a_healthy_host_passes_and_a_stale_lock_is_named() {
    let s = cluster().admin_settings();
    let key = s.key.expose().to_string();

    // A volume whose host lock carries a host id that has not mounted it.
    let p = Plugin::start(cluster(), &unique("host"));
    let vol = unique("doc");
    let a = p.create(&vol, &[("size", "32")]);
    assert_eq!(a.err(), "", "{:?}", a.json);
    let host = unique("doctor-host");
    {
        let c = cluster().connect();
        let image = c.open_pool(POOL, "").unwrap().open_image_read_only(&vol).unwrap();
        image.header().unwrap().host_lock(&host, &format!("rbdvol on {host}")).unwrap();
    }

    let env = [("RBD_CONF_GLOBAL_MON_HOST", s.mon_host.as_str()), ("RBD_CONF_KEYRING_USER", "client.admin"), ("RBD_CONF_KEYRING_KEY", key.as_str())];
    let (out, report) = doctor(&env, &["--host-id", &host]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report["ok"], true, "{report:#}");
    for name in ["mapper", "capabilities", "settings", "monitors", "auth", "consul", "volumes", "features"] {
        assert_eq!(check(&report, name).0, "ok", "{name}: {report:#}");
    }
    assert_eq!(check(&report, "consul").1, "not configured (CONSUL_HTTP_ADDR is unset)");
    let (status, detail) = check(&report, "stale-locks");
    assert_eq!(status, "warn", "{report:#}");
    assert!(detail.contains(&format!("run rbdvol unlock {vol}")), "{detail}");
    assert!(!text(&out).contains(&key), "the key was printed:\n{}", text(&out));

    // The readable form: one line per check, the same verdict.
    let out = Command::new(bin())
        .args(["doctor", "--host-id", "nobody-here", "--state-dir", "/nonexistent/rbdvol-doctor"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("ok") && l.contains("monitors")), "{stdout}");
    assert!(!text(&out).contains(&key), "the key was printed:\n{}", text(&out));

    {
        let c = cluster().connect();
        let image = c.open_pool(POOL, "").unwrap().open_image_read_only(&vol).unwrap();
        let lockers = image.header().unwrap().host_lockers().unwrap();
        image.header().unwrap().host_break_lock(&lockers.lockers[0].client, &host).unwrap();
    }
    let a = p.remove(&vol);
    assert_eq!(a.err(), "", "{:?}", a.json);
}

#[test]
fn a_wrong_key_fails_naming_the_key_setting() {
    let s = cluster().admin_settings();
    let wrong = other_key(s.key.expose());
    assert_ne!(wrong, s.key.expose());
    let env = [("RBD_CONF_GLOBAL_MON_HOST", s.mon_host.as_str()), ("RBD_CONF_KEYRING_USER", "client.admin"), ("RBD_CONF_KEYRING_KEY", wrong.as_str())];
    let (out, report) = doctor(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(report["ok"], false);
    let failed = failing(&report);
    assert!(failed.iter().any(|(_, d)| d.contains("RBD_CONF_KEYRING_KEY")), "no failing check names RBD_CONF_KEYRING_KEY: {report:#}");
    assert_eq!(check(&report, "auth").0, "fail", "{report:#}");
    assert_eq!(check(&report, "settings").0, "ok", "{report:#}");
    // Cluster checks are skipped, host checks still run.
    assert_eq!(check(&report, "features").0, "skip", "{report:#}");
    assert_eq!(check(&report, "mapper").0, "ok", "{report:#}");
    assert!(!text(&out).contains(&wrong) && !text(&out).contains(s.key.expose()), "a key was printed:\n{}", text(&out));
}

#[test]
fn missing_monitors_fail_naming_the_monitor_setting() {
    let s = cluster().admin_settings();
    let env = [("RBD_CONF_KEYRING_USER", "client.admin"), ("RBD_CONF_KEYRING_KEY", s.key.expose())];
    let (out, report) = doctor(&env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = failing(&report);
    assert!(failed.iter().any(|(_, d)| d.contains("RBD_CONF_GLOBAL_MON_HOST")), "no failing check names RBD_CONF_GLOBAL_MON_HOST: {report:#}");
    assert_eq!(check(&report, "settings").0, "fail");
    for name in ["monitors", "auth", "features", "stale-locks"] {
        assert_eq!(check(&report, name).0, "skip", "{name}: {report:#}");
    }
    for name in ["mapper", "tools", "capabilities"] {
        assert_eq!(check(&report, name).0, "ok", "{name}: {report:#}");
    }
    assert!(!text(&out).contains(s.key.expose()), "the key was printed:\n{}", text(&out));
}

#[test]
fn consul_is_read_with_the_token_and_a_rejected_token_fails() {
    let s = cluster().admin_settings();
    let agent = common::consul::ConsulAgent::start();
    let prefix = format!("{}/", unique("doctor"));
    agent.put(&format!("{prefix}conf/global/mon_host"), &s.mon_host);
    let addr = agent.addr();
    let ceph = [("RBD_CONF_GLOBAL_MON_HOST", s.mon_host.as_str()), ("RBD_CONF_KEYRING_USER", "client.admin"), ("RBD_CONF_KEYRING_KEY", s.key.expose())];
    let with = |token: &str| -> Vec<(&str, String)> {
        let mut env: Vec<(&str, String)> = ceph.iter().map(|(k, v)| (*k, v.to_string())).collect();
        env.extend([("CONSUL_HTTP_ADDR", addr.clone()), ("CONSUL_HTTP_TOKEN", token.to_string()), ("RBDVOL_CONSUL_PREFIX", prefix.clone())]);
        env
    };
    let run = |env: &[(&str, String)]| doctor(&env.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(), &[]);

    let (out, report) = run(&with(&agent.token));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (status, detail) = check(&report, "consul");
    assert_eq!(status, "ok", "{report:#}");
    assert!(detail.contains(&addr) && detail.contains(&prefix), "{detail}");

    let (out, report) = run(&with("not-the-token"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let (status, detail) = check(&report, "consul");
    assert_eq!(status, "fail", "{report:#}");
    assert!(detail.contains("consul rejected the ACL token"), "{detail}");
    // The cluster settings come from the environment: those checks pass.
    assert_eq!(check(&report, "auth").0, "ok", "{report:#}");
    assert!(!text(&out).contains(s.key.expose()) && !text(&out).contains(&agent.token), "a secret was printed:\n{}", text(&out));
}
