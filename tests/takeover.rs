//! Two rbdvol instances as two hosts (own host ids, state, run and mount
//! directories) on one real cluster and one real Consul agent: a host that
//! dies or hangs with a volume mounted is fenced and its volume taken over,
//! by `rbdvol takeover` and automatically once its Consul session lapses.
//! The new holder reads everything the old one had fsynced, the old one's
//! clients are blocklisted and its writes fail, and the filesystem checks
//! clean.
//!
//! Both "hosts" share one IP here: fencing is per client address (IP, port
//! and nonce), never per IP, so that is no shortcut.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster};
use common::consul::ConsulAgent;
use common::plugin::{Answer, Plugin};
use rbdvol::engine::records;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

fn id(n: u32) -> String {
    format!("{n:064x}")
}

fn ok(a: &Answer) {
    assert_eq!(a.err(), "", "{:?}", a.json);
}

fn signal_all(pids: &[u32], sig: Signal) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

fn cluster_env() -> Vec<(String, String)> {
    cluster().env()
}

/// Writes `text` to `file` in the mounted volume and fsyncs it.
fn write_synced(mountpoint: &str, file: &str, text: &str) {
    let mut f = std::fs::File::create(format!("{mountpoint}/{file}")).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// Creates volume `<prefix>-...` on `p`, mounts it, and writes and fsyncs
/// `lines` lines to `data.txt`: (volume, mountpoint, the text).
fn mounted_with_data(p: &Plugin, prefix: &str, lines: u32) -> (String, String, String) {
    let v = unique(prefix);
    ok(&p.create(&v, &[("size", "128")]));
    let mounted = p.mount(&v, &id(1));
    ok(&mounted);
    let at = mounted.json["Mountpoint"].as_str().unwrap().to_string();
    let data: String = (0..lines).map(|i| format!("{prefix} {i}\n")).collect();
    write_synced(&at, "data.txt", &data);
    (v, at, data)
}

/// Runs the rbdvol CLI with the shared cluster's settings.
fn rbdvol(args: &[&str]) -> std::process::Output {
    cluster().rbdvol(args, &[])
}

fn blocklisted() -> Vec<String> {
    cluster().connect().blocklist().unwrap()
}

fn unblock(addrs: &[String]) {
    let c = cluster().connect();
    for a in addrs {
        let _ = c.blocklist_remove(a);
    }
}

#[test]
fn takeover_fences_a_hung_holder_whose_writes_then_fail() {
    let a = Plugin::start(cluster(), "host-a");
    let b = Plugin::start(cluster(), "host-b");
    let (v, at_a, data) = mounted_with_data(&a, "fence", 2000);
    let late = std::fs::File::create(format!("{at_a}/late.txt")).unwrap();

    // Host A hangs: its plugin and its mapper stop answering.
    let frozen: Vec<u32> = std::iter::once(a.pid()).chain(a.server_pids()).collect();
    assert!(frozen.len() >= 2, "no user-space server found for host A: {frozen:?}");
    signal_all(&frozen, Signal::SIGSTOP);
    let _thaw = Thaw(frozen.clone());

    let refused = b.mount(&v, &id(2));
    assert!(refused.err().contains("mounted on host 'host-a'"), "{:?}", refused.json);

    // The admin takes the volume over from host B.
    let out = rbdvol(&["takeover", &v, "--json", "--host-id", "host-b", "--state-dir", b.state_dir().to_str().unwrap()]);
    assert!(out.status.success(), "takeover failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["taken_over"]["from"], "host-a", "{report}");
    let fenced: Vec<String> = report["taken_over"]["fenced"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert!(fenced.len() >= 2, "the mapper's client and the plugin's are fenced: {fenced:?}");
    let now_blocked = blocklisted();
    assert!(fenced.iter().all(|a| now_blocked.contains(a)), "{fenced:?} not all in {now_blocked:?}");
    let key = cluster().admin_settings().key.expose().to_string();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key) && !String::from_utf8_lossy(&out.stderr).contains(&key));

    // The fencing is recorded on the volume, for its holders to keep up
    // until host A has let go.
    let fenced_record = || cluster().connect().open_pool("rbd", "").unwrap().open_image_read_only(&v).unwrap().metadata_get(records::FENCED_KEY).unwrap();
    let record = fenced_record().expect("the fencing is recorded");
    assert!(record.contains("\"host\":\"host-a\"") && fenced.iter().all(|a| record.contains(a.as_str())), "{record}");

    // Host B mounts it and reads everything A had fsynced.
    let mounted = b.mount(&v, &id(2));
    ok(&mounted);
    let at_b = mounted.json["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(format!("{at_b}/data.txt")).unwrap(), data);
    write_synced(&at_b, "from-b.txt", "host b was here\n");

    // Host A wakes up: its writes fail, and it lets go of the volume,
    // saying so in its log.
    signal_all(&frozen, Signal::SIGCONT);
    late.write_all_at(b"written after the fencing\n", 0).unwrap(); // the page cache takes it
    let synced = late.sync_all();
    assert!(synced.is_err(), "a fenced host's fsync succeeded");
    drop(late);
    a.wait_for_log("was taken over by host 'host-b'", Duration::from_secs(30));
    let start = Instant::now();
    while !a.leftovers_now().is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(a.leftovers_now().is_empty(), "host A left: {:?}", a.leftovers_now());
    assert!(!a.state_dir().join("volumes").join(rbdvol::state::file_name(&v)).exists(), "host A still records the volume");
    // Having let go, A says so: the record of its fencing goes.
    let start = Instant::now();
    while fenced_record().is_some_and(|r| r.contains("host-a")) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!fenced_record().is_some_and(|r| r.contains("host-a")), "host A never acknowledged its fencing: {:?}", fenced_record());
    // Docker on host A eventually sends its Unmount: answered, changes nothing.
    ok(&a.unmount(&v, &id(1)));
    assert_eq!(std::fs::read_to_string(format!("{at_b}/from-b.txt")).unwrap(), "host b was here\n");

    ok(&b.unmount(&v, &id(2)));
    cluster().assert_filesystem_clean(&v, "ext4");
    let files = cluster().read_files_from_image(&v, &["/data.txt", "/late.txt"]);
    assert_eq!(files[0], data);
    assert!(!files[1].contains("after the fencing"), "a fenced write reached ceph");
    ok(&b.remove(&v));
    unblock(&fenced);
}

#[test]
fn takeover_right_after_a_crash_does_not_wait_for_the_dead_watches() {
    let mut a = Plugin::start(cluster(), "host-a");
    let b = Plugin::start(cluster(), "host-b");
    let (v, _, data) = mounted_with_data(&a, "crash", 3000);

    // Host A crashes: plugin and mapper killed. Its watches would linger
    // ~30 s; the fencing drops them at once.
    let servers = a.server_pids();
    a.kill9();
    signal_all(&servers, Signal::SIGKILL);
    let start = Instant::now();
    let out = rbdvol(&["takeover", &v, "--host-id", "host-b", "--state-dir", b.state_dir().to_str().unwrap()]);
    assert!(out.status.success(), "takeover failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("taken over from host 'host-a' for host 'host-b'"), "{}", String::from_utf8_lossy(&out.stdout));
    let mounted = b.mount(&v, &id(2));
    ok(&mounted);
    println!("taken over and mounted {:?} after the crash", start.elapsed());
    assert_eq!(std::fs::read_to_string(format!("{}/data.txt", mounted.json["Mountpoint"].as_str().unwrap())).unwrap(), data);
    finish_and_bring_back(&mut a, &b, &v);
}

/// B unmounts (a clean filesystem) and removes the volume; the crashed A
/// comes back and lets go of what it had, saying so.
fn finish_and_bring_back(a: &mut Plugin, b: &Plugin, v: &str) {
    ok(&b.unmount(v, &id(2)));
    cluster().assert_filesystem_clean(v, "ext4");
    ok(&b.remove(v));
    a.restart();
    a.wait_for_log("releasing it here", Duration::from_secs(30));
    assert!(a.leftovers().is_empty(), "{:?}", a.leftovers());
}

/// SIGCONTs the frozen processes even when the test fails half-way, so the
/// fixtures can clean up.
struct Thaw(Vec<u32>);

impl Drop for Thaw {
    fn drop(&mut self) {
        signal_all(&self.0, Signal::SIGCONT);
    }
}

#[test]
fn a_dead_hosts_volume_is_taken_over_once_its_consul_session_lapses() {
    let agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("takeover"));
    let env = |ttl: &str| {
        let mut env = cluster_env();
        env.extend([
            ("CONSUL_HTTP_ADDR".to_string(), agent.addr()),
            ("CONSUL_HTTP_TOKEN".to_string(), agent.token.clone()),
            ("RBDVOL_CONSUL_PREFIX".to_string(), prefix.clone()),
            ("RBDVOL_SESSION_TTL".to_string(), ttl.to_string()),
        ]);
        env
    };
    let mut a = Plugin::start_env("host-a", env("10"), None, &[]);
    // Host B's metrics count the takeover.
    let metrics = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let b = Plugin::start_env("host-b", env("10"), None, &["--metrics-addr", &metrics]);
    let registered = |host: &str| {
        let start = Instant::now();
        while agent.get(&format!("{prefix}hosts/{host}")).is_none() {
            assert!(start.elapsed() < Duration::from_secs(20), "{host} never registered in consul");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    registered("host-a");
    registered("host-b");

    let (v, _, data) = mounted_with_data(&a, "dead", 5000);

    // Alive: its volume is not taken.
    let refused = b.mount(&v, &id(2));
    assert!(refused.err().contains("mounted on host 'host-a'"), "{:?}", refused.json);

    // Host A dies: its plugin and its mapper are killed.
    let servers = a.server_pids();
    assert!(!servers.is_empty());
    a.kill9();
    signal_all(&servers, Signal::SIGKILL);
    let died = Instant::now();

    // Swarm retries the task on host B until the mount succeeds.
    let mounted = loop {
        let m = b.mount(&v, &id(2));
        if m.err().is_empty() {
            break m;
        }
        assert!(m.err().contains("host 'host-a'"), "{:?}", m.json);
        assert!(died.elapsed() < Duration::from_secs(150), "never taken over: {:?}\n{}", m.json, b.log());
        std::thread::sleep(Duration::from_secs(1));
    };
    println!("host B took the volume over {:?} after host A died", died.elapsed());
    assert!(b.log().contains("took it over from host 'host-a'"), "{}", b.log());
    let scraped = std::process::Command::new("curl").args(["-sS", "--fail", &format!("http://{metrics}/metrics")]).output().unwrap();
    let scraped = String::from_utf8_lossy(&scraped.stdout);
    assert!(scraped.lines().any(|l| l == "rbdvol_takeovers_total 1"), "{scraped}");
    let fenced = scraped.lines().find_map(|l| l.strip_prefix("rbdvol_fencings_total ")).and_then(|n| n.parse::<u64>().ok());
    assert!(fenced.is_some_and(|n| n >= 1), "{scraped}");
    let at_b = mounted.json["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(format!("{at_b}/data.txt")).unwrap(), data);
    let inspect: serde_json::Value = serde_json::from_slice(&rbdvol(&["inspect", &v]).stdout).unwrap();
    assert_eq!(inspect["mounted_by"], "host-b", "{inspect}");

    finish_and_bring_back(&mut a, &b, &v);
}

/// The real thing: each host in its own network namespace with its own
/// address, the cluster and Consul on a bridge. Host A, alive and writing,
/// is cut off the network (a partition): its session lapses and its watches
/// time out, so host B takes the volume over and reads every line A's
/// writer had fsynced. When the partition heals, A's writes fail (fenced),
/// A lets go of the volume and says so, and nothing A wrote after the cut
/// reaches Ceph.
#[test]
fn a_partitioned_holder_is_fenced_and_lets_go_when_the_network_heals() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let mut lan = common::netns::Lan::new();
    let cluster = TestCluster::start_on(&lan.host_ip);
    let agent = ConsulAgent::start_on(&lan.host_ip);
    let prefix = format!("{}/", unique("partition"));
    let env = || {
        let s = cluster.admin_settings();
        vec![
            ("RBD_CONF_GLOBAL_MON_HOST".to_string(), s.mon_host.clone()),
            ("RBD_CONF_KEYRING_USER".to_string(), "client.admin".to_string()),
            ("RBD_CONF_KEYRING_KEY".to_string(), s.key.expose().to_string()),
            ("CONSUL_HTTP_ADDR".to_string(), agent.addr_on()),
            ("CONSUL_HTTP_TOKEN".to_string(), agent.token.clone()),
            ("RBDVOL_CONSUL_PREFIX".to_string(), prefix.clone()),
            ("RBDVOL_SESSION_TTL".to_string(), "10".to_string()),
            ("RBDVOL_CHECK_INTERVAL".to_string(), "1".to_string()),
        ]
    };
    let (ip_a, ip_b) = (lan.add_host("a"), lan.add_host("b"));
    let a = Plugin::start_in(Some(lan.netns_path("a")), "host-a", env(), None, &[]);
    let b = Plugin::start_in(Some(lan.netns_path("b")), "host-b", env(), None, &[]);
    for host in ["host-a", "host-b"] {
        let start = Instant::now();
        while agent.get(&format!("{prefix}hosts/{host}")).is_none() {
            assert!(start.elapsed() < Duration::from_secs(20), "{host} never registered in consul:\n{}", if host == "host-a" { a.log() } else { b.log() });
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let v = unique("part");
    ok(&a.create(&v, &[("size", "128")]));
    let mounted = a.mount(&v, &id(1));
    ok(&mounted);
    let at_a = mounted.json["Mountpoint"].as_str().unwrap().to_string();
    // The holder's client addresses are its own namespace's.
    let by = cluster.connect().open_pool("rbd", "").unwrap().open_image_read_only(&v).unwrap().metadata_get(records::MOUNTED_KEY).unwrap().unwrap();
    assert!(by.contains(&ip_a) && !by.contains(&ip_b), "{by}");

    // A container on host A appends and fsyncs, counting what was durable.
    let (synced, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let writer = {
        let (synced, stop, path) = (synced.clone(), stop.clone(), format!("{at_a}/log"));
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                writeln!(f, "line {n}")?;
                f.sync_data()?;
                synced.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    };
    while synced.load(Ordering::SeqCst) < 50 {
        std::thread::sleep(Duration::from_millis(50));
    }

    // The partition.
    lan.cut("a");
    let cut = Instant::now();
    let durable_before_takeover;
    let mounted = loop {
        let m = b.mount(&v, &id(2));
        if m.err().is_empty() {
            // Nothing A fsyncs after this can be in Ceph: it is fenced.
            durable_before_takeover = synced.load(Ordering::SeqCst);
            break m;
        }
        assert!(m.err().contains("host 'host-a'"), "{:?}", m.json);
        assert!(cut.elapsed() < Duration::from_secs(150), "never taken over: {:?}\n{}", m.json, b.log());
        std::thread::sleep(Duration::from_secs(1));
    };
    println!("host B took the volume over {:?} after host A was cut off", cut.elapsed());
    let at_b = mounted.json["Mountpoint"].as_str().unwrap().to_string();
    let seen_by_b = std::fs::read_to_string(format!("{at_b}/log")).unwrap();
    let lines: Vec<&str> = seen_by_b.lines().collect();
    assert!(lines.len() as u64 >= durable_before_takeover, "{} lines, {durable_before_takeover} were fsynced", lines.len());
    assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {}", i + 1)), "lines lost or torn");
    let blocked = cluster.connect().blocklist().unwrap();
    assert!(blocked.iter().any(|a| a.starts_with(&format!("{ip_a}:"))), "no client of host A blocklisted: {blocked:?}");

    // The partition heals: A's writes fail, it lets go, and says so.
    lan.heal("a");
    a.wait_for_log("was taken over by host 'host-b'", Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let result = writer.join().unwrap();
    assert!(result.is_err(), "host A's writer never saw an error");
    assert!(a.leftovers().is_empty(), "host A left: {:?}", a.leftovers());

    ok(&b.unmount(&v, &id(2)));
    cluster.assert_filesystem_clean(&v, "ext4");
    let in_ceph = cluster.read_files_from_image(&v, &["/log"]).remove(0);
    assert_eq!(in_ceph, seen_by_b, "host A wrote to the volume after it was taken over");
    ok(&b.remove(&v));
}
