//! Read-only volumes: mapped and mounted read-only under the shared host
//! lock, by any number of hosts at once; never together with a read-write
//! holder.

use super::*;

fn read_only_volume(name: &str) -> MemoryVolume {
    let mut v = ready_volume(name);
    v.metadata.insert(VOLUME_KEY.to_string(), volume_meta_with(name, true));
    v
}

#[test]
fn a_read_only_volume_is_shared_with_other_readers_mapped_read_only_and_records_no_holder() {
    let bed = Bed::start(&[]);
    // Another host reads it already.
    bed.store.add_volume("ro", MemoryVolume { lockers: vec![("client.9".into(), "host-b".into())], shared: true, ..read_only_volume("ro") });
    assert_eq!(bed.mount("ro", "c1").unwrap(), Mounted::First(bed.mountpoint("ro")));
    let mp = bed.mountpoint("ro").display().to_string();
    let journal = bed.journal();
    assert_eq!(journal, vec!["host_lock_shared host-a".to_string(), "map rbd/ro read-only".into(), format!("mount {mp}")], "{journal:?}");
    let v = bed.store.volume("ro").unwrap();
    assert_eq!(v.lockers.len(), 2, "{:?}", v.lockers);
    assert!(!v.metadata.contains_key(MOUNTED_KEY), "a read-only volume has no one holder to record");
    bed.clear_journal();
    assert_eq!(bed.unmount("ro", "c1").unwrap(), Unmounted::Released);
    assert_eq!(bed.journal(), vec![format!("unmount {mp}"), "unmap rbd/ro".into(), "host_unlock host-a".into()]);
    let v = bed.store.volume("ro").unwrap();
    assert_eq!(v.lockers, vec![("client.9".to_string(), "host-b".to_string())], "the other reader keeps its share");
    assert!(bed.lock_notes().is_empty());
}

#[test]
fn a_read_write_mount_is_refused_while_readers_hold_the_volume_and_changes_nothing() {
    let bed = Bed::start(&[]);
    bed.store.add_volume("v", MemoryVolume { lockers: vec![("client.9".into(), "host-b".into())], shared: true, ..ready_volume("v") });
    let err = bed.mount("v", "c1").unwrap_err();
    assert!(matches!(&err, EngineError::ReadOnlyHolders { hosts, .. } if hosts == "host-b"), "{err}");
    assert!(err.to_string().contains("mounted read-only on host(s) 'host-b'"), "{err}");
    assert!(bed.journal().is_empty(), "{:?}", bed.journal());
    assert!(bed.lock_notes().is_empty());
    assert_eq!(bed.store.volume("v").unwrap().lockers.len(), 1);
}

#[test]
fn a_read_only_mount_is_refused_while_a_host_holds_the_volume_read_write() {
    let bed = Bed::start(&[]);
    bed.store.add_volume("ro", MemoryVolume { lockers: vec![("client.9".into(), "host-b".into())], ..read_only_volume("ro") });
    let err = bed.mount("ro", "c1").unwrap_err();
    assert!(matches!(&err, EngineError::MountedElsewhere { host, .. } if host == "host-b"), "{err}");
    assert!(bed.journal().is_empty(), "{:?}", bed.journal());
    assert!(bed.lock_notes().is_empty());
}

#[test]
fn a_readers_lock_left_by_a_crash_is_taken_back_at_the_next_mount() {
    let bed = Bed::start(&[]);
    // This host's share, held by a client of an earlier run.
    bed.store.add_volume("ro", MemoryVolume { lockers: vec![("client.1".into(), HOST.into())], shared: true, ..read_only_volume("ro") });
    bed.mount("ro", "c1").unwrap();
    let v = bed.store.volume("ro").unwrap();
    assert_eq!(v.lockers.len(), 1, "the earlier run's share is broken: {:?}", v.lockers);
    bed.unmount("ro", "c1").unwrap();
    bed.assert_nothing_left("ro");
}
