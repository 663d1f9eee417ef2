//! The kernel mappers on a real kernel: Debian's own, in a QEMU guest
//! (`tests/common/guest.rs`), whose rbd and nbd modules this machine's
//! kernel lacks. The guest runs the real rbdvol binary and drives the
//! plugin's own Mount and Unmount through its Unix socket; the host checks
//! what reached Ceph by an independent path (`rbd`, `debugfs`).

mod common;

use std::time::Duration;

use common::guest::{result, GuestBed, PRELUDE};

fn bed() -> &'static GuestBed {
    GuestBed::get()
}

fn json(text: Option<&str>) -> serde_json::Value {
    serde_json::from_str(text.unwrap_or_else(|| panic!("no such result"))).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

fn no_key_in(console: &str) {
    let key = bed().cluster.admin_settings().key.expose().to_string();
    assert!(!console.contains(&key), "the cephx key appeared on the guest's console");
}

#[test]
fn krbd_maps_mounts_and_survives_a_plugin_restart_in_a_real_kernel() {
    // Also a restart with the mount detached (a managed plugin's
    // `disable -f`), and the map/unmap options, msgr2 mode and CRUSH
    // location reaching the kernel.
    let scenario = format!(
        "{PRELUDE}{}",
        r#"
result rbd_before "$(test -d /sys/bus/rbd && echo loaded || echo absent)"
# msgr2 secure mode needs AES-GCM, which a real host's kernel loads on demand
# from its full module tree; this initramfs has only the modules it lists.
modprobe -a gcm ghash_generic ctr
# Encrypted on the wire, reads localized to this host's CRUSH location.
export RBDVOL_MS_MODE=secure RBDVOL_CRUSH_LOCATION=host=guest
serve
result mapper "$(grep -o 'mapper [a-z]*' /tmp/serve.log | head -1)"
result rbd_after "$(test -d /sys/bus/rbd && echo loaded || echo absent)"
# A map option rbdvol does not allow: refused at Create, nothing made or mapped.
result create_bad "$(call Create '{"Name":"kbad","Opts":{"size":"64","map_options":"krbd:queue_depth=64,secret=AQBX"}}')"
result devices_bad "$(ls /sys/bus/rbd/devices | wc -l)"
result create "$(call Create '{"Name":"k1","Opts":{"size":"64","map_options":"krbd:queue_depth=128,alloc_size=65536,read_from_replica=localize;nbd:io-timeout=60","unmap_options":"krbd:force"}}')"
result mount "$(call Mount '{"Name":"k1","ID":"c1"}')"
result devices "$(ls /sys/bus/rbd/devices | tr '\n' ' ')"
result config_info "$(cut -d' ' -f1,2 /sys/bus/rbd/devices/0/config_info)"
result nr_requests "$(cat /sys/block/rbd0/queue/nr_requests)"
result config_info_key "$(grep -c -F -f /tmp/key /sys/bus/rbd/devices/*/config_info)"
result config_info_options "$(cat /sys/bus/rbd/devices/0/config_info | cut -d' ' -f2 | tr ',' '\n' | cut -d= -f1 | tr '\n' ' ')"
mp=/var/lib/rbdvol/mnt/k1
echo krbd-in-a-real-kernel > $mp/marker
dd if=/dev/urandom of=$mp/blob bs=1M count=8 2>/dev/null
sync
result blob "$(sha256sum $mp/blob | cut -d' ' -f1)"
kill -9 "$(cat /tmp/serve.pid)"
sleep 1
serve
result path_after_restart "$(call Path '{"Name":"k1"}')"
result get_after_restart "$(call Get '{"Name":"k1"}')"
# A managed plugin's disable -f: dockerd also detaches the plugin's mounts;
# a container still works in the filesystem (here: a process whose cwd it is).
sh -c "cd $mp && exec sleep 100000" &
holder=$!
kill -9 "$(cat /tmp/serve.pid)"
umount -l $mp
result detached "$(grep -c " $mp " /proc/mounts)"
sleep 1
serve
i=0; until grep -q 'mounted again at' /tmp/serve.log; do sleep 0.5; i=$((i + 1)); [ $i -gt 120 ] && break; done
result remounted "$(grep -c " $mp " /proc/mounts)"
result marker_after_remount "$(cat $mp/marker)"
result devices_after_remount "$(ls /sys/bus/rbd/devices | tr '\n' ' ')"
kill $holder
wait $holder 2>/dev/null
result unmount "$(call Unmount '{"Name":"k1","ID":"c1"}')"
result devices_after "$(ls /sys/bus/rbd/devices | wc -l)"
result mounted_after "$(grep -c ' /var/lib/rbdvol/mnt/k1 ' /proc/mounts)"
result create_journaling "$(call Create '{"Name":"k2","Opts":{"size":"64","features":"layering,exclusive-lock,journaling"}}')"
result mount_journaling "$(call Mount '{"Name":"k2","ID":"c2"}')"
result devices_journaling "$(ls /sys/bus/rbd/devices | wc -l)"
result supported_features "$(cat /sys/bus/rbd/supported_features)"
result doctor "$(rbdvol doctor --json --state-dir /var/lib/rbdvol | tr -d '\n')"
call Remove '{"Name":"k2"}' >/dev/null
echo "--- serve.log"; cat /tmp/serve.log
"#
    );
    let console = bed().run(&scenario, Duration::from_secs(300), |_| {});
    no_key_in(&console);
    let r = |name: &str| result(&console, name).unwrap_or_else(|| panic!("no result {name}:\n{console}")).to_string();

    // rbdvol picked krbd and loaded the module itself.
    assert_eq!(r("rbd_before"), "absent");
    assert_eq!(r("mapper"), "mapper krbd", "{console}");
    assert_eq!(r("rbd_after"), "loaded");
    let bad = json(Some(&r("create_bad")))["Err"].as_str().unwrap().to_string();
    assert!(bad.contains("map_options") && bad.contains("'secret' is not allowed"), "{bad}");
    assert_eq!(r("devices_bad"), "0", "{console}");
    assert!(!bed().cluster.cli("rbd", &["ls"]).stdout.windows(4).any(|w| w == b"kbad"), "the refused volume was made");
    assert_eq!(json(Some(&r("create")))["Err"], "", "{console}");
    let mount = json(Some(&r("mount")));
    assert_eq!(mount["Err"], "", "{console}");
    assert_eq!(mount["Mountpoint"], "/var/lib/rbdvol/mnt/k1");
    assert_eq!(r("devices"), "0");
    // The key went through the kernel keyring: config_info names it, never holds it.
    assert_eq!(r("config_info_key"), "0", "{console}");
    let opts = r("config_info_options");
    assert!(opts.split(' ').any(|o| o == "key") && !opts.split(' ').any(|o| o == "secret"), "{opts}");
    // The volume's map options, the host's msgr2 mode (over the monitors'
    // v2 port) and CRUSH location reached the kernel, and took effect.
    let info = r("config_info");
    let (mons, opts) = info.split_once(' ').unwrap();
    let mon_host = bed().cluster.admin_settings().mon_host.clone();
    let v2 = mon_host.split(['[', ',', ']']).find_map(|a| a.strip_prefix("v2:")).unwrap_or_else(|| panic!("no v2 address in {mon_host}"));
    assert_eq!(mons, v2, "msgr2 needs the monitors' v2 address: {info}");
    for want in ["ms_mode=secure", "queue_depth=128", "alloc_size=65536", "read_from_replica=localize", "crush_location=host:guest", "noshare", "osd_request_timeout=30"] {
        assert!(opts.split(',').any(|o| o == want), "{want} not in {info}");
    }
    assert_eq!(r("nr_requests"), "128", "queue_depth did not reach the block queue");

    // A restarted plugin finds the mapping and the mount.
    assert_eq!(json(Some(&r("path_after_restart")))["Mountpoint"], "/var/lib/rbdvol/mnt/k1", "{console}");
    let get = json(Some(&r("get_after_restart")));
    assert_eq!(get["Volume"]["Status"]["mapper"], "krbd", "{get}");
    assert_eq!(get["Volume"]["Status"]["device"], "/dev/rbd0", "{get}");
    assert_eq!(get["Volume"]["Status"]["containers"], 1, "{get}");
    // Its mount detached as dockerd does, the plugin killed: the restarted
    // plugin keeps the volume (the kernel still maps it) and mounts it again.
    assert_eq!(r("detached"), "0", "{console}");
    assert_eq!(r("remounted"), "1", "not mounted again:\n{console}");
    assert_eq!(r("marker_after_remount"), "krbd-in-a-real-kernel", "{console}");
    assert_eq!(r("devices_after_remount"), "0", "{console}");
    assert_eq!(json(Some(&r("unmount")))["Err"], "", "{console}");
    assert_eq!((r("devices_after").as_str(), r("mounted_after").as_str()), ("0", "0"), "still mapped or mounted");

    // What the guest wrote through krbd is in Ceph.
    let cluster = &bed().cluster;
    let files = cluster.read_files_from_image("k1", &["/marker"]);
    assert_eq!(files[0].trim(), "krbd-in-a-real-kernel");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("k1.img");
    assert!(cluster.cli("rbd", &["export", "--no-progress", "rbd/k1", img.to_str().unwrap()]).status.success());
    let blob = dir.path().join("blob");
    let out = std::process::Command::new("debugfs").args(["-R", &format!("dump /blob {}", blob.display())]).arg(&img).output().unwrap();
    assert!(out.status.success());
    let out = std::process::Command::new("sha256sum").arg(&blob).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).split(' ').next().unwrap(), r("blob"));

    // An image feature this kernel cannot map: a clear error, nothing mapped.
    assert_eq!(json(Some(&r("create_journaling")))["Err"], "", "{console}");
    let err = json(Some(&r("mount_journaling")))["Err"].as_str().unwrap().to_string();
    assert!(err.contains("journaling") && err.contains("k2"), "{err}");
    assert_eq!(r("devices_journaling"), "0");
    println!("supported_features of the guest kernel: {}", r("supported_features"));
    // rbdvol doctor on this kernel: krbd usable, the unmappable image named.
    let doctor = json(Some(&r("doctor")));
    let check = |name: &str| doctor["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or_else(|| panic!("no {name} check: {doctor}"));
    assert_eq!(check("mapper")["status"], "ok", "{doctor}");
    assert!(check("mapper")["detail"].as_str().unwrap().contains("krbd"), "{doctor}");
    let features = check("features");
    assert_eq!(features["status"], "warn", "{doctor}");
    let detail = features["detail"].as_str().unwrap();
    assert!(detail.contains("'k2'") && detail.contains("journaling"), "{doctor}");
}

#[test]
fn krbd_volumes_grow_online_and_at_the_next_mount() {
    let scenario = format!(
        "{PRELUDE}{}",
        r#"
serve
call Create '{"Name":"g1","Opts":{"size":"64"}}' >/dev/null
result mount "$(call Mount '{"Name":"g1","ID":"c1"}')"
mp=/var/lib/rbdvol/mnt/g1
result before "$(fs_kib $mp)"
echo "GUEST GROW NOW 128"
i=0; while [ "$(fs_kib $mp)" -lt 100000 ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
result online "$(fs_kib $mp)"
call Unmount '{"Name":"g1","ID":"c1"}' >/dev/null
echo "GUEST GROW NOW 192"
i=0; until call Get '{"Name":"g1"}' | grep -q '"size_bytes":201326592'; do sleep 0.5; i=$((i + 1)); [ $i -gt 120 ] && break; done
result mount2 "$(call Mount '{"Name":"g1","ID":"c2"}')"
result at_mount "$(fs_kib $mp)"
call Unmount '{"Name":"g1","ID":"c2"}' >/dev/null
echo "--- serve.log"; cat /tmp/serve.log
"#
    );
    let cluster = &bed().cluster;
    let console = bed().run(&scenario, Duration::from_secs(300), |line| {
        // The image grown from the host while the guest has it mapped.
        if let Some(size) = line.strip_prefix("GUEST GROW NOW ") {
            let out = cluster.cli("rbd", &["resize", "--no-progress", "--size", size, "rbd/g1"]);
            assert!(out.status.success(), "rbd resize: {}", String::from_utf8_lossy(&out.stderr));
        }
    });
    no_key_in(&console);
    let kib = |name: &str| result(&console, name).unwrap_or_else(|| panic!("no result {name}:\n{console}")).parse::<u64>().unwrap();
    assert_eq!(json(result(&console, "mount"))["Err"], "", "{console}");
    assert!(kib("before") < 70_000, "{console}");
    assert!(kib("online") > 100_000, "not grown online while mapped through krbd:\n{console}");
    assert_eq!(json(result(&console, "mount2"))["Err"], "", "{console}");
    assert!(kib("at_mount") > 160_000, "not grown at the next mount:\n{console}");
    cluster.assert_filesystem_clean("g1", "ext4");
}

/// rbd-nbd with the volume's map options and the host's msgr2 mode, and
/// plugin restarts that kill every rbd-nbd under a writer — one leaving the
/// mount, one also detaching it as dockerd does to a managed plugin's
/// mounts: the restarted plugin reattaches the device (`rbd-nbd attach`)
/// within the reattach timeout (and mounts it again), and the writer
/// carries on without an error.
#[test]
fn rbd_nbd_maps_with_its_options_and_a_writer_outlives_a_plugin_restart_that_kills_rbd_nbd() {
    let scenario = format!(
        "{PRELUDE}{}",
        r#"
export RBDVOL_MS_MODE=secure
# rbd-nbd processes alive (a zombie has no command line).
live_nbd() { for p in $(pidof rbd-nbd); do grep -q . /proc/$p/cmdline 2>/dev/null && echo $p; done | wc -l; }
serve --mapper nbd
result mapper "$(grep -o 'mapper [a-z]*' /tmp/serve.log | head -1)"
result create_bad "$(call Create '{"Name":"nbad","Opts":{"size":"64","map_options":"nbd:device=/dev/nbd3"}}')"
result create "$(call Create '{"Name":"n1","Opts":{"size":"64","map_options":"krbd:queue_depth=64;nbd:io-timeout=20,reattach-timeout=120"}}')"
result mount "$(call Mount '{"Name":"n1","ID":"c1"}')"
result device "$(call Get '{"Name":"n1"}' | grep -o '"device":"[^"]*"')"
result rbd_nbd_args "$(tr '\0' '\n' </proc/$(pidof rbd-nbd)/cmdline | grep -e '^--io-timeout' -e '^--reattach-timeout' -e '^--try-netlink' -e '^--ms_client_mode' -e '^--cookie' | cut -d= -f1,2 | sed 's/cookie=.*/cookie/' | tr '\n' ' ')"
mp=/var/lib/rbdvol/mnt/n1
echo nbd-in-a-real-kernel > $mp/marker
sync
result rbd_nbd_args_key "$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' | grep -c -F -f /tmp/key)"
# A writer appending numbered lines, each fsynced; an error ends it. It
# works inside the filesystem (its cwd), as a container does: a mount
# detached from the plugin's tree stays its.
(
    cd $mp
    i=0
    while [ $i -lt 80 ]; do
        echo "line $i" | dd of=data.txt oflag=append conv=notrunc,fsync status=none || { echo "GUEST WRITE FAILED $i"; exit 1; }
        echo "GUEST SYNCED $i $(cut -d' ' -f1 /proc/uptime)"
        echo $i > /tmp/progress
        i=$((i + 1))
        sleep 0.1
    done
) &
writer=$!
progress() { until [ "$(cat /tmp/progress 2>/dev/null || echo 0)" -ge "$1" ]; do sleep 0.1; done; }
kill_all() {
    kill -9 "$(cat /tmp/serve.pid)" $(pidof rbd-nbd)
    echo "GUEST KILLED$1 $(cut -d' ' -f1 /proc/uptime)"
    i=0; while [ "$(live_nbd)" != 0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
}
wait_log() { n=$(grep -c "$1" /tmp/serve.log); i=0; until [ "$(grep -c "$1" /tmp/serve.log)" -ge "$2" ]; do sleep 0.5; i=$((i + 1)); [ $i -gt 240 ] && break; done; }
# 1. A legacy plugin restarted with its rbd-nbd killed (its mount stays).
progress 10
kill_all ""
result nbd_processes_killed "$(live_nbd)"
sleep 2
serve --mapper nbd
wait_log 'reattached in' 1
echo "GUEST REATTACHED $(cut -d' ' -f1 /proc/uptime)"
# 2. A managed plugin's disable -f: dockerd also detaches the plugin's
# mounts; the writer keeps the filesystem, as a container does.
progress 40
kill_all " 2"
umount -l $mp
sleep 2
serve --mapper nbd
wait_log 'reattached in' 2
wait_log 'mounted again at' 1
echo "GUEST REATTACHED 2 $(cut -d' ' -f1 /proc/uptime)"
result mounted_again "$(grep -c " $mp " /proc/mounts)"
wait $writer
result writer_exit "$?"
result lines "$(wc -l < $mp/data.txt)"
result reattached "$(grep -o 'reattached in [0-9]* ms' /tmp/serve.log | tr '\n' ' ')"
result nbd_processes_reattached "$(live_nbd)"
result unmount "$(call Unmount '{"Name":"n1","ID":"c1"}')"
i=0; while [ "$(live_nbd)" != 0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
result nbd_processes "$(live_nbd)"
echo "--- serve.log"; cat /tmp/serve.log
"#
    );
    let console = bed().run(&scenario, Duration::from_secs(420), |_| {});
    no_key_in(&console);
    let r = |name: &str| result(&console, name).unwrap_or_else(|| panic!("no result {name}:\n{console}")).to_string();
    assert_eq!(r("mapper"), "mapper nbd", "{console}");
    let bad = json(Some(&r("create_bad")))["Err"].as_str().unwrap().to_string();
    assert!(bad.contains("map_options") && bad.contains("'device' is not allowed"), "{bad}");
    assert_eq!(json(Some(&r("create")))["Err"], "", "{console}");
    assert_eq!(json(Some(&r("mount")))["Err"], "", "{console}");
    assert!(r("device").contains("/dev/nbd"), "{console}");
    // The volume's nbd list and the host's msgr2 mode reached rbd-nbd, with
    // netlink and a cookie to reattach by.
    assert_eq!(r("rbd_nbd_args"), "--ms_client_mode=secure --io-timeout=20 --try-netlink --reattach-timeout=120 --cookie", "{console}");
    assert_eq!(r("rbd_nbd_args_key"), "0", "the key is on a command line");

    // Killed with the plugin, reattached by the restarted plugin; the
    // writer never saw an error and every line is there.
    assert_eq!(r("nbd_processes_killed"), "0", "{console}");
    assert_eq!(r("reattached").matches("reattached in").count(), 2, "{console}");
    assert_eq!(r("mounted_again"), "1", "{console}");
    assert_eq!(r("nbd_processes_reattached"), "1", "{console}");
    assert!(!console.contains("GUEST WRITE FAILED"), "{console}");
    assert_eq!(r("writer_exit"), "0", "{console}");
    assert_eq!(r("lines"), "80", "the remounted filesystem is the writer's:\n{console}");
    let at = |prefix: &str| -> f64 {
        console.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix}")).trim().parse().unwrap()
    };
    let synced: Vec<f64> = console.lines().filter_map(|l| l.strip_prefix("GUEST SYNCED ")).map(|l| l.split(' ').nth(1).unwrap().parse().unwrap()).collect();
    let (stall, after) = synced.windows(2).enumerate().map(|(i, w)| (w[1] - w[0], i)).fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    for l in console.lines().filter(|l| l.contains("reattached in") || l.contains("mounted again") || l.contains("still serves")) {
        println!("serve: {l}");
    }
    println!("the longest wait came after line {after}");
    println!(
        "rbd-nbd reattach: plugin killed at {:.1} s, reattached at {:.1} s; killed with its mounts detached at {:.1} s, reattached and mounted again at {:.1} s ({}); the writer's longest wait between two fsynced lines {stall:.1} s (guest time, TCG)",
        at("GUEST KILLED "),
        at("GUEST REATTACHED "),
        at("GUEST KILLED 2 "),
        at("GUEST REATTACHED 2 "),
        r("reattached")
    );
    assert_eq!(json(Some(&r("unmount")))["Err"], "", "{console}");
    assert_eq!(r("nbd_processes"), "0", "rbd-nbd still runs after the unmap:\n{console}");
    let files = bed().cluster.read_files_from_image("n1", &["/marker", "/data.txt"]);
    assert_eq!(files[0].trim(), "nbd-in-a-real-kernel");
    let lines: Vec<&str> = files[1].lines().collect();
    assert_eq!(lines.len(), 80, "{}", files[1]);
    for (n, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("line {n}"));
    }
}

/// Host A is the guest (its kernel's krbd or rbd-nbd), writing and fsyncing
/// numbered lines; host B (this machine, the user-space mapper) takes the
/// volume over in the middle of it. B reads every line A saw fsynced, A's
/// later writes fail, A lets go — its device removed by force although a
/// process still holds a file in the lazily detached filesystem — and says
/// so, and the filesystem checks clean.
fn takeover_while_the_guest_writes(mapper: &str) {
    use common::plugin::Plugin;
    let cluster = &bed().cluster;
    let b = Plugin::start(cluster, "host-b");
    let v = format!("mid-write-{mapper}");
    let scenario = format!(
        "{PRELUDE}serve --mapper {mapper}\nv={v}\n{}",
        r#"
result create "$(call Create "{\"Name\":\"$v\",\"Opts\":{\"size\":\"128\"}}")"
result mount "$(call Mount "{\"Name\":\"$v\",\"ID\":\"c1\"}")"
mp=/var/lib/rbdvol/mnt/$v
: > $mp/data.txt
sleep 100000 < $mp/data.txt &   # a container still holding a file
holder=$!
i=0; started=$(date +%s)
while [ $(($(date +%s) - started)) -lt 180 ]; do
    echo "line $i" | dd of=$mp/data.txt oflag=append conv=notrunc,fsync status=none 2>/dev/null || break
    echo "GUEST SYNCED $i"
    i=$((i + 1))
    [ $i -eq 40 ] && echo "GUEST TAKE IT OVER NOW"
done
result writer_stopped_after "$i"
i=0; until grep -q 'has let go of it' /tmp/serve.log; do sleep 0.5; i=$((i + 1)); [ $i -gt 120 ] && break; done
result let_go "$(grep -c 'has let go of it' /tmp/serve.log)"
result devices "$(ls /sys/bus/rbd/devices 2>/dev/null | wc -l)"
result nbd_processes "$(pidof rbd-nbd | wc -w)"
result mounted "$(grep -c " $mp " /proc/mounts)"
result path "$(call Path "{\"Name\":\"$v\"}")"
result unmount "$(call Unmount "{\"Name\":\"$v\",\"ID\":\"c1\"}")"
kill $holder
echo "--- serve.log"; cat /tmp/serve.log
"#
    );
    let mut takeover: Option<std::process::Output> = None;
    let console = bed().run(&scenario, Duration::from_secs(420), |line| {
        if line == "GUEST TAKE IT OVER NOW" && takeover.is_none() {
            takeover = Some(cluster.rbdvol(&["takeover", &v, "--json", "--host-id", "host-b", "--state-dir", b.state_dir().to_str().unwrap()], &[]));
        }
    });
    no_key_in(&console);
    let r = |name: &str| result(&console, name).unwrap_or_else(|| panic!("no result {name}:\n{console}")).to_string();
    assert_eq!(json(Some(&r("create")))["Err"], "", "{console}");
    assert_eq!(json(Some(&r("mount")))["Err"], "", "{console}");
    let takeover = takeover.unwrap_or_else(|| panic!("the guest never asked for the takeover:\n{console}"));
    assert!(takeover.status.success(), "takeover failed: {}\n{console}", String::from_utf8_lossy(&takeover.stderr));
    let report: serde_json::Value = serde_json::from_slice(&takeover.stdout).unwrap();
    assert_eq!(report["taken_over"]["from"], "guest", "{report}");
    let fenced: Vec<String> = report["taken_over"]["fenced"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();

    // A's writes stopped failing, not hanging: the loop ended well before its bound.
    let synced: Vec<u64> = console.lines().filter_map(|l| l.strip_prefix("GUEST SYNCED ")).map(|n| n.trim().parse().unwrap()).collect();
    let last_synced = *synced.last().unwrap();
    assert!(last_synced >= 39, "{console}");
    println!("{mapper}: the guest fsynced lines 0..={last_synced}, the takeover came after line 39");
    // A let go of the volume by itself: unmounted, its device gone although
    // a process still held a file in it, its Path empty.
    assert_eq!(r("let_go"), "1", "{console}");
    assert_eq!(r("devices"), "0", "krbd device still there:\n{console}");
    assert_eq!(r("nbd_processes"), "0", "rbd-nbd still runs:\n{console}");
    assert_eq!(r("mounted"), "0", "{console}");
    assert_eq!(json(Some(&r("path")))["Mountpoint"], "", "{console}");
    assert_eq!(json(Some(&r("unmount")))["Err"], "", "{console}");

    // B mounts it and has every line A saw fsynced.
    let mounted = b.mount(&v, &format!("{:064x}", 2));
    assert_eq!(mounted.err(), "", "{:?}", mounted.json);
    let at = mounted.json["Mountpoint"].as_str().unwrap().to_string();
    let data = std::fs::read_to_string(format!("{at}/data.txt")).unwrap();
    let lines: Vec<&str> = data.lines().collect();
    for n in 0..=last_synced {
        assert_eq!(lines.get(n as usize).copied(), Some(format!("line {n}").as_str()), "fsynced line {n} lost ({} lines read)", lines.len());
    }
    assert_eq!(b.unmount(&v, &format!("{:064x}", 2)).err(), "");
    cluster.assert_filesystem_clean(&v, "ext4");
    // The guest's acknowledgement lifted rbdvol's 30-day fencing. (krbd and
    // rbd-nbd clients die holding the image's exclusive lock: B's librbd
    // breaks that lock and blocklists the dead owner itself, for Ceph's
    // default hour, `mon_osd_blocklist_default_expire`.)
    let out = cluster.cli("ceph", &["osd", "blocklist", "ls", "--format", "json"]);
    // The entries, then (ceph 16.2) an array of blocklisted ranges.
    let listed: serde_json::Value = serde_json::Deserializer::from_slice(&out.stdout).into_iter().next().unwrap().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for entry in listed.as_array().unwrap().iter().filter(|e| fenced.iter().any(|a| e["addr"].as_str().is_some_and(|x| x.ends_with(a.as_str())))) {
        let until = entry["until"].as_str().unwrap();
        let out = std::process::Command::new("date").args(["-d", until, "+%s"]).output().unwrap();
        let until_secs: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|e| panic!("{e}: {until}"));
        assert!(until_secs < now + 2 * 3600, "still fenced for 30 days after the guest let go: {entry}");
    }
    assert_eq!(b.remove(&v).err(), "");
}

#[test]
fn krbd_holder_taken_over_mid_write_loses_no_fsynced_line_and_lets_go() {
    takeover_while_the_guest_writes("krbd");
}

#[test]
fn rbd_nbd_holder_taken_over_mid_write_loses_no_fsynced_line_and_lets_go() {
    takeover_while_the_guest_writes("nbd");
}
