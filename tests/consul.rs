//! Cluster settings and the keyring from Consul KV, against a real Consul
//! agent (dev mode, ACLs on) and the real test cluster: precedence, bad
//! values, a rejected token, hot reload of the key and the monitor list, a
//! late Consul, and a restart while Consul is down.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster};
use common::consul::ConsulAgent;
use common::plugin::{Answer, Plugin};

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

fn id(n: u32) -> String {
    format!("{n:064x}")
}

fn consul_env(agent: &ConsulAgent, prefix: &str, token: &str) -> Vec<(String, String)> {
    vec![
        ("CONSUL_HTTP_ADDR".into(), agent.addr()),
        ("CONSUL_HTTP_TOKEN".into(), token.into()),
        ("RBDVOL_CONSUL_PREFIX".into(), prefix.into()),
    ]
}

/// What `rbdvol` needs to reach the test cluster, written to Consul.
fn seed(agent: &ConsulAgent, prefix: &str, user: &str, key: &str) {
    agent.put(&format!("{prefix}conf/global/mon_host"), &cluster().admin_settings().mon_host);
    agent.put(&format!("{prefix}conf/keyring/user"), user);
    agent.put(&format!("{prefix}conf/keyring/key"), key);
}

/// Calls `f` until its answer has no Err (or `timeout`); the last answer.
fn eventually(timeout: Duration, f: impl Fn() -> Answer) -> Answer {
    let start = Instant::now();
    loop {
        let a = f();
        if a.err().is_empty() || start.elapsed() > timeout {
            return a;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ok(a: &Answer) {
    assert_eq!(a.err(), "", "{:?}", a.json);
}

fn admin_key() -> String {
    cluster().admin_settings().key.expose().to_string()
}

#[test]
fn settings_come_from_consul_and_the_environment_overrides_them() {
    let agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("cfg"));
    seed(&agent, &prefix, "client.admin", &admin_key());
    agent.put(&format!("{prefix}defaults/size"), "48");
    agent.put(&format!("{prefix}defaults/fstype"), "ntfs");
    agent.put(&format!("{prefix}pools/rbd/mount_options"), "noatime");
    let p = Plugin::start_env(&unique("consulhost"), consul_env(&agent, &prefix, &agent.token), None, &[]);

    // No cluster setting in the environment: all from Consul.
    let v = unique("cv");
    ok(&eventually(Duration::from_secs(15), || p.create(&v, &[])));
    assert_eq!(cluster().rbd_info(&v).unwrap()["size"], 48u64 << 20, "defaults/size from consul");
    assert_eq!(p.get(&v).json["Volume"]["Status"]["fstype"], "ext4", "a malformed fstype falls back to the default");
    assert_eq!(p.get(&v).json["Volume"]["Status"]["mount_options"], "noatime", "pools/rbd/mount_options");
    let log = p.log();
    assert!(log.contains("defaults/fstype") && log.contains("ignored"), "the bad key is not named in the log:\n{log}");
    assert!(!log.contains(&admin_key()), "the key is in the log");
    let cache = p.state_dir().join("consul-cache.json");
    assert_eq!(std::fs::metadata(&cache).expect("settings cached").permissions().mode() & 0o777, 0o600);
    ok(&p.remove(&v));

    // The environment wins over Consul.
    let mut env = consul_env(&agent, &prefix, &agent.token);
    env.push(("VOLUME_SIZE".into(), "40".into()));
    let p2 = Plugin::start_env(&unique("consulhost"), env, None, &[]);
    let v = unique("cv");
    ok(&eventually(Duration::from_secs(15), || p2.create(&v, &[])));
    assert_eq!(cluster().rbd_info(&v).unwrap()["size"], 40u64 << 20, "VOLUME_SIZE from the environment");
    ok(&p2.remove(&v));
}

#[test]
fn a_rejected_token_is_named_and_a_late_consul_is_picked_up() {
    let mut agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("acl"));
    seed(&agent, &prefix, "client.admin", &admin_key());
    let p = Plugin::start_env(&unique("consulhost"), consul_env(&agent, &prefix, "not-the-token"), None, &[]);
    let start = Instant::now();
    loop {
        let err = p.create(&unique("denied"), &[]).err().to_string();
        assert!(!err.is_empty(), "a create worked with a rejected token");
        if err.contains("consul rejected the ACL token") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the error does not say the token was rejected: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Consul down at the plugin's first start, nothing cached: every call
    // says so; as soon as Consul answers, the plugin works.
    agent.stop();
    let late = Plugin::start_env(&unique("consulhost"), consul_env(&agent, &prefix, &agent.token), None, &[]);
    let v = unique("late");
    let err = late.create(&v, &[]).err().to_string();
    assert!(err.contains("consul"), "{err}");
    std::thread::sleep(Duration::from_secs(2));
    let err = late.create(&v, &[]).err().to_string();
    assert!(err.contains("unreachable"), "{err}");
    agent.spawn();
    seed(&agent, &prefix, "client.admin", &admin_key());
    ok(&eventually(Duration::from_secs(45), || late.create(&v, &[])));
    ok(&late.remove(&v));
}

#[test]
fn a_rotated_key_and_new_monitors_take_effect_without_a_restart() {
    let agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("rot"));
    let user = format!("client.{}", unique("rot"));
    let caps = ["mon", "profile rbd", "osd", "profile rbd pool=rbd", "mgr", "profile rbd"];
    let new_key = || {
        let mut args = vec!["auth", "get-or-create-key", user.as_str()];
        args.extend(caps);
        let out = cluster().cli("ceph", &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let key1 = new_key();
    seed(&agent, &prefix, &user, &key1);
    let p = Plugin::start_env(&unique("consulhost"), consul_env(&agent, &prefix, &agent.token), None, &[]);
    let a = unique("rota");
    ok(&eventually(Duration::from_secs(15), || p.create(&a, &[("size", "64")])));
    let mp = std::path::PathBuf::from(p.mount(&a, &id(1)).json["Mountpoint"].as_str().expect("mounted").to_string());
    let write = |text: &str| {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(mp.join("log")).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.sync_all().unwrap();
    };
    write("before\n");

    // Rotate: the old key stops working for new connections.
    assert!(cluster().cli("ceph", &["auth", "rm", &user]).status.success());
    let key2 = new_key();
    assert_ne!(key1, key2);
    agent.put(&format!("{prefix}conf/keyring/key"), &key2);
    let b = unique("rotb");
    ok(&eventually(Duration::from_secs(15), || p.create(&b, &[("size", "64")])));
    assert!(p.log().contains("new cluster settings in force"), "{}", p.log());
    // The volume mounted before keeps working.
    write("after\n");
    ok(&p.unmount(&a, &id(1)));
    assert_eq!(cluster().read_files_from_image(&a, &["/log"]), ["before\nafter\n"]);

    // A new monitor list (the same monitors, spelled as v2 addresses only).
    let mons = cluster().admin_settings().mon_host;
    let v2_only = mons.trim_matches(|c| c == '[' || c == ']').split(',').find(|m| m.starts_with("v2:")).unwrap().to_string();
    agent.put(&format!("{prefix}conf/global/mon_host"), &v2_only);
    let start = Instant::now();
    while !p.log().contains(&format!("monitors {v2_only}")) {
        assert!(start.elapsed() < Duration::from_secs(15), "the new monitor list was not taken: {}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = unique("rotc");
    ok(&p.create(&c, &[("size", "64")]));
    for v in [&a, &b, &c] {
        ok(&p.remove(v));
    }
    let _ = cluster().cli("ceph", &["auth", "rm", &user]);
}

#[test]
fn a_plugin_restarted_while_consul_is_down_works_from_its_cache() {
    let mut agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("cache"));
    seed(&agent, &prefix, "client.admin", &admin_key());
    let mut p = Plugin::start_env(&unique("consulhost"), consul_env(&agent, &prefix, &agent.token), None, &[]);
    let v = unique("cached");
    ok(&eventually(Duration::from_secs(15), || p.create(&v, &[("size", "64")])));
    agent.stop();
    p.restart();
    ok(&p.mount(&v, &id(1)));
    ok(&p.unmount(&v, &id(1)));
    ok(&p.remove(&v));
    let log = p.log();
    assert!(log.contains("using the settings cached from consul"), "{log}");
    assert!(log.contains("unreachable"), "consul being down is not logged: {log}");
}

#[test]
fn consul_seed_migrates_a_ceph_conf_and_keyring_in_one_step() {
    let agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("seed"));
    let env = consul_env(&agent, &prefix, &agent.token);
    let out = std::process::Command::new(common::plugin::bin())
        .args(["consul", "seed", "--conf"])
        .arg(&cluster().conf)
        .arg("--keyring")
        .arg(&cluster().keyring)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{prefix}conf/global/mon_host")), "{stdout}");
    assert!(stdout.contains("left out [client] keyring"), "{stdout}");
    assert!(!stdout.contains(&admin_key()), "seed printed the key");

    // A plugin with nothing but Consul's address works from what was seeded.
    let p = Plugin::start_env(&unique("consulhost"), env.clone(), None, &[]);
    let v = unique("seeded");
    ok(&eventually(Duration::from_secs(15), || p.create(&v, &[("size", "32")])));
    ok(&p.remove(&v));

    // `config show` names each setting's source and never the key.
    let out = std::process::Command::new(common::plugin::bin())
        .args(["config", "show"])
        .env_clear()
        .envs(env.iter().cloned())
        .env("VOLUME_SIZE", "1G")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("RBD_CONF_GLOBAL_MON_HOST") && l.ends_with("consul conf/global/mon_host")), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("VOLUME_SIZE") && l.contains("1G") && l.ends_with("flag or environment")), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("VOLUME_FSTYPE") && l.ends_with("default")), "{shown}");
    assert!(!shown.contains(&admin_key()), "config show printed the key");
}

#[test]
fn volume_records_follow_ceph_and_are_repaired() {
    let agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("rec"));
    seed(&agent, &prefix, "client.admin", &admin_key());
    let p = Plugin::start_env(&unique("consulhost"), consul_env(&agent, &prefix, &agent.token), None, &[]);
    let v = unique("recv");
    let key = format!("{prefix}volumes/{v}");
    let record = |s: Option<&str>| s.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()).unwrap_or_default();
    ok(&eventually(Duration::from_secs(15), || p.create(&v, &[("size", "64")])));
    agent.wait_for(&key, "a record of the new volume", |s| {
        let r = record(s);
        r["pool"] == "rbd" && r["size"] == 64u64 << 20 && r["fstype"] == "ext4" && r["mounted_by"] == ""
    });

    ok(&p.mount(&v, &id(1)));
    let mp = p.mount_root().join(&v);
    agent.wait_for(&key, "the record names this host, device and mountpoint", |s| {
        let r = record(s);
        r["mounted_by"] == p.host_id.as_str()
            && r["device"].as_str().is_some_and(|d| d.starts_with("/dev/loop"))
            && r["mountpoint"] == mp.to_str().unwrap()
    });

    // A lost record and a stale one are repaired from Ceph.
    agent.delete(&key);
    agent.wait_for(&key, "the deleted record is back", |s| record(s)["mounted_by"] == p.host_id.as_str());
    agent.put(&key, r#"{"pool":"elsewhere","mounted_by":"nobody"}"#);
    agent.wait_for(&key, "the stale record is repaired", |s| record(s)["pool"] == "rbd" && record(s)["mounted_by"] == p.host_id.as_str());
    // A record of a volume that does not exist is not trusted: removed.
    let ghost = format!("{prefix}volumes/{}", unique("ghost"));
    agent.put(&ghost, r#"{"pool":"rbd"}"#);
    agent.wait_for(&ghost, "the record of a volume Ceph does not have is removed", |s| s.is_none());

    ok(&p.unmount(&v, &id(1)));
    agent.wait_for(&key, "the record shows it unmounted", |s| record(s)["mounted_by"] == "" && record(s)["device"].is_null());
    ok(&p.remove(&v));
    agent.wait_for(&key, "the record of the removed volume is gone", |s| s.is_none());
}

#[test]
fn consul_killed_and_restarted_under_load_disturbs_nothing() {
    let mut agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("load"));
    seed(&agent, &prefix, "client.admin", &admin_key());
    let p = Plugin::start_env(&unique("consulhost"), consul_env(&agent, &prefix, &agent.token), None, &[]);
    let v = unique("load");
    ok(&eventually(Duration::from_secs(15), || p.create(&v, &[("size", "64")])));
    let mp = std::path::PathBuf::from(p.mount(&v, &id(1)).json["Mountpoint"].as_str().expect("mounted").to_string());

    // A writer fsyncing into the mounted volume, and Docker calls, while
    // Consul goes away and comes back empty (a dev agent keeps nothing).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, mp) = (stop.clone(), mp.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(mp.join("log")).unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                writeln!(f, "{n}").unwrap();
                f.sync_all().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    agent.stop();
    let during = unique("during");
    ok(&p.create(&during, &[("size", "32")]));
    ok(&p.get(&v));
    std::thread::sleep(Duration::from_secs(3));
    agent.spawn();
    std::thread::sleep(Duration::from_secs(3));
    let after = unique("after");
    ok(&p.create(&after, &[("size", "32")]));
    let log = p.log();
    assert!(log.contains("keeping the last good settings"), "{log}");

    // Seeded again, with a new default: it takes effect.
    seed(&agent, &prefix, "client.admin", &admin_key());
    agent.put(&format!("{prefix}defaults/size"), "24");
    let sized = unique("sized");
    let start = Instant::now();
    loop {
        ok(&p.create(&sized, &[]));
        if cluster().rbd_info(&sized).unwrap()["size"] == 24u64 << 20 {
            break;
        }
        ok(&p.remove(&sized));
        assert!(cluster().image_deleted(&sized));
        assert!(start.elapsed() < Duration::from_secs(45), "the new default never took effect: {}", p.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().expect("the writer saw an error");
    ok(&p.unmount(&v, &id(1)));
    let lines = cluster().read_files_from_image(&v, &["/log"]).remove(0).lines().count() as u64;
    assert_eq!(lines, written);
    for name in [&v, &during, &after, &sized] {
        ok(&p.remove(name));
    }
}

#[test]
fn consul_over_tls_with_a_client_certificate() {
    let agent = ConsulAgent::start_tls();
    let prefix = format!("{}/", unique("tls"));
    seed(&agent, &prefix, "client.admin", &admin_key());
    let port = agent.https_port.unwrap();
    let f = |n: &str| agent.tls_file(n).display().to_string();
    let mut env = vec![
        ("CONSUL_HTTP_ADDR".to_string(), format!("https://127.0.0.1:{port}")),
        ("CONSUL_HTTP_TOKEN".to_string(), agent.token.clone()),
        ("RBDVOL_CONSUL_PREFIX".to_string(), prefix.clone()),
        ("CONSUL_CACERT".to_string(), f("consul-agent-ca.pem")),
        ("CONSUL_TLS_SERVER_NAME".to_string(), "server.dc1.consul".to_string()),
    ];
    // Without a client certificate the agent refuses the connection.
    let p = Plugin::start_env(&unique("consulhost"), env.clone(), None, &[]);
    std::thread::sleep(Duration::from_secs(2));
    let err = p.create(&unique("tlsno"), &[]).err().to_string();
    assert!(err.contains("consul at https://127.0.0.1"), "{err}");
    drop(p);

    env.push(("CONSUL_CLIENT_CERT".to_string(), f("dc1-client-consul-0.pem")));
    env.push(("CONSUL_CLIENT_KEY".to_string(), f("dc1-client-consul-0-key.pem")));
    let p = Plugin::start_env(&unique("consulhost"), env, None, &[]);
    let v = unique("tlsv");
    ok(&eventually(Duration::from_secs(15), || p.create(&v, &[("size", "32")])));
    ok(&p.remove(&v));
}
