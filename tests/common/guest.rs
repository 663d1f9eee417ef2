//! The QEMU guest test bed (`scripts/guest.sh`): Debian's own kernel, booted
//! with software emulation (TCG), on a tap device of a private /24 that this
//! fixture creates, with a throwaway Ceph cluster bound to the tap's host
//! address. The guest runs the real rbdvol binary under test (from the
//! managed plugin's rootfs) and a shell scenario the test gives it.
//!
//! One bed per test process: the tap device and the cluster (with the
//! guest image built in its directory) are removed by reapers when the
//! process exits, however it exits; each guest is killed by its PID when
//! its run ends or its test panics. Guests run one at a
//! time (TCG takes a core).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::cluster::TestCluster;

pub struct GuestBed {
    pub cluster: TestCluster,
    pub tap: String,
    pub host_ip: String,
    pub guest_ip: String,
    build: PathBuf,
    run_lock: Mutex<()>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/guest.sh")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed ({}):\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private /24 no interface of this host uses yet.
fn free_subnet() -> u8 {
    let addrs = run(Command::new("ip").args(["-o", "addr"]), "ip -o addr");
    (100..=250u8).find(|n| !addrs.contains(&format!(" 10.77.{n}."))).expect("no free 10.77.x.0/24 subnet for the guest")
}

impl GuestBed {
    pub fn get() -> &'static GuestBed {
        static BED: OnceLock<GuestBed> = OnceLock::new();
        BED.get_or_init(GuestBed::start)
    }

    fn start() -> GuestBed {
        let pid = std::process::id();
        let n = free_subnet();
        let tap = format!("rbdvt{}", pid % 100_000);
        let (host_ip, guest_ip) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
        run(
            Command::new(script()).args(["tap-up", &tap, &format!("{host_ip}/24"), "--owner-pid", &pid.to_string()]),
            "scripts/guest.sh tap-up",
        );
        let cluster = TestCluster::start_on(&host_ip);
        // Inside the cluster's directory: its reaper removes both.
        let build = cluster.dir.join("guest-image");
        let started = Instant::now();
        run(
            Command::new(script()).args(["build", "--binary", env!("CARGO_BIN_EXE_rbdvol"), "--out"]).arg(&build),
            "scripts/guest.sh build",
        );
        println!("guest image built in {:?}", started.elapsed());
        GuestBed { cluster, tap, host_ip, guest_ip, build, run_lock: Mutex::new(()) }
    }

    /// Boots the guest with `scenario` (a busybox sh script; `$t_mon`,
    /// `$t_key`, `$t_host` are set) and returns its console output once it
    /// powers off. `on_line` sees each console line as it comes (to act on
    /// the host while the guest runs). Panics after `limit`.
    pub fn run(&self, scenario: &str, limit: Duration, mut on_line: impl FnMut(&str)) -> String {
        let _one_at_a_time = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cfg");
        std::fs::create_dir(&cfg).unwrap();
        let key = self.cluster.admin_settings().key.expose().to_string();
        let env = format!(
            "t_ip={}/24\nt_host={}\nt_mon='{}'\nt_key='{}'\n",
            self.guest_ip, self.host_ip, self.cluster.mon_host, key
        );
        let private = |path: &Path, text: &str| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        private(&cfg.join("guest.env"), &env);
        private(&cfg.join("scenario.sh"), scenario);
        // The parameters travel as a second cpio archive after the image
        // (the kernel unpacks both), never on the kernel command line.
        let initrd = dir.path().join("initrd.img");
        std::fs::copy(self.build.join("initramfs.cpio.gz"), &initrd).unwrap();
        let len = std::fs::metadata(&initrd).unwrap().len();
        let f = std::fs::OpenOptions::new().append(true).open(&initrd).unwrap();
        f.set_len(len.div_ceil(512) * 512).unwrap();
        let mut cpio = Command::new("busybox")
            .args(["cpio", "-o", "-H", "newc"])
            .current_dir(&cfg)
            .stdin(Stdio::piped())
            .stdout(f)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        cpio.stdin.take().unwrap().write_all(b"guest.env\nscenario.sh\n").unwrap();
        assert!(cpio.wait().unwrap().success(), "busybox cpio failed");
        std::fs::remove_dir_all(&cfg).unwrap();

        let console = dir.path().join("console.log");
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "1536", "-smp", "2", "-nographic", "-no-reboot", "-kernel"])
            .arg(self.build.join("vmlinuz"))
            .arg("-initrd")
            .arg(&initrd)
            .args(["-netdev", &format!("tap,id=n0,ifname={},script=no,downscript=no", self.tap)])
            .args(["-device", "virtio-net-pci,netdev=n0,romfile=", "-append", "console=ttyS0 panic=-1 loglevel=4"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&console).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-system-x86_64 (scripts/deps.sh installs it)");
        let mut qemu = Qemu(child);
        let started = Instant::now();
        let mut seen = 0;
        loop {
            let text = String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).replace('\r', "");
            // Only whole lines: the last one may still be written.
            let lines: Vec<&str> = text.lines().collect();
            let complete = if text.ends_with('\n') { lines.len() } else { lines.len().saturating_sub(1) };
            for line in &lines[seen.min(complete)..complete] {
                on_line(line);
            }
            seen = seen.max(complete);
            if let Some(status) = qemu.0.try_wait().unwrap() {
                assert!(status.success(), "qemu exited with {status}:\n{text}");
                return text;
            }
            assert!(started.elapsed() < limit, "the guest did not power off within {limit:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Kills the emulator by its PID when a run ends early (a panic).
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `GUEST RESULT <name> <value>` lines of a console log.
pub fn result<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("GUEST RESULT {name} ");
    console.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::trim)
}

/// The shell prelude every scenario starts with: settings exported for
/// rbdvol, `serve [ARGS]` (starts the plugin and waits for its socket),
/// `call ENDPOINT JSON` (a Docker call on the socket), `result NAME VALUE`.
pub const PRELUDE: &str = r#"
export RBD_CONF_GLOBAL_MON_HOST="$t_mon" RBD_CONF_KEYRING_USER=client.admin RBD_CONF_KEYRING_KEY="$t_key"
(umask 077; printf '%s\n' "$t_key" >/tmp/key)  # for grep -f: a key in grep's argv would match itself
result() { n=$1; shift; echo "GUEST RESULT $n $*"; }
call() { curl -s --unix-socket /run/rbd.sock -X POST "http://plugin/VolumeDriver.$1" -d "$2"; }
serve() {
    rbdvol serve --socket /run/rbd.sock --host-id guest --state-dir /var/lib/rbdvol \
        --mount-root /var/lib/rbdvol/mnt --run-dir /run/rbdvol --check-interval 1 "$@" >>/tmp/serve.log 2>&1 &
    echo $! >/tmp/serve.pid
    i=0
    until call Capabilities '{}' 2>/dev/null | grep -q Scope; do
        sleep 0.2; i=$((i + 1)); [ $i -gt 300 ] && { echo "GUEST FAIL serve did not start"; cat /tmp/serve.log; break; }
    done
}
fs_kib() { df -k "$1" | tail -1 | awk '{print $2}'; }
"#;
