//! What Swarm's access modes and types mean for rbdvol.
//!
//! | `--scope` / `--sharing`      | CSI access mode          | rbdvol                          |
//! |------------------------------|--------------------------|---------------------------------|
//! | single / none, onewriter, all| SINGLE_NODE_WRITER       | read-write, exclusive host lock |
//! | single / readonly            | SINGLE_NODE_READER_ONLY  | read-only, shared lock          |
//! | multi / readonly             | MULTI_NODE_READER_ONLY   | read-only, shared lock          |
//! | multi / onewriter            | MULTI_NODE_SINGLE_WRITER | refused                         |
//! | multi / all                  | MULTI_NODE_MULTI_WRITER  | refused                         |
//!
//! Only filesystem volumes (`--type mount`); `--type block` is refused.

use super::proto::volume_capability::access_mode::Mode;
use super::proto::volume_capability::AccessType;
use super::proto::VolumeCapability;
use super::CsiError;

/// How a volume is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-write on one host at a time.
    Writer,
    /// Read-only, on any number of hosts.
    ReadOnly,
}

/// What a set of capabilities asks for: how the volume is used, and the
/// filesystem type if one is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub access: Access,
    pub fstype: Option<String>,
}

/// Checks the capabilities against what rbdvol can give; all must agree.
pub fn asked(caps: &[VolumeCapability]) -> Result<Asked, CsiError> {
    let mut result: Option<Asked> = None;
    if caps.is_empty() {
        return Err(CsiError::Invalid("no volume capability given: say how the volume is used (--type mount, --sharing, --scope)".into()));
    }
    for cap in caps {
        let one = one(cap)?;
        match &result {
            Some(r) if *r != one => return Err(CsiError::Invalid("the volume capabilities disagree (read-write and read-only, or two filesystem types): give one".into())),
            _ => result = Some(one),
        }
    }
    Ok(result.expect("at least one"))
}

/// Checks one capability.
pub fn one(cap: &VolumeCapability) -> Result<Asked, CsiError> {
    let fstype = match &cap.access_type {
        None => return Err(CsiError::Invalid("the volume capability has no access type: use --type mount".into())),
        Some(AccessType::Block(_)) => {
            return Err(CsiError::Invalid(
                "rbdvol makes filesystem volumes: block access (--type block, the docker CLI's default) is not supported; use --type mount".into(),
            ))
        }
        Some(AccessType::Mount(m)) => {
            if !m.mount_flags.is_empty() {
                return Err(CsiError::Invalid("mount flags in the volume capability are not taken: use -o mount_options=... (checked against what rbdvol allows)".into()));
            }
            if !m.volume_mount_group.is_empty() {
                return Err(CsiError::Invalid("a volume mount group is not supported: set ownership with -o uid=/gid=".into()));
            }
            match m.fs_type.trim() {
                "" => None,
                t @ ("ext4" | "xfs" | "btrfs") => Some(t.to_string()),
                other => return Err(CsiError::Invalid(format!("filesystem type '{other}' is not supported: use ext4, xfs or btrfs"))),
            }
        }
    };
    let mode = cap.access_mode.as_ref().map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown)).unwrap_or(Mode::Unknown);
    let access = match mode {
        Mode::SingleNodeWriter | Mode::SingleNodeSingleWriter | Mode::SingleNodeMultiWriter => Access::Writer,
        Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly => Access::ReadOnly,
        Mode::MultiNodeSingleWriter => {
            return Err(CsiError::Invalid(
                "a volume written on one node and read on others (--scope multi --sharing onewriter) is not supported: rbdvol mounts a volume read-write on one host at a time (--scope single) or read-only on many (--sharing readonly)".into(),
            ))
        }
        Mode::MultiNodeMultiWriter => {
            return Err(CsiError::Invalid(
                "a filesystem written by several hosts at once is corrupted (--scope multi --sharing all): use --scope single, or --sharing readonly for readers on many nodes".into(),
            ))
        }
        Mode::Unknown => return Err(CsiError::Invalid("the volume capability has no access mode: give --sharing and --scope".into())),
    };
    Ok(Asked { access, fstype })
}

#[cfg(test)]
mod tests {
    use super::super::proto::volume_capability::{AccessMode, BlockVolume, MountVolume};
    use super::*;

    fn cap(mode: Mode, fs: &str) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume { fs_type: fs.into(), ..Default::default() })),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    fn refused(caps: &[VolumeCapability]) -> String {
        match asked(caps) {
            Err(CsiError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn single_node_modes_are_writers_and_reader_modes_read_only() {
        for m in [Mode::SingleNodeWriter, Mode::SingleNodeSingleWriter, Mode::SingleNodeMultiWriter] {
            assert_eq!(asked(&[cap(m, "")]).unwrap(), Asked { access: Access::Writer, fstype: None });
        }
        for m in [Mode::SingleNodeReaderOnly, Mode::MultiNodeReaderOnly] {
            assert_eq!(asked(&[cap(m, "xfs")]).unwrap(), Asked { access: Access::ReadOnly, fstype: Some("xfs".into()) });
        }
    }

    #[test]
    fn several_writers_block_access_and_odd_capabilities_are_refused_with_what_to_do() {
        assert!(refused(&[cap(Mode::MultiNodeMultiWriter, "")]).contains("--scope single"));
        assert!(refused(&[cap(Mode::MultiNodeSingleWriter, "")]).contains("--sharing readonly"));
        assert!(refused(&[cap(Mode::Unknown, "")]).contains("access mode"));
        assert!(refused(&[]).contains("no volume capability"));
        assert!(refused(&[cap(Mode::SingleNodeWriter, "vfat")]).contains("'vfat'"));
        let block = VolumeCapability { access_type: Some(AccessType::Block(BlockVolume {})), access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }) };
        assert!(refused(&[block]).contains("--type mount"));
        let flags = VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume { mount_flags: vec!["exec".into()], ..Default::default() })),
            access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
        };
        assert!(refused(&[flags]).contains("mount_options"));
        assert!(refused(&[cap(Mode::SingleNodeWriter, ""), cap(Mode::MultiNodeReaderOnly, "")]).contains("disagree"));
    }
}
