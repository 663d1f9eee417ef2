//! The cluster down (every monitor, OSD and manager process stopped with
//! SIGSTOP) and slow: Docker's calls answer in milliseconds — reads from
//! memory, mutating calls with a clear error at once — a container writing
//! through the outage with the user-space mapper resumes without an error,
//! and everything works again within seconds of the cluster's return.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster};
use common::docker::{docker, DockerPlugin};
use common::plugin::{Answer, Plugin};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

/// One outage at a time in this binary: they pause the shared cluster.
static OUTAGE: Mutex<()> = Mutex::new(());

fn id(n: u32) -> String {
    format!("{n:064x}")
}

fn ok(a: &Answer) {
    assert_eq!(a.err(), "", "{:?}", a.json);
}

/// The daemons stopped until this is dropped (also when a test fails).
struct Paused(Vec<u32>);

impl Paused {
    fn stop(pids: Vec<u32>) -> Paused {
        assert!(!pids.is_empty(), "no daemon pids for the test cluster");
        for &p in &pids {
            kill(Pid::from_raw(p as i32), Signal::SIGSTOP).unwrap();
        }
        Paused(pids)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGCONT);
        }
    }
}

/// Runs `f`, returning its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

/// A container's writer: appends numbered lines to `file`, fsyncing each;
/// counts the lines fsynced and keeps the first error.
struct Writer {
    synced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(file: String) -> Writer {
        let (synced, stop, error) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(None)));
        let (s, st, e) = (Arc::clone(&synced), Arc::clone(&stop), Arc::clone(&error));
        let thread = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&file).unwrap();
            let mut n = 0u64;
            while !st.load(Ordering::SeqCst) {
                if let Err(err) = f.write_all(format!("line {n}\n").as_bytes()).and_then(|_| f.sync_data()) {
                    *e.lock().unwrap() = Some(format!("line {n}: {err}"));
                    return;
                }
                n += 1;
                s.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Writer { synced, stop, error, thread: Some(thread) }
    }

    fn finish(mut self) -> (u64, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (self.synced.load(Ordering::SeqCst), self.error.lock().unwrap().clone())
    }
}

#[test]
fn with_the_cluster_stopped_docker_gets_answers_in_milliseconds_and_writes_resume_after_it() {
    let _one = OUTAGE.lock().unwrap_or_else(|e| e.into_inner());
    let dp = DockerPlugin::start(cluster());
    let p: &Plugin = &dp.plugin;
    let (v1, v2, v3) = (unique("out1"), unique("out2"), unique("out3"));
    ok(&p.create(&v1, &[("size", "64")]));
    ok(&p.create(&v2, &[("size", "64")]));
    let mounted = p.mount(&v1, &id(1));
    ok(&mounted);
    let mp1 = mounted.json["Mountpoint"].as_str().unwrap().to_string();
    // A volume whose only container leaves during the outage.
    let v4 = unique("out4");
    ok(&p.create(&v4, &[("size", "64")]));
    let mounted4 = p.mount(&v4, &id(4));
    ok(&mounted4);
    {
        let mut f = std::fs::File::create(format!("{}/kept", mounted4.json["Mountpoint"].as_str().unwrap())).unwrap();
        f.write_all(b"fsynced before the outage\n").unwrap();
        f.sync_all().unwrap();
    }
    // What Docker asked before the outage is what memory holds.
    ok(&p.get(&v1));
    ok(&p.get(&v2));
    ok(&p.call("VolumeDriver.List", "{}"));

    let writer = Writer::start(format!("{mp1}/log.txt"));
    std::thread::sleep(Duration::from_secs(1));
    let before_outage = writer.synced.load(Ordering::SeqCst);
    assert!(before_outage > 0, "the writer wrote nothing: {:?}", writer.error.lock().unwrap());

    let paused = Paused::stop(cluster().daemon_pids());
    let paused_at = Instant::now();
    // The prober notices (a probe bounded to 3 s, every 2 s).
    std::thread::sleep(Duration::from_secs(6));

    let mut figures = Vec::new();
    let mut read = |what: &str, endpoint: &str, body: String| -> Answer {
        let (a, t) = timed(|| p.call(endpoint, &body));
        figures.push(format!("{what}: {} ms", t.as_millis()));
        assert!(t < Duration::from_secs(1), "{what} took {t:?} with the cluster down: {:?}", a.json);
        a
    };
    let list = read("List", "VolumeDriver.List", "{}".into());
    ok(&list);
    let names: Vec<&str> = list.json["Volumes"].as_array().unwrap().iter().map(|v| v["Name"].as_str().unwrap()).collect();
    assert!(names.contains(&v1.as_str()) && names.contains(&v2.as_str()), "{names:?}");
    let get1 = read("Get of the mounted volume", "VolumeDriver.Get", format!(r#"{{"Name":"{v1}"}}"#));
    ok(&get1);
    let status = &get1.json["Volume"]["Status"];
    assert!(status["cluster"].as_str().unwrap_or("").contains("unreachable since"), "{status}");
    assert!(status["confirmed_at"].as_str().is_some(), "{status}");
    assert_eq!(status["containers"], 1, "{status}");
    assert_eq!(get1.json["Volume"]["Mountpoint"], mp1.as_str());
    let get2 = read("Get of another volume", "VolumeDriver.Get", format!(r#"{{"Name":"{v2}"}}"#));
    ok(&get2);
    assert_eq!(get2.json["Volume"]["Status"]["size_bytes"], 64 << 20, "{}", get2.json);
    let path1 = read("Path of the mounted volume", "VolumeDriver.Path", format!(r#"{{"Name":"{v1}"}}"#));
    assert_eq!(path1.json["Mountpoint"], mp1.as_str());
    let path2 = read("Path of another volume", "VolumeDriver.Path", format!(r#"{{"Name":"{v2}"}}"#));
    ok(&path2);
    assert_eq!(path2.json["Mountpoint"].as_str().unwrap_or(""), "");
    let caps = read("Capabilities", "VolumeDriver.Capabilities", "{}".into());
    ok(&caps);
    // dockerd's own listing, through the plugin.
    let (out, t) = timed(|| docker(&["volume", "ls", "-q"]));
    figures.push(format!("docker volume ls: {} ms", t.as_millis()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&v1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(t < Duration::from_secs(1), "docker volume ls took {t:?} with the cluster down");

    // Mutating calls that need the cluster: a clear error at once.
    let mut refused = |what: &str, endpoint: &str, body: String| {
        let (a, t) = timed(|| p.call(endpoint, &body));
        figures.push(format!("{what}: {} ms", t.as_millis()));
        assert!(t < Duration::from_secs(5), "{what} took {t:?} with the cluster down: {:?}", a.json);
        assert!(a.err().contains("unreachable since") && a.err().contains("nothing was changed"), "{what}: {:?}", a.json);
    };
    refused("Create", "VolumeDriver.Create", format!(r#"{{"Name":"{v3}","Opts":{{"size":"64"}}}}"#));
    refused("Mount of a volume not mounted here", "VolumeDriver.Mount", format!(r#"{{"Name":"{v2}","ID":"{}"}}"#, id(2)));
    refused("Remove", "VolumeDriver.Remove", format!(r#"{{"Name":"{v2}"}}"#));
    // A second container on the volume mounted here, and it leaving: local.
    let (a, t) = timed(|| p.mount(&v1, &id(3)));
    figures.push(format!("Mount of the volume mounted here: {} ms", t.as_millis()));
    ok(&a);
    assert_eq!(a.json["Mountpoint"], mp1.as_str());
    assert!(t < Duration::from_secs(1), "{t:?}");
    let (a, t) = timed(|| p.unmount(&v1, &id(3)));
    figures.push(format!("Unmount of a second container: {} ms", t.as_millis()));
    ok(&a);
    assert!(t < Duration::from_secs(1), "{t:?}");
    // The last container of another volume leaves: answered at once (the
    // unmount finishes once the cluster is back).
    let (a, t) = timed(|| p.unmount(&v4, &id(4)));
    figures.push(format!("Unmount of a last container: {} ms", t.as_millis()));
    ok(&a);
    assert!(t < Duration::from_secs(1), "{t:?}");
    // The admin CLI: a resize fails within the connect timeout, changing
    // nothing.
    let (out, t) = timed(|| cluster().rbdvol(&["resize", &v2, "128"], &[("RBDVOL_CONNECT_TIMEOUT", "3")]));
    figures.push(format!("rbdvol resize: {} ms", t.as_millis()));
    assert!(!out.status.success() && t < Duration::from_secs(15), "rbdvol resize with the cluster down: {t:?} {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.starts_with("error: ") && (said.contains("unreachable") || said.contains("timed out")), "{said}");
    // Nothing was made: Docker does not see the refused volume.
    assert!(!p.get(&v3).err().is_empty());
    println!("with the cluster stopped:\n  {}", figures.join("\n  "));

    // The cluster comes back after 12 s.
    std::thread::sleep(Duration::from_secs(12).saturating_sub(paused_at.elapsed()));
    drop(paused);
    let resumed = Instant::now();
    // Within seconds: the prober's next verdict (2 s apart) lets it through.
    loop {
        let a = p.create(&v3, &[("size", "64")]);
        if a.err().is_empty() {
            break;
        }
        assert!(resumed.elapsed() < Duration::from_secs(15), "Create still fails {:?} after the cluster came back: {:?}\n{}", resumed.elapsed(), a.json, p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("first successful Create {} ms after the cluster came back", resumed.elapsed().as_millis());
    let get1 = p.get(&v1);
    ok(&get1);
    assert!(get1.json["Volume"]["Status"].get("cluster").is_none(), "still says unreachable: {}", get1.json);
    assert_eq!(cluster().rbd_info(&v2).unwrap()["size"], 64 << 20, "the refused resize changed the image");

    // The writer went on through the outage without an error.
    std::thread::sleep(Duration::from_secs(2));
    let (synced, error) = writer.finish();
    assert_eq!(error, None, "the container's writes failed across a 12 s outage");
    assert!(synced > before_outage + 10, "{synced} lines, {before_outage} before the outage");
    ok(&p.unmount(&v1, &id(1)));
    let text = cluster().read_files_from_image(&v1, &["/log.txt"]).remove(0);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() as u64 >= synced, "{} lines in ceph, {synced} fsynced", lines.len());
    assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")), "lines lost or torn");
    cluster().assert_filesystem_clean(&v1, "ext4");
    // v4's unmount and lock release finished once the cluster answered.
    let start = Instant::now();
    while !p.remove(&v4).err().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "{v4} still held after the outage: {:?}\n{}", p.remove(&v4).json, p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    for v in [&v1, &v2, &v3] {
        ok(&p.remove(v));
    }
    assert!(p.leftovers().is_empty(), "{:?}", p.leftovers());
}

fn daemon_pid(name: &str) -> u32 {
    let file = cluster().dir.join("run").join(format!("{name}.pid"));
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).trim().parse().unwrap()
}

/// Only the OSDs stopped, then only the monitor: each is named as what does
/// not answer; reads answer from memory; mutating calls are refused at
/// once; each time the cluster is back, a Create works within seconds.
#[test]
fn with_only_the_osds_or_only_the_monitors_stopped_calls_name_what_does_not_answer() {
    let _one = OUTAGE.lock().unwrap_or_else(|e| e.into_inner());
    let p = Plugin::start(cluster(), &unique("partial"));
    let known = unique("part");
    ok(&p.create(&known, &[("size", "64")]));
    ok(&p.get(&known));
    ok(&p.call("VolumeDriver.List", "{}"));
    for (daemon, named) in [("osd.0", "its OSDs"), ("mon.a", "monitors")] {
        let paused = Paused::stop(vec![daemon_pid(daemon)]);
        std::thread::sleep(Duration::from_secs(6));
        let (get, get_took) = timed(|| p.get(&known));
        ok(&get);
        assert!(get_took < Duration::from_secs(1), "{daemon} stopped: Get took {get_took:?}");
        let cluster_says = get.json["Volume"]["Status"]["cluster"].as_str().unwrap_or("").to_string();
        assert!(cluster_says.contains(named), "{daemon} stopped: {cluster_says:?}");
        let fresh = unique("part");
        let (created, t) = timed(|| p.create(&fresh, &[("size", "64")]));
        assert!(t < Duration::from_secs(5), "{daemon} stopped: Create took {t:?}");
        assert!(created.err().contains("unreachable since") && created.err().contains(named), "{daemon} stopped: {:?}", created.json);
        drop(paused);
        let back = Instant::now();
        while !p.create(&fresh, &[("size", "64")]).err().is_empty() {
            assert!(back.elapsed() < Duration::from_secs(30), "{daemon} back: Create still refused after {:?}", back.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("{daemon} stopped: Get {} ms from memory, Create refused in {} ms; first Create {} ms after it was back", get_took.as_millis(), t.as_millis(), back.elapsed().as_millis());
        ok(&p.remove(&fresh));
    }
    ok(&p.remove(&known));
}

/// Every OSD op delayed (`osd_debug_inject_dispatch_delay_*`) until dropped.
struct SlowOsd;

impl SlowOsd {
    fn delay(seconds: &str) -> SlowOsd {
        let out = cluster().cli("ceph", &["tell", "osd.0", "injectargs", "--osd_debug_inject_dispatch_delay_probability=1", &format!("--osd_debug_inject_dispatch_delay_duration={seconds}")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        SlowOsd
    }
}

impl Drop for SlowOsd {
    fn drop(&mut self) {
        let _ = cluster().cli("ceph", &["tell", "osd.0", "injectargs", "--osd_debug_inject_dispatch_delay_probability=0"]);
    }
}

/// A slow cluster (every OSD op delayed): a Create that takes seconds
/// holds up no other call — Get, List and Path of other volumes answer
/// within a second meanwhile — and the Create itself succeeds.
#[test]
fn a_slow_cluster_queues_no_docker_call_behind_another() {
    let _one = OUTAGE.lock().unwrap_or_else(|e| e.into_inner());
    let p = Plugin::start(cluster(), &unique("slow"));
    let known = unique("slow");
    ok(&p.create(&known, &[("size", "64")]));
    ok(&p.get(&known));
    let slow = SlowOsd::delay("0.05");
    let fresh = unique("slow");
    let creating = std::thread::scope(|s| {
        let creating = s.spawn(|| timed(|| p.create(&fresh, &[("size", "64")])));
        std::thread::sleep(Duration::from_millis(300));
        let mut worst = Duration::ZERO;
        for _ in 0..5 {
            for (endpoint, body) in [
                ("VolumeDriver.Get", format!(r#"{{"Name":"{known}"}}"#)),
                ("VolumeDriver.List", "{}".to_string()),
                ("VolumeDriver.Path", format!(r#"{{"Name":"{known}"}}"#)),
                ("VolumeDriver.Capabilities", "{}".to_string()),
            ] {
                let (a, t) = timed(|| p.call(endpoint, &body));
                ok(&a);
                assert!(t < Duration::from_secs(1), "{endpoint} took {t:?} while a Create ran on a slow cluster");
                worst = worst.max(t);
            }
        }
        println!("slowest read while the Create ran: {} ms", worst.as_millis());
        creating.join().unwrap()
    });
    drop(slow);
    let (created, took) = creating;
    ok(&created);
    println!("Create on the slow cluster took {} ms", took.as_millis());
    assert!(took > Duration::from_secs(1), "the cluster was not slow ({took:?}): the test proves nothing");
    ok(&p.remove(&fresh));
    ok(&p.remove(&known));
}
