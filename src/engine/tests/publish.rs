//! Swarm's cluster volumes (CSI) on the fake tier: stage, publish and
//! their undoing, with the binds undone before the mapping goes.

use std::path::{Path, PathBuf};

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
fn a_bind_that_fails_leaves_the_reference_for_swarm_to_retry_and_the_last_unpublish_cleans_up() {
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
}
