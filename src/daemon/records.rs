//! The volume records in Consul, for operators: `<prefix>volumes/<name>`.

use std::collections::BTreeMap;

use crate::config::consul::{self, Consul, ConsulSettings};
use crate::engine::{Engine, EngineError, VolumeDriver, VolumeInfo};

/// Where the volume records live, under the prefix.
pub const RECORDS: &str = "volumes/";

/// Keeps `<prefix>volumes/<name>` in Consul for operators, like wetopi's
/// records: pool, image, size, fstype, the host that has it mounted, and,
/// from that host, device and mountpoint. Ceph is the source of truth: each
/// record is rewritten from a Get (check-and-set, so hosts never overwrite
/// each other blindly), and a record of a volume that does not exist is
/// deleted.
pub async fn keep_volume_records(
    engine: Engine,
    consul_settings: ConsulSettings,
    host_id: String,
    mut names: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let Ok(client) = Consul::new(consul_settings) else { return };
    // At start: every volume gets its record checked once.
    if let Ok(list) = engine.list().await {
        for v in list {
            let _ = sync_record(&engine, &client, &host_id, &v.name).await;
        }
    }
    while let Some(name) = names.recv().await {
        if let Err(e) = sync_record(&engine, &client, &host_id, &name).await {
            tracing::warn!("cannot update the consul record of volume '{name}': {e}");
        }
    }
}

/// Brings one volume's record in line with a Get: rewritten (check-and-set)
/// when it differs, deleted when the volume does not exist.
pub async fn sync_record(engine: &Engine, client: &Consul, host_id: &str, name: &str) -> Result<(), consul::ConsulError> {
    let key = format!("{RECORDS}{name}");
    let info = match engine.get(name).await {
        // An answer from memory (the cluster did not answer): not a fact to
        // write over another host's record.
        Ok(info) if info.status.contains_key("cluster") => {
            tracing::debug!("not updating the record of '{name}': the cluster does not answer");
            return Ok(());
        }
        Ok(info) => Some(info),
        Err(EngineError::NotFound(_) | EngineError::InvalidName { .. }) => None,
        Err(e) => {
            tracing::debug!("not updating the record of '{name}': {e}");
            return Ok(());
        }
    };
    for _ in 0..5 {
        let current = client.get(&key).await?;
        let Some(info) = &info else {
            if current.is_some() {
                client.delete(&key).await?;
            }
            return Ok(());
        };
        let record = volume_record(info, host_id, current.as_ref().map(|(v, _)| v.as_str()));
        if current.as_ref().is_some_and(|(v, _)| *v == record) {
            return Ok(());
        }
        if client.put_cas(&key, &record, current.map(|(_, i)| i).unwrap_or(0)).await? {
            return Ok(());
        }
    }
    tracing::warn!("the consul record of volume '{name}' keeps changing under us: left for the next change");
    Ok(())
}

/// A volume's record (JSON) from its Get, as this host (`host_id`) writes
/// it over the record now in Consul (`old`, if any). Device and mountpoint
/// are known only to the host that mounted it: this host's own when it has
/// it mounted, kept from the old record when that names the same mounting
/// host, else null.
pub fn volume_record(info: &VolumeInfo, host_id: &str, old: Option<&str>) -> String {
    let st = &info.status;
    let mounted_by = st.get("mounted_by").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let old: serde_json::Value = old.and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
    let (device, mountpoint) = if mounted_by == host_id {
        (st.get("device").cloned().unwrap_or_default(), info.mountpoint.as_ref().map(|m| m.display().to_string()).into())
    } else if !mounted_by.is_empty() && old["mounted_by"] == mounted_by.as_str() {
        (old["device"].clone(), old["mountpoint"].clone())
    } else {
        (serde_json::Value::Null, serde_json::Value::Null)
    };
    serde_json::json!({
        "pool": st.get("pool"),
        "image": st.get("image"),
        "size": st.get("size_bytes"),
        "fstype": st.get("fstype"),
        "mounted_by": mounted_by,
        "device": device,
        "mountpoint": mountpoint,
    })
    .to_string()
}

/// The volumes whose records differ between two reads of the prefix (`last`
/// `None`: the first read, every record), in the order they are checked: a
/// record changed in both reads is named once from each.
pub fn changed_records(last: Option<&BTreeMap<String, String>>, now: &BTreeMap<String, String>) -> Vec<String> {
    let records_of = |kv: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        kv.iter().filter_map(|(k, v)| Some((k.strip_prefix(RECORDS)?.to_string(), v.clone()))).collect()
    };
    let (before, now) = (last.map(records_of).unwrap_or_default(), records_of(now));
    before
        .keys()
        .chain(now.keys())
        .filter(|name| last.is_none() || before.get(*name) != now.get(*name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn info(status: Value, mountpoint: Option<&str>) -> VolumeInfo {
        VolumeInfo {
            name: "v".into(),
            mountpoint: mountpoint.map(Into::into),
            created_at: None,
            status: status.as_object().unwrap().clone(),
        }
    }

    fn parse(record: &str) -> Value {
        serde_json::from_str(record).unwrap()
    }

    fn status(mounted_by: &str) -> Value {
        json!({ "pool": "rbd", "image": "v", "size_bytes": 64 << 20, "fstype": "ext4", "mounted_by": mounted_by, "device": "/dev/rbd0" })
    }

    #[test]
    fn record_of_a_volume_mounted_here_has_its_device_and_mountpoint() {
        let r = parse(&volume_record(&info(status("me"), Some("/mnt/v")), "me", None));
        assert_eq!(
            r,
            json!({ "pool": "rbd", "image": "v", "size": 64 << 20, "fstype": "ext4", "mounted_by": "me", "device": "/dev/rbd0", "mountpoint": "/mnt/v" })
        );
    }

    #[test]
    fn record_of_a_volume_mounted_elsewhere_keeps_that_hosts_device_and_mountpoint() {
        let old = json!({ "mounted_by": "other", "device": "/dev/nbd3", "mountpoint": "/there/v" }).to_string();
        let r = parse(&volume_record(&info(status("other"), None), "me", Some(&old)));
        assert_eq!((r["mounted_by"].as_str(), r["device"].as_str(), r["mountpoint"].as_str()), (Some("other"), Some("/dev/nbd3"), Some("/there/v")));
    }

    #[test]
    fn record_drops_device_and_mountpoint_of_another_mounting_host() {
        let old = json!({ "mounted_by": "third", "device": "/dev/nbd3", "mountpoint": "/there/v" }).to_string();
        let r = parse(&volume_record(&info(status("other"), None), "me", Some(&old)));
        assert_eq!((r["device"].clone(), r["mountpoint"].clone()), (Value::Null, Value::Null));
        // Nor from a malformed old record.
        let r = parse(&volume_record(&info(status("other"), None), "me", Some("{not json")));
        assert_eq!((r["device"].clone(), r["mountpoint"].clone()), (Value::Null, Value::Null));
    }

    #[test]
    fn record_of_an_unmounted_volume_has_no_host_device_or_mountpoint() {
        let mut st = status("");
        st.as_object_mut().unwrap().remove("mounted_by");
        let old = json!({ "mounted_by": "", "device": "/dev/rbd0", "mountpoint": "/mnt/v" }).to_string();
        let r = parse(&volume_record(&info(st, None), "me", Some(&old)));
        assert_eq!((r["mounted_by"].as_str(), r["device"].clone(), r["mountpoint"].clone()), (Some(""), Value::Null, Value::Null));
        assert_eq!(r["size"], 64 << 20);
    }

    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn first_read_names_every_record_and_nothing_else() {
        let now = kv(&[("volumes/a", "1"), ("volumes/b", "2"), ("conf/global/mon_host", "m"), ("hosts/h", "")]);
        assert_eq!(changed_records(None, &now), ["a", "b"]);
    }

    #[test]
    fn later_reads_name_changed_added_and_removed_records() {
        let last = kv(&[("volumes/same", "1"), ("volumes/changed", "1"), ("volumes/gone", "1"), ("conf/x", "1")]);
        let now = kv(&[("volumes/same", "1"), ("volumes/changed", "2"), ("volumes/new", "1"), ("conf/x", "2")]);
        assert_eq!(changed_records(Some(&last), &now), ["changed", "gone", "changed", "new"]);
        assert!(changed_records(Some(&now), &now).is_empty());
    }
}
