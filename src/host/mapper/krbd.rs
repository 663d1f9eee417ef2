//! The kernel rbd driver, driven through sysfs as `rbd map` does, without
//! the rbd CLI. The key goes into the kernel keyring (`key=`), never into
//! sysfs (`secret=` would be echoed back in `config_info`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use super::{Mapper, MapperKind, Mapping};
use crate::ceph::features_to_string;
use crate::config::CephSettings;
use crate::host::tools::{Tool, Tools};
use crate::host::{sys, HostError, ImageRef};

pub struct Krbd {
    sysfs: PathBuf,
    tools: Tools,
}

const DEFAULT_V1_PORT: u16 = 6789;
const DEFAULT_V2_PORT: u16 = 3300;

/// Monitor addresses as the kernel takes them (`ip:port,ip:port`). The
/// kernel speaks msgr v1 unless `ms_mode` is set, then v2.
pub fn kernel_mon_addrs(mon_host: &str, v2: bool) -> Result<String, HostError> {
    let mut out = Vec::new();
    // Entries are separated by commas, semicolons or spaces outside brackets.
    let mut depth = 0;
    let mut current = String::new();
    let mut entries = Vec::new();
    for c in mon_host.chars() {
        match c {
            '[' => {
                depth += 1;
                current.push(c)
            }
            ']' => {
                depth -= 1;
                current.push(c)
            }
            ',' | ';' | ' ' if depth == 0 => entries.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    entries.push(current);
    let (want, port) = if v2 { ("v2:", DEFAULT_V2_PORT) } else { ("v1:", DEFAULT_V1_PORT) };
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        if let Some(vec) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
            // An address vector: take the one of the protocol the kernel speaks.
            let addr = vec
                .split(',')
                .find_map(|a| a.trim().strip_prefix(want))
                .ok_or_else(|| HostError::Invalid {
                    what: "monitor address",
                    value: entry.to_string(),
                    reason: format!("it has no {want} address, which the kernel needs"),
                })?;
            out.push(addr.split('/').next().unwrap_or(addr).to_string());
        } else {
            let bare = entry.strip_prefix(want).unwrap_or(entry);
            let bare = bare.split('/').next().unwrap_or(bare);
            if bare.starts_with("v1:") || bare.starts_with("v2:") {
                continue; // the other protocol
            }
            let has_port = bare.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok() && !h.ends_with(':'));
            out.push(if has_port { bare.to_string() } else { format!("{bare}:{port}") });
        }
    }
    if out.is_empty() {
        return Err(HostError::Invalid { what: "monitor address", value: mon_host.into(), reason: "no usable address".into() });
    }
    Ok(out.join(","))
}

/// The kernel's `ms_mode` for these settings: `ms_mode` itself when a
/// ceph option says it, else what librados' `ms_client_mode` (set by
/// `RBDVOL_MS_MODE`, or by a ceph.conf) asks for, so every mapper speaks
/// to the cluster the same way.
pub fn kernel_ms_mode(settings: &CephSettings) -> Option<String> {
    if let Some(m) = settings.options.get("ms_mode") {
        return Some(m.clone());
    }
    let modes: Vec<&str> = settings.options.get("ms_client_mode")?.split([' ', ',', ';']).filter(|m| !m.is_empty()).collect();
    match modes.as_slice() {
        ["secure"] => Some("secure".into()),
        ["crc"] => Some("crc".into()),
        ["crc", "secure"] => Some("prefer-crc".into()),
        ["secure", "crc"] => Some("prefer-secure".into()),
        _ => None,
    }
}

/// The kernel's `crush_location` (`host:a|rack:b`) from the ceph option
/// (`host=a rack=b`, as `RBDVOL_CRUSH_LOCATION` sets it).
pub fn kernel_crush_location(settings: &CephSettings) -> Option<String> {
    let loc = settings.options.get("crush_location")?;
    let pairs: Vec<String> = loc.split([' ', ',', ';', '|']).filter(|p| !p.is_empty()).filter_map(|p| p.split_once(['=', ':'])).map(|(k, v)| format!("{k}:{v}")).collect();
    (!pairs.is_empty()).then(|| pairs.join("|"))
}

/// Options rbdvol itself sets, which no map option may replace.
const OWN: &[&str] = &["name", "key", "secret", "noshare", "share", "osd_request_timeout", "_pool_ns", "crush_location", "ro", "read_only", "rw", "read_write"];

/// The line written to `add_single_major`. `how.options` were checked by
/// the engine's allowlist; any of rbdvol's own options among them is
/// refused here again.
pub fn add_string(image: &ImageRef, settings: &CephSettings, how: &super::MapOptions) -> Result<String, HostError> {
    let option = |name: &str| how.options.iter().find(|o| o.split('=').next() == Some(name)).map(|o| o.split_once('=').map_or("", |(_, v)| v).to_string());
    if let Some(own) = how.options.iter().find(|o| OWN.contains(&o.split('=').next().unwrap_or(""))) {
        return Err(HostError::Invalid { what: "krbd map option", value: own.clone(), reason: format!("rbdvol sets it itself (image {image})") });
    }
    // The host's mode (RBDVOL_MS_MODE, a ceph.conf) wins: a volume's own
    // applies only where the host sets none, so no volume creator can turn
    // the host's wire encryption off.
    let ms_mode = kernel_ms_mode(settings).or_else(|| option("ms_mode"));
    let mons = kernel_mon_addrs(&settings.mon_host, ms_mode.as_deref().is_some_and(|m| m != "legacy"))?;
    // noshare: a kernel client of its own per mapping, so fencing one
    // volume's client never stops this host's other volumes.
    // osd_request_timeout: no request outlives the fencing that refused it
    // (see `OSD_REQUEST_TIMEOUT`).
    let mut opts = vec![
        format!("name={}", settings.user),
        format!("key=client.{}", settings.user),
        "noshare".to_string(),
        format!("osd_request_timeout={}", super::IO_TIMEOUT.as_secs()),
    ];
    if let Some(mode) = &ms_mode {
        opts.push(format!("ms_mode={mode}"));
    }
    if how.read_only {
        opts.push("ro".to_string());
    }
    if option("read_from_replica").as_deref() == Some("localize") {
        let loc = kernel_crush_location(settings).ok_or_else(|| HostError::Invalid {
            what: "krbd map option",
            value: "read_from_replica=localize".into(),
            reason: format!("reads can be localized only with this host's place in the CRUSH map: set RBDVOL_CRUSH_LOCATION (e.g. host=node1) before mounting {image}"),
        })?;
        opts.push(format!("crush_location={loc}"));
    }
    opts.extend(how.options.iter().filter(|o| o.split('=').next() != Some("ms_mode")).cloned());
    if !image.namespace.is_empty() {
        opts.push(format!("_pool_ns={}", image.namespace));
    }
    Ok(format!("{mons} {} {} {} -", opts.join(","), image.pool, image.image))
}

/// What a krbd mapping keeps: its unmap options (its map options live in
/// the kernel, which keeps the mapping across any restart of rbdvol).
fn with(how: &super::MapOptions) -> super::MappedWith {
    super::MappedWith { unmap_options: how.unmap_options.clone(), read_only: how.read_only, ..Default::default() }
}

/// Mappings found under `<sysfs>/bus/rbd/devices`.
pub fn discover(sysfs: &Path) -> Vec<(u32, ImageRef)> {
    let Ok(rd) = std::fs::read_dir(sysfs.join("bus/rbd/devices")) else { return Vec::new() };
    let read = |dir: &Path, f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim_end().to_string()).unwrap_or_default();
    let mut found: Vec<(u32, ImageRef)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let id: u32 = e.file_name().to_str()?.parse().ok()?;
            let dir = e.path();
            if read(&dir, "current_snap") != "-" {
                return None; // a snapshot mapping is not a volume
            }
            Some((id, ImageRef { pool: read(&dir, "pool"), namespace: read(&dir, "pool_ns"), image: read(&dir, "name") }))
        })
        .collect();
    found.sort();
    found
}

/// Image features the running kernel can map.
pub fn supported_features(sysfs: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(sysfs.join("bus/rbd/supported_features")).ok()?;
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

impl Krbd {
    pub fn new(sysfs: PathBuf, tools: Tools) -> Krbd {
        Krbd { sysfs, tools }
    }

    fn bus(&self) -> PathBuf {
        self.sysfs.join("bus/rbd")
    }

    /// Loads the rbd module when its sysfs bus is missing (peers' users hit
    /// "first map fails" because nobody did).
    fn ensure_module(&self, image: &ImageRef) -> Result<(), HostError> {
        if self.bus().exists() {
            return Ok(());
        }
        self.tools.run(Tool::Modprobe, "rbd", &["rbd"]).map_err(|e| HostError::Unsupported {
            mapper: "krbd",
            image: image.to_string(),
            reason: format!("the rbd kernel module is not loaded and loading it failed: {e}"),
        })?;
        for _ in 0..50 {
            if self.bus().exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HostError::Unsupported { mapper: "krbd", image: image.to_string(), reason: format!("{} did not appear after modprobe rbd", self.bus().display()) })
    }

    /// Writes the device id (and `force`) to the bus's remove file, retrying
    /// while the kernel says busy (udev still probing a new device).
    fn remove(&self, mapping: &Mapping, force: bool) -> Result<(), HostError> {
        // The mapping's own device (`/dev/rbdN`) when it still maps this
        // image — never another mapping of the same image (an admin's `rbd
        // map`); else the image's mapping, however found.
        let devices = discover(&self.sysfs);
        let own = mapping.device.to_str().and_then(|d| d.strip_prefix("/dev/rbd")).and_then(|n| n.parse::<u32>().ok());
        let found = match own {
            Some(n) => devices.iter().find(|(id, i)| *id == n && *i == mapping.image),
            None => devices.iter().find(|(_, i)| *i == mapping.image),
        };
        let Some(&(id, _)) = found else { return Ok(()) };
        let remove = self.control_file("remove_single_major", "remove");
        let request = if force { format!("{id} force") } else { id.to_string() };
        for attempt in 0..50 {
            match std::fs::write(&remove, &request) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(HostError::Io { op: "unmap via", path: remove, source: e }),
            }
        }
        unreachable!()
    }

    fn control_file(&self, single_major: &str, plain: &str) -> PathBuf {
        let f = self.bus().join(single_major);
        if f.exists() {
            f
        } else {
            self.bus().join(plain)
        }
    }
}

impl Mapper for Krbd {
    fn kind(&self) -> MapperKind {
        MapperKind::Krbd
    }

    fn check_features(&self, image: &ImageRef, features: u64) -> Result<(), HostError> {
        let Some(supported) = supported_features(&self.sysfs) else { return Ok(()) };
        let missing = features & !supported;
        if missing != 0 {
            return Err(HostError::Unsupported {
                mapper: "krbd",
                image: image.to_string(),
                reason: format!(
                    "this kernel cannot map image features {} (it supports {}): create the volume with -o features=layering, or use the nbd or userspace mapper",
                    features_to_string(missing),
                    features_to_string(supported)
                ),
            });
        }
        Ok(())
    }

    fn map(&self, image: &ImageRef, settings: &CephSettings, how: &super::MapOptions) -> Result<Mapping, HostError> {
        if let Some(m) = self.find(image)? {
            return Ok(Mapping { with: with(how), ..m });
        }
        // Built (and checked) before anything is done.
        add_string(image, settings, how)?;
        self.ensure_module(image)?;
        let secret = base64::engine::general_purpose::STANDARD.decode(settings.key.expose().trim()).map_err(|_| HostError::Invalid {
            what: "cephx key of",
            value: format!("client.{}", settings.user),
            reason: "it is not valid base64".into(),
        })?;
        sys::add_ceph_key(&format!("client.{}", settings.user), &secret)?;
        let line = add_string(image, settings, how)?;
        let add = self.control_file("add_single_major", "add");
        std::fs::write(&add, line.as_bytes()).map_err(|e| HostError::MapFailed {
            mapper: "krbd",
            image: image.to_string(),
            reason: format!("writing {} failed: {e} (see dmesg)", add.display()),
        })?;
        let m = self.find(image)?.ok_or_else(|| HostError::MapFailed {
            mapper: "krbd",
            image: image.to_string(),
            reason: format!("the kernel accepted the map but no device for it is in {}", self.bus().join("devices").display()),
        })?;
        Ok(Mapping { with: with(how), ..m })
    }

    /// With `force` among its unmap options (`-o unmap_options=krbd:force`)
    /// as `unmap_fenced`; no other unmap option exists.
    fn unmap(&self, mapping: &Mapping) -> Result<(), HostError> {
        self.remove(mapping, mapping.with.unmap_options.iter().any(|o| o == "force"))
    }

    /// `force` (the kernel's `rbd unmap -o force`): fails the device's
    /// outstanding I/O and removes it even while it is open.
    fn unmap_fenced(&self, mapping: &Mapping) -> Result<(), HostError> {
        self.remove(mapping, true)
    }

    /// The kernel follows the header's resize notification; writing the
    /// device's `refresh` makes it re-read the header now.
    fn refresh_size(&self, mapping: &Mapping, size: u64) -> Result<(), HostError> {
        if let Some((id, _)) = discover(&self.sysfs).into_iter().find(|(_, i)| *i == mapping.image) {
            let refresh = self.bus().join("devices").join(id.to_string()).join("refresh");
            std::fs::write(&refresh, "1").map_err(|e| HostError::Io { op: "refresh via", path: refresh, source: e })?;
        }
        super::wait_for_size(&mapping.device, size)
    }

    fn list(&self) -> Result<Vec<Mapping>, HostError> {
        Ok(discover(&self.sysfs)
            .into_iter()
            .map(|(id, image)| Mapping { image, device: PathBuf::from(format!("/dev/rbd{id}")), mapper: MapperKind::Krbd, with: Default::default() })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, Timeouts};

    fn settings(mon_host: &str) -> CephSettings {
        CephSettings {
            mon_host: mon_host.into(),
            user: "docker".into(),
            key: Secret::new("AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg=="),
            options: Default::default(),
            lenient: Default::default(),
            timeouts: Timeouts::default(),
        }
    }

    fn image(ns: &str) -> ImageRef {
        ImageRef { pool: "rbd".into(), namespace: ns.into(), image: "db".into() }
    }

    #[test]
    fn add_string_uses_the_keyring_never_the_secret() {
        let line = add_string(&image(""), &settings("[v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300,v1:10.0.0.2:6789]"), &Default::default()).unwrap();
        assert_eq!(line, "10.0.0.1:6789,10.0.0.2:6789 name=docker,key=client.docker,noshare,osd_request_timeout=30 rbd db -");
        assert!(!line.contains("secret=") && !line.contains("AQBX"));
    }

    #[test]
    fn add_string_with_namespace_and_ms_mode() {
        let mut s = settings("10.0.0.1");
        s.options.insert("ms_mode".into(), "secure".into());
        let line = add_string(&image("team-a"), &s, &Default::default()).unwrap();
        assert_eq!(line, "10.0.0.1:3300 name=docker,key=client.docker,noshare,osd_request_timeout=30,ms_mode=secure,_pool_ns=team-a rbd db -");
        let ro = add_string(&image(""), &settings("10.0.0.1"), &super::super::MapOptions { read_only: true, ..Default::default() }).unwrap();
        assert_eq!(ro, "10.0.0.1:6789 name=docker,key=client.docker,noshare,osd_request_timeout=30,ro rbd db -");
    }

    fn how(options: &[&str]) -> crate::host::mapper::MapOptions {
        crate::host::mapper::MapOptions { options: options.iter().map(|o| o.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn map_options_follow_rbdvols_own_and_the_hosts_ms_mode_wins() {
        let mut s = settings("10.0.0.1");
        s.options.insert("ms_client_mode".into(), "secure".into());
        let line = add_string(&image(""), &s, &how(&["queue_depth=256", "alloc_size=65536", "notrim"])).unwrap();
        assert_eq!(line, "10.0.0.1:3300 name=docker,key=client.docker,noshare,osd_request_timeout=30,ms_mode=secure,queue_depth=256,alloc_size=65536,notrim rbd db -");
        let line = add_string(&image(""), &s, &how(&["ms_mode=legacy"])).unwrap();
        assert_eq!(line, "10.0.0.1:3300 name=docker,key=client.docker,noshare,osd_request_timeout=30,ms_mode=secure rbd db -", "a volume never weakens the host's mode");
        let line = add_string(&image(""), &settings("10.0.0.1"), &how(&["ms_mode=secure"])).unwrap();
        assert_eq!(line, "10.0.0.1:3300 name=docker,key=client.docker,noshare,osd_request_timeout=30,ms_mode=secure rbd db -", "a host without a mode takes the volume's");
        // rbdvol's own options are never taken from a list, whatever let it through.
        for own in ["secret=x", "name=admin", "share", "osd_request_timeout=0", "ro", "_pool_ns=x"] {
            let e = add_string(&image(""), &s, &how(&[own])).unwrap_err().to_string();
            assert!(e.contains("rbdvol sets it itself"), "{own}: {e}");
        }
    }

    #[test]
    fn librados_ms_client_mode_becomes_the_kernels_ms_mode() {
        let mut s = settings("10.0.0.1");
        for (client, kernel) in [("secure", Some("secure")), ("crc", Some("crc")), ("crc secure", Some("prefer-crc")), ("secure crc", Some("prefer-secure")), ("bogus", None)] {
            s.options.insert("ms_client_mode".into(), client.into());
            assert_eq!(kernel_ms_mode(&s).as_deref(), kernel, "{client}");
        }
    }

    #[test]
    fn localized_reads_carry_the_hosts_crush_location_and_need_one() {
        let mut s = settings("10.0.0.1");
        let e = add_string(&image(""), &s, &how(&["read_from_replica=localize"])).unwrap_err().to_string();
        assert!(e.contains("RBDVOL_CRUSH_LOCATION"), "{e}");
        s.options.insert("crush_location".into(), "host=node1 rack=r2".into());
        let line = add_string(&image(""), &s, &how(&["read_from_replica=localize"])).unwrap();
        assert_eq!(line, "10.0.0.1:6789 name=docker,key=client.docker,noshare,osd_request_timeout=30,crush_location=host:node1|rack:r2,read_from_replica=localize rbd db -");
        // balance needs none, and gets none.
        let line = add_string(&image(""), &s, &how(&["read_from_replica=balance"])).unwrap();
        assert!(!line.contains("crush_location"), "{line}");
    }

    #[test]
    fn a_bad_map_option_maps_nothing() {
        let root = fixture();
        let krbd = Krbd::new(root.path().into(), Tools::default());
        let other = ImageRef { pool: "rbd".into(), namespace: "".into(), image: "new".into() };
        assert!(krbd.map(&other, &settings("10.0.0.1"), &how(&["read_from_replica=localize"])).is_err());
        assert_eq!(std::fs::read_to_string(root.path().join("bus/rbd/add_single_major")).unwrap(), "");
    }

    #[test]
    fn unmap_options_force_the_removal() {
        let root = fixture();
        let krbd = Krbd::new(root.path().into(), Tools::default());
        let mut m = krbd.find(&ImageRef { pool: "ssd".into(), namespace: "team-a".into(), image: "web".into() }).unwrap().unwrap();
        m.with.unmap_options = vec!["force".into()];
        krbd.unmap(&m).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("bus/rbd/remove_single_major")).unwrap(), "3 force");
    }

    #[test]
    fn mon_addresses_in_every_spelling() {
        assert_eq!(kernel_mon_addrs("10.0.0.1,10.0.0.2:6790", false).unwrap(), "10.0.0.1:6789,10.0.0.2:6790");
        assert_eq!(kernel_mon_addrs("v1:10.0.0.1:6789/0 v2:10.0.0.1:3300/0", false).unwrap(), "10.0.0.1:6789");
        assert_eq!(kernel_mon_addrs("[v2:1.2.3.4:3300,v1:1.2.3.4:6789]", true).unwrap(), "1.2.3.4:3300");
        assert!(kernel_mon_addrs("[v2:1.2.3.4:3300]", false).is_err());
    }

    /// A tree shaped like the kernel's /sys/bus/rbd.
    fn fixture() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let bus = root.path().join("bus/rbd");
        std::fs::create_dir_all(bus.join("devices")).unwrap();
        std::fs::write(bus.join("add_single_major"), "").unwrap();
        std::fs::write(bus.join("remove_single_major"), "").unwrap();
        std::fs::write(bus.join("supported_features"), "0x3d\n").unwrap();
        for (id, pool, ns, name, snap) in [(0, "rbd", "", "db", "-"), (3, "ssd", "team-a", "web", "-"), (4, "rbd", "", "db", "snap1")] {
            let d = bus.join(format!("devices/{id}"));
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in [("pool", pool), ("pool_ns", ns), ("name", name), ("current_snap", snap)] {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
            std::fs::write(d.join("config_info"), "10.0.0.1:6789 name=docker,key=client.docker rbd db -\n").unwrap();
        }
        root
    }

    #[test]
    fn discovers_existing_mappings_but_not_snapshots() {
        let root = fixture();
        let krbd = Krbd::new(root.path().into(), Tools::default());
        let maps = krbd.list().unwrap();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].device, PathBuf::from("/dev/rbd0"));
        assert_eq!(maps[0].image, image(""));
        assert_eq!(maps[1].device, PathBuf::from("/dev/rbd3"));
        assert_eq!(maps[1].image, ImageRef { pool: "ssd".into(), namespace: "team-a".into(), image: "web".into() });
        // Mapping an image that is mapped returns the existing device.
        let m = krbd.map(&image(""), &settings("10.0.0.1"), &Default::default()).unwrap();
        assert_eq!(m.device, PathBuf::from("/dev/rbd0"));
        assert_eq!(std::fs::read_to_string(root.path().join("bus/rbd/add_single_major")).unwrap(), "");
    }

    #[test]
    fn unmap_writes_the_device_id() {
        let root = fixture();
        let krbd = Krbd::new(root.path().into(), Tools::default());
        let m = krbd.find(&ImageRef { pool: "ssd".into(), namespace: "team-a".into(), image: "web".into() }).unwrap().unwrap();
        krbd.unmap(&m).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("bus/rbd/remove_single_major")).unwrap(), "3");
    }

    #[test]
    fn a_fenced_device_is_removed_with_force() {
        let root = fixture();
        let krbd = Krbd::new(root.path().into(), Tools::default());
        let m = krbd.find(&ImageRef { pool: "ssd".into(), namespace: "team-a".into(), image: "web".into() }).unwrap().unwrap();
        krbd.unmap_fenced(&m).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("bus/rbd/remove_single_major")).unwrap(), "3 force");
    }

    #[test]
    fn the_device_removed_is_the_mappings_own_never_another_mapping_of_the_image() {
        let root = fixture();
        // An admin's `rbd map` of the same image, as device 7.
        let d = root.path().join("bus/rbd/devices/7");
        std::fs::create_dir_all(&d).unwrap();
        for (f, v) in [("pool", "ssd"), ("pool_ns", "team-a"), ("name", "web"), ("current_snap", "-")] {
            std::fs::write(d.join(f), format!("{v}\n")).unwrap();
        }
        let krbd = Krbd::new(root.path().into(), Tools::default());
        let image = ImageRef { pool: "ssd".into(), namespace: "team-a".into(), image: "web".into() };
        let ours = Mapping { image: image.clone(), device: "/dev/rbd7".into(), mapper: MapperKind::Krbd, with: Default::default() };
        krbd.unmap_fenced(&ours).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("bus/rbd/remove_single_major")).unwrap(), "7 force");
        // A device number that maps something else now: nothing removed.
        std::fs::write(root.path().join("bus/rbd/remove_single_major"), "").unwrap();
        let stale = Mapping { image, device: "/dev/rbd0".into(), mapper: MapperKind::Krbd, with: Default::default() };
        krbd.unmap_fenced(&stale).unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("bus/rbd/remove_single_major")).unwrap(), "");
    }

    #[test]
    fn features_the_kernel_lacks_are_named() {
        let root = fixture();
        let krbd = Krbd::new(root.path().into(), Tools::default());
        // 0x3d = layering, exclusive-lock, object-map, fast-diff, deep-flatten; journaling = 0x40.
        assert!(krbd.check_features(&image(""), 0x1).is_ok());
        let e = krbd.check_features(&image(""), 0x41).unwrap_err().to_string();
        assert!(e.contains("journaling") && e.contains("rbd/db"), "{e}");
    }
}
