//! Swarm's cluster volumes (CSI) on the fake tier: stage, publish and
//! their undoing, with the binds undone before the mapping goes.

use std::path::{Path, PathBuf};

use super::safety::runtime;
use super::*;
use crate::engine::Unpublished;

fn staging(bed: &Bed, id: &str) -> PathBuf {
    bed.dir.path().join("staged").join(id)
}

fn target(bed: &Bed, id: &str) -> PathBuf {
    bed.dir.path().join("published").join(id)
}

fn stage(bed: &Bed, name: &str, path: &Path) -> Result<PathBuf, EngineError> {
    block_on(bed.engine.stage(name, path))
}

fn publish(bed: &Bed, name: &str, path: &Path) -> Result<(), EngineError> {
    block_on(bed.engine.publish(name, path, false))
}

fn unpublish(bed: &Bed, name: &str, path: &Path) -> Result<Unpublished, EngineError> {
    block_on(bed.engine.unpublish(name, path))
}

#[test]
fn stage_and_publish_mount_once_and_bind_the_mountpoint_at_both_paths() {
    let bed = Bed::start(&["v"]);
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    stage(&bed, "v", &st).unwrap();
    // Swarm stages again before every publish attempt: nothing more.
    stage(&bed, "v", &st).unwrap();
    publish(&bed, "v", &tg).unwrap();
    publish(&bed, "v", &tg).unwrap();
    let mp = bed.mountpoint("v").display().to_string();
    assert_eq!(
        bed.journal(),
        vec![
            "host_lock host-a".to_string(),
            "map rbd/v".into(),
            format!("mount {mp}"),
            format!("metadata_set {MOUNTED_KEY}"),
            format!("bind {mp} {}", st.display()),
            format!("bind {mp} {}", tg.display()),
        ]
    );
    assert_eq!(bed.mapper.mapped(), vec![image("v")]);
    // Repeated calls were one stage and one publish: one unpublish undoes all.
    assert_eq!(unpublish(&bed, "v", &tg).unwrap(), Unpublished::Unstaged);
    bed.assert_nothing_left("v");
}

#[test]
fn the_last_unpublish_unstages_unbinding_before_it_unmounts_unmaps_and_unlocks() {
    let bed = Bed::start(&["v"]);
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    stage(&bed, "v", &st).unwrap();
    publish(&bed, "v", &tg).unwrap();
    bed.clear_journal();
    assert_eq!(unpublish(&bed, "v", &tg).unwrap(), Unpublished::Unstaged);
    let mp = bed.mountpoint("v").display().to_string();
    assert_eq!(
        bed.journal(),
        vec![
            format!("unmount {}", tg.display()),
            format!("rmdir {}", tg.display()),
            format!("unmount {}", st.display()),
            format!("rmdir {}", st.display()),
            format!("unmount {mp}"),
            "unmap rbd/v".into(),
            format!("metadata_remove {MOUNTED_KEY}"),
            "host_unlock host-a".into(),
        ]
    );
    bed.assert_nothing_left("v");
    // Repeated, and an unstage after it (swarm after a dockerd restart): no change.
    bed.clear_journal();
    assert_eq!(unpublish(&bed, "v", &tg).unwrap(), Unpublished::NotPublished);
    assert_eq!(block_on(bed.engine.unstage("v", &st)).unwrap(), Unmounted::NotMounted);
    assert!(bed.journal().iter().all(|j| j.starts_with("rmdir")), "{:?}", bed.journal());
}

#[test]
fn an_unpublish_keeps_the_volume_staged_while_another_publish_uses_it() {
    let bed = Bed::start(&["v"]);
    let st = staging(&bed, "s1");
    stage(&bed, "v", &st).unwrap();
    publish(&bed, "v", &target(&bed, "a")).unwrap();
    publish(&bed, "v", &target(&bed, "b")).unwrap();
    assert_eq!(unpublish(&bed, "v", &target(&bed, "a")).unwrap(), Unpublished::StillStaged);
    assert_eq!(bed.mapper.mapped(), vec![image("v")]);
    assert_eq!(unpublish(&bed, "v", &target(&bed, "b")).unwrap(), Unpublished::Unstaged);
    bed.assert_nothing_left("v");
}

#[test]
fn staged_and_published_volumes_survive_a_restart_and_are_unstaged_by_the_last_unpublish_after_it() {
    let bed = Bed::start(&["v"]);
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    stage(&bed, "v", &st).unwrap();
    publish(&bed, "v", &tg).unwrap();
    let bed = bed.restart();
    assert_eq!(bed.mapper.mapped(), vec![image("v")], "kept for the container");
    assert_eq!(unpublish(&bed, "v", &target(&bed, "s1")).unwrap(), Unpublished::Unstaged);
    bed.assert_nothing_left("v");
}

#[test]
fn an_unstage_while_published_keeps_the_volume_mounted_for_the_publish() {
    let bed = Bed::start(&["v"]);
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    stage(&bed, "v", &st).unwrap();
    publish(&bed, "v", &tg).unwrap();
    assert_eq!(block_on(bed.engine.unstage("v", &st)).unwrap(), Unmounted::StillUsed(1));
    assert_eq!(bed.mapper.mapped(), vec![image("v")]);
    assert_eq!(unpublish(&bed, "v", &tg).unwrap(), Unpublished::Unstaged);
    bed.assert_nothing_left("v");
}

#[test]
fn a_bind_that_fails_keeps_the_reference_and_swarms_retry_binds() {
    let bed = Bed::start(&["v"]);
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    bed.mounts.fail("bind");
    assert!(stage(&bed, "v", &st).is_err());
    bed.mounts.unfail("bind");
    stage(&bed, "v", &st).unwrap();
    publish(&bed, "v", &tg).unwrap();
    assert_eq!(unpublish(&bed, "v", &tg).unwrap(), Unpublished::Unstaged);
    bed.assert_nothing_left("v");
}

#[test]
fn a_repeated_publish_whose_bind_fails_keeps_the_earlier_publish_and_its_bind() {
    let bed = Bed::start(&["v"]);
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    stage(&bed, "v", &st).unwrap();
    publish(&bed, "v", &tg).unwrap();
    bed.mounts.fail("bind");
    assert!(publish(&bed, "v", &tg).is_err());
    bed.mounts.unfail("bind");
    assert!(bed.engine.references("v").contains(&format!("csi-publish:{}", tg.display())), "the earlier publish's reference");
    assert!(bed.mounts.targets().contains(&tg) && bed.mapper.mapped() == vec![image("v")]);
    assert_eq!(unpublish(&bed, "v", &tg).unwrap(), Unpublished::Unstaged);
    bed.assert_nothing_left("v");
}

#[test]
fn a_teardown_detaches_the_volumes_binds_by_its_device_also_once_its_mountpoint_is_gone() {
    let bed = Bed::start(&["v"]);
    let rt = runtime();
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    rt.block_on(bed.engine.stage("v", &st)).unwrap();
    rt.block_on(bed.engine.publish("v", &tg, false)).unwrap();
    // The mountpoint's own mount went behind rbdvol's back; the binds stay.
    bed.mounts.unmount(&bed.mountpoint("v")).unwrap();
    taken_over_by_host_b(&bed, "v");
    rt.block_on(bed.engine.check_all_mounted());
    assert_eq!(rt.block_on(bed.engine.path("v")).unwrap(), None, "released");
    assert!(bed.mounts.targets().is_empty(), "binds left: {:?}", bed.mounts.targets());
}

#[test]
fn a_volume_that_does_not_exist_is_not_staged_and_nothing_changes() {
    let bed = Bed::start(&["v"]);
    let e = stage(&bed, "nope", &staging(&bed, "x")).unwrap_err();
    assert!(matches!(e, EngineError::NotFound(_)), "{e}");
    assert!(bed.journal().is_empty(), "{:?}", bed.journal());
}

#[test]
fn a_publish_target_where_something_else_is_mounted_is_refused_and_left_alone() {
    let bed = Bed::start(&["v"]);
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    bed.mounts.add(Path::new("/dev/other"), &tg);
    stage(&bed, "v", &st).unwrap();
    let e = publish(&bed, "v", &tg).unwrap_err();
    assert!(e.to_string().contains("/dev/other"), "{e}");
    assert!(bed.mounts.targets().contains(&tg), "the other mount is left");
    // The unpublish that follows (Swarm gives up on the node) unstages and
    // still leaves the other mount, and its directory, alone.
    bed.clear_journal();
    assert_eq!(unpublish(&bed, "v", &tg).unwrap(), Unpublished::Unstaged);
    assert_eq!(bed.mounts.targets(), vec![tg.clone()], "only the other mount is left");
    assert!(!bed.journal().contains(&format!("rmdir {}", tg.display())), "{:?}", bed.journal());
    assert!(bed.mapper.mapped().is_empty());
}

#[test]
fn a_teardown_after_a_takeover_detaches_only_the_volumes_own_binds() {
    let bed = Bed::start(&["v"]);
    let rt = runtime();
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    rt.block_on(bed.engine.stage("v", &st)).unwrap();
    rt.block_on(bed.engine.publish("v", &tg, false)).unwrap();
    // Something else came to be mounted at the publish target since.
    bed.mounts.unmount(&tg).unwrap();
    bed.mounts.add(Path::new("/dev/other"), &tg);
    taken_over_by_host_b(&bed, "v");
    rt.block_on(bed.engine.check_all_mounted());
    assert_eq!(rt.block_on(bed.engine.path("v")).unwrap(), None, "released");
    assert_eq!(bed.mounts.targets(), vec![tg], "the staging bind detached, the other mount left");
}

/// Swarm stages again before every publish. A repeated NodeStage whose
/// client goes away (the 15 s deadline) after its Mount was answered, while
/// it waits for the volume's lock to bind, must not leave a second
/// reference (found by the review: the last unpublish then kept the volume).
#[test]
fn a_repeated_stage_abandoned_before_its_bind_leaves_one_reference_and_the_last_unpublish_releases_the_volume() {
    let bed = Bed::start(&["v"]);
    let rt = runtime();
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    rt.block_on(bed.engine.stage("v", &st)).unwrap();
    rt.block_on(bed.engine.publish("v", &tg, false)).unwrap();
    // Something holds the volume's lock (a check, another call).
    let guard = rt.block_on(bed.engine.volume_lock("v").lock_owned());
    let engine = bed.engine.clone();
    let st2 = st.clone();
    let stage = rt.spawn(async move { tokio::time::timeout(Duration::from_millis(400), engine.stage("v", &st2)).await });
    std::thread::sleep(Duration::from_millis(100)); // its Mount queues for the lock
    // Another holder queues behind that Mount (fair lock) and holds it past the deadline.
    let lock = bed.engine.volume_lock("v");
    let blocker = rt.spawn(async move {
        let g = lock.lock_owned().await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        drop(g);
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(guard);
    assert!(rt.block_on(stage).unwrap().is_err(), "the client went away before the bind");
    rt.block_on(blocker).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let refs = bed.engine.inner.mounted.lock().unwrap().get("v").unwrap().refs.clone();
    eprintln!("refs after the abandoned stage: {refs:?}");
    // Swarm drains the volume: NodeUnpublish, no NodeUnstage.
    let u = rt.block_on(bed.engine.unpublish("v", &tg)).unwrap();
    eprintln!("unpublish said {u:?}; refs now {:?}", bed.engine.references("v"));
    bed.assert_nothing_left("v");
}

/// NodeUnpublish(volume B, target of volume A): A's bind stays.
#[test]
fn an_unpublish_naming_another_volumes_target_leaves_that_bind_alone() {
    let bed = Bed::start(&["a", "b"]);
    let rt = runtime();
    let (sa, ta) = (staging(&bed, "sa"), target(&bed, "ta"));
    rt.block_on(bed.engine.stage("a", &sa)).unwrap();
    rt.block_on(bed.engine.publish("a", &ta, false)).unwrap();
    bed.clear_journal();
    let u = rt.block_on(bed.engine.unpublish("b", &ta)).unwrap();
    assert_eq!(u, Unpublished::NotPublished);
    assert!(bed.mounts.targets().contains(&ta), "a's publish target was unmounted by an unpublish of b: {:?}", bed.journal());
}

/// A foreign mount at a publish path (not made by rbdvol) stays.
#[test]
fn an_unpublish_leaves_a_mount_rbdvol_never_made_alone() {
    let bed = Bed::start(&["v"]);
    let rt = runtime();
    let tg = target(&bed, "x");
    bed.mounts.add(Path::new("/dev/other"), &tg);
    let u = rt.block_on(bed.engine.unpublish("v", &tg)).unwrap();
    assert_eq!(u, Unpublished::NotPublished);
    assert!(bed.mounts.targets().contains(&tg), "a foreign mount was unmounted: {:?}", bed.journal());
}

/// Host b took volume `name` over and fenced this host (its lock and the
/// fence record, as the periodic check finds them).
fn taken_over_by_host_b(bed: &Bed, name: &str) {
    bed.store.set_lockers(name, vec![("client.9".into(), "host-b".into())]);
    bed.store.set_metadata(name, crate::engine::records::FENCED_KEY, Some(&fenced_entry(HOST, "127.0.0.1:0/1000")));
}

fn fenced_entry(host: &str, client: &str) -> String {
    crate::engine::records::Fenced::list_json(&[crate::engine::records::Fenced { host: host.into(), clients: vec![client.into()], since: "t".into() }])
}

/// Taken over (fenced) while staged and published: the engine forgets the
/// volume and detaches its binds with its mount (the review found the
/// staging bind left on the dead filesystem).
#[test]
fn a_volume_taken_over_while_staged_and_published_has_its_binds_detached() {
    let bed = Bed::start(&["v"]);
    let rt = runtime();
    let (st, tg) = (staging(&bed, "s1"), target(&bed, "s1"));
    rt.block_on(bed.engine.stage("v", &st)).unwrap();
    rt.block_on(bed.engine.publish("v", &tg, false)).unwrap();
    taken_over_by_host_b(&bed, "v");
    rt.block_on(bed.engine.check_all_mounted());
    assert_eq!(rt.block_on(bed.engine.path("v")).unwrap(), None, "released");
    let u = rt.block_on(bed.engine.unpublish("v", &tg)).unwrap();
    eprintln!("unpublish: {u:?}; mounts left: {:?}", bed.mounts.targets());
    assert!(bed.mounts.targets().is_empty(), "binds left after the volume was taken over and unpublished: {:?}", bed.mounts.targets());
}
