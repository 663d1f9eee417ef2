//! QoS limits (`-o qos_iops=...`), kept where every librbd client reads
//! them: the image's `conf_rbd_qos_*` metadata, which librbd applies as
//! per-image config overrides when it opens the image (and on each header
//! refresh). So the user-space mapper and rbd-nbd enforce them; krbd does
//! not (the kernel client has no QoS), and Status says so.

use std::collections::BTreeMap;

use super::options::parse_quantity;

/// Whether a limit counts operations or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Iops,
    Bps,
}

/// `-o` name, librbd option, unit.
pub const LIMITS: [(&str, &str, Unit); 6] = [
    ("qos_iops", "rbd_qos_iops_limit", Unit::Iops),
    ("qos_bps", "rbd_qos_bps_limit", Unit::Bps),
    ("qos_read_iops", "rbd_qos_read_iops_limit", Unit::Iops),
    ("qos_write_iops", "rbd_qos_write_iops_limit", Unit::Iops),
    ("qos_read_bps", "rbd_qos_read_bps_limit", Unit::Bps),
    ("qos_write_bps", "rbd_qos_write_bps_limit", Unit::Bps),
];

/// The most any limit may be (librbd keeps them in u64; a sane ceiling
/// catches a slip of the unit).
const MAX_IOPS: u64 = 10_000_000;
const MAX_BPS: u64 = 1 << 40;
/// Below this a limit stalls a filesystem (a slip of the unit: bytes, not
/// MiB).
const MIN_BPS: u64 = 64 << 10;

/// The image metadata key of a librbd option.
pub fn metadata_key(librbd_option: &str) -> String {
    format!("conf_{librbd_option}")
}

/// Whether `option` is one of the QoS `-o` options.
pub fn is_limit(option: &str) -> bool {
    LIMITS.iter().any(|(o, _, _)| *o == option)
}

/// A limit's value: operations per second, or bytes per second with an
/// optional unit (`100M` = 100 MiB/s). 0 is no limit.
pub fn parse_limit(option: &str, value: &str) -> Result<u64, String> {
    let Some((_, _, unit)) = LIMITS.iter().find(|(o, _, _)| *o == option) else {
        return Err(format!("not a QoS option (use {})", LIMITS.map(|l| l.0).join(", ")));
    };
    let v = value.trim();
    match unit {
        Unit::Iops => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_IOPS)
            .ok_or_else(|| "it must be a whole number of operations per second (0: no limit)".into()),
        Unit::Bps => match parse_quantity(v, 1) {
            Ok(n) if n == 0 || (MIN_BPS..=MAX_BPS).contains(&n) => Ok(n),
            Ok(n) if n < MIN_BPS => Err(format!("{n} bytes per second would all but stop the volume: a bare number is bytes (did you mean {n}M?); at least 64K")),
            _ => Err("it must be bytes per second, with an optional unit: 104857600 or 100M (0: no limit)".into()),
        },
    }
}

/// The metadata writes for `limits` (`-o` name → value): a key set for a
/// limit, removed (`None`) for 0.
pub fn metadata_changes(limits: &BTreeMap<String, u64>) -> Vec<(String, Option<String>)> {
    LIMITS
        .iter()
        .filter_map(|(o, librbd, _)| limits.get(*o).map(|v| (metadata_key(librbd), (*v > 0).then(|| v.to_string()))))
        .collect()
}

/// The limits an image's metadata holds, by `-o` name (for Status and
/// `rbdvol qos`).
pub fn limits_of(metadata: &BTreeMap<String, String>) -> BTreeMap<String, u64> {
    LIMITS
        .iter()
        .filter_map(|(o, librbd, _)| Some((o.to_string(), metadata.get(&metadata_key(librbd))?.trim().parse::<u64>().ok().filter(|v| *v > 0)?)))
        .collect()
}

/// The limits as one line for people: `qos_iops=500 qos_bps=100 MiB/s`.
pub fn describe(limits: &BTreeMap<String, u64>) -> String {
    LIMITS
        .iter()
        .filter_map(|(o, _, unit)| {
            let v = limits.get(*o)?;
            Some(match unit {
                Unit::Iops => format!("{o}={v}"),
                Unit::Bps if v % (1 << 20) == 0 => format!("{o}={} MiB/s", v >> 20),
                Unit::Bps => format!("{o}={v} B/s"),
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `limits` (`-o` names; 0 removes one) as the image's librbd
/// config overrides.
pub(crate) fn apply<K: super::store::ImageKeys + ?Sized>(keys: &K, limits: &BTreeMap<String, u64>) -> Result<(), crate::ceph::CephError> {
    for (key, value) in metadata_changes(limits) {
        match value {
            Some(v) => keys.set(&key, &v)?,
            None => keys.remove(&key)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_units_and_refuse_anything_else() {
        assert_eq!(parse_limit("qos_iops", "500"), Ok(500));
        assert_eq!(parse_limit("qos_bps", "100M"), Ok(100 << 20));
        assert_eq!(parse_limit("qos_write_bps", "65536"), Ok(65536));
        assert_eq!(parse_limit("qos_read_iops", "0"), Ok(0));
        assert!(parse_limit("qos_bps", "100").unwrap_err().contains("did you mean 100M"));
        for (o, v) in [("qos_iops", "1k"), ("qos_iops", "-1"), ("qos_iops", "99999999999"), ("qos_bps", "fast"), ("qos_bps", "2T"), ("qos_other", "1")] {
            assert!(parse_limit(o, v).is_err(), "{o}={v}");
        }
    }

    #[test]
    fn limits_become_librbd_metadata_and_read_back() {
        let limits = BTreeMap::from([("qos_iops".to_string(), 500), ("qos_bps".to_string(), 0)]);
        let changes = metadata_changes(&limits);
        assert_eq!(changes, vec![("conf_rbd_qos_iops_limit".to_string(), Some("500".to_string())), ("conf_rbd_qos_bps_limit".to_string(), None)]);
        let meta = BTreeMap::from([("conf_rbd_qos_iops_limit".to_string(), "500".to_string()), ("conf_rbd_qos_write_bps_limit".to_string(), "104857600".to_string()), ("other".to_string(), "1".to_string())]);
        let read = limits_of(&meta);
        assert_eq!(read.len(), 2);
        assert_eq!(describe(&read), "qos_iops=500 qos_write_bps=100 MiB/s");
    }
}
