//! Ceph's rbd-nbd: librbd in its own process behind a kernel nbd device.
//! The key reaches rbd-nbd through an inherited pipe (`--keyfile
//! /dev/fd/3`), never its command line or a file on disk.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use super::{Mapper, MapperKind, Mapping};
use crate::config::CephSettings;
use crate::host::tools::{Tool, Tools};
use crate::host::{HostError, ImageRef};

pub struct Nbd {
    tools: Tools,
}

impl Nbd {
    pub fn new(tools: Tools) -> Nbd {
        Nbd { tools }
    }
}

fn spec(image: &ImageRef) -> String {
    image.to_string()
}

/// Parses `rbd-nbd list-mapped --format json`.
pub fn parse_list(json: &str) -> Vec<Mapping> {
    let entries: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    entries
        .iter()
        .filter(|e| e["snap"].as_str().unwrap_or("-") == "-")
        .filter_map(|e| {
            Some(Mapping {
                image: ImageRef {
                    pool: e["pool"].as_str()?.to_string(),
                    namespace: e["namespace"].as_str().unwrap_or("").to_string(),
                    image: e["image"].as_str()?.to_string(),
                },
                device: PathBuf::from(e["device"].as_str()?),
                mapper: MapperKind::Nbd,
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

    fn map(&self, image: &ImageRef, settings: &CephSettings) -> Result<Mapping, HostError> {
        if let Some(m) = self.find(image)? {
            return Ok(m);
        }
        let (read_end, write_end) = nix::unistd::pipe().map_err(HostError::sys("create pipe for", "rbd-nbd"))?;
        let mut cmd = self.tools.command(Tool::RbdNbd)?;
        cmd.args(["map", &spec(image), "--id", &settings.user, "-m", &settings.mon_host, "--keyfile", "/dev/fd/3"]);
        for (k, v) in &settings.options {
            cmd.arg(format!("--{k}={v}"));
        }
        let fd = read_end.as_raw_fd();
        // SAFETY: between fork and exec we only call dup2, which is
        // async-signal-safe; fd stays open in the parent until then.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let child = cmd.spawn().map_err(HostError::io("run", "rbd-nbd"))?;
        drop(read_end);
        {
            // SAFETY: we own write_end; the File takes it over.
            let mut w = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(write_end)) });
            let _ = w.write_all(settings.key.expose().as_bytes());
        }
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
        self.tools.run(Tool::RbdNbd, &mapping.device.to_string_lossy(), &["unmap", &mapping.device.to_string_lossy()]).map(drop)
    }

    fn list(&self) -> Result<Vec<Mapping>, HostError> {
        if !self.tools.has(Tool::RbdNbd) {
            return Ok(Vec::new());
        }
        let out = self.tools.run(Tool::RbdNbd, "list-mapped", &["list-mapped", "--format", "json"])?;
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
        assert_eq!(m[0].device, PathBuf::from("/dev/nbd0"));
        assert_eq!(m[0].image.image, "db");
    }
}
