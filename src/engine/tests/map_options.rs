//! Map and unmap options, and reattaching a mapping whose process died,
//! on the fake tier.

use super::*;
use crate::engine::map_options::Given;
use crate::host::mapper::MapperKind;

/// Volume `name` as a Create with these `-o map_options`/`unmap_options` leaves it.
fn with_options(bed: &Bed, name: &str, map: Option<&str>, unmap: Option<&str>) {
    let meta = VolumeMeta { map_options: map.map(str::to_string), unmap_options: unmap.map(str::to_string), ..VolumeMeta::of(&ready_volume(name).metadata, name).unwrap() };
    bed.store.add_volume(name, MemoryVolume { metadata: BTreeMap::from([(VOLUME_KEY.to_string(), meta.to_json()), (FORMATTED_KEY.to_string(), (64 * MIB).to_string())]), ..ready_volume(name) });
}

fn set_defaults(bed: &Bed, map: &str, unmap: &str) {
    bed.engine.inner.defaults.write().unwrap().mapper_options = Given { map: Some(map.into()), unmap: Some(unmap.into()) };
}

#[test]
fn a_volumes_map_options_reach_its_mapper_and_its_unmap_options_the_unmap_after_a_restart() {
    let bed = Bed::start(&[]);
    bed.mapper.act_as(MapperKind::Krbd);
    with_options(&bed, "v", Some("krbd:queue_depth=64,alloc_size=65536;nbd:io-timeout=60"), Some("krbd:force"));
    bed.mount("v", "c1").unwrap();
    assert!(bed.journal().contains(&"map rbd/v -o queue_depth=64,alloc_size=65536 (unmap -o force)".to_string()), "{:?}", bed.journal());
    // The unmap options are this host's record of the mapping: a restarted
    // plugin unmaps with them without asking Ceph.
    let bed = bed.restart();
    bed.clear_journal();
    bed.unmount("v", "c1").unwrap();
    assert!(bed.journal().contains(&"unmap -o force rbd/v".to_string()), "{:?}", bed.journal());
}

#[test]
fn a_mapper_the_volume_has_no_list_for_gets_the_hosts_default() {
    let bed = Bed::start(&[]);
    bed.mapper.act_as(MapperKind::Nbd);
    with_options(&bed, "v", Some("krbd:queue_depth=64"), None);
    set_defaults(&bed, "krbd:queue_depth=256;nbd:io-timeout=60,reattach-timeout=120", "krbd:force");
    bed.mount("v", "c1").unwrap();
    // nbd's default list; no nbd unmap option exists.
    assert!(bed.journal().contains(&"map rbd/v -o io-timeout=60,reattach-timeout=120 (unmap -o )".to_string()), "{:?}", bed.journal());
}

#[test]
fn a_volume_whose_metadata_asks_for_a_map_option_rbdvol_does_not_allow_is_refused_before_anything_is_locked_or_mapped() {
    for (map, unmap) in [(Some("krbd:secret=AQBX"), None), (Some("nbd:device=/dev/nbd9"), None), (None, Some("krbd:queue_depth=1")), (Some("krbd:queue_depth=0"), None)] {
        let bed = Bed::start(&[]);
        bed.mapper.act_as(MapperKind::Krbd);
        with_options(&bed, "v", map, unmap);
        let err = bed.mount("v", "c1").unwrap_err();
        assert!(matches!(&err, EngineError::RefusedRecord { name, .. } if name == "v"), "{map:?} {unmap:?}: {err}");
        assert!(err.to_string().contains("rbdvol.volume"), "{err}");
        assert!(bed.journal().is_empty(), "{map:?}: {:?}", bed.journal());
        bed.assert_nothing_left("v");
    }
}

#[test]
fn a_mapping_whose_process_died_is_reattached_with_its_options_while_the_volume_is_still_this_hosts() {
    let bed = Bed::start(&[]);
    bed.mapper.act_as(MapperKind::Nbd);
    with_options(&bed, "v", Some("nbd:io-timeout=60"), None);
    bed.mount("v", "c1").unwrap();
    // The dead rbd-nbd's client, as the mount recorded it.
    let mut by = crate::engine::records::MountedBy::parse(&bed.store.volume("v").unwrap().metadata[MOUNTED_KEY]).unwrap();
    by.clients = vec!["10.0.0.9:0/111".into()];
    bed.store.set_metadata("v", MOUNTED_KEY, Some(&by.to_json()));
    // serve and its rbd-nbd killed; serve restarted.
    bed.mapper.kill(&image("v"));
    let bed = bed.restart();
    bed.clear_journal();
    block_on(bed.engine.check_all_mounted());
    let journal = bed.journal();
    // The dead client blocklisted first (its watch goes at once, and with
    // it the wait for the exclusive lock), then the new process attached.
    let at = |what: &str| journal.iter().position(|j| j == what).unwrap_or_else(|| panic!("no {what}: {journal:?}"));
    assert!(at("blocklist 10.0.0.9:0/111 3600") < at("reattach rbd/v -o io-timeout=60"), "{journal:?}");
    // Its new client joins the record a takeover fences.
    assert!(journal.contains(&format!("metadata_set {MOUNTED_KEY}")), "{journal:?}");
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), Some(bed.mountpoint("v")));
    bed.clear_journal();
    block_on(bed.engine.check_all_mounted());
    assert!(bed.journal().iter().all(|j| !j.starts_with("reattach")), "once: {:?}", bed.journal());
}

#[test]
fn a_mapping_whose_process_died_is_never_reattached_once_another_host_took_the_volume() {
    let bed = mounted_with(MapperKind::Nbd);
    bed.mapper.kill(&image("v"));
    let bed = bed.restart();
    bed.store.set_lockers("v", vec![("client.9".into(), "host-b".into())]);
    bed.clear_journal();
    block_on(bed.engine.check_all_mounted());
    let journal = bed.journal();
    assert!(journal.iter().all(|j| !j.starts_with("reattach")), "{journal:?}");
    assert!(journal.contains(&"unmap rbd/v".to_string()), "released instead: {journal:?}");
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), None);
}

#[test]
fn a_mapping_whose_process_died_is_never_reattached_once_a_takeover_fenced_this_host_or_rewrote_the_record() {
    for case in ["fenced", "record"] {
        let bed = mounted_with(MapperKind::Nbd);
        bed.mapper.kill(&image("v"));
        let bed = bed.restart();
        // A takeover under way: it fenced this host (recorded first), or
        // wrote its own record, and has not broken the lock yet.
        if case == "fenced" {
            let fenced = vec![crate::engine::records::Fenced { host: HOST.into(), clients: vec![], since: "t".into() }];
            bed.store.set_metadata("v", crate::engine::records::FENCED_KEY, Some(&crate::engine::records::Fenced::list_json(&fenced)));
        } else {
            let mut by = crate::engine::records::MountedBy::parse(&bed.store.volume("v").unwrap().metadata[MOUNTED_KEY]).unwrap();
            by.host = "host-b".into();
            bed.store.set_metadata("v", MOUNTED_KEY, Some(&by.to_json()));
        }
        bed.clear_journal();
        block_on(bed.engine.check_all_mounted());
        let journal = bed.journal();
        assert!(journal.iter().all(|j| !j.starts_with("reattach") && !j.starts_with("blocklist")), "{case}: {journal:?}");
    }
}

#[test]
fn a_detached_volume_whose_device_the_kernel_let_go_is_dropped_without_touching_the_device() {
    let bed = mounted_with(MapperKind::Nbd);
    let bed = plugin_stopped_by_dockerd(bed, "v", true);
    // Not reattached in time: the device is free, maybe another volume's.
    bed.mapper.lose(&image("v"));
    block_on(bed.engine.check_all_mounted());
    let journal = bed.journal();
    assert!(journal.iter().all(|j| !j.starts_with("mount ") && !j.starts_with("unmap")), "{journal:?}");
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), None, "still mounted here");
}

#[test]
fn an_unmount_right_after_a_restart_reattaches_a_dead_rbd_nbd_before_it_unmounts() {
    let bed = mounted_with(MapperKind::Nbd);
    bed.mapper.kill(&image("v"));
    let bed = bed.restart();
    bed.clear_journal();
    // The last container leaves before the first check.
    assert_eq!(bed.unmount("v", "c1").unwrap(), Unmounted::Released);
    let journal = bed.journal();
    let mp = bed.mountpoint("v").display().to_string();
    let at = |what: &str| journal.iter().position(|j| j == what).unwrap_or_else(|| panic!("no {what}: {journal:?}"));
    assert!(at("reattach rbd/v -o ") < at(&format!("unmount {mp}")), "{journal:?}");
    bed.assert_nothing_left("v");
}

/// A bed whose volume `v` (no map options) is mounted as `c1` by a mapper
/// acting as `kind`.
fn mounted_with(kind: MapperKind) -> Bed {
    let bed = Bed::start(&[]);
    bed.mapper.act_as(kind);
    with_options(&bed, "v", None, None);
    bed.mount("v", "c1").unwrap();
    bed
}

/// A managed plugin's `disable -f`: dockerd stops the plugin and detaches
/// its mounts; the containers keep the filesystem, and krbd keeps the
/// device (rbd-nbd's waits to be reattached).
fn plugin_stopped_by_dockerd(bed: Bed, name: &str, rbd_nbd: bool) -> Bed {
    use crate::host::mounts::MountTable;
    if rbd_nbd {
        bed.mapper.kill(&image(name));
    }
    bed.mounts.unmount_detached(&bed.mountpoint(name)).unwrap();
    let bed = bed.restart();
    bed.clear_journal();
    bed
}

#[test]
fn a_krbd_volume_whose_mount_dockerd_detached_is_kept_and_mounted_again_and_a_mount_meanwhile_is_told_to_retry() {
    let bed = mounted_with(MapperKind::Krbd);
    let bed = plugin_stopped_by_dockerd(bed, "v", false);
    assert!(bed.journal().is_empty(), "nothing undone: {:?}", bed.journal());
    let err = bed.mount("v", "c2").unwrap_err();
    assert!(matches!(err, EngineError::TakingBack { .. }), "{err}");
    block_on(bed.engine.check_all_mounted());
    let mp = bed.mountpoint("v").display().to_string();
    assert_eq!(bed.journal(), vec![format!("mount {mp}")], "mounted again, nothing else");
    assert_eq!(bed.mount("v", "c2").unwrap(), Mounted::Again(bed.mountpoint("v")));
    bed.unmount("v", "c1").unwrap();
    assert_eq!(bed.unmount("v", "c2").unwrap(), Unmounted::Released);
    bed.assert_nothing_left("v");
}

#[test]
fn an_rbd_nbd_volume_whose_mount_dockerd_detached_is_reattached_then_mounted_again() {
    let bed = mounted_with(MapperKind::Nbd);
    let bed = plugin_stopped_by_dockerd(bed, "v", true);
    block_on(bed.engine.check_all_mounted());
    let mp = bed.mountpoint("v").display().to_string();
    let journal = bed.journal();
    let at = |what: &str| journal.iter().position(|j| j == what).unwrap_or_else(|| panic!("no {what}: {journal:?}"));
    assert!(at("reattach rbd/v -o ") < at(&format!("mount {mp}")), "{journal:?}");
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), Some(bed.mountpoint("v")));
}

#[test]
fn a_user_space_volume_whose_server_died_with_its_mount_is_cleaned_up_as_before() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    // Its server died: no mapping left, no process to reattach.
    use crate::host::mapper::Mapper;
    let m = bed.mapper.find(&image("v")).unwrap().unwrap();
    bed.mapper.unmap(&m).unwrap();
    let device = m.device.display().to_string();
    // The restart after an upgrade: dockerd detached the mount, the mapper
    // no longer knows the mapping; the device this host recorded is handed
    // to it to clean up.
    use crate::host::mounts::MountTable;
    bed.mounts.unmount_detached(&bed.mountpoint("v")).unwrap();
    let bed = bed.restart();
    assert_eq!(bed.mapper.forgotten(), vec![format!("rbd/v {device}")]);
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), None, "not kept");
    assert_eq!(bed.state_file_count(), 0);
}

#[test]
fn a_volume_whose_lock_was_broken_without_fencing_is_never_unmapped_by_force_whatever_its_unmap_options() {
    let bed = Bed::start(&[]);
    bed.mapper.act_as(MapperKind::Krbd);
    with_options(&bed, "v", None, Some("krbd:force"));
    bed.mount("v", "c1").unwrap();
    bed.clear_journal();
    // `rbdvol unlock --force` elsewhere: no fencing recorded.
    bed.store.set_lockers("v", vec![("client.9".into(), "host-b".into())]);
    block_on(bed.engine.check_all_mounted());
    let journal = bed.journal();
    assert!(journal.contains(&"unmap rbd/v".to_string()) && !journal.iter().any(|j| j.contains("force")), "{journal:?}");
}
