//! A real throwaway Ceph cluster (mon + mgr + memstore OSD on loopback),
//! booted by `scripts/ceph-test-cluster.sh`. A cluster from `start()` is torn
//! down when the fixture drops (also while a test panics); the one from
//! `shared()` lives as long as the test process, and the script's reaper
//! tears it down when the process exits, however it exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rbdvol::ceph::Cluster;
use rbdvol::config::{CephSettings, Secret, Timeouts};

pub const POOL: &str = "rbd";
pub const DATA_POOL: &str = "rbd-data";

pub struct TestCluster {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub keyring: PathBuf,
    pub mon_host: String,
    admin_key: String,
    owned: bool,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-test-cluster.sh")
}

impl TestCluster {
    /// A private cluster, torn down when the returned value drops.
    pub fn start() -> TestCluster {
        Self::boot(true, None)
    }

    /// A private cluster bound to `ip` (a tap device's address, for a QEMU
    /// guest), torn down when the returned value drops.
    pub fn start_on(ip: &str) -> TestCluster {
        Self::boot(true, Some(ip))
    }

    /// The cluster shared by the tests of this process.
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<TestCluster> = OnceLock::new();
        SHARED.get_or_init(|| Self::boot(false, None))
    }

    fn boot(owned: bool, ip: Option<&str>) -> TestCluster {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rbdvol-ceph-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let out = Command::new(script())
            .arg("up")
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string(), "--pools", &format!("{POOL},{DATA_POOL}")])
            .args(ip.map(|ip| ["--ip", ip]).into_iter().flatten())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
        if !out.status.success() {
            panic!(
                "the throwaway ceph cluster did not start ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let vars: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let get = |k: &str| vars.get(k).cloned().unwrap_or_else(|| panic!("cluster script printed no {k}"));
        let keyring = PathBuf::from(get("CEPH_KEYRING"));
        let admin_key = std::fs::read_to_string(&keyring)
            .expect("read admin keyring")
            .lines()
            .find_map(|l| l.trim().strip_prefix("key = ").map(str::to_string))
            .expect("admin keyring has a key");
        TestCluster {
            dir: PathBuf::from(get("CEPH_DIR")),
            conf: PathBuf::from(get("CEPH_CONF")),
            keyring,
            mon_host: get("CEPH_MON_HOST"),
            admin_key,
            owned,
        }
    }

    /// Settings for client.admin, with short timeouts so a broken test fails
    /// fast instead of hanging.
    pub fn admin_settings(&self) -> CephSettings {
        CephSettings {
            mon_host: self.mon_host.clone(),
            user: "admin".into(),
            key: Secret::new(self.admin_key.clone()),
            options: BTreeMap::new(),
            lenient: Default::default(),
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                mon_op: Duration::from_secs(20),
                osd_op: Duration::from_secs(20),
            },
        }
    }

    /// The settings as the plugin's environment: monitors, admin user and key.
    pub fn env(&self) -> Vec<(String, String)> {
        let s = self.admin_settings();
        vec![
            ("RBD_CONF_GLOBAL_MON_HOST".into(), s.mon_host.clone()),
            ("RBD_CONF_KEYRING_USER".into(), "client.admin".into()),
            ("RBD_CONF_KEYRING_KEY".into(), s.key.expose().to_string()),
        ]
    }

    /// Runs the rbdvol CLI (the binary under test) with this cluster's
    /// settings and `env`.
    pub fn rbdvol(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        Command::new(super::plugin::bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env())
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .output()
            .unwrap()
    }

    pub fn connect(&self) -> Cluster {
        Cluster::connect(&self.admin_settings()).expect("connect to the test cluster as client.admin")
    }

    /// Runs a ceph command-line tool (`ceph`, `rbd`, `rados`) against this
    /// cluster: an independent path to check what rbdvol did.
    pub fn cli(&self, tool: &str, args: &[&str]) -> std::process::Output {
        Command::new(tool)
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
    }

    /// `rbd info` of an image in the test pool, `None` when it does not exist.
    pub fn rbd_info(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.cli("rbd", &["info", "--format", "json", &format!("{POOL}/{name}")]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("rbd info json"))
    }

    /// Whether image `name` is gone within a minute, from the pool and from
    /// its trash: rbdvol's Remove moves the image to the trash and purges
    /// it in the background (retrying the move while a closing mapper still
    /// watches it).
    #[allow(dead_code)]
    pub fn image_deleted(&self, name: &str) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            if self.rbd_info(name).is_none() && self.trash_ids(name).is_empty() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    /// The ids of the images named `name` in the test pool's trash, as
    /// `rbd trash ls` (an independent client) lists them.
    #[allow(dead_code)]
    pub fn trash_ids(&self, name: &str) -> Vec<String> {
        let out = self.cli("rbd", &["trash", "ls", "--format", "json", POOL]);
        assert!(out.status.success(), "rbd trash ls: {}", String::from_utf8_lossy(&out.stderr));
        let entries: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rbd trash ls json");
        entries.as_array().into_iter().flatten().filter(|e| e["name"] == name).filter_map(|e| e["id"].as_str().map(str::to_string)).collect()
    }

    /// Reads files out of an ext4 volume through `rbd export` and
    /// `debugfs`: a path that shares nothing with rbdvol.
    pub fn read_files_from_image(&self, name: &str, files: &[&str]) -> Vec<String> {
        let img = std::env::temp_dir().join(format!("{}.img", unique("export")));
        let out = self.cli("rbd", &["export", "--no-progress", &format!("{POOL}/{name}"), img.to_str().unwrap()]);
        assert!(out.status.success(), "rbd export: {}", String::from_utf8_lossy(&out.stderr));
        // debugfs does not replay the journal: a filesystem whose host died
        // keeps its last fsynced writes only there until the next mount, so
        // replay it on the copy first, as a mount would.
        let out = Command::new("e2fsck").args(["-E", "journal_only", "-y"]).arg(&img).output().expect("run e2fsck");
        assert!(out.status.code().is_some_and(|c| c <= 1), "e2fsck journal replay: {}", String::from_utf8_lossy(&out.stdout));
        let contents = files
            .iter()
            .map(|file| {
                let out = Command::new("debugfs").args(["-R", &format!("cat {file}")]).arg(&img).output().expect("run debugfs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect();
        let _ = std::fs::remove_file(&img);
        contents
    }

    /// Makes image `name` with `rbd create`, then an ext4 filesystem holding
    /// `files` (name, text) on it through rbd-fuse and `mkfs.ext4 -d`: an
    /// image rbdvol had no part in, as a peer plugin or an operator makes.
    #[allow(dead_code)]
    pub fn ext4_image_made_elsewhere(&self, name: &str, size_mib: u32, files: &[(&str, &str)]) {
        let out = self.cli("rbd", &["create", "--size", &size_mib.to_string(), &format!("{POOL}/{name}")]);
        assert!(out.status.success(), "rbd create: {}", String::from_utf8_lossy(&out.stderr));
        let work = std::env::temp_dir().join(unique("elsewhere"));
        let (src, mp) = (work.join("src"), work.join("mnt"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&mp).unwrap();
        for (file, text) in files {
            std::fs::write(src.join(file), text).unwrap();
        }
        let out = Command::new("rbd-fuse").arg("-c").arg(&self.conf).args(["-p", POOL, "-r", name]).arg(&mp).output().expect("run rbd-fuse");
        assert!(out.status.success(), "rbd-fuse: {}", String::from_utf8_lossy(&out.stderr));
        let mkfs = Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(mp.join(name)).output().expect("run mkfs.ext4");
        let umount = Command::new("umount").arg(&mp).output().expect("run umount");
        assert!(mkfs.status.success(), "mkfs.ext4 -d through rbd-fuse: {}", String::from_utf8_lossy(&mkfs.stderr));
        assert!(umount.status.success(), "umount rbd-fuse: {}", String::from_utf8_lossy(&umount.stderr));
        let _ = std::fs::remove_dir_all(&work);
    }

    /// The image's metadata keys (`rbd image-meta list`).
    #[allow(dead_code)]
    pub fn image_meta_keys(&self, name: &str) -> Vec<String> {
        let out = self.cli("rbd", &["image-meta", "list", "--format", "json", &format!("{POOL}/{name}")]);
        assert!(out.status.success(), "rbd image-meta list: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Vec::new();
        }
        let meta: serde_json::Value = serde_json::from_str(&text).expect("image-meta json");
        meta.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Like `assert_filesystem_clean` (ext4), for an image that may already
    /// be deleted (a removed volume).
    pub fn assert_filesystem_clean_or_gone(&self, name: &str) {
        if self.rbd_info(name).is_some() {
            let img = std::env::temp_dir().join(format!("{}.img", unique("fsck")));
            let out = self.cli("rbd", &["export", "--no-progress", &format!("{POOL}/{name}"), img.to_str().unwrap()]);
            if out.status.success() {
                let out = Command::new("e2fsck").args(["-f", "-n"]).arg(&img).output().expect("run e2fsck");
                let _ = std::fs::remove_file(&img);
                assert!(out.status.success(), "the ext4 filesystem of {name} is not clean:\n{}", String::from_utf8_lossy(&out.stdout));
            }
        }
    }

    /// Checks the filesystem of image `name` read-only (`e2fsck -fn` or
    /// `xfs_repair -n` on an exported copy); panics with the checker's
    /// output unless it is clean.
    pub fn assert_filesystem_clean(&self, name: &str, fstype: &str) {
        let img = std::env::temp_dir().join(format!("{}.img", unique("fsck")));
        let out = self.cli("rbd", &["export", "--no-progress", &format!("{POOL}/{name}"), img.to_str().unwrap()]);
        assert!(out.status.success(), "rbd export: {}", String::from_utf8_lossy(&out.stderr));
        let out = match fstype {
            "xfs" => Command::new("xfs_repair").args(["-n", "-f"]).arg(&img).output(),
            _ => Command::new("e2fsck").args(["-f", "-n"]).arg(&img).output(),
        }
        .expect("run the filesystem checker");
        let _ = std::fs::remove_file(&img);
        assert!(
            out.status.success(),
            "the {fstype} filesystem of {name} is not clean:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The pids of this cluster's daemons.
    pub fn daemon_pids(&self) -> Vec<u32> {
        std::fs::read_dir(self.dir.join("run"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn stop(&self) {
        let out = Command::new(script()).arg("down").arg(&self.dir).output().expect("run cluster script down");
        assert!(out.status.success(), "cluster teardown failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(script()).arg("down").arg(&self.dir).status();
        }
    }
}

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}
