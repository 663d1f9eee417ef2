//! The engine's host path on the fake tier: a recording fake mapper and
//! mount table (`host::mapper::fake`, `host::mounts::fake`) and the store
//! in memory (`store::memory`), all writing to one journal, so each test
//! sees every step and its order. No cluster, no kernel.
//!
//! This file: the test bed, Mount and Unmount, restart and reconcile.
//! `safety`: callers that go away, locks, fencing, hosts racing, and what
//! the hostile review found. `properties`: random requests.

mod outage;
mod publish;
mod read_only;
mod properties;
mod map_options;
mod safety;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::connection::Connection;
use super::records::{DirEntry, EntryState, VolumeMeta, FORMATTED_KEY, MOUNTED_KEY, VOLUME_KEY};
use super::store::memory::{MemoryStore, MemoryVolume};
use super::*;
use crate::host::fs::Fstype;
use crate::host::mapper::fake::{FakeMapper, Journal};
use crate::host::mounts::fake::FakeMounts;
use crate::host::ImageRef;

const HOST: &str = "host-a";
const MIB: u64 = 1 << 20;

struct Bed {
    engine: Engine,
    store: MemoryStore,
    mapper: FakeMapper,
    mounts: FakeMounts,
    journal: Journal,
    dir: tempfile::TempDir,
}

fn volume_meta(name: &str) -> String {
    volume_meta_with(name, false)
}

fn volume_meta_with(name: &str, read_only: bool) -> String {
    VolumeMeta {
        name: name.into(),
        fstype: Fstype::Ext4,
        mkfs_options: vec![],
        mount_options: String::new(),
        uid: None,
        gid: None,
        mode: None,
        created_at: "2026-12-01T00:00:00Z".into(),
        cloned_from: None,
        adopted: false,
        read_only,
        map_options: None,
        unmap_options: None,
    }
    .to_json()
}

fn ready_volume(name: &str) -> MemoryVolume {
    MemoryVolume {
        id: format!("id-{name}"),
        size: 64 * MIB,
        metadata: BTreeMap::from([(VOLUME_KEY.to_string(), volume_meta(name)), (FORMATTED_KEY.to_string(), (64 * MIB).to_string())]),
        ..Default::default()
    }
}

fn image(name: &str) -> ImageRef {
    ImageRef { pool: "rbd".into(), namespace: String::new(), image: name.into() }
}

impl Bed {
    /// An engine on the fakes, with ready volumes `names`, started over
    /// `dir` (an earlier run's state and mounts, when given).
    fn start(names: &[&str]) -> Bed {
        Bed::start_over(names, tempfile::tempdir().unwrap(), None)
    }

    fn start_over(names: &[&str], dir: tempfile::TempDir, fakes: Option<(MemoryStore, FakeMapper, FakeMounts)>) -> Bed {
        let journal: Journal = Default::default();
        let (store, mapper, mounts) = fakes.unwrap_or_else(|| (MemoryStore::new(journal.clone()), FakeMapper::new(journal.clone()), FakeMounts::new(journal.clone())));
        let journal = store.journal.clone();
        for n in names {
            store.add_volume(n, ready_volume(n));
        }
        let cfg = EngineConfig {
            host_id: HOST.into(),
            defaults: Defaults::default(),
            mount_root: dir.path().join("mnt"),
            state_dir: dir.path().join("state"),
            auto_takeover: false,
            blocklist_expiry: Duration::from_secs(3600),
            trash_delay: Duration::ZERO,
        };
        let engine = Engine::start_with(cfg, Connection::with_store(Arc::new(store.clone())), Tools::default(), Box::new(mapper.clone()), Box::new(mounts.clone()))
            .expect("the engine starts on the fakes");
        Bed { engine, store, mapper, mounts, journal, dir }
    }

    /// The same fakes and directory, a new engine: a restart of serve.
    fn restart(self) -> Bed {
        let Bed { engine, store, mapper, mounts, dir, .. } = self;
        drop(engine);
        Bed::start_over(&[], dir, Some((store, mapper, mounts)))
    }

    fn journal(&self) -> Vec<String> {
        self.journal.lock().unwrap().clone()
    }

    fn clear_journal(&self) {
        self.journal.lock().unwrap().clear();
    }

    fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir.path().join("mnt").join(name)
    }

    fn lock_notes(&self) -> Vec<String> {
        crate::state::LockNotes::open(self.dir.path().join("state/locks")).unwrap().all().unwrap()
    }

    fn state_file_count(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("state/volumes")).unwrap().count()
    }

    fn mount(&self, name: &str, id: &str) -> Result<Mounted, EngineError> {
        block_on(self.engine.mount(name, id))
    }

    fn unmount(&self, name: &str, id: &str) -> Result<Unmounted, EngineError> {
        block_on(self.engine.unmount(name, id))
    }

    /// Nothing of volume `name` is left on this host or in its records.
    fn assert_nothing_left(&self, name: &str) {
        assert!(self.mapper.mapped().is_empty(), "mapped: {:?}", self.mapper.mapped());
        assert!(self.mounts.targets().is_empty(), "mounted: {:?}", self.mounts.targets());
        assert!(!self.mountpoint(name).exists(), "mountpoint left");
        assert_eq!(self.state_file_count(), 0, "state file left");
        let v = self.store.volume(name).unwrap();
        assert!(v.lockers.is_empty(), "host lock left: {:?}", v.lockers);
        assert!(!v.metadata.contains_key(MOUNTED_KEY), "mounted-by record left");
        assert!(!matches!(block_on(self.engine.path(name)), Ok(Some(_))), "still has a path");
        assert!(self.lock_notes().is_empty(), "lock note left: {:?}", self.lock_notes());
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

#[test]
fn a_first_mount_locks_maps_mounts_records_and_saves_in_that_order() {
    let bed = Bed::start(&["v"]);
    let mounted = bed.mount("v", "c1").unwrap();
    assert_eq!(mounted, Mounted::First(bed.mountpoint("v")));
    let mp = bed.mountpoint("v").display().to_string();
    assert_eq!(bed.journal(), vec!["host_lock host-a".to_string(), "map rbd/v".into(), format!("mount {mp}"), format!("metadata_set {MOUNTED_KEY}")]);
    assert_eq!(bed.state_file_count(), 1);
    assert_eq!(bed.mount("v", "c2").unwrap(), Mounted::Again(bed.mountpoint("v")));
}

#[test]
fn an_unmount_of_the_last_reference_undoes_the_mount_in_reverse() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    bed.mount("v", "c2").unwrap();
    bed.clear_journal();
    assert_eq!(bed.unmount("v", "c1").unwrap(), Unmounted::StillUsed(1));
    assert!(bed.journal().is_empty(), "a reference left: nothing undone");
    // The dropped reference is saved: a restart knows only c2.
    let bed = bed.restart();
    assert_eq!(bed.unmount("v", "c2").unwrap(), Unmounted::Released, "c1 was gone: c2 was the last");
    let mp = bed.mountpoint("v").display().to_string();
    assert_eq!(bed.journal(), vec![format!("unmount {mp}"), "unmap rbd/v".into(), format!("metadata_remove {MOUNTED_KEY}"), "host_unlock host-a".into()]);
    bed.assert_nothing_left("v");
    assert_eq!(bed.unmount("v", "c2").unwrap(), Unmounted::NotMounted);
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), None, "exists, not mounted: no path");
}

/// Each step a first Mount takes, and the call that makes it fail.
const FAILURES: [(&str, &str); 7] = [
    ("features", "mapper check_features"),
    ("map", "mapper map"),
    ("mount", "mounts mount"),
    ("own address", "store own_address"),
    ("watchers", "store watchers"),
    ("mounted-by record", "store metadata_set rbdvol.mounted"),
    ("state file", "state"),
];

#[test]
fn a_mount_that_fails_at_each_step_rolls_back_exactly_what_it_did_in_reverse() {
    for (step, call) in FAILURES {
        let bed = Bed::start(&["v"]);
        match call.split_once(' ').unwrap_or((call, "")) {
            ("mapper", c) => bed.mapper.fail(c),
            ("mounts", c) => bed.mounts.fail(c),
            ("store", c) => bed.store.fail(c),
            _ => {
                // The state directory made unwritable: a file in its place.
                let dir = bed.dir.path().join("state/volumes");
                std::fs::remove_dir_all(&dir).unwrap();
                std::fs::write(&dir, b"").unwrap();
            }
        }
        let err = bed.mount("v", "c1").expect_err(step);
        let journal = bed.journal();
        // Every change is undone, in the reverse order it was made.
        let done: Vec<&String> = journal.iter().take_while(|j| !j.starts_with("un") && !j.starts_with("metadata_remove") && *j != "host_unlock host-a").collect();
        let undone: Vec<String> = journal[done.len()..].to_vec();
        let inverse = |d: &str| -> String {
            let (verb, what) = d.split_once(' ').unwrap();
            match verb {
                "host_lock" => format!("host_unlock {what}"),
                "map" => format!("unmap {what}"),
                "mount" => format!("unmount {what}"),
                "metadata_set" => format!("metadata_remove {what}"),
                other => panic!("{step}: unexpected step {other}"),
            }
        };
        let expected: Vec<String> = done.iter().rev().map(|d| inverse(d)).collect();
        assert_eq!(undone, expected, "{step} failed ({err}): journal {journal:?}");
        assert!(!done.is_empty() && done[0] == "host_lock host-a", "{step}: the host lock comes first: {journal:?}");
        if call != "state" {
            bed.assert_nothing_left("v");
        } else {
            let v = bed.store.volume("v").unwrap();
            assert!(v.lockers.is_empty() && !v.metadata.contains_key(MOUNTED_KEY) && bed.mapper.mapped().is_empty() && bed.mounts.targets().is_empty());
        }
    }
}

#[test]
fn a_mount_refused_by_the_host_lock_changes_nothing() {
    let bed = Bed::start(&["v"]);
    let other = MemoryVolume { lockers: vec![("client.9".into(), "host-b".into())], ..ready_volume("w") };
    bed.store.add_volume("w", other);
    let err = bed.mount("w", "c1").unwrap_err();
    assert!(matches!(&err, EngineError::MountedElsewhere { host, .. } if host == "host-b"), "{err}");
    assert!(bed.journal().is_empty(), "{:?}", bed.journal());
    assert_eq!(bed.store.volume("w").unwrap().lockers, vec![("client.9".to_string(), "host-b".to_string())]);
}

#[test]
fn mount_and_path_of_a_volume_that_is_not_ready_say_it_does_not_exist_unmount_is_idempotent() {
    let bed = Bed::start(&["v"]);
    let removing = DirEntry { pool: "rbd".into(), namespace: String::new(), state: EntryState::Removing, id: None, trash_delay_s: None, adopted: None };
    bed.store.put_entry_raw("v", removing);
    assert!(matches!(bed.mount("v", "c1"), Err(EngineError::NotFound(_))));
    assert!(matches!(bed.mount("nope", "c1"), Err(EngineError::NotFound(_))));
    assert!(matches!(block_on(bed.engine.path("v")), Err(EngineError::NotFound(_))));
    assert!(matches!(block_on(bed.engine.path("nope")), Err(EngineError::NotFound(_))));
    // Unmount and Remove of what is not there stay idempotent successes.
    assert_eq!(bed.unmount("nope", "c1").unwrap(), Unmounted::NotMounted);
    assert!(bed.journal().is_empty());
}

#[test]
fn a_restart_keeps_a_mounted_volume_and_its_references() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    bed.mount("v", "c2").unwrap();
    let bed = bed.restart();
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), Some(bed.mountpoint("v")));
    assert_eq!(bed.mapper.mapped(), vec![image("v")]);
    assert!(bed.journal().iter().all(|j| !j.starts_with("un")), "nothing undone: {:?}", bed.journal());
    assert_eq!(bed.unmount("v", "c1").unwrap(), Unmounted::StillUsed(1));
    assert_eq!(bed.unmount("v", "c2").unwrap(), Unmounted::Released);
    bed.assert_nothing_left("v");
}

#[test]
fn reconcile_cleans_up_a_volume_recorded_as_mounted_but_not_mapped_or_mounted() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    // The host lost the mount and the mapping behind rbdvol's back (a
    // forced plugin stop killed the mapper).
    bed.mounts.unmount(&bed.mountpoint("v")).unwrap();
    bed.mapper.unmap(&bed.mapper.list().unwrap()[0]).unwrap();
    bed.clear_journal();
    let bed = bed.restart();
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), None, "forgotten");
    assert_eq!(bed.state_file_count(), 0);
    // Its host lock is released once the cluster answers.
    assert_eq!(bed.store.volume("v").unwrap().lockers.len(), 1);
    block_on(bed.engine.resume_background_work());
    bed.assert_nothing_left("v");
    assert_eq!(bed.journal(), vec![format!("metadata_remove {MOUNTED_KEY}"), "host_unlock host-a".to_string()]);
}

#[test]
fn reconcile_unmaps_and_unmounts_a_volume_mapped_but_not_recorded() {
    let bed = Bed::start(&["v", "kept"]);
    bed.mount("kept", "c1").unwrap();
    // A crash between map (and mount) and the state write.
    let m = bed.mapper.add(&image("v"));
    std::fs::create_dir_all(bed.mountpoint("v")).unwrap();
    bed.mounts.add(&m.device, &bed.mountpoint("v"));
    bed.clear_journal();
    let bed = bed.restart();
    let mp = bed.mountpoint("v").display().to_string();
    assert_eq!(bed.journal(), vec![format!("unmount {mp}"), "unmap rbd/v".to_string()]);
    assert_eq!(bed.mapper.mapped(), vec![image("kept")], "the recorded volume stays mapped");
    assert_eq!(block_on(bed.engine.path("kept")).unwrap(), Some(bed.mountpoint("kept")));
}

#[test]
fn a_volume_taken_over_by_another_host_is_released_here_without_a_write_to_ceph() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    bed.clear_journal();
    // Another host holds the lock now (broken by hand: no fencing
    // recorded, so the device goes only once nothing holds it).
    bed.store.set_lockers("v", vec![("client.9".into(), "host-b".into())]);
    block_on(bed.engine.check_all_mounted());
    let mp = bed.mountpoint("v").display().to_string();
    // Detached at once: its containers may still hold it open.
    assert_eq!(bed.journal(), vec![format!("unmount_detached {mp}"), "unmap rbd/v".to_string()], "only local steps");
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), None);
    assert_eq!(bed.state_file_count(), 0);
    assert_eq!(bed.store.volume("v").unwrap().lockers, vec![("client.9".to_string(), "host-b".to_string())]);
}

/// RBDVOL_HOST_ID changed while a volume was mounted: its lock carries
/// this machine's installation under the old id. Nobody took it over.
#[test]
fn a_volume_locked_by_this_machine_under_its_old_host_id_stays_mounted() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    bed.clear_journal();
    let install = crate::engine::records::LockCookie::parse(&bed.engine.inner.cookie).install.unwrap().to_string();
    bed.store.set_lockers("v", vec![("client.1".into(), format!("old-name/{install}"))]);
    block_on(bed.engine.check_all_mounted());
    assert_eq!(block_on(bed.engine.path("v")).unwrap(), Some(bed.mountpoint("v")), "released under its container");
    assert!(bed.journal().iter().all(|j| !j.starts_with("unmap") && !j.starts_with("unmount")), "{:?}", bed.journal());
}

#[test]
fn a_failed_unmount_keeps_the_volume_recorded_so_a_retry_finishes_it() {
    let bed = Bed::start(&["v"]);
    bed.mount("v", "c1").unwrap();
    bed.mapper.fail("unmap");
    assert!(bed.unmount("v", "c1").is_err());
    assert_eq!(bed.state_file_count(), 1, "still recorded");
    assert_eq!(bed.store.volume("v").unwrap().lockers.len(), 1, "still locked");
    assert_eq!(bed.mapper.mapped(), vec![image("v")], "still mapped");
    bed.mapper.heal();
    // Docker retries the Unmount: it finishes the job.
    assert_eq!(bed.unmount("v", "c1").unwrap(), Unmounted::Released);
    bed.assert_nothing_left("v");
}

#[test]
fn path_list_and_other_volumes_answer_while_a_mount_is_held_in_map() {
    let bed = Bed::start(&["slow", "other"]);
    bed.mapper.hold_map();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let engine = bed.engine.clone();
    let slow = runtime.spawn(async move { engine.mount("slow", "c1").await });
    // Wait until the slow Mount holds its volume's lock, inside map.
    while bed.journal().is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    runtime.block_on(async {
        assert_eq!(bed.engine.path("slow").await.unwrap(), None);
        assert_eq!(bed.engine.list().await.unwrap().len(), 2);
        bed.mapper.fail("map");
        assert!(bed.engine.mount("other", "c2").await.is_err(), "another volume's Mount is not queued behind it");
    });
    bed.mapper.heal();
    bed.mapper.release_map();
    assert!(runtime.block_on(slow).unwrap().is_ok());
}

#[test]
fn observing_for_the_metrics_takes_no_volume_lock_and_counts_mounts_by_mapper() {
    let bed = Bed::start(&["v", "w"]);
    bed.mount("v", "c1").unwrap();
    // A Mount of v holding its lock (a slow map, a dead holder's watches)
    // does not hold up a scrape.
    let _held = bed.engine.volume_lock("v").try_lock_owned().expect("the lock is free");
    let o = bed.engine.observe();
    assert_eq!(o.mounted.get("userspace"), Some(&1));
    assert_eq!((o.mounted.get("krbd"), o.mounted.get("nbd")), (Some(&0), Some(&0)));
    assert!(o.userspace.is_empty(), "the fake mapper has no server to read");
    assert!(!o.cluster_up, "no probe ran: not known to be up");
}
