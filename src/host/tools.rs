//! Every external program rbdvol runs, named once. Each is looked up at
//! start-up, run with an argv (never a shell), and its stderr goes into the
//! error when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::HostError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    MkfsExt4,
    MkfsXfs,
    MkfsBtrfs,
    Blkid,
    Resize2fs,
    E2fsck,
    XfsGrowfs,
    Btrfs,
    Modprobe,
    RbdNbd,
}

impl Tool {
    pub const ALL: [Tool; 10] = [
        Tool::MkfsExt4,
        Tool::MkfsXfs,
        Tool::MkfsBtrfs,
        Tool::Blkid,
        Tool::Resize2fs,
        Tool::E2fsck,
        Tool::XfsGrowfs,
        Tool::Btrfs,
        Tool::Modprobe,
        Tool::RbdNbd,
    ];

    pub fn program(self) -> &'static str {
        match self {
            Tool::MkfsExt4 => "mkfs.ext4",
            Tool::MkfsXfs => "mkfs.xfs",
            Tool::MkfsBtrfs => "mkfs.btrfs",
            Tool::Blkid => "blkid",
            Tool::Resize2fs => "resize2fs",
            Tool::E2fsck => "e2fsck",
            Tool::XfsGrowfs => "xfs_growfs",
            Tool::Btrfs => "btrfs",
            Tool::Modprobe => "modprobe",
            Tool::RbdNbd => "rbd-nbd",
        }
    }

    /// How to install it.
    pub fn hint(self) -> &'static str {
        match self {
            Tool::MkfsExt4 | Tool::Resize2fs | Tool::E2fsck => "apt-get install e2fsprogs",
            Tool::MkfsXfs | Tool::XfsGrowfs => "apt-get install xfsprogs",
            Tool::MkfsBtrfs | Tool::Btrfs => "apt-get install btrfs-progs",
            Tool::Blkid => "apt-get install util-linux",
            Tool::Modprobe => "apt-get install kmod",
            Tool::RbdNbd => "apt-get install rbd-nbd",
        }
    }

    /// Tools rbdvol cannot work without (ext4 is the default filesystem).
    pub fn required(self) -> bool {
        matches!(self, Tool::MkfsExt4 | Tool::Blkid | Tool::Resize2fs | Tool::E2fsck)
    }
}

/// The tools found on this host, with their full paths.
#[derive(Debug, Clone, Default)]
pub struct Tools {
    found: std::collections::BTreeMap<Tool, PathBuf>,
}

const SEARCH_PATH: [&str; 6] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

impl Tools {
    /// Looks every tool up; fails when a required one is missing.
    pub fn discover() -> Result<Tools, HostError> {
        let tools = Tools::look_up();
        match Tool::ALL.into_iter().find(|t| t.required() && !tools.has(*t)) {
            Some(tool) => Err(HostError::ToolMissing { tool: tool.program(), program: tool.program(), hint: tool.hint() }),
            None => Ok(tools),
        }
    }

    /// Looks every tool up and keeps what it finds, required or not (for
    /// `rbdvol doctor`, which reports what is missing).
    pub fn look_up() -> Tools {
        let found = Tool::ALL
            .into_iter()
            .filter_map(|tool| Some((tool, SEARCH_PATH.iter().map(|dir| Path::new(dir).join(tool.program())).find(|p| is_executable(p))?)))
            .collect();
        Tools { found }
    }

    pub fn has(&self, tool: Tool) -> bool {
        self.found.contains_key(&tool)
    }

    fn path(&self, tool: Tool) -> Result<&Path, HostError> {
        self.found.get(&tool).map(PathBuf::as_path).ok_or(HostError::ToolMissing {
            tool: tool.program(),
            program: tool.program(),
            hint: tool.hint(),
        })
    }

    /// Runs `tool args...` about `target` and returns its stdout; a non-zero
    /// exit becomes `ToolFailed` with the tool's stderr.
    pub fn run(&self, tool: Tool, target: &str, args: &[&str]) -> Result<String, HostError> {
        let out = self.output(tool, args)?;
        if !out.status.success() {
            return Err(HostError::ToolFailed {
                tool: tool.program(),
                target: target.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a tool and hands back its raw output, for tools whose exit codes
    /// carry meaning (blkid exits 2 when it finds nothing).
    pub fn output(&self, tool: Tool, args: &[&str]) -> Result<std::process::Output, HostError> {
        let path = self.path(tool)?;
        Self::clean_env(&mut Command::new(path))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(HostError::io("run", path))
    }

    /// A command for a long-lived child (rbd-nbd), for the mappers.
    pub fn command(&self, tool: Tool) -> Result<Command, HostError> {
        let mut cmd = Command::new(self.path(tool)?);
        Self::clean_env(&mut cmd);
        Ok(cmd)
    }

    /// Children get a minimal environment: never the plugin's, which holds
    /// the cephx key (`RBD_CONF_KEYRING_KEY`).
    pub fn clean_env(cmd: &mut Command) -> &mut Command {
        cmd.env_clear().env("PATH", SEARCH_PATH.join(":")).env("LC_ALL", "C")
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}
