//! A ceph.conf and a keyring on disk as the only settings source, against
//! the real test cluster: the admin CLI and `serve` both work with them, as
//! `rbd` does; `config show` and `doctor` name the file and line of each
//! setting; and errors are one line for people, never a backtrace.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::cluster::{unique, TestCluster};
use common::plugin::{bin, Plugin};

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

/// The rbdvol CLI with nothing in its environment but PATH, RUST_BACKTRACE
/// (as on a developer's machine) and `env`.
fn rbdvol(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .output()
        .expect("run rbdvol")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn admin_key() -> String {
    cluster().admin_settings().key.expose().to_string()
}

/// A Ceph directory of the test's own, as /etc/ceph would be: a ceph.conf
/// written the way operators write them and the user's keyring.
struct CephDir {
    dir: tempfile::TempDir,
}

impl CephDir {
    fn new(cluster_name: &str) -> CephDir {
        let dir = tempfile::tempdir().unwrap();
        let conf = format!(
            "# written by hand\n[global]\n\tfsid = {fsid}\n\tmon host = {mons}   ; the monitors\n\tauth client required = cephx\n\tlog file = /var/log/ceph/$cluster-$name.log\n\n[client]\n\trbd cache = true\n",
            fsid = String::from_utf8_lossy(&cluster().cli("ceph", &["fsid"]).stdout).trim(),
            mons = cluster().mon_host,
        );
        std::fs::write(dir.path().join(format!("{cluster_name}.conf")), conf).unwrap();
        std::fs::write(dir.path().join(format!("{cluster_name}.client.admin.keyring")), format!("[client.admin]\n\tkey = {}\n\tcaps mon = \"allow *\"\n", admin_key())).unwrap();
        CephDir { dir }
    }

    fn conf(&self, cluster_name: &str) -> PathBuf {
        self.dir.path().join(format!("{cluster_name}.conf"))
    }
}

/// Files named `/etc/ceph/<name>.conf` and `<name>.client.admin.keyring`
/// for a cluster name of this test's own (other tests and a real
/// /etc/ceph/ceph.conf are not touched), removed on drop.
struct EtcCeph {
    name: String,
}

impl EtcCeph {
    fn install(from: &CephDir, name: &str) -> EtcCeph {
        std::fs::create_dir_all("/etc/ceph").unwrap();
        for file in [format!("{name}.conf"), format!("{name}.client.admin.keyring")] {
            std::fs::copy(from.dir.path().join(&file), PathBuf::from("/etc/ceph").join(&file)).unwrap();
        }
        EtcCeph { name: name.to_string() }
    }
}

impl Drop for EtcCeph {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/etc/ceph/{}.conf", self.name));
        let _ = std::fs::remove_file(format!("/etc/ceph/{}.client.admin.keyring", self.name));
    }
}

#[test]
fn serve_and_the_admin_cli_work_from_a_ceph_conf_and_keyring_alone() {
    let files = CephDir::new("ceph");
    let conf = files.conf("ceph");
    let keyring = files.dir.path().join("ceph.client.admin.keyring");
    // The plugin: only where the files are.
    let env = vec![("RBDVOL_CEPH_CONF".to_string(), conf.display().to_string()), ("RBDVOL_KEYRING".to_string(), keyring.display().to_string())];
    let p = Plugin::start_env(&unique("fileshost"), env, None, &[]);
    let v = unique("fromfiles");
    let created = p.create(&v, &[("size", "32")]);
    assert!(created.err().is_empty(), "create with settings from files: {}", created.err());
    assert!(cluster().rbd_info(&v).is_some(), "no image {v} in the cluster");

    // The admin CLI, with the Ceph tools' flags before or after the command.
    let state = p.state_dir();
    let state = state.to_str().unwrap();
    let k = keyring.to_str().unwrap();
    for args in [vec!["-c", conf.to_str().unwrap(), "-k", k, "ls", "--state-dir", state], vec!["ls", "--conf", conf.to_str().unwrap(), "--keyring", k, "--id", "admin", "--state-dir", state]] {
        let out = rbdvol(&args, &[]);
        assert!(out.status.success(), "rbdvol {args:?}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&v), "rbdvol {args:?} does not list {v}: {}", text(&out));
    }
    // Ceph's default paths for a named cluster: /etc/ceph/<name>.conf and
    // its keyring, no flag but --cluster.
    let name = unique("rbdvoltest");
    let named = CephDir::new(&name);
    let _etc = EtcCeph::install(&named, &name);
    let out = rbdvol(&["--cluster", &name, "ls", "--json", "--state-dir", state], &[]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&v), "--cluster {name}: {}", text(&out));

    // config show: each setting's file and line; never the key.
    let out = rbdvol(&["config", "show", "--state-dir", state], &[("RBDVOL_CEPH_CONF", conf.to_str().unwrap()), ("RBDVOL_KEYRING", keyring.to_str().unwrap()), ("RBD_CONF_CLIENT_RBD_CACHE", "false")]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let line = |name: &str| shown.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {shown}")).to_string();
    assert!(line("RBD_CONF_GLOBAL_MON_HOST").ends_with(&format!("{}:4", conf.display())), "{shown}");
    assert!(line("RBD_CONF_KEYRING_KEY").contains("(set; not shown)") && line("RBD_CONF_KEYRING_KEY").ends_with(&format!("{}:2", keyring.display())), "{shown}");
    assert!(line("RBD_CONF_CLIENT_RBD_CACHE").ends_with("environment"), "the environment ranks above the file: {shown}");
    assert!(!shown.contains("LOG_FILE"), "a daemon's log file is not a client setting: {shown}");
    assert!(!shown.contains(&admin_key()), "config show printed the key");

    // doctor: where each setting came from.
    let out = rbdvol(&["doctor", "--json", "--mapper", "userspace", "--state-dir", state, "--run-dir", p.run_dir().to_str().unwrap()], &[("RBDVOL_CEPH_CONF", conf.to_str().unwrap()), ("RBDVOL_KEYRING", keyring.to_str().unwrap())]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let detail = |name: &str| report["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).map(|c| (c["status"].as_str().unwrap().to_string(), c["detail"].as_str().unwrap().to_string())).unwrap();
    let (status, settings) = detail("settings");
    assert_eq!(status, "ok", "{settings}");
    assert!(settings.contains(&format!("(from {}:4)", conf.display())) && settings.contains(&format!("key set (from {}:2)", keyring.display())), "{settings}");
    assert_eq!(detail("auth").0, "ok");
    assert!(!text(&out).contains(&admin_key()), "doctor printed the key");

    assert!(p.remove(&v).err().is_empty());
}

#[test]
fn an_option_this_librados_does_not_know_is_skipped_as_rbd_skips_it() {
    let files = CephDir::new("ceph");
    let conf = files.conf("ceph");
    let mut written = std::fs::read_to_string(&conf).unwrap();
    written.push_str("\trbd some future option = 1\n");
    std::fs::write(&conf, written).unwrap();
    let keyring = files.dir.path().join("ceph.client.admin.keyring");
    let rbd = cluster().cli("rbd", &["-c", conf.to_str().unwrap(), "--keyring", keyring.to_str().unwrap(), "ls"]);
    assert!(rbd.status.success(), "rbd itself: {}", text(&rbd));
    let out = rbdvol(&["-c", conf.to_str().unwrap(), "-k", keyring.to_str().unwrap(), "ls", "--state-dir", "/nonexistent"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // The same option from a variable is the operator's explicit word: wrong
    // is an error naming it.
    let out = rbdvol(&["-c", conf.to_str().unwrap(), "-k", keyring.to_str().unwrap(), "ls", "--state-dir", "/nonexistent"], &[("RBD_CONF_CLIENT_RBD_SOME_FUTURE_OPTION", "1")]);
    assert!(!out.status.success() && text(&out).contains("rbd_some_future_option"), "{}", text(&out));
}

#[test]
fn serve_follows_a_ceph_conf_that_appears_after_it_started() {
    let files = CephDir::new("ceph");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("late.conf");
    let env = vec![("RBDVOL_CEPH_CONF".to_string(), conf.display().to_string()), ("RBDVOL_KEYRING".to_string(), files.dir.path().join("ceph.client.admin.keyring").display().to_string())];
    let p = Plugin::start_env(&unique("latehost"), env, None, &[]);
    let v = unique("late");
    let early = p.create(&v, &[("size", "32")]);
    assert!(early.err().contains(&conf.display().to_string()), "the error names the missing file: {}", early.err());
    std::fs::copy(files.conf("ceph"), &conf).unwrap();
    let start = std::time::Instant::now();
    loop {
        let a = p.create(&v, &[("size", "32")]);
        if a.err().is_empty() {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "the new ceph.conf was not taken up within 30 s: {}", a.err());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(cluster().rbd_info(&v).is_some());
    assert!(p.remove(&v).err().is_empty());
}

#[test]
fn with_nothing_configured_the_cli_says_where_it_looked_in_one_line_without_a_backtrace() {
    let out = rbdvol(&["--cluster", &unique("nothere"), "ls", "--state-dir", "/nonexistent"], &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.starts_with("error: setting RBD_CONF_GLOBAL_MON_HOST is missing"), "{said}");
    assert!(said.contains("looked at /etc/ceph/nothere"), "{said}");
    assert_eq!(said.trim_end().lines().count(), 1, "one line, no backtrace under RUST_BACKTRACE=1: {said}");
    assert!(!said.contains("stack backtrace") && !said.contains("Stack backtrace"), "{said}");

    // A bad file: the file and the line.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ceph.conf");
    std::fs::write(&bad, "[global]\nmon host = 10.0.0.1\nthis line is wrong\n").unwrap();
    let out = rbdvol(&["ls", "-c", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out).trim_end(), format!("error: {} line 3: expected 'option = value' or a [section] header", bad.display()));

    // Usage errors exit 2 (and are clap's, with a hint).
    let out = rbdvol(&["ls", "--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = rbdvol(&["--id", "a", "--name", "client.b", "ls"], &[]);
    assert_eq!(out.status.code(), Some(2), "--id and --name together: {}", text(&out));
}
