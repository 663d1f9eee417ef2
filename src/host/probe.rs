//! Read-only probes of this host for `rbdvol doctor`: capabilities, the
//! devices and modules each mapper needs, loop devices left on a dead
//! user-space server. Nothing here changes the host (except that `auto`
//! mapper detection may load a kernel module, exactly as `serve` does).

use std::path::{Path, PathBuf};

use super::fusefs::DISK_FILE;
use super::mapper::{self, MapperConfig, MapperKind};
use super::tools::{Tool, Tools};
use super::{sys, HostError};

/// Capability numbers (linux/capability.h).
pub const CAP_SYS_MODULE: u32 = 16;
pub const CAP_SYS_ADMIN: u32 = 21;

/// The effective capability set from the text of /proc/<pid>/status
/// (`CapEff:` followed by a hex mask).
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Whether capability `cap` is in the mask.
pub fn has_cap(mask: u64, cap: u32) -> bool {
    cap < 64 && mask & (1u64 << cap) != 0
}

/// This process's effective capabilities.
pub fn effective_caps() -> Result<u64, HostError> {
    let path = "/proc/self/status";
    let text = std::fs::read_to_string(path).map_err(HostError::io("read", path))?;
    parse_cap_eff(&text).ok_or_else(|| HostError::Invalid { what: "process status", value: path.into(), reason: "it has no CapEff line".into() })
}

/// The mapper this host would use, and whether it can work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapperProbe {
    pub kind: MapperKind,
    /// Why this mapper (a short phrase).
    pub why: String,
    /// `Err`: what is missing for it, worded as what to do.
    pub usable: Result<(), String>,
}

/// The device nodes the user-space mapper needs that are missing here.
pub fn userspace_devices_missing() -> Vec<&'static str> {
    ["/dev/fuse", "/dev/loop-control"].into_iter().filter(|d| !Path::new(d).exists()).collect()
}

/// Which mapper `mapper` ("auto", "krbd", "nbd" or "userspace") means on
/// this host, and whether it is usable. `Err` for an unknown mapper name.
pub fn probe_mapper(mapper: &str, config: &MapperConfig, tools: &Tools) -> Result<MapperProbe, String> {
    let auto = mapper == "auto";
    let kind = if auto {
        mapper::detect(config, tools)
    } else {
        MapperKind::parse(mapper).ok_or_else(|| format!("invalid mapper '{mapper}': set RBDVOL_MAPPER (--mapper) to auto, krbd, nbd or userspace"))?
    };
    let chosen = if auto { "picked by auto" } else { "set by RBDVOL_MAPPER" };
    let bus = config.sysfs.join("bus/rbd");
    let probe = match kind {
        MapperKind::Krbd => MapperProbe {
            kind,
            why: format!("{chosen}: the kernel rbd driver ({} present)", bus.display()),
            usable: if bus.exists() { Ok(()) } else { Err("the rbd kernel module is not loaded: modprobe rbd on the host, or use RBDVOL_MAPPER=auto".into()) },
        },
        MapperKind::Nbd => MapperProbe {
            kind,
            why: format!("{chosen}: rbd-nbd and the nbd kernel module"),
            usable: if tools.has(Tool::RbdNbd) { Ok(()) } else { Err("rbd-nbd is not installed: apt-get install rbd-nbd, or use RBDVOL_MAPPER=auto".into()) },
        },
        MapperKind::Userspace => {
            let missing = userspace_devices_missing();
            let why = if auto { format!("{chosen}: no rbd or nbd kernel module, FUSE + loop devices") } else { format!("{chosen}: FUSE + loop devices") };
            let usable = if missing.is_empty() {
                Ok(())
            } else if auto {
                Err(format!(
                    "no mapper is usable: load the rbd kernel module (modprobe rbd), or install rbd-nbd and load nbd, or give rbdvol {}",
                    missing.join(" and ")
                ))
            } else {
                Err(format!("{} missing: give rbdvol these devices (docker --device), or use RBDVOL_MAPPER=auto", missing.join(" and ")))
            };
            MapperProbe { kind, why, usable }
        }
    };
    Ok(probe)
}

/// Loop devices attached to a user-space server's file whose server died
/// (the kernel answers ENOTCONN), with the backing file's last path.
pub fn dead_userspace_loops() -> Vec<(PathBuf, PathBuf)> {
    sys::loop_devices()
        .into_iter()
        .filter_map(|(dev, _)| {
            let backing = sys::loop_backing_dead(&dev)?;
            (backing.file_name() == Some(DISK_FILE.as_ref())).then_some((dev, backing))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_from_status() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001fffffeffff\nCapBnd:\t000001ffffffffff\n";
        let mask = parse_cap_eff(status).unwrap();
        assert_eq!(mask, 0x1fffffeffff);
        assert!(has_cap(mask, CAP_SYS_ADMIN));
        assert!(!has_cap(mask, CAP_SYS_MODULE), "bit 16 is clear in ...effff");
        assert!(!has_cap(mask, 64));
    }

    #[test]
    fn docker_default_caps_lack_sys_admin() {
        // Docker's default set: chown, dac_override, fowner, fsetid, kill,
        // setgid, setuid, setpcap, net_bind_service, net_raw, sys_chroot,
        // mknod, audit_write, setfcap.
        let mask = parse_cap_eff("CapEff:\t00000000a80425fb\n").unwrap();
        assert!(!has_cap(mask, CAP_SYS_ADMIN));
        assert!(!has_cap(mask, CAP_SYS_MODULE));
    }

    #[test]
    fn status_without_cap_eff_or_with_garbage_is_none() {
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn an_unknown_mapper_name_is_refused() {
        let cfg = MapperConfig { run_dir: "/nonexistent".into(), sysfs: "/nonexistent".into(), exe: "/bin/true".into() };
        let e = probe_mapper("rbd-fuse", &cfg, &Tools::default()).unwrap_err();
        assert!(e.contains("RBDVOL_MAPPER"), "{e}");
    }

    #[test]
    fn explicit_krbd_without_the_module_says_what_to_do() {
        let cfg = MapperConfig { run_dir: "/nonexistent".into(), sysfs: "/nonexistent".into(), exe: "/bin/true".into() };
        let p = probe_mapper("krbd", &cfg, &Tools::default()).unwrap();
        assert_eq!(p.kind, MapperKind::Krbd);
        assert!(p.usable.unwrap_err().contains("modprobe rbd"));
    }
}
