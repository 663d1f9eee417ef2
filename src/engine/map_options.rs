//! `-o map_options=...` and `-o unmap_options=...`: options for the kernel
//! mappers, in ceph-csi's syntax — a list per mapper, `;` between lists,
//! `mapper:` before each, `,` between options (`krbd:queue_depth=256,
//! alloc_size=65536;nbd:io-timeout=60`; a list without a prefix is krbd's,
//! as in ceph-csi). Every option is checked against an allowlist per mapper
//! and its value against a rule of its own; anything that would change
//! whose credentials map the image, which image is mapped, read-only
//! versus read-write (the `readonly` option's business), the locking or the
//! client sharing that takeover and fencing rely on, or run a program or
//! read a file, is not on the lists.
//!
//! Where the options come from: the volume's own (`-o`, kept in its
//! metadata) and, for a mapper the volume has no list for, the host's
//! default (`RBDVOL_MAP_OPTIONS`, `RBDVOL_UNMAP_OPTIONS`). The defaults are
//! read at each Mount, so a change reaches the next mount of every volume
//! that does not say otherwise.

use super::records::{VolumeMeta, VOLUME_KEY};
use super::EngineError;
use crate::host::mapper::{MapOptions, MapperKind};

/// A value rule.
#[derive(Clone, Copy)]
enum Value {
    /// A flag: no value.
    Flag,
    /// An integer in a range.
    Int(u64, u64),
    /// A power of two in a range.
    Pow2(u64, u64),
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// One allowed option: its name, its value rule, and what it does.
struct Allowed {
    name: &'static str,
    value: Value,
}

const MS_MODES: &[&str] = &["legacy", "crc", "secure", "prefer-crc", "prefer-secure"];
const REPLICA_POLICIES: &[&str] = &["no", "balance", "localize"];

/// krbd's `rbd map -o` options (the kernel's rbd and libceph options).
/// Left out on purpose: `name`, `secret`, `key`, `fsid`, `ip`, `_pool_ns`
/// (credentials, which cluster, which image); `ro`, `read_only`, `rw`,
/// `read_write` (the volume's `readonly` option decides); `exclusive`,
/// `lock_on_read` (would keep the exclusive lock from a takeover's new
/// owner); `share`/`noshare` (every mapping has its own client, so fencing
/// one volume never stops another); `osd_request_timeout` (bounds a fenced
/// host's I/O); `nocrc`, `cephx_require_signatures`, `cephx_sign_messages`
/// (integrity and authentication); `crush_location` (the host's
/// `RBDVOL_CRUSH_LOCATION`).
const KRBD_MAP: &[Allowed] = &[
    Allowed { name: "queue_depth", value: Value::Int(1, 4096) },
    Allowed { name: "alloc_size", value: Value::Pow2(512, 32 << 20) },
    Allowed { name: "lock_timeout", value: Value::Int(1, 3600) },
    Allowed { name: "notrim", value: Value::Flag },
    Allowed { name: "compression_hint", value: Value::OneOf(&["none", "compressible", "incompressible"]) },
    Allowed { name: "read_from_replica", value: Value::OneOf(REPLICA_POLICIES) },
    Allowed { name: "ms_mode", value: Value::OneOf(MS_MODES) },
    Allowed { name: "rxbounce", value: Value::Flag },
    Allowed { name: "tcp_nodelay", value: Value::Flag },
    Allowed { name: "notcp_nodelay", value: Value::Flag },
    Allowed { name: "mount_timeout", value: Value::Int(1, 300) },
    // The kernel checks osd_request_timeout (the fencing bound) once per
    // keepalive period: never longer than its 5 s default.
    Allowed { name: "osdkeepalive", value: Value::Int(1, 5) },
    Allowed { name: "osd_idle_ttl", value: Value::Int(1, 3600) },
    Allowed { name: "abort_on_full", value: Value::Flag },
];

/// rbd-nbd's options, by rbd-nbd's own names (`timeout` is its older name
/// of `io-timeout`), plus `read_from_replica` and `ms_mode` as krbd spells
/// them (passed to its librbd as `rbd_read_from_replica_policy` and
/// `ms_client_mode`). Left out: `device`, `cookie` (which device: rbdvol's
/// own), `read-only`, `exclusive`, `encryption-format`,
/// `encryption-passphrase-file`, `quiesce`, `quiesce-hook` (a file to read,
/// a program to run), `nbds_max`, `max_part` (the module's parameters, for
/// every device of the host), any Ceph option (`--id`, `--keyfile`,
/// `-m`, ...). `try-netlink` is always on (rbdvol reattaches through it).
const NBD_MAP: &[Allowed] = &[
    Allowed { name: "io-timeout", value: Value::Int(5, 3600) },
    Allowed { name: "timeout", value: Value::Int(5, 3600) },
    Allowed { name: "reattach-timeout", value: Value::Int(10, 3600) },
    Allowed { name: "try-netlink", value: Value::Flag },
    Allowed { name: "read_from_replica", value: Value::OneOf(REPLICA_POLICIES) },
    Allowed { name: "ms_mode", value: Value::OneOf(&["crc", "secure", "prefer-crc", "prefer-secure"]) },
];

/// krbd's unmap option: `force` fails the device's outstanding I/O and
/// removes it even while open. The filesystem is unmounted (its data
/// flushed) before any unmap, so it only ever hits another opener of the
/// raw device (a backup job's `dd`), which a plain unmap would wait for.
const KRBD_UNMAP: &[Allowed] = &[Allowed { name: "force", value: Value::Flag }];

/// rbd-nbd 16.2's `unmap` takes no options.
const NBD_UNMAP: &[Allowed] = &[];

/// Validated options, per mapper, each `name` or `name=value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapperOptions {
    pub krbd: Option<Vec<String>>,
    pub nbd: Option<Vec<String>>,
}

impl MapperOptions {
    /// The options for `kind`: this list's, else the default's.
    pub fn for_mapper(&self, defaults: &MapperOptions, kind: MapperKind) -> Vec<String> {
        let pick = |o: &MapperOptions| match kind {
            MapperKind::Krbd => o.krbd.clone(),
            MapperKind::Nbd => o.nbd.clone(),
            MapperKind::Userspace => None,
        };
        pick(self).or_else(|| pick(defaults)).unwrap_or_default()
    }
}

/// What `-o map_options` and `-o unmap_options` gave (checked), as kept
/// in the volume's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given {
    pub map: Option<String>,
    pub unmap: Option<String>,
}

impl Given {
    /// Takes `-o option=value` (`map_options` or `unmap_options`).
    pub fn set(&mut self, option: &str, value: &str) -> Result<(), String> {
        let which = if option == "map_options" { Which::Map } else { Which::Unmap };
        parse(which, value)?;
        let slot = if which == Which::Map { &mut self.map } else { &mut self.unmap };
        *slot = Some(value.to_string());
        Ok(())
    }
}

/// Map or unmap options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Map,
    Unmap,
}

fn allowed(which: Which, kind: MapperKind) -> &'static [Allowed] {
    match (which, kind) {
        (Which::Map, MapperKind::Krbd) => KRBD_MAP,
        (Which::Map, MapperKind::Nbd) => NBD_MAP,
        (Which::Unmap, MapperKind::Krbd) => KRBD_UNMAP,
        (Which::Unmap, MapperKind::Nbd) => NBD_UNMAP,
        (_, MapperKind::Userspace) => &[],
    }
}

/// The allowed names for `kind`, for error messages.
fn names(which: Which, kind: MapperKind) -> String {
    let list: Vec<&str> = allowed(which, kind).iter().map(|a| a.name).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn check_value(rule: Value, name: &str, value: Option<&str>) -> Result<Option<String>, String> {
    match (rule, value) {
        (Value::Flag, None) => Ok(None),
        (Value::Flag, Some(_)) => Err(format!("'{name}' takes no value")),
        (_, None) => Err(format!("'{name}' needs a value ({name}=...)")),
        (Value::Int(lo, hi), Some(v)) => match v.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n.to_string())),
            _ => Err(format!("'{name}' must be a whole number from {lo} to {hi}, not '{v}'")),
        },
        (Value::Pow2(lo, hi), Some(v)) => match v.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) && n.is_power_of_two() => Ok(Some(n.to_string())),
            _ => Err(format!("'{name}' must be a power of two from {lo} to {hi}, not '{v}'")),
        },
        (Value::OneOf(words), Some(v)) if words.contains(&v) => Ok(Some(v.to_string())),
        (Value::OneOf(words), Some(v)) => Err(format!("'{name}' must be one of {}, not '{v}'", words.join(", "))),
    }
}

/// Parses `krbd:a=1,b;nbd:c=2` (a list without a prefix is krbd's). The
/// error says what is wrong and which options are allowed.
pub fn parse(which: Which, text: &str) -> Result<MapperOptions, String> {
    let mut out = MapperOptions::default();
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("it contains spaces or control characters: write e.g. krbd:queue_depth=256;nbd:io-timeout=60".into());
    }
    for section in text.split(';').filter(|s| !s.is_empty()) {
        let (mapper, list) = match section.split_once(':') {
            Some((m, l)) => (m, l),
            None => ("krbd", section),
        };
        let kind = match mapper {
            "krbd" => MapperKind::Krbd,
            "nbd" => MapperKind::Nbd,
            "userspace" => return Err("the user-space mapper takes no map or unmap options; prefix each list with krbd: or nbd:".into()),
            other => return Err(format!("'{other}' is not a mapper: prefix each list with krbd: or nbd:")),
        };
        let mut opts: Vec<String> = Vec::new();
        for item in list.split(',').filter(|s| !s.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            let rule = allowed(which, kind).iter().find(|a| a.name == name).ok_or_else(|| {
                format!("{} option '{name}' is not allowed (allowed: {})", kind.as_str(), names(which, kind))
            })?;
            let value = check_value(rule.value, name, value).map_err(|e| format!("{} option {e}", kind.as_str()))?;
            // One spelling per option: rbd-nbd's two names of its timeout are one.
            let canonical = if name == "timeout" { "io-timeout" } else { name };
            if opts.iter().any(|o| o.split('=').next() == Some(canonical)) {
                return Err(format!("{} option '{name}' is given twice", kind.as_str()));
            }
            opts.push(match value {
                Some(v) => format!("{canonical}={v}"),
                None => canonical.to_string(),
            });
        }
        let slot = match kind {
            MapperKind::Krbd => &mut out.krbd,
            _ => &mut out.nbd,
        };
        if slot.is_some() {
            return Err(format!("the {} list is given twice", kind.as_str()));
        }
        *slot = Some(opts);
    }
    Ok(out)
}

/// What a Mount of volume `name` maps with on a host whose mapper is
/// `kind`: the lists its metadata records (checked again: a record asking
/// for what rbdvol does not allow is refused before anything is mapped),
/// else this host's defaults for that mapper.
pub fn for_volume(name: &str, meta: &VolumeMeta, defaults: &Given, kind: MapperKind) -> Result<MapOptions, EngineError> {
    let refused = |what: &'static str, reason: String| EngineError::RefusedRecord { name: name.to_string(), what, key: VOLUME_KEY, reason };
    let map = parse(Which::Map, meta.map_options.as_deref().unwrap_or("")).map_err(|r| refused("map options", r))?;
    let unmap = parse(Which::Unmap, meta.unmap_options.as_deref().unwrap_or("")).map_err(|r| refused("unmap options", r))?;
    // The defaults were checked when the settings were read (a bad one is
    // reported there and not used).
    let default_map = parse(Which::Map, defaults.map.as_deref().unwrap_or("")).unwrap_or_default();
    let default_unmap = parse(Which::Unmap, defaults.unmap.as_deref().unwrap_or("")).unwrap_or_default();
    Ok(MapOptions {
        options: map.for_mapper(&default_map, kind),
        unmap_options: unmap.for_mapper(&default_unmap, kind),
        ..MapOptions::default()
    })
}

/// Checks options that a volume's metadata or this host's state says
/// again (written by hand, or by another version): only what `parse`
/// allows for `kind`.
pub fn check_list(which: Which, kind: MapperKind, opts: &[String]) -> Result<(), String> {
    let text = format!("{}:{}", kind.as_str(), opts.join(","));
    if kind == MapperKind::Userspace {
        return if opts.is_empty() { Ok(()) } else { Err("the user-space mapper takes no options".into()) };
    }
    parse(which, &text).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceph_csis_syntax_gives_a_list_per_mapper() {
        let o = parse(Which::Map, "krbd:queue_depth=256,alloc_size=65536;nbd:timeout=60,try-netlink").unwrap();
        assert_eq!(o.krbd, Some(vec!["queue_depth=256".into(), "alloc_size=65536".into()]));
        // rbd-nbd's older name of its I/O timeout is the newer one.
        assert_eq!(o.nbd, Some(vec!["io-timeout=60".into(), "try-netlink".into()]));
        // No prefix: krbd's, as in ceph-csi.
        assert_eq!(parse(Which::Map, "notrim").unwrap().krbd, Some(vec!["notrim".into()]));
        assert_eq!(parse(Which::Unmap, "krbd:force").unwrap().krbd, Some(vec!["force".into()]));
        assert_eq!(parse(Which::Map, "").unwrap(), MapperOptions::default());
    }

    #[test]
    fn a_mapper_without_a_list_of_its_own_gets_the_hosts_default() {
        let vol = parse(Which::Map, "krbd:queue_depth=64").unwrap();
        let defaults = parse(Which::Map, "krbd:queue_depth=256;nbd:io-timeout=60").unwrap();
        assert_eq!(vol.for_mapper(&defaults, MapperKind::Krbd), vec!["queue_depth=64".to_string()]);
        assert_eq!(vol.for_mapper(&defaults, MapperKind::Nbd), vec!["io-timeout=60".to_string()]);
        assert!(vol.for_mapper(&defaults, MapperKind::Userspace).is_empty());
        // An empty list of its own says "none", not "the default".
        let none = parse(Which::Map, "krbd:").unwrap();
        assert!(none.for_mapper(&defaults, MapperKind::Krbd).is_empty());
    }

    #[test]
    fn credentials_identity_image_and_locking_options_are_refused() {
        for bad in [
            "krbd:name=admin",
            "krbd:secret=AQBXhS1k",
            "krbd:key=client.admin",
            "krbd:fsid=00000000-0000-0000-0000-000000000000",
            "krbd:_pool_ns=other",
            "krbd:ro",
            "krbd:rw",
            "krbd:read_only",
            "krbd:exclusive",
            "krbd:lock_on_read",
            "krbd:share",
            "krbd:noshare",
            "krbd:osd_request_timeout=0",
            "krbd:nocrc",
            "krbd:crush_location=host:x",
            "krbd:ip=10.0.0.9",
            "nbd:device=/dev/nbd5",
            "nbd:cookie=x",
            "nbd:read-only",
            "nbd:exclusive",
            "nbd:quiesce-hook=/bin/sh",
            "nbd:encryption-passphrase-file=/etc/shadow",
            "nbd:nbds_max=1024",
            "nbd:id=admin",
            "nbd:keyfile=/etc/ceph/keyring",
            "userspace:x",
            "rbd:queue_depth=1",
        ] {
            let e = parse(Which::Map, bad).unwrap_err();
            assert!(e.contains("not allowed") || e.contains("not a mapper") || e.contains("takes no"), "{bad}: {e}");
        }
        let e = parse(Which::Map, "krbd:secret=x").unwrap_err();
        assert!(e.contains("allowed: queue_depth"), "{e}");
        assert!(parse(Which::Unmap, "nbd:force").unwrap_err().contains("allowed: none"));
        assert!(parse(Which::Unmap, "krbd:queue_depth=1").is_err());
    }

    #[test]
    fn values_are_checked() {
        for bad in [
            "krbd:queue_depth=0",
            "krbd:queue_depth=99999",
            "krbd:queue_depth=x",
            "krbd:queue_depth",
            "krbd:alloc_size=65535",
            "krbd:alloc_size=256",
            "krbd:notrim=1",
            "krbd:read_from_replica=everywhere",
            "krbd:ms_mode=plain",
            "nbd:io-timeout=0",
            "nbd:reattach-timeout=100000",
            "nbd:ms_mode=legacy",
            "krbd:osdkeepalive=300",
            "krbd:queue_depth=1,queue_depth=2",
            "nbd:timeout=30,io-timeout=30",
            "krbd:notrim;krbd:notrim",
            "krbd:queue_depth=1 ,notrim",
            "krbd:queue_depth=1\n",
        ] {
            assert!(parse(Which::Map, bad).is_err(), "{bad}");
        }
        assert!(parse(Which::Map, "krbd:read_from_replica=localize,ms_mode=secure,alloc_size=4096").is_ok());
    }

    #[test]
    fn lists_read_back_from_a_record_are_checked_again() {
        assert!(check_list(Which::Map, MapperKind::Krbd, &["queue_depth=8".into()]).is_ok());
        assert!(check_list(Which::Map, MapperKind::Krbd, &["secret=x".into()]).is_err());
        assert!(check_list(Which::Unmap, MapperKind::Nbd, &[]).is_ok());
        assert!(check_list(Which::Map, MapperKind::Userspace, &["x".into()]).is_err());
    }
}
