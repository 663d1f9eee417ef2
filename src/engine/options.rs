//! Volume names and `-o` options: parsed and checked before anything touches
//! Ceph, so bad input changes nothing.

use std::collections::BTreeMap;

use super::{fs_options, EngineError};
use crate::ceph;
use crate::host::fs::Fstype;

pub const MIB: u64 = 1 << 20;
const MAX_NAME: usize = 100;
const MAX_SIZE: u64 = 1 << 50; // 1 PiB
/// mkfs.xfs (xfsprogs 5.19+) refuses filesystems under 300 MiB.
const XFS_MIN_SIZE: u64 = 300 * MIB;

/// How errors name mkfs and mount options that came from the settings.
const DEFAULT_MKFS_SOURCE: &str = "mkfs_options (default: VOLUME_MKFS_OPTIONS or consul defaults/mkfs_options)";
const DEFAULT_MOUNT_SOURCE: &str = "mount_options (default: MOUNT_OPTIONS or consul defaults/mount_options)";

pub const VALID_OPTIONS: &[&str] = &[
    "pool",
    "namespace",
    "size",
    "fstype",
    "mkfs_options",
    "mount_options",
    "order",
    "object_size",
    "features",
    "data_pool",
    "uid",
    "gid",
    "mode",
    "from",
    "qos_iops",
    "qos_bps",
    "qos_read_iops",
    "qos_write_iops",
    "qos_read_bps",
    "qos_write_bps",
    "image",
    "format",
    "readonly",
    "map_options",
    "unmap_options",
];

/// Options a clone takes from its parent's snapshot, so cannot be given.
const NOT_FOR_CLONES: &[&str] = &["fstype", "mkfs_options", "uid", "gid", "mode"];

/// Options an adopted image (`-o image=`) has already, so cannot be given.
const NOT_FOR_ADOPTED: &[&str] = &["size", "order", "object_size", "features", "data_pool", "from"];
/// Options that only formatting a blank adopted image uses.
const ONLY_WITH_FORMAT: &[&str] = &["fstype", "mkfs_options", "uid", "gid", "mode"];

/// The snapshot a clone is made from: `-o from=VOLUME@SNAPSHOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneSource {
    pub volume: String,
    pub snapshot: String,
}

/// What a volume gets when `-o` does not say.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub pool: String,
    pub namespace: String,
    pub size: u64,
    pub fstype: Fstype,
    pub mkfs_options: Option<String>,
    pub mount_options: String,
    pub features: Option<String>,
    /// Per-pool overrides (Consul `pools/<pool>/...`).
    pub pools: BTreeMap<String, PoolDefaults>,
    /// This host's map and unmap options for the mappers a volume has no
    /// list for (`RBDVOL_MAP_OPTIONS`, `RBDVOL_UNMAP_OPTIONS`), checked.
    pub mapper_options: super::map_options::Given,
}

/// Defaults of one pool's volumes, where they differ.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolDefaults {
    pub size: Option<u64>,
    pub fstype: Option<Fstype>,
    pub mkfs_options: Option<String>,
    pub mount_options: Option<String>,
    pub features: Option<String>,
}

impl Defaults {
    /// The defaults for a volume in `pool`: its overrides over the rest.
    pub fn for_pool(&self, pool: &str) -> Defaults {
        let mut d = self.clone();
        if let Some(p) = self.pools.get(pool) {
            d.size = p.size.unwrap_or(d.size);
            d.fstype = p.fstype.unwrap_or(d.fstype);
            d.mkfs_options = p.mkfs_options.clone().or(d.mkfs_options);
            d.mount_options = p.mount_options.clone().unwrap_or(d.mount_options);
            d.features = p.features.clone().or(d.features);
        }
        d
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            pool: "rbd".into(),
            namespace: String::new(),
            size: 512 * MIB,
            fstype: Fstype::Ext4,
            mkfs_options: None,
            mount_options: String::new(),
            features: None,
            pools: BTreeMap::new(),
            mapper_options: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeOptions {
    pub pool: String,
    pub namespace: String,
    pub size: u64,
    pub fstype: Fstype,
    /// Replaces the default mkfs options when given.
    pub mkfs_options: Vec<String>,
    pub mount_options: String,
    pub create: ceph::CreateOptions,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    /// A copy-on-write clone of this snapshot instead of a new filesystem.
    pub from: Option<CloneSource>,
    /// Whether `size` was given (a clone is otherwise its snapshot's size).
    pub size_given: bool,
    /// QoS limits given (`-o` name → value; 0: none), see `qos`.
    pub qos: BTreeMap<String, u64>,
    /// An existing image to adopt (`-o image=`) instead of a new one.
    pub adopt: Option<String>,
    /// Format the adopted image if (and only if) it is blank (`-o format=true`).
    pub format: bool,
    /// Mounted read-only, on any number of hosts (`-o readonly=true`).
    pub read_only: bool,
    /// `map_options` and `unmap_options` given, checked (see `map_options`).
    pub mapper_options: super::map_options::Given,
}

/// Checks a volume name: it becomes an image name and a directory name.
pub fn validate_name(name: &str) -> Result<(), EngineError> {
    let bad = |reason: &str| Err(EngineError::InvalidName { name: name.escape_debug().to_string(), reason: reason.into() });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is longer than 100 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not names");
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == '@' || c.is_whitespace() || c.is_control()) {
        return bad(&format!("it contains {:?}; use letters, digits, '-', '_' and '.'", c));
    }
    Ok(())
}

/// Sizes: a plain number is MiB (wetopi's `size=206`); suffixes B, K/KB/Ki/KiB,
/// M.., G.., T.. are powers of 1024 (as `rbd create --size 1G`).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let bytes = parse_quantity(value, MIB)?;
    if bytes < MIB {
        return Err("it is smaller than 1 MiB".into());
    }
    Ok(bytes)
}

/// A number with an optional unit; `plain` is the unit of a bare number.
pub(super) fn parse_quantity(value: &str, plain: u64) -> Result<u64, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| "it must be a number with an optional unit, e.g. 206, 512M, 10G".to_string())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => plain,
        "m" | "mb" | "mi" | "mib" => MIB,
        "b" => 1,
        "k" | "kb" | "ki" | "kib" => 1 << 10,
        "g" | "gb" | "gi" | "gib" => 1 << 30,
        "t" | "tb" | "ti" | "tib" => 1 << 40,
        other => return Err(format!("unknown unit '{other}': use B, K, M, G or T (Ki, Mi, Gi, Ti also work)")),
    };
    n.checked_mul(mult).filter(|b| *b <= MAX_SIZE).ok_or_else(|| "it is larger than 1 PiB".to_string())
}

fn parse_id(value: &str) -> Result<u32, String> {
    value.trim().parse::<u32>().map_err(|_| "it must be a numeric id (0 to 4294967295)".into())
}

fn parse_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| "it must be an octal mode such as 0755 or 2775".into())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err("it must be true or false".into()),
    }
}

/// An RBD image name rbdvol adopts: letters, digits and `._+-`, as images
/// made by `rbd create`, the peer plugins and ceph-csi are named.
pub fn validate_image_name(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 250 {
        return Err("it must be 1 to 250 characters".into());
    }
    if value == "." || value == ".." {
        return Err("'.' and '..' are not image names".into());
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))) {
        return Err(format!("it contains {c:?}; image names rbdvol adopts have letters, digits, '.', '_', '+' and '-' (give the pool and namespace with -o pool= and -o namespace=)"));
    }
    Ok(())
}

fn plain_text(value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_control()) {
        return Err("it contains control characters".into());
    }
    Ok(())
}

fn pool_like(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 100 || value.chars().any(|c| matches!(c, '/' | '@' | ',' | '=') || c.is_whitespace() || c.is_control()) {
        return Err("it must be 1 to 100 characters without '/', '@', ',', '=', spaces or control characters".into());
    }
    Ok(())
}

/// Parses `-o` options over the defaults. `fstype_available` says which
/// filesystems this host can format.
pub fn parse(
    opts: &BTreeMap<String, String>,
    defaults: &Defaults,
    fstype_available: impl Fn(Fstype) -> bool,
) -> Result<VolumeOptions, EngineError> {
    let invalid = |option: &str, value: &str, reason: String| EngineError::InvalidOption {
        option: option.to_string(),
        value: value.to_string(),
        reason,
    };
    let mut o = VolumeOptions {
        pool: defaults.pool.clone(),
        namespace: defaults.namespace.clone(),
        size: defaults.size,
        fstype: defaults.fstype,
        mkfs_options: Vec::new(),
        mount_options: defaults.mount_options.clone(),
        create: ceph::CreateOptions::default(),
        uid: None,
        gid: None,
        mode: None,
        from: None,
        size_given: false,
        qos: BTreeMap::new(),
        adopt: None,
        format: false,
        read_only: false,
        mapper_options: Default::default(),
    };
    let mut mkfs = defaults.mkfs_options.clone();
    // Where mkfs_options and mount_options came from, for errors.
    let (mut mkfs_source, mut mount_source) = (DEFAULT_MKFS_SOURCE.to_string(), DEFAULT_MOUNT_SOURCE.to_string());
    let mut features = defaults.features.clone();
    let mut order_given = None;
    for (key, value) in opts {
        let canonical = match key.as_str() {
            "mkfsOptions" => "mkfs_options",
            "mountOptions" => "mount_options",
            "objectSize" => "object_size",
            "dataPool" => "data_pool",
            "clone_of" | "cloneOf" => "from",
            "mapOptions" => "map_options",
            "unmapOptions" => "unmap_options",
            k => k,
        };
        let check = |r: Result<(), String>| r.map_err(|reason| invalid(key, value, reason));
        match canonical {
            "pool" => {
                check(pool_like(value))?;
                o.pool = value.clone();
            }
            "namespace" => {
                if !value.is_empty() {
                    check(pool_like(value))?;
                }
                o.namespace = value.clone();
            }
            "data_pool" => {
                check(pool_like(value))?;
                o.create.data_pool = Some(value.clone());
            }
            "size" => {
                o.size = parse_size(value).map_err(|r| invalid(key, value, r))?;
                o.size_given = true;
            }
            q if super::qos::is_limit(q) => {
                let limit = super::qos::parse_limit(q, value).map_err(|r| invalid(key, value, r))?;
                o.qos.insert(q.to_string(), limit);
            }
            "from" => {
                let (volume, snapshot) = value
                    .split_once('@')
                    .filter(|(v, s)| validate_name(v).is_ok() && validate_name(s).is_ok())
                    .ok_or_else(|| invalid(key, value, "it must be VOLUME@SNAPSHOT, a snapshot of an rbdvol volume".into()))?;
                o.from = Some(CloneSource { volume: volume.to_string(), snapshot: snapshot.to_string() });
            }
            "fstype" => {
                let f = Fstype::parse(value.trim())
                    .ok_or_else(|| invalid(key, value, "use ext4, xfs or btrfs".into()))?;
                if !fstype_available(f) {
                    return Err(invalid(key, value, format!("mkfs.{} is not installed on this host", f.as_str())));
                }
                o.fstype = f;
            }
            "mkfs_options" => {
                check(plain_text(value))?;
                mkfs = Some(value.clone());
                mkfs_source = key.clone();
            }
            "mount_options" => {
                check(plain_text(value))?;
                if value.chars().any(char::is_whitespace) {
                    return Err(invalid(key, value, "separate mount options with commas, without spaces".into()));
                }
                o.mount_options = value.clone();
                mount_source = key.clone();
            }
            "order" | "object_size" => {
                if let Some(prev) = order_given {
                    return Err(invalid(key, value, format!("give either order or object_size, not both (also got {prev})")));
                }
                order_given = Some(canonical);
                let order = if canonical == "order" {
                    value.trim().parse::<u8>().ok().filter(|o| (12..=25).contains(o)).ok_or_else(|| {
                        invalid(key, value, "it must be 12 (4 KiB objects) to 25 (32 MiB objects)".into())
                    })?
                } else {
                    let bytes = parse_quantity(value, 1).map_err(|r| invalid(key, value, r))?;
                    ceph::order_from_object_size(bytes).map_err(|e| invalid(key, value, e.to_string()))?
                };
                o.create.order = Some(order);
            }
            "features" => features = Some(value.clone()),
            "image" => {
                check(validate_image_name(value))?;
                o.adopt = Some(value.clone());
            }
            "format" => o.format = parse_bool(value).map_err(|r| invalid(key, value, r))?,
            "readonly" => o.read_only = parse_bool(value).map_err(|r| invalid(key, value, r))?,
            "map_options" | "unmap_options" => {
                // Not echoed: a pasted `secret=<key>` must never reach an
                // answer or a log; the reason names the option at fault.
                o.mapper_options.set(canonical, value).map_err(|r| invalid(key, "(not shown)", r))?;
            }
            "uid" => o.uid = Some(parse_id(value).map_err(|r| invalid(key, value, r))?),
            "gid" => o.gid = Some(parse_id(value).map_err(|r| invalid(key, value, r))?),
            "mode" => o.mode = Some(parse_mode(value).map_err(|r| invalid(key, value, r))?),
            _ => return Err(EngineError::UnknownOption { option: key.clone(), valid: VALID_OPTIONS.join(", ") }),
        }
    }
    if let Some(from) = &o.from {
        let canonical = |k: &str| match k {
            "mkfsOptions" => "mkfs_options".to_string(),
            k => k.to_string(),
        };
        if let Some(k) = opts.keys().find(|k| NOT_FOR_CLONES.contains(&canonical(k).as_str())) {
            return Err(invalid(
                k,
                &opts[k],
                format!("a clone of {}@{} has its snapshot's filesystem, owner and mode: leave it out", from.volume, from.snapshot),
            ));
        }
        mkfs = None;
    }
    fn canonical(k: &str) -> &str {
        match k {
            "mkfsOptions" => "mkfs_options",
            "mountOptions" => "mount_options",
            "objectSize" => "object_size",
            "dataPool" => "data_pool",
            "clone_of" | "cloneOf" => "from",
            k => k,
        }
    }
    if let Some(image) = &o.adopt {
        if let Some(k) = opts.keys().find(|k| NOT_FOR_ADOPTED.contains(&canonical(k))) {
            return Err(invalid(k, &opts[k], format!("image '{image}' is adopted as it is: leave it out")));
        }
        if !o.format {
            if let Some(k) = opts.keys().find(|k| ONLY_WITH_FORMAT.contains(&canonical(k))) {
                return Err(invalid(k, &opts[k], format!("it applies only when a blank image is formatted (-o format=true); image '{image}' keeps its filesystem")));
            }
            mkfs = None;
        }
    } else if opts.contains_key("format") {
        return Err(invalid("format", &opts["format"], "it applies only to an adopted image (-o image=IMAGE); a new volume is always formatted".into()));
    }
    if o.read_only {
        let made_with_data = o.from.is_some() || (o.adopt.is_some() && !o.format);
        if !made_with_data {
            return Err(invalid(
                "readonly",
                &opts["readonly"],
                "a new read-only volume would stay empty: make it from data, with -o from=VOLUME@SNAPSHOT or -o image=IMAGE (without format=true)".into(),
            ));
        }
        if o.size_given {
            return Err(invalid("size", &opts["size"], "a read-only volume's filesystem cannot grow: leave it out".into()));
        }
    }
    if let Some(f) = features.filter(|f| !f.trim().is_empty()) {
        o.create.features = Some(ceph::features_from_str(f.trim()).map_err(|e| invalid("features", &f, e.to_string()))?);
    }
    if let Some(m) = mkfs {
        o.mkfs_options = m.split_whitespace().map(str::to_string).collect();
        fs_options::check_mkfs(o.fstype, &o.mkfs_options).map_err(|r| invalid(&mkfs_source, &m, r))?;
    }
    // A clone's filesystem is its parent's, an adopted image's its own:
    // their mount options are checked against it when the volume is made.
    let fs_known = o.from.is_none() && (o.adopt.is_none() || o.format);
    if fs_known {
        fs_options::check_mount(o.fstype, &o.mount_options).map_err(|r| invalid(&mount_source, &o.mount_options, r))?;
    } else if let Err(r) = fs_options::check_mount(Fstype::Ext4, &o.mount_options) {
        // Checked against the filesystem found later; refused now if no
        // filesystem allows them.
        if [Fstype::Xfs, Fstype::Btrfs].iter().all(|f| fs_options::check_mount(*f, &o.mount_options).is_err()) {
            return Err(invalid(&mount_source, &o.mount_options, r));
        }
    }
    if o.fstype == Fstype::Xfs && o.size < XFS_MIN_SIZE && o.from.is_none() && o.adopt.is_none() {
        return Err(invalid("size", &format!("{}", o.size / MIB), "xfs needs at least 300 MiB".into()));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn mkfs_and_mount_options_from_the_settings_obey_the_same_rules_and_name_the_setting() {
        let bad_mkfs = Defaults { mkfs_options: Some("-d /var/lib/rbdvol".into()), ..Defaults::default() };
        let e = parse(&opts(&[]), &bad_mkfs, |_| true).unwrap_err().to_string();
        assert!(e.contains("VOLUME_MKFS_OPTIONS") && e.contains("'-d' is not allowed"), "{e}");
        // Given with -o, the option replaces the default and is checked itself.
        assert!(parse(&opts(&[("mkfs_options", "-m 1")]), &bad_mkfs, |_| true).is_ok());
        let bad_mount = Defaults { mount_options: "bind".into(), ..Defaults::default() };
        let e = parse(&opts(&[]), &bad_mount, |_| true).unwrap_err().to_string();
        assert!(e.contains("MOUNT_OPTIONS") && e.contains("'bind' is not allowed"), "{e}");
        let e = parse(&opts(&[("mount_options", "noatime,loop")]), &Defaults::default(), |_| true).unwrap_err().to_string();
        assert!(e.starts_with("invalid value 'noatime,loop' for option 'mount_options'"), "{e}");
        // Checked against the filesystem asked for: nouuid is xfs's.
        assert!(parse(&opts(&[("mount_options", "nouuid")]), &Defaults::default(), |_| true).is_err());
        assert!(parse(&opts(&[("mount_options", "nouuid"), ("fstype", "xfs"), ("size", "1G")]), &Defaults::default(), |_| true).is_ok());
    }

    fn p(pairs: &[(&str, &str)]) -> Result<VolumeOptions, EngineError> {
        parse(&opts(pairs), &Defaults::default(), |f| f != Fstype::Btrfs)
    }

    #[test]
    fn map_and_unmap_options_are_checked_at_create_and_kept_as_given() {
        let o = p(&[("map_options", "krbd:queue_depth=256,alloc_size=65536;nbd:timeout=60"), ("unmapOptions", "krbd:force")]).unwrap();
        assert_eq!(o.mapper_options.map.as_deref(), Some("krbd:queue_depth=256,alloc_size=65536;nbd:timeout=60"));
        assert_eq!(o.mapper_options.unmap.as_deref(), Some("krbd:force"));
        let e = p(&[("map_options", "krbd:secret=AQBX")]).unwrap_err().to_string();
        assert!(e.starts_with("invalid value '(not shown)' for option 'map_options'") && e.contains("'secret' is not allowed") && !e.contains("AQBX"), "{e}");
        let e = p(&[("unmap_options", "nbd:force")]).unwrap_err().to_string();
        assert!(e.contains("'unmap_options'") && e.contains("allowed: none"), "{e}");
        assert_eq!(p(&[]).unwrap().mapper_options, Default::default());
    }

    #[test]
    fn clones_name_their_snapshot_and_keep_its_filesystem() {
        let o = p(&[("from", "base@monday")]).unwrap();
        assert_eq!(o.from, Some(CloneSource { volume: "base".into(), snapshot: "monday".into() }));
        assert!(!o.size_given);
        let o = p(&[("clone_of", "base@monday"), ("size", "2G")]).unwrap();
        assert!(o.from.is_some() && o.size_given && o.size == 2 << 30);
        for bad in ["base", "base@", "@snap", "a@b@c", "../x@s"] {
            let e = p(&[("from", bad)]).unwrap_err().to_string();
            assert!(e.contains("VOLUME@SNAPSHOT"), "{bad}: {e}");
        }
        let e = p(&[("from", "base@monday"), ("fstype", "xfs")]).unwrap_err().to_string();
        assert!(e.contains("'fstype'") && e.contains("leave it out"), "{e}");
        assert!(p(&[("from", "base@monday"), ("mkfsOptions", "-m1")]).is_err());
    }

    #[test]
    fn an_adopted_image_is_taken_as_it_is_and_formatted_only_when_asked() {
        let o = p(&[("image", "legacy-db.1"), ("mount_options", "noatime")]).unwrap();
        assert_eq!((o.adopt.as_deref(), o.format, o.mkfs_options.len()), (Some("legacy-db.1"), false, 0));
        for (k, v) in [("size", "1G"), ("order", "22"), ("features", "layering"), ("data_pool", "ec"), ("from", "a@b")] {
            let e = p(&[("image", "legacy"), (k, v)]).unwrap_err().to_string();
            assert!(e.contains(&format!("'{k}'")) && e.contains("adopted as it is"), "{k}: {e}");
        }
        for (k, v) in [("fstype", "xfs"), ("mkfs_options", "-m0"), ("uid", "1"), ("mode", "0700")] {
            let e = p(&[("image", "legacy"), (k, v)]).unwrap_err().to_string();
            assert!(e.contains("format=true"), "{k}: {e}");
            assert!(p(&[("image", "legacy"), ("format", "true"), (k, v)]).is_ok(), "{k} with format=true");
        }
        let e = p(&[("format", "true")]).unwrap_err().to_string();
        assert!(e.contains("only to an adopted image"), "{e}");
        assert!(p(&[("image", "legacy"), ("format", "maybe")]).unwrap_err().to_string().contains("true or false"));
        for bad in ["", "a/b", "a@b", "a b", "..", "x\n", "ä"] {
            let e = p(&[("image", bad)]).unwrap_err().to_string();
            assert!(e.contains("invalid value") && e.contains("'image'"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn read_only_volumes_are_made_from_data_and_never_grow() {
        assert!(p(&[("from", "base@s"), ("readonly", "true")]).unwrap().read_only);
        assert!(p(&[("image", "dataset"), ("readonly", "yes")]).unwrap().read_only);
        assert!(!p(&[("readonly", "false")]).unwrap().read_only);
        let e = p(&[("readonly", "true")]).unwrap_err().to_string();
        assert!(e.contains("would stay empty"), "{e}");
        assert!(p(&[("image", "blank"), ("format", "true"), ("readonly", "true")]).is_err());
        let e = p(&[("from", "base@s"), ("readonly", "true"), ("size", "2G")]).unwrap_err().to_string();
        assert!(e.contains("cannot grow"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("206").unwrap(), 206 * MIB);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_size("128M").unwrap(), 128 * MIB);
        assert_eq!(parse_size("2048K").unwrap(), 2 * MIB);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("1048576B").unwrap(), MIB);
        assert!(parse_size("abc").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("10X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn names() {
        for good in ["v", "db-1", "a.b_c", &"x".repeat(100), &"f".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a@b", "a b", "a\tb", "a\nb", &"x".repeat(101)] {
            let e = validate_name(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid volume name"), "{e}");
        }
    }

    #[test]
    fn defaults_and_aliases() {
        let o = p(&[]).unwrap();
        assert_eq!((o.pool.as_str(), o.size, o.fstype), ("rbd", 512 * MIB, Fstype::Ext4));
        let o = p(&[("size", "206"), ("mkfsOptions", "-b 4096 -m 1"), ("mountOptions", "noatime,discard"), ("object_size", "8M")]).unwrap();
        assert_eq!(o.size, 206 * MIB);
        assert_eq!(o.mkfs_options, vec!["-b", "4096", "-m", "1"]);
        assert_eq!(o.mount_options, "noatime,discard");
        assert_eq!(o.create.order, Some(23));
        let o = p(&[("features", "layering,exclusive-lock"), ("uid", "1000"), ("gid", "1000"), ("mode", "0750"), ("order", "22")]).unwrap();
        assert_eq!(o.create.features, Some(ceph::features::LAYERING | ceph::features::EXCLUSIVE_LOCK));
        assert_eq!((o.uid, o.gid, o.mode), (Some(1000), Some(1000), Some(0o750)));
        assert_eq!(o.create.order, Some(22));
    }

    #[test]
    fn bad_values_name_the_option() {
        let cases: &[(&str, &str, &str)] = &[
            ("size", "big", "size"),
            ("fstype", "ntfs", "fstype"),
            ("fstype", "btrfs", "not installed"),
            ("order", "40", "order"),
            ("object_size", "3M", "object_size"),
            ("features", "layering,warp-drive", "features"),
            ("uid", "-1", "uid"),
            ("mode", "999", "mode"),
            ("pool", "a/b", "pool"),
            ("mount_options", "noatime, discard", "mount_options"),
        ];
        for (k, v, want) in cases {
            let e = p(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        let e = p(&[("fstype", "xfs"), ("size", "100")]).unwrap_err().to_string();
        assert!(e.contains("300 MiB"), "{e}");
        let e = p(&[("order", "22"), ("object_size", "4M")]).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn unknown_option_lists_the_valid_ones() {
        let e = p(&[("sise", "1G")]).unwrap_err().to_string();
        assert!(e.contains("'sise'") && e.contains("size") && e.contains("mount_options"), "{e}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(VALID_OPTIONS.to_vec()).prop_map(str::to_string),
                proptest::sample::select(vec!["mkfsOptions", "mountOptions", "objectSize", "dataPool", "clone_of"]).prop_map(str::to_string),
                ".{0,12}",
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,40}",
                "(-[a-zA-Z]{1,2} ?[a-z0-9=,/._^-]{0,20} ?){0,4}",
                "[a-z_]{1,12}(=[a-z0-9/.]{0,10})?(,[a-z_]{1,12}(=[a-z0-9/.]{0,10})?){0,3}",
                "[0-9]{1,6}[KMGTkmgt]?i?B?",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

            /// Any option map is refused with a named option, or yields
            /// options that only ever name allowed mkfs and mount options.
            #[test]
            fn any_option_map_is_refused_clearly_or_yields_only_allowed_options(opts in proptest::collection::btree_map(key(), value(), 0..5)) {
                match parse(&opts, &Defaults::default(), |_| true) {
                    Ok(o) => {
                        prop_assert!(fs_options::check_mkfs(o.fstype, &o.mkfs_options).is_ok());
                        prop_assert!(o.mkfs_options.iter().all(|a| !a.contains('/')), "{:?}", o.mkfs_options);
                        if o.from.is_none() {
                            prop_assert!(fs_options::check_mount(o.fstype, &o.mount_options).is_ok());
                        }
                        prop_assert!(!o.mount_options.contains('/'), "{}", o.mount_options);
                        prop_assert!(o.size >= MIB && o.size <= MAX_SIZE);
                        prop_assert!(pool_like(&o.pool).is_ok());
                    }
                    Err(e) => {
                        let text = e.to_string();
                        prop_assert!(!text.is_empty());
                        let named = opts.keys().any(|k| text.contains(&format!("'{k}'"))) || text.contains("size") || text.contains("features");
                        prop_assert!(named, "the error names no option: {}", text);
                    }
                }
            }

            /// Every name accepted stays one path component under the
            /// mount root and has a state file of its own.
            #[test]
            fn an_accepted_name_never_leaves_the_mount_root(name in ".{0,110}") {
                if validate_name(&name).is_ok() {
                    let root = std::path::Path::new("/var/lib/rbdvol/mnt");
                    let mp = root.join(&name);
                    prop_assert_eq!(mp.parent(), Some(root));
                    prop_assert_eq!(mp.components().count(), root.components().count() + 1);
                    let file = crate::state::file_name(&name);
                    prop_assert!(!file.contains('/') && !file.starts_with('.') && file.len() <= 255);
                }
            }
        }
    }
}
