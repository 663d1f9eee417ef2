//! rbdvol with a real dockerd: `docker volume create -d`, containers writing
//! and reading, `docker volume rm`, checked against Ceph independently.

mod common;

use common::cluster::{unique, TestCluster};
use common::docker::{docker, docker_ok, DockerPlugin, IMAGE};

#[test]
fn docker_volumes_end_to_end() {
    let cluster = TestCluster::shared();
    let d = DockerPlugin::start(cluster);
    let label = format!("rbdvol-test={}", d.driver);
    let v = unique("dv");

    let out = d.create_volume(&v, &["size=128M"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = cluster.rbd_info(&v).expect("the image exists in ceph");
    assert_eq!(info["size"], 128u64 << 20);

    // A container writes; a second one reads it back.
    let mount = format!("{v}:/data");
    docker_ok(&["run", "--rm", "--label", &label, "-v", &mount, IMAGE, "sh", "-c", "echo written-in-a-container > /data/f && sync"]);
    let read = docker_ok(&["run", "--rm", "--label", &label, "-v", &mount, IMAGE, "cat", "/data/f"]);
    assert_eq!(read, "written-in-a-container");

    // Two containers at once share the mount; it goes away after both.
    let first = docker_ok(&["run", "-d", "--label", &label, "-v", &mount, IMAGE, "sleep", "300"]);
    let second = docker_ok(&["run", "--rm", "--label", &label, "-v", &mount, IMAGE, "sh", "-c", "cat /data/f && echo second > /data/g && sync"]);
    assert_eq!(second, "written-in-a-container");
    let inspect: serde_json::Value = serde_json::from_str(&docker_ok(&["volume", "inspect", &v])).unwrap();
    let status = &inspect[0]["Status"];
    assert_eq!(status["containers"], 1, "{inspect}");
    assert_eq!(status["pool"], "rbd");
    assert_eq!(status["mapper"], "userspace");
    assert_eq!(inspect[0]["Scope"], "global");
    let key = cluster.admin_settings().key.expose().to_string();
    assert!(!inspect.to_string().contains(&key), "the key is in docker volume inspect");
    docker_ok(&["rm", "-f", &first]);
    assert!(d.plugin.leftovers().is_empty(), "{:?}", d.plugin.leftovers());

    let listed = docker_ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert!(listed.lines().any(|l| l == format!("{} {v}", d.driver)), "{listed}");

    // What the containers wrote is in Ceph, read by a path outside rbdvol.
    let files = cluster.read_files_from_image(&v, &["/f", "/g"]);
    assert_eq!(files, ["written-in-a-container\n", "second\n"]);

    docker_ok(&["volume", "rm", &v]);
    assert!(cluster.image_deleted(&v), "docker volume rm left the image in ceph");
    assert!(!docker(&["volume", "inspect", &v]).status.success());
}

#[test]
fn docker_shows_errors_a_user_can_act_on() {
    let cluster = TestCluster::shared();
    let d = DockerPlugin::start(cluster);
    let v = unique("dverr");
    let out = d.create_volume(&v, &["size=lots"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'lots' for option 'size'"), "{err}");
    let out = d.create_volume(&v, &["colour=blue"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown option 'colour'"), "{err}");
    // A map option that would change whose credentials map the image.
    let out = d.create_volume(&v, &["map_options=krbd:queue_depth=256,secret=AQBX;nbd:io-timeout=60"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("krbd option 'secret' is not allowed (allowed: queue_depth"), "{err}");
    assert!(!err.contains("AQBX"), "the refused value (a key, maybe) is echoed: {err}");
    let out = d.create_volume(&v, &["unmap_options=nbd:force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nbd option 'force' is not allowed (allowed: none)"), "{err}");
    assert!(cluster.image_deleted(&v));
}

/// `-o map_options` and `-o unmap_options` through dockerd: kept in the
/// volume's metadata as given, for whichever kernel mapper mounts it (this
/// host's user-space mapper takes none, and mounts it all the same).
#[test]
fn map_and_unmap_options_pass_through_docker_into_the_volumes_metadata() {
    let cluster = TestCluster::shared();
    let d = DockerPlugin::start(cluster);
    let v = unique("dvmap");
    let map = "krbd:queue_depth=256,alloc_size=65536;nbd:io-timeout=60,reattach-timeout=120";
    let out = d.create_volume(&v, &["size=64", &format!("map_options={map}"), "unmap_options=krbd:force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cluster.cli("rbd", &["image-meta", "get", &format!("rbd/{v}"), "rbdvol.volume"]);
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(meta["map_options"], map, "{meta}");
    assert_eq!(meta["unmap_options"], "krbd:force", "{meta}");
    let read = docker_ok(&["run", "--rm", "-v", &format!("{v}:/data"), IMAGE, "sh", "-c", "echo mapped > /data/f && cat /data/f"]);
    assert_eq!(read, "mapped");
    docker_ok(&["volume", "rm", &v]);
}

/// An image made outside rbdvol, adopted read-only through dockerd: two
/// containers at once read what it held, neither can write, and
/// `docker volume rm` leaves the image (with its data) in Ceph.
#[test]
fn an_image_made_elsewhere_is_adopted_read_only_through_docker_and_left_in_place_by_volume_rm() {
    let cluster = TestCluster::shared();
    let d = DockerPlugin::start(cluster);
    let (image, v) = (unique("dvlegacy"), unique("dvadopt"));
    cluster.ext4_image_made_elsewhere(&image, 64, &[("hello.txt", "made elsewhere\n")]);
    let out = d.create_volume(&v, &[&format!("image={image}"), "readonly=true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inspect: serde_json::Value = serde_json::from_str(&docker_ok(&["volume", "inspect", &v])).unwrap();
    assert!(inspect[0]["Status"]["adopted"].is_string() && inspect[0]["Status"]["readonly"].is_string(), "{inspect}");
    let mount = format!("{v}:/data");
    let first = docker_ok(&["run", "-d", "-v", &mount, IMAGE, "sleep", "300"]);
    let read = docker_ok(&["run", "--rm", "-v", &mount, IMAGE, "cat", "/data/hello.txt"]);
    assert_eq!(read, "made elsewhere");
    let write = docker(&["run", "--rm", "-v", &mount, IMAGE, "sh", "-c", "echo x > /data/new"]);
    assert!(!write.status.success() && String::from_utf8_lossy(&write.stderr).contains("Read-only file system"), "{write:?}");
    docker_ok(&["rm", "-f", &first]);
    // A bad adoption is refused with its reason, and nothing is made.
    let out = d.create_volume(&unique("dvnone"), &["image=no-such-image"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot adopt image 'rbd/no-such-image': it does not exist"), "{out:?}");
    docker_ok(&["volume", "rm", &v]);
    assert!(!docker(&["volume", "inspect", &v]).status.success());
    assert!(cluster.rbd_info(&image).is_some(), "docker volume rm deleted the adopted image");
    assert_eq!(cluster.read_files_from_image(&image, &["hello.txt"]), ["made elsewhere\n"]);
    assert!(cluster.cli("rbd", &["rm", "--no-progress", &format!("rbd/{image}")]).status.success());
}
