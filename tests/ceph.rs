//! The safe Ceph layer against a real throwaway cluster.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster, DATA_POOL, POOL};
use rbdvol::ceph::{
    self, features, CephError, Cluster, CreateOptions, Done, Grow, LockMode, Pool,
};
use rbdvol::config::Secret;

const MIB: u64 = 1 << 20;

fn pool() -> Pool {
    TestCluster::shared().connect().open_pool(POOL, "").expect("open the test pool")
}

fn create(pool: &Pool, size: u64) -> String {
    let name = unique("img");
    pool.create_image(&name, size, &CreateOptions::default()).expect("create image");
    name
}

/// What the `rbd` tool (an independent client) says about an image.
fn rbd_info(name: &str) -> serde_json::Value {
    let out = TestCluster::shared().cli("rbd", &["info", "--format", "json", &format!("{POOL}/{name}")]);
    assert!(out.status.success(), "rbd info {name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn connects_and_knows_its_identity() {
    let cluster = TestCluster::shared().connect();
    assert_eq!(cluster.fsid().unwrap().len(), 36);
    assert!(cluster.instance_id() > 0);
    let addr = cluster.own_address().unwrap();
    assert!(addr.contains("127.0.0.1"), "{addr}");
    assert_eq!(ceph::librbd_version().0, 1);
}

#[test]
fn create_with_options_is_what_rbd_info_reports() {
    let pool = pool();
    let name = unique("opts");
    let opts = CreateOptions {
        features: Some(features::LAYERING | features::EXCLUSIVE_LOCK),
        order: Some(ceph::order_from_object_size(8 * MIB).unwrap()),
        ..Default::default()
    };
    pool.create_image(&name, 206 * MIB, &opts).unwrap();
    let image = pool.open_image_read_only(&name).unwrap();
    let info = image.stat().unwrap();
    assert_eq!(info.size, 206 * MIB);
    assert_eq!(info.order, 23);
    assert_eq!(info.object_size, 8 * MIB);
    assert_eq!(image.size().unwrap(), 206 * MIB);
    assert_eq!(image.features().unwrap(), features::LAYERING | features::EXCLUSIVE_LOCK);
    let id = image.id().unwrap();
    assert!(!id.is_empty());

    let rbd = rbd_info(&name);
    assert_eq!(rbd["size"], 206 * MIB);
    assert_eq!(rbd["order"], 23);
    assert_eq!(rbd["id"], id.as_str());
    assert_eq!(rbd["features"], serde_json::json!(["layering", "exclusive-lock"]));
}

#[test]
fn create_with_data_pool_and_striping() {
    let pool = pool();
    let name = unique("striped");
    let opts = CreateOptions {
        features: Some(ceph::features_from_str("layering").unwrap()),
        data_pool: Some(DATA_POOL.into()),
        stripe_unit: Some(64 * 1024),
        stripe_count: Some(4),
        ..Default::default()
    };
    pool.create_image(&name, 64 * MIB, &opts).unwrap();
    let image = pool.open_image_read_only(&name).unwrap();
    let f = image.features().unwrap();
    assert_ne!(f & features::DATA_POOL, 0, "{}", ceph::features_to_string(f));
    assert_ne!(f & features::STRIPINGV2, 0, "{}", ceph::features_to_string(f));
    let rbd = rbd_info(&name);
    assert_eq!(rbd["data_pool"], DATA_POOL);
    assert_eq!(rbd["stripe_unit"], 64 * 1024);
    assert_eq!(rbd["stripe_count"], 4);
}

#[test]
fn creating_an_existing_image_is_eexist() {
    let pool = pool();
    let name = create(&pool, 16 * MIB);
    let e = pool.create_image(&name, 32 * MIB, &CreateOptions::default()).unwrap_err();
    assert!(matches!(e, CephError::AlreadyExists { .. }), "{e:?}");
    assert_eq!(e.errno(), Some(libc::EEXIST));
    assert!(e.to_string().contains(&name), "{e}");
    // And the existing image is untouched.
    assert_eq!(pool.open_image_read_only(&name).unwrap().size().unwrap(), 16 * MIB);
}

#[test]
fn missing_pool_is_named() {
    let cluster = TestCluster::shared().connect();
    let e = cluster.open_pool("ssd-missing", "").unwrap_err();
    assert!(matches!(e, CephError::PoolNotFound { .. }), "{e:?}");
    assert!(e.to_string().starts_with("pool 'ssd-missing' does not exist"), "{e}");

    let name = unique("nodata");
    let opts = CreateOptions { data_pool: Some("ec-missing".into()), ..Default::default() };
    let e = pool().create_image(&name, 16 * MIB, &opts).unwrap_err();
    assert!(e.to_string().contains("ec-missing"), "{e}");
    let e = pool().open_image_read_only(&name).unwrap_err();
    assert!(matches!(e, CephError::NotFound { .. }), "nothing was created: {e:?}");
}

#[test]
fn missing_image_is_named() {
    let e = pool().open_image("no-such-image").unwrap_err();
    assert!(matches!(e, CephError::NotFound { .. }), "{e:?}");
    assert_eq!(e.to_string(), "image 'rbd/no-such-image' does not exist");
    let e = pool().remove_image("no-such-image").unwrap_err();
    assert!(matches!(e, CephError::NotFound { .. }), "{e:?}");
}

#[test]
fn names_with_nul_bytes_are_refused() {
    let e = pool().create_image("bad\0name", MIB, &CreateOptions::default()).unwrap_err();
    assert!(matches!(e, CephError::InvalidArgument { .. }), "{e:?}");
}

#[test]
fn list_finds_every_image_past_the_first_buffer() {
    let cluster = TestCluster::shared().connect();
    let ns = unique("ns-list");
    let out = TestCluster::shared().cli("rbd", &["namespace", "create", &format!("{POOL}/{ns}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = cluster.open_pool(POOL, &ns).unwrap();
    // More than the first buffer holds, so the -ERANGE loop runs.
    let mut names: Vec<String> = (0..20).map(|i| format!("list-{i:02}")).collect();
    for n in &names {
        pool.create_image(n, MIB, &CreateOptions::default()).unwrap();
    }
    let mut listed: Vec<String> = pool.list_images().unwrap().into_iter().map(|s| s.name).collect();
    listed.sort();
    names.sort();
    assert_eq!(listed, names);
    // The default namespace does not see them.
    let default: Vec<String> = cluster.open_pool(POOL, "").unwrap().list_images().unwrap().into_iter().map(|s| s.name).collect();
    assert!(!default.contains(&names[0]));
}

#[test]
fn grow_reports_progress_and_refuses_to_shrink() {
    let pool = pool();
    let name = create(&pool, 64 * MIB);
    let image = pool.open_image(&name).unwrap();
    let calls = AtomicU64::new(0);
    let seen_total = Mutex::new(0u64);
    let progress = |_done: u64, total: u64| {
        calls.fetch_add(1, Ordering::SeqCst);
        *seen_total.lock().unwrap() = total;
    };
    let grown = image.grow(256 * MIB, &progress).unwrap();
    assert_eq!(grown, Grow::Grown { from: 64 * MIB, to: 256 * MIB });
    assert_eq!(image.size().unwrap(), 256 * MIB);
    assert_eq!(rbd_info(&name)["size"], 256 * MIB);
    assert_eq!(image.grow(256 * MIB, &|_, _| {}).unwrap(), Grow::AlreadyThatSize(256 * MIB));

    let e = image.grow(128 * MIB, &|_, _| {}).unwrap_err();
    assert!(matches!(e, CephError::Shrink { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot shrink"), "{e}");
    assert_eq!(image.size().unwrap(), 256 * MIB);
    // librbd reports progress only while trimming objects, which a grow
    // never does; when it does call, it reports a total.
    if calls.load(Ordering::SeqCst) > 0 {
        assert!(*seen_total.lock().unwrap() > 0);
    }
}

#[test]
fn remove_and_the_image_is_gone() {
    let pool = pool();
    let name = create(&pool, 16 * MIB);
    pool.remove_image(&name).unwrap();
    assert!(matches!(pool.open_image_read_only(&name), Err(CephError::NotFound { .. })));
    let out = TestCluster::shared().cli("rbd", &["info", &format!("{POOL}/{name}")]);
    assert!(!out.status.success(), "rbd still sees {name}");
}

#[test]
fn remove_while_another_client_watches_is_in_use() {
    let pool = pool();
    let name = create(&pool, 16 * MIB);
    let other = TestCluster::shared().connect().open_pool(POOL, "").unwrap();
    let held = other.open_image(&name).unwrap();

    let e = pool.remove_image(&name).unwrap_err();
    assert!(matches!(e, CephError::InUse { watchers: 1, .. }), "{e:?}");
    assert_eq!(e.errno(), Some(libc::EBUSY));
    assert!(e.to_string().contains("has 1 watcher: it is in use"), "{e}");
    let e = pool.trash_move(&name, Duration::ZERO).unwrap_err();
    assert!(matches!(e, CephError::InUse { .. }), "{e:?}");
    assert!(pool.open_image_read_only(&name).is_ok(), "a refused remove leaves the image");

    drop(held);
    pool.remove_image(&name).unwrap();
}

#[test]
fn trash_move_list_and_remove() {
    let pool = pool();
    let name = create(&pool, 16 * MIB);
    let id = pool.trash_move(&name, Duration::ZERO).unwrap();
    assert!(matches!(pool.open_image_read_only(&name), Err(CephError::NotFound { .. })));
    let trash = pool.trash_list().unwrap();
    assert!(trash.iter().any(|s| s.id == id && s.name == name), "{trash:?}");
    pool.trash_remove(&id, false).unwrap();
    assert!(!pool.trash_list().unwrap().iter().any(|s| s.id == id));
}

#[test]
fn metadata_set_get_list_remove() {
    let pool = pool();
    let name = create(&pool, 16 * MIB);
    let image = pool.open_image(&name).unwrap();
    assert_eq!(image.metadata_get("rbdvol.fstype").unwrap(), None);
    image.metadata_set("rbdvol.fstype", "ext4").unwrap();
    image.metadata_set("rbdvol.empty", "").unwrap();
    // Larger than the first buffers, so the -ERANGE loops run.
    let big = "x".repeat(10_000);
    image.metadata_set("rbdvol.big", &big).unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..60 {
        let (k, v) = (format!("rbdvol.key-with-a-longish-name-{i:02}"), format!("value-{i}"));
        image.metadata_set(&k, &v).unwrap();
        expected.insert(k, v);
    }
    assert_eq!(image.metadata_get("rbdvol.fstype").unwrap().as_deref(), Some("ext4"));
    assert_eq!(image.metadata_get("rbdvol.big").unwrap().as_deref(), Some(big.as_str()));
    expected.insert("rbdvol.fstype".into(), "ext4".into());
    expected.insert("rbdvol.empty".into(), String::new());
    expected.insert("rbdvol.big".into(), big.clone());
    assert_eq!(image.metadata_list().unwrap(), expected);

    // Seen by an independent client.
    let out = TestCluster::shared().cli("rbd", &["image-meta", "get", &format!("{POOL}/{name}"), "rbdvol.fstype"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ext4");

    assert_eq!(image.metadata_remove("rbdvol.fstype").unwrap(), Done::Changed);
    assert_eq!(image.metadata_remove("rbdvol.fstype").unwrap(), Done::AlreadyDone);
    assert_eq!(image.metadata_get("rbdvol.fstype").unwrap(), None);
}

#[test]
fn watchers_are_read_write_opens() {
    let pool = pool();
    let name = create(&pool, 16 * MIB);
    let probe = pool.open_image_read_only(&name).unwrap();
    assert!(probe.watchers().unwrap().is_empty(), "a read-only open does not watch");

    let other = TestCluster::shared().connect();
    let other_addr = other.own_address().unwrap();
    let held = other.open_pool(POOL, "").unwrap().open_image(&name).unwrap();
    let watchers = probe.watchers().unwrap();
    assert_eq!(watchers.len(), 1, "{watchers:?}");
    assert_eq!(watchers[0].id as u64, other.instance_id());
    assert!(other_addr.contains(&watchers[0].addr) || watchers[0].addr.contains(other_addr.trim_matches(['[', ']'])),
        "watcher {} vs own address {other_addr}", watchers[0].addr);
    drop(held);
    assert!(probe.watchers().unwrap().is_empty());
}

#[test]
fn advisory_exclusive_lock_is_held_against_other_clients() {
    let name = create(&pool(), 16 * MIB);
    let a = TestCluster::shared().connect();
    let b = TestCluster::shared().connect();
    let img_a = a.open_pool(POOL, "").unwrap().open_image(&name).unwrap();
    let img_b = b.open_pool(POOL, "").unwrap().open_image(&name).unwrap();

    assert_eq!(img_a.lock_exclusive("host-a").unwrap(), Done::Changed);
    assert_eq!(img_a.lock_exclusive("host-a").unwrap(), Done::AlreadyDone);
    let e = img_b.lock_exclusive("host-b").unwrap_err();
    assert!(matches!(e, CephError::LockBusy { .. }), "{e:?}");
    assert_eq!(e.errno(), Some(libc::EBUSY));

    let lockers = img_b.lockers().unwrap();
    assert!(lockers.exclusive);
    assert_eq!(lockers.lockers.len(), 1);
    assert_eq!(lockers.lockers[0].client, format!("client.{}", a.instance_id()));
    assert_eq!(lockers.lockers[0].cookie, "host-a");

    // rbd lock ls, an independent client, agrees.
    let out = TestCluster::shared().cli("rbd", &["lock", "ls", "--format", "json", &format!("{POOL}/{name}")]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["id"], "host-a", "{json}");

    // Takeover: break the other's lock (librbd fences the holder), then take it.
    let l = &lockers.lockers[0];
    assert_eq!(img_b.break_lock(&l.client, &l.cookie).unwrap(), Done::Changed);
    assert_eq!(img_b.break_lock(&l.client, &l.cookie).unwrap(), Done::AlreadyDone);
    assert_eq!(img_b.lock_exclusive("host-b").unwrap(), Done::Changed);
    let e = img_a.write_at(0, b"stale").unwrap_err();
    assert!(matches!(e, CephError::Blocklisted { .. }), "the old holder is fenced: {e:?}");
    assert_eq!(img_b.unlock("host-b").unwrap(), Done::Changed);
    assert_eq!(img_b.unlock("host-b").unwrap(), Done::AlreadyDone);
    assert!(img_b.lockers().unwrap().lockers.is_empty());
    b.blocklist_remove(&a.own_address().unwrap()).unwrap();
}

#[test]
fn header_metadata_and_host_lock_without_opening_the_image() {
    let pool = pool();
    let name = create(&pool, 16 * MIB);
    let id = pool.image_id(&name).unwrap();
    assert_eq!(rbd_info(&name)["id"], id.as_str());
    let header = pool.header(&name, &id).unwrap();

    // The size, fresh from the header: a grow through another client shows.
    assert_eq!(header.size().unwrap(), 16 * MIB);
    TestCluster::shared().connect().open_pool(POOL, "").unwrap().open_image(&name).unwrap().grow(24 * MIB, &|_, _| {}).unwrap();
    assert_eq!(header.size().unwrap(), 24 * MIB);

    // Metadata written through the header is what librbd and `rbd` read.
    header.metadata_set("rbdvol.test", "{\"a\": 1}").unwrap();
    let image = pool.open_image(&name).unwrap();
    assert_eq!(image.metadata_get("rbdvol.test").unwrap().as_deref(), Some("{\"a\": 1}"));
    let out = TestCluster::shared().cli("rbd", &["image-meta", "get", &format!("{POOL}/{name}"), "rbdvol.test"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{\"a\": 1}");
    assert_eq!(header.metadata_get("rbdvol.test").unwrap().as_deref(), Some("{\"a\": 1}"));
    header.metadata_remove("rbdvol.test").unwrap();
    header.metadata_remove("rbdvol.test").unwrap();
    assert_eq!(header.metadata_get("rbdvol.test").unwrap(), None);
    assert_eq!(image.metadata_get("rbdvol.test").unwrap(), None);

    // The host lock is one holder at a time across clients.
    let other = TestCluster::shared().connect().open_pool(POOL, "").unwrap().header(&name, &id).unwrap();
    assert_eq!(header.host_lock("host-a", "rbdvol on host-a").unwrap(), Done::Changed);
    assert_eq!(header.host_lock("host-a", "rbdvol on host-a").unwrap(), Done::AlreadyDone);
    assert!(matches!(other.host_lock("host-b", "rbdvol on host-b"), Err(CephError::LockBusy { .. })));
    let lockers = other.host_lockers().unwrap();
    assert_eq!(lockers.lockers.len(), 1);
    assert_eq!(lockers.lockers[0].cookie, "host-a");
    assert_eq!(image.header().unwrap().host_lockers().unwrap(), lockers);
    assert_eq!(header.host_unlock("host-a").unwrap(), Done::Changed);
    assert_eq!(header.host_unlock("host-a").unwrap(), Done::AlreadyDone);
    assert_eq!(other.host_lock("host-b", "rbdvol on host-b").unwrap(), Done::Changed);
    let l = &other.host_lockers().unwrap().lockers[0];
    assert_eq!(header.host_break_lock(&l.client, &l.cookie).unwrap(), Done::Changed);
    assert!(header.host_lockers().unwrap().lockers.is_empty());

    // A missing image is named.
    let e = pool.image_id("no-such-image").unwrap_err();
    assert!(matches!(e, CephError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-image"), "{e}");
}

#[test]
fn record_and_host_lock_go_together_only_from_the_client_that_holds_the_lock() {
    let pool = pool();
    let name = create(&pool, 16 * MIB);
    let id = pool.image_id(&name).unwrap();
    let header = pool.header(&name, &id).unwrap();
    // Another client with the same cookie: a previous run of this host.
    let other = TestCluster::shared().connect().open_pool(POOL, "").unwrap().header(&name, &id).unwrap();
    let locked_by = |h: &ceph::Header| h.host_lockers().unwrap().lockers.into_iter().map(|l| l.cookie).collect::<Vec<_>>();

    other.host_lock("host-a", "rbdvol on host-a").unwrap();
    header.metadata_set("rbdvol.mounted", "{}").unwrap();
    assert_eq!(header.remove_and_unlock("rbdvol.mounted", "host-a").unwrap(), Done::AlreadyDone, "another client's lock");
    assert_eq!(locked_by(&header), ["host-a"], "another client's lock was released");
    assert!(header.metadata_get("rbdvol.mounted").unwrap().is_some(), "the record went without the lock");
    assert_eq!(other.host_unlock("host-a").unwrap(), Done::Changed);

    header.host_lock("host-a", "rbdvol on host-a").unwrap();
    assert_eq!(header.remove_and_unlock("rbdvol.mounted", "host-b").unwrap(), Done::AlreadyDone, "another cookie");
    assert_eq!(locked_by(&header), ["host-a"], "released under another cookie");
    assert!(header.metadata_get("rbdvol.mounted").unwrap().is_some(), "the record went under another cookie");

    // A record already gone is no reason to keep the lock.
    header.metadata_remove("rbdvol.mounted").unwrap();
    assert_eq!(header.remove_and_unlock("rbdvol.mounted", "host-a").unwrap(), Done::Changed, "no record");
    assert!(locked_by(&header).is_empty());

    header.host_lock("host-a", "rbdvol on host-a").unwrap();
    header.metadata_set("rbdvol.mounted", "{}").unwrap();
    assert_eq!(header.remove_and_unlock("rbdvol.mounted", "host-a").unwrap(), Done::Changed);
    assert!(locked_by(&header).is_empty());
    // As an independent client sees it.
    let out = TestCluster::shared().cli("rbd", &["image-meta", "list", "--format", "json", &format!("{POOL}/{name}")]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("rbdvol.mounted"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = TestCluster::shared().cli("rados", &["-p", POOL, "lock", "info", &format!("rbd_header.{id}"), "rbdvol"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("rados lock info: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(info["lockers"], serde_json::json!([]), "{info}");
    assert_eq!(header.remove_and_unlock("rbdvol.mounted", "host-a").unwrap(), Done::AlreadyDone, "done twice");
}

#[test]
fn advisory_shared_locks() {
    let name = create(&pool(), 16 * MIB);
    let a = TestCluster::shared().connect().open_pool(POOL, "").unwrap().open_image(&name).unwrap();
    let b = TestCluster::shared().connect().open_pool(POOL, "").unwrap().open_image(&name).unwrap();
    a.lock_shared("a", "readers").unwrap();
    b.lock_shared("b", "readers").unwrap();
    let lockers = a.lockers().unwrap();
    assert!(!lockers.exclusive);
    assert_eq!(lockers.tag, "readers");
    assert_eq!(lockers.lockers.len(), 2);
    assert!(matches!(a.lock_exclusive("x"), Err(CephError::LockBusy { .. })));
    a.unlock("a").unwrap();
    b.unlock("b").unwrap();
}

#[test]
fn managed_lock_owners_and_break_fences_the_owner() {
    let pool = pool();
    let name = unique("managed");
    let opts = CreateOptions { features: Some(features::LAYERING | features::EXCLUSIVE_LOCK), ..Default::default() };
    pool.create_image(&name, 16 * MIB, &opts).unwrap();

    let owner_cluster = TestCluster::shared().connect();
    let owner = owner_cluster.open_pool(POOL, "").unwrap().open_image(&name).unwrap();
    owner.managed_lock_acquire(LockMode::Exclusive).unwrap();
    owner.write_at(0, b"owned").unwrap();

    let other = pool.open_image(&name).unwrap();
    let (mode, owners) = other.managed_lock_owners().unwrap();
    assert_eq!(mode, Some(LockMode::Exclusive));
    assert_eq!(owners.len(), 1, "{owners:?}");

    other.managed_lock_break(LockMode::Exclusive, &owners[0]).unwrap();
    // librbd blocklisted the old owner: its writes are fenced off.
    let e = owner.write_at(0, b"stale").unwrap_err();
    assert!(matches!(e, CephError::Blocklisted { .. }), "{e:?}");
    let mut buf = [0u8; 5];
    other.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"owned");
    let addr = owner_cluster.own_address().unwrap();
    TestCluster::shared().connect().blocklist_remove(&addr).unwrap();
}

#[test]
fn blocklist_fences_a_client_until_removed() {
    let admin = TestCluster::shared().connect();
    let pool = pool();
    let name = create(&pool, 16 * MIB);

    let victim = TestCluster::shared().connect();
    let image = victim.open_pool(POOL, "").unwrap().open_image(&name).unwrap();
    image.write_at(0, b"before").unwrap();
    let addr = victim.own_address().unwrap();

    admin.blocklist_add(&addr, Duration::from_secs(600)).unwrap();
    admin.blocklist_add(&addr, Duration::from_secs(600)).unwrap();
    let listed = admin.blocklist().unwrap();
    assert!(listed.iter().any(|a| addr.contains(a.as_str()) || a.contains(addr.as_str())), "{addr} not in {listed:?}");
    let e = image.write_at(0, b"after!").unwrap_err();
    assert!(matches!(e, CephError::Blocklisted { .. }), "{e:?}");
    assert!(e.to_string().contains("blocklisted"), "{e}");

    admin.blocklist_remove(&addr).unwrap();
    admin.blocklist_remove(&addr).unwrap();
    assert!(!admin.blocklist().unwrap().iter().any(|a| addr.contains(a.as_str())));
    let mut buf = [0u8; 6];
    pool.open_image_read_only(&name).unwrap().read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"before");
}

#[test]
fn wrong_key_is_a_clean_auth_error_within_the_timeout() {
    let tc = TestCluster::shared();
    let mut settings = tc.admin_settings();
    // A well-formed key that is not client.admin's.
    settings.key = Secret::new("AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==");
    settings.timeouts.connect = Duration::from_secs(5);
    let start = Instant::now();
    let e = Cluster::connect(&settings).unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < 3 * settings.timeouts.connect, "took {elapsed:?}");
    assert!(matches!(e, CephError::Auth { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("client.admin") && msg.contains("key"), "{msg}");
    assert!(!msg.contains("AQBXhS1k"), "the key leaked into the error: {msg}");
}

#[test]
fn malformed_key_is_refused_without_leaking_it() {
    let mut settings = TestCluster::shared().admin_settings();
    settings.key = Secret::new("not base64 at all!");
    settings.timeouts.connect = Duration::from_secs(5);
    let e = Cluster::connect(&settings).unwrap_err();
    assert!(!e.to_string().contains("not base64"), "{e}");
    assert!(e.to_string().contains("client.admin"), "{e}");
}

#[test]
fn unreachable_monitor_fails_within_the_timeout() {
    let mut settings = TestCluster::shared().admin_settings();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    settings.mon_host = format!("127.0.0.1:{port}");
    settings.timeouts.connect = Duration::from_secs(3);
    let start = Instant::now();
    let e = Cluster::connect(&settings).unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < 3 * settings.timeouts.connect, "took {elapsed:?}");
    assert!(matches!(e, CephError::TimedOut { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn unknown_ceph_option_is_named() {
    let mut settings = TestCluster::shared().admin_settings();
    settings.options.insert("no_such_option".into(), "1".into());
    let e = Cluster::connect(&settings).unwrap_err();
    assert!(matches!(e, CephError::BadOption { .. }), "{e:?}");
    assert!(e.to_string().contains("no_such_option"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_go_through_offload() {
    let settings = TestCluster::shared().admin_settings();
    let names = ceph::offload(move || {
        let pool = Cluster::connect(&settings)?.open_pool(POOL, "")?;
        let name = unique("async");
        pool.create_image(&name, MIB, &CreateOptions::default())?;
        let listed = pool.list_images()?.into_iter().any(|s| s.name == name);
        pool.remove_image(&name)?;
        Ok::<_, CephError>(listed)
    })
    .await
    .unwrap();
    assert!(names);
}

#[tokio::test]
#[should_panic(expected = "on an async executor thread")]
async fn blocking_call_on_the_executor_is_caught() {
    let _ = Cluster::connect(&TestCluster::shared().admin_settings());
}

#[test]
fn private_cluster_is_torn_down_when_a_test_panics() {
    let (dir, pids) = std::thread::spawn(|| {
        let tc = TestCluster::start();
        let pids = tc.daemon_pids();
        let dir = tc.dir.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _owned = tc;
            panic!("a failing test");
        }));
        assert!(result.is_err());
        (dir, pids)
    })
    .join()
    .unwrap();
    assert_eq!(pids.len(), 3, "mon, mgr and osd were running: {pids:?}");
    for pid in pids {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie_or_gone = state.is_empty() || state.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z'));
        assert!(zombie_or_gone, "daemon {pid} survived the teardown: {state}");
    }
    assert!(!dir.exists(), "{} survived the teardown", dir.display());
}
