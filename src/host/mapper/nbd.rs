//! Ceph's rbd-nbd: librbd in its own process behind a kernel nbd device.
//! The key reaches rbd-nbd through an inherited anonymous memory file
//! (`--keyfile /proc/self/fd/3`; `/dev/fd` is a udev convenience some hosts
//! lack), never its command line, its environment or a file on disk.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use super::{MappedWith, Mapper, MapperKind, Mapping};
use crate::config::CephSettings;
use crate::host::tools::{Tool, Tools};
use crate::host::{HostError, ImageRef};

pub struct Nbd {
    tools: Tools,
    /// rbd-nbd's run directory (its admin sockets): ours, so it never
    /// creates or chmods `/var/run/ceph`, which a plugin rootfs lacks.
    run_dir: PathBuf,
}

impl Nbd {
    pub fn new(tools: Tools, run_dir: PathBuf) -> Nbd {
        Nbd { tools, run_dir }
    }

    fn run_dir_arg(&self) -> String {
        format!("--run-dir={}", self.run_dir.display())
    }
}

/// An anonymous, unlinked memory file holding `secret` (never on a disk,
/// in no directory), closed on exec unless passed on explicitly.
fn key_file(secret: &[u8]) -> Result<OwnedFd, HostError> {
    // SAFETY: the name is a valid C string; memfd_create returns a new fd
    // or -1.
    let fd = unsafe { libc::memfd_create(c"rbdvol-key".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(HostError::Sys { op: "create a key file for", path: "rbd-nbd".into(), errno: nix::errno::Errno::last() });
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(secret).map_err(HostError::io("write", "rbd-nbd key file"))?;
    Ok(file.into())
}

fn spec(image: &ImageRef) -> String {
    image.to_string()
}

/// Parses `rbd-nbd list-mapped --format json`.
pub fn parse_list(json: &str) -> Vec<Mapping> {
    let entries: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    entries
        .iter()
        // The image's head: Pacific says "" (older releases "-").
        .filter(|e| matches!(e["snap"].as_str().unwrap_or(""), "" | "-"))
        .filter_map(|e| {
            Some(Mapping {
                image: ImageRef {
                    pool: e["pool"].as_str()?.to_string(),
                    namespace: e["namespace"].as_str().unwrap_or("").to_string(),
                    image: e["image"].as_str()?.to_string(),
                },
                device: PathBuf::from(e["device"].as_str()?),
                mapper: MapperKind::Nbd,
                with: MappedWith { cookie: e["cookie"].as_str().filter(|c| !c.is_empty()).map(str::to_string), ..Default::default() },
            })
        })
        .collect()
}

impl Mapper for Nbd {
    fn kind(&self) -> MapperKind {
        MapperKind::Nbd
    }

    fn check_features(&self, _image: &ImageRef, _features: u64) -> Result<(), HostError> {
        Ok(()) // librbd maps every feature
    }

    fn map(&self, image: &ImageRef, settings: &CephSettings, _how: &super::MapOptions) -> Result<Mapping, HostError> {
        if let Some(m) = self.find(image)? {
            return Ok(m);
        }
        // The key in an anonymous memory file (a pipe will not do: rbd-nbd
        // reads the key file up to its size, and a pipe has none).
        let key = key_file(settings.key.expose().as_bytes())?;
        std::fs::create_dir_all(&self.run_dir).map_err(HostError::io("create", &self.run_dir))?;
        let mut cmd = self.tools.command(Tool::RbdNbd)?;
        cmd.args(["map", &spec(image), "--id", &settings.user, "-m", &settings.mon_host, "--keyfile", "/proc/self/fd/3"]);
        cmd.arg(self.run_dir_arg());
        for (k, v) in &settings.options {
            // An option from a ceph.conf this librados skips would stop
            // rbd-nbd: skipped here too.
            if settings.lenient.contains(k) && !crate::ceph::option_accepted(k, v) {
                continue;
            }
            cmd.arg(format!("--{k}={v}"));
        }
        // Every request ends within IO_TIMEOUT: the kernel's nbd timeout, and
        // librbd's own bounds on the cluster (rbdvol's, not Ceph's unbounded
        // defaults), so a fenced host's requests end before its fencing can.
        let t = &settings.timeouts;
        cmd.arg(format!("--io-timeout={}", super::IO_TIMEOUT.as_secs()));
        cmd.arg(format!("--rados_osd_op_timeout={}", t.osd_op.min(super::IO_TIMEOUT).as_secs()));
        cmd.arg(format!("--rados_mon_op_timeout={}", t.mon_op.as_secs()));
        cmd.arg(format!("--client_mount_timeout={}", t.connect.as_secs()));
        let fd = key.as_raw_fd();
        // SAFETY: between fork and exec we only call dup2 and fcntl, which
        // are async-signal-safe; fd stays open in the parent until the spawn.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec: clear it then.
                let ret = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
                if ret < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let child = cmd.spawn().map_err(HostError::io("run", "rbd-nbd"))?;
        drop(key);
        let out = child.wait_with_output().map_err(HostError::io("wait for", "rbd-nbd"))?;
        if !out.status.success() {
            return Err(HostError::MapFailed {
                mapper: "nbd",
                image: image.to_string(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        self.find(image)?.ok_or_else(|| HostError::MapFailed {
            mapper: "nbd",
            image: image.to_string(),
            reason: "rbd-nbd exited but lists no device for the image".into(),
        })
    }

    fn unmap(&self, mapping: &Mapping) -> Result<(), HostError> {
        if self.find(&mapping.image)?.is_none() {
            return Ok(());
        }
        let device = mapping.device.to_string_lossy();
        self.tools.run(Tool::RbdNbd, &device, &["unmap", &device, &self.run_dir_arg()]).map(drop)
    }

    fn list(&self) -> Result<Vec<Mapping>, HostError> {
        if !self.tools.has(Tool::RbdNbd) {
            return Ok(Vec::new());
        }
        let out = self.tools.run(Tool::RbdNbd, "list-mapped", &["list-mapped", "--format", "json", &self.run_dir_arg()])?;
        Ok(parse_list(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_mapped() {
        let json = r#"[{"id":123,"pool":"rbd","namespace":"","image":"db","snap":"-","device":"/dev/nbd0"},
                       {"id":124,"pool":"rbd","namespace":"ns","image":"x","snap":"s1","device":"/dev/nbd1"}]"#;
        let m = parse_list(json);
        assert_eq!(m.len(), 1);
        // As Pacific's rbd-nbd prints it (seen in the QEMU guest).
        let pacific = r#"[{"id":167,"pool":"rbd","namespace":"","image":"n1","snap":"","device":"/dev/nbd0","cookie":""}]"#;
        assert_eq!(parse_list(pacific)[0].device, PathBuf::from("/dev/nbd0"));
        assert_eq!(m[0].device, PathBuf::from("/dev/nbd0"));
        assert_eq!(m[0].image.image, "db");
    }
}
