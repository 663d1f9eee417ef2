//! What `mkfs_options` and `mount_options` may say: an allowlist per
//! filesystem of the options that shape a filesystem or its mount, each
//! with the values it takes. Anything else — a path, a device, a populate
//! option (`mkfs.ext4 -d DIR`, `mkfs.xfs -p FILE`), an external journal or
//! log, a positional argument, `loop`, `offset=` — is refused, naming the
//! option and what is allowed. The same rules hold for `-o`, for the
//! settings' defaults and for what a volume's metadata says at Mount.

use crate::host::fs::Fstype;

/// What an option's value may be.
#[derive(Clone, Copy)]
enum Value {
    /// A flag: no value.
    None,
    /// Digits with an optional size unit (`4096`, `64k`, `1m`).
    Number,
    /// A filesystem label (letters, digits, `.`, `_`, `-`; at most 12).
    Label,
    /// A comma-separated list of names from this set (`^name` turns one off
    /// for ext4 features).
    OneOf(&'static [&'static str]),
    /// A comma-separated list of `key=value` or `key` items from this set,
    /// each value as given.
    Keys(&'static [(&'static str, Value)]),
    /// Letters, digits and `-` (a UUID, a usage type).
    Word,
    /// A flag that may also be given a value from this set (`barrier`,
    /// `barrier=0`; `space_cache`, `space_cache=v2`; `compress=zstd:3`).
    FlagOr(&'static [&'static str]),
}

/// btrfs compression: an algorithm, zstd and zlib with a level.
const COMPRESS: &[&str] = &[
    "zlib", "lzo", "zstd", "no", "zlib:1", "zlib:2", "zlib:3", "zlib:4", "zlib:5", "zlib:6", "zlib:7", "zlib:8", "zlib:9", "zstd:1", "zstd:2",
    "zstd:3", "zstd:4", "zstd:5", "zstd:6", "zstd:7", "zstd:8", "zstd:9", "zstd:10", "zstd:11", "zstd:12", "zstd:13", "zstd:14", "zstd:15",
];

const EXT4_FEATURES: &[&str] = &[
    "64bit", "dir_index", "dir_nlink", "extent", "extents", "extra_isize", "ext_attr", "filetype", "flex_bg", "has_journal",
    "huge_file", "large_dir", "large_file", "metadata_csum", "metadata_csum_seed", "mmp", "orphan_file", "project", "quota",
    "resize_inode", "sparse_super", "sparse_super2", "uninit_bg", "bigalloc", "encrypt", "casefold", "inline_data", "stable_inodes",
    "verity",
];

const EXT4_EXTENDED: &[(&str, Value)] = &[
    ("stride", Value::Number),
    ("stripe_width", Value::Number),
    ("stripe-width", Value::Number),
    ("resize", Value::Number),
    ("lazy_itable_init", Value::Number),
    ("lazy_journal_init", Value::Number),
    ("assume_storage_prezeroed", Value::Number),
    ("packed_meta_blocks", Value::Number),
    ("num_backup_sb", Value::Number),
    ("nodiscard", Value::None),
    ("discard", Value::None),
    ("quotatype", Value::OneOf(&["usrquota", "grpquota", "prjquota"])),
    ("encoding", Value::OneOf(&["utf8", "utf8-12.1"])),
];

/// mkfs.ext4 options: (flag, value).
const EXT4_MKFS: &[(&str, Value)] = &[
    ("-b", Value::Number),
    ("-C", Value::Number),
    ("-E", Value::Keys(EXT4_EXTENDED)),
    ("-e", Value::OneOf(&["continue", "remount-ro"])),
    ("-G", Value::Number),
    ("-g", Value::Number),
    ("-i", Value::Number),
    ("-I", Value::Number),
    ("-J", Value::Keys(&[("size", Value::Number)])),
    ("-j", Value::None),
    ("-L", Value::Label),
    ("-m", Value::Number),
    ("-N", Value::Number),
    ("-O", Value::OneOf(EXT4_FEATURES)),
    ("-q", Value::None),
    ("-T", Value::OneOf(&["default", "small", "floppy", "news", "largefile", "largefile4", "hurd", "big", "huge"])),
    ("-U", Value::OneOf(&["random", "time", "clear"])),
];

const BOOL: Value = Value::OneOf(&["0", "1"]);

/// mkfs.xfs options: (flag, value).
const XFS_MKFS: &[(&str, Value)] = &[
    ("-b", Value::Keys(&[("size", Value::Number)])),
    ("-d", Value::Keys(&[("su", Value::Number), ("sw", Value::Number), ("sunit", Value::Number), ("swidth", Value::Number), ("agcount", Value::Number), ("agsize", Value::Number)])),
    (
        "-i",
        Value::Keys(&[("size", Value::Number), ("maxpct", Value::Number), ("align", BOOL), ("attr", Value::Number), ("projid32bit", BOOL), ("sparse", BOOL), ("nrext64", BOOL)]),
    ),
    ("-l", Value::Keys(&[("size", Value::Number), ("su", Value::Number), ("sunit", Value::Number), ("version", Value::Number), ("lazy-count", BOOL)])),
    ("-L", Value::Label),
    (
        "-m",
        Value::Keys(&[("crc", BOOL), ("finobt", BOOL), ("rmapbt", BOOL), ("reflink", BOOL), ("bigtime", BOOL), ("inobtcount", BOOL)]),
    ),
    ("-n", Value::Keys(&[("size", Value::Number), ("version", Value::Word), ("ftype", BOOL)])),
    ("-s", Value::Keys(&[("size", Value::Number)])),
    ("-K", Value::None),
    ("-q", Value::None),
];

/// mkfs.btrfs options: (flag, value).
const BTRFS_MKFS: &[(&str, Value)] = &[
    ("-L", Value::Label),
    ("-n", Value::Number),
    ("-s", Value::Number),
    ("-O", Value::OneOf(&["mixed-bg", "extref", "raid56", "skinny-metadata", "no-holes", "zoned", "quota", "free-space-tree", "block-group-tree", "^mixed-bg", "^extref", "^skinny-metadata", "^no-holes", "^free-space-tree"])),
    ("-R", Value::OneOf(&["quota", "free-space-tree"])),
    ("-d", Value::OneOf(&["single", "dup"])),
    ("-m", Value::OneOf(&["single", "dup"])),
    ("-K", Value::None),
    ("--nodiscard", Value::None),
    ("-q", Value::None),
    ("--csum", Value::OneOf(&["crc32c", "xxhash", "sha256", "blake2"])),
];

/// Mount options every filesystem takes.
const MOUNT_COMMON: &[(&str, Value)] = &[
    ("defaults", Value::None),
    ("rw", Value::None),
    ("ro", Value::None),
    ("noatime", Value::None),
    ("relatime", Value::None),
    ("strictatime", Value::None),
    ("nodiratime", Value::None),
    ("lazytime", Value::None),
    ("nodev", Value::None),
    ("nosuid", Value::None),
    ("noexec", Value::None),
    ("sync", Value::None),
    ("dirsync", Value::None),
    ("discard", Value::None),
    ("nodiscard", Value::None),
];

const MOUNT_EXT4: &[(&str, Value)] = &[
    ("data", Value::OneOf(&["ordered", "writeback", "journal"])),
    ("data_err", Value::OneOf(&["abort", "ignore"])),
    ("commit", Value::Number),
    ("barrier", Value::FlagOr(&["0", "1"])),
    ("journal_ioprio", Value::Number),
    ("nobarrier", Value::None),
    ("journal_checksum", Value::None),
    ("nojournal_checksum", Value::None),
    ("journal_async_commit", Value::None),
    ("errors", Value::OneOf(&["continue", "remount-ro"])),
    ("user_xattr", Value::None),
    ("acl", Value::None),
    ("noacl", Value::None),
    ("delalloc", Value::None),
    ("nodelalloc", Value::None),
    ("auto_da_alloc", Value::FlagOr(&["0", "1"])),
    ("noauto_da_alloc", Value::None),
    ("dioread_nolock", Value::None),
    ("dioread_lock", Value::None),
    ("max_batch_time", Value::Number),
    ("min_batch_time", Value::Number),
    ("stripe", Value::Number),
    ("inode_readahead_blks", Value::Number),
    ("init_itable", Value::Number),
    ("noinit_itable", Value::None),
    ("quota", Value::None),
    ("usrquota", Value::None),
    ("grpquota", Value::None),
    ("prjquota", Value::None),
    ("noquota", Value::None),
    ("i_version", Value::None),
    ("nombcache", Value::None),
    ("block_validity", Value::None),
    ("noblock_validity", Value::None),
];

const MOUNT_XFS: &[(&str, Value)] = &[
    ("nouuid", Value::None),
    ("noalign", Value::None),
    ("inode64", Value::None),
    ("inode32", Value::None),
    ("largeio", Value::None),
    ("nolargeio", Value::None),
    ("logbufs", Value::Number),
    ("logbsize", Value::Number),
    ("allocsize", Value::Number),
    ("attr2", Value::None),
    ("noattr2", Value::None),
    ("grpid", Value::None),
    ("nogrpid", Value::None),
    ("bsdgroups", Value::None),
    ("sysvgroups", Value::None),
    ("filestreams", Value::None),
    ("ikeep", Value::None),
    ("noikeep", Value::None),
    ("swalloc", Value::None),
    ("wsync", Value::None),
    ("sunit", Value::Number),
    ("swidth", Value::Number),
    ("uquota", Value::None),
    ("usrquota", Value::None),
    ("gquota", Value::None),
    ("grpquota", Value::None),
    ("pquota", Value::None),
    ("prjquota", Value::None),
    ("uqnoenforce", Value::None),
    ("gqnoenforce", Value::None),
    ("pqnoenforce", Value::None),
    ("qnoenforce", Value::None),
    ("noquota", Value::None),
];

const MOUNT_BTRFS: &[(&str, Value)] = &[
    ("compress", Value::FlagOr(COMPRESS)),
    ("compress-force", Value::FlagOr(COMPRESS)),
    ("ssd", Value::None),
    ("ssd_spread", Value::None),
    ("discard", Value::FlagOr(&["sync", "async"])),
    ("nossd", Value::None),
    ("autodefrag", Value::None),
    ("noautodefrag", Value::None),
    ("space_cache", Value::FlagOr(&["v1", "v2"])),
    ("commit", Value::Number),
    ("nodatacow", Value::None),
    ("nodatasum", Value::None),
    ("datacow", Value::None),
    ("datasum", Value::None),
    ("flushoncommit", Value::None),
    ("noflushoncommit", Value::None),
];

fn mkfs_rules(fstype: Fstype) -> &'static [(&'static str, Value)] {
    match fstype {
        Fstype::Ext4 => EXT4_MKFS,
        Fstype::Xfs => XFS_MKFS,
        Fstype::Btrfs => BTRFS_MKFS,
    }
}

fn mount_rules(fstype: Fstype) -> &'static [(&'static str, Value)] {
    match fstype {
        Fstype::Ext4 => MOUNT_EXT4,
        Fstype::Xfs => MOUNT_XFS,
        Fstype::Btrfs => MOUNT_BTRFS,
    }
}

fn names(rules: &[(&str, Value)]) -> String {
    rules.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
}

/// Whether `value` is what `kind` allows; why not otherwise.
fn check_value(what: &str, value: &str, kind: Value) -> Result<(), String> {
    let ok = match kind {
        Value::None => return if value.is_empty() { Ok(()) } else { Err(format!("{what} takes no value")) },
        Value::Number => {
            let digits = value.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', 's', 'b']);
            !digits.is_empty() && digits.len() + 1 >= value.len() && digits.chars().all(|c| c.is_ascii_digit())
        }
        Value::Label => !value.is_empty() && value.len() <= 12 && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
        Value::Word => !value.is_empty() && value.len() <= 64 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        Value::FlagOr(set) => value.is_empty() || set.contains(&value),
        Value::OneOf(set) => {
            return value
                .split(',')
                .find(|v| !set.contains(&v.strip_prefix('^').filter(|_| set == EXT4_FEATURES).unwrap_or(v)))
                .map_or(Ok(()), |v| Err(format!("{what} does not take '{v}': use {}", set.join(", "))));
        }
        Value::Keys(keys) => {
            for item in value.split(',') {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                let Some((_, kind)) = keys.iter().find(|(name, _)| *name == k) else {
                    return Err(format!("{what} does not take '{k}': use {}", keys.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")));
                };
                // A key that wants a value may also be given bare as a flag
                // only when it takes none.
                match kind {
                    Value::None => check_value(&format!("{what} {k}"), v, *kind)?,
                    _ => check_value(&format!("{what} {k}="), v, *kind)?,
                }
            }
            return Ok(());
        }
    };
    if ok {
        Ok(())
    } else {
        let wanted = match kind {
            Value::Number => "a number (with an optional k, m or g)",
            Value::Label => "a label of up to 12 letters, digits, '.', '_' or '-'",
            _ => "letters, digits and '-'",
        };
        Err(format!("{what} takes {wanted}, not '{value}'"))
    }
}

/// Checks mkfs options (as split on spaces) for `fstype`.
pub fn check_mkfs(fstype: Fstype, args: &[String]) -> Result<(), String> {
    let rules = mkfs_rules(fstype);
    let allowed = || format!("mkfs.{} options allowed: {}", fstype.as_str(), names(rules));
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        // `-m0` or `-m 0`; `--csum xxhash` or `--csum=xxhash`.
        let (flag, attached) = if let Some(long) = arg.strip_prefix("--") {
            long.split_once('=').map(|(f, v)| (format!("--{f}"), Some(v.to_string()))).unwrap_or((arg.clone(), None))
        } else if arg.starts_with('-') && arg.chars().count() > 2 {
            let split = arg.char_indices().nth(2).map(|(i, _)| i).unwrap_or(arg.len());
            (arg[..split].to_string(), Some(arg[split..].to_string()))
        } else {
            (arg.clone(), None)
        };
        let Some((_, kind)) = rules.iter().find(|(name, _)| *name == flag) else {
            let what = if arg.starts_with('-') { format!("'{flag}' is not allowed") } else { format!("'{arg}' is not an option (no paths or devices)") };
            return Err(format!("{what}; {}", allowed()));
        };
        match (kind, attached) {
            (Value::None, Some(v)) => return Err(format!("'{flag}' takes no value, got '{v}'; {}", allowed())),
            (Value::None, None) => {}
            (kind, Some(v)) => check_value(&flag, &v, *kind)?,
            (kind, None) => {
                let v = args.next().ok_or_else(|| format!("'{flag}' needs a value"))?;
                check_value(&flag, v, *kind)?;
            }
        }
    }
    Ok(())
}

/// Checks comma-separated mount options for `fstype`.
pub fn check_mount(fstype: Fstype, options: &str) -> Result<(), String> {
    let specific = mount_rules(fstype);
    for item in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        // The filesystem's own form first (btrfs `discard=async`).
        let Some((_, kind)) = specific.iter().chain(MOUNT_COMMON).find(|(name, _)| *name == k) else {
            return Err(format!(
                "mount option '{k}' is not allowed; {} mount options allowed: {} {}",
                fstype.as_str(),
                names(MOUNT_COMMON),
                names(specific)
            ));
        };
        match kind {
            // Flags may not take a value, and value options need one.
            Value::None if item.contains('=') => return Err(format!("mount option '{k}' takes no value")),
            Value::None => {}
            // Bare or with a value: `compress`, `barrier`, `space_cache`.
            Value::FlagOr(_) => check_value(&format!("mount option '{k}'"), v, *kind)?,
            _ if !item.contains('=') => return Err(format!("mount option '{k}' needs a value ({k}=...)")),
            kind => check_value(&format!("mount option '{k}'"), v, *kind)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_default_mkfs_options_are_allowed() {
        for f in [Fstype::Ext4, Fstype::Xfs, Fstype::Btrfs] {
            let defaults: Vec<String> = f.default_mkfs_options().iter().map(|s| s.to_string()).collect();
            assert_eq!(check_mkfs(f, &defaults), Ok(()), "{f:?}");
        }
    }

    #[test]
    fn options_that_shape_a_filesystem_are_allowed() {
        for ok in ["-b 4096", "-m0", "-m 1", "-E nodiscard,lazy_itable_init=1,stride=16,stripe_width=64", "-i 16384 -I 256", "-J size=64", "-L data_01", "-O ^has_journal,metadata_csum", "-T largefile", "-N 100000", "-e remount-ro"] {
            assert_eq!(check_mkfs(Fstype::Ext4, &args(ok)), Ok(()), "{ok}");
        }
        for ok in ["-K", "-b size=4096", "-d su=64k,sw=4", "-d agcount=8", "-i size=512", "-l size=64m", "-L data", "-m crc=1,reflink=1", "-n ftype=1", "-s size=4096"] {
            assert_eq!(check_mkfs(Fstype::Xfs, &args(ok)), Ok(()), "{ok}");
        }
        for ok in ["-L d", "-n 16384", "--csum xxhash", "--csum=xxhash", "-d single -m dup"] {
            assert_eq!(check_mkfs(Fstype::Btrfs, &args(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn populate_paths_devices_and_positional_arguments_are_refused() {
        for bad in [
            "-d /var/lib/rbdvol",
            "-d/var/lib/rbdvol",
            "-E root_owner=0:0,offset=4096",
            "-J device=/dev/sda",
            "-l /etc/badblocks",
            "-L ../x",
            "/dev/sda",
            "-F",
            "-n",
            "-O metadata_csum,$(id)",
            "-b",
            "-E test_fs",
            "-m 5%",
            "-e panic",
        ] {
            let e = check_mkfs(Fstype::Ext4, &args(bad)).expect_err(bad);
            assert!(!e.is_empty());
        }
        for bad in ["-p /etc/passwd", "-pfile", "-r rtdev=/dev/sdb", "-l logdev=/dev/sdb", "-l internal=0", "-d name=/tmp/x", "-d file=1", "-N", "-f", "-m uuid=../x"] {
            assert!(check_mkfs(Fstype::Xfs, &args(bad)).is_err(), "{bad}");
        }
        for bad in ["-r /etc", "--rootdir=/etc", "--rootdir /etc", "-b 1g", "/dev/sda"] {
            assert!(check_mkfs(Fstype::Btrfs, &args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refused_mkfs_option_is_named_with_what_is_allowed() {
        let e = check_mkfs(Fstype::Ext4, &args("-d /var/lib/rbdvol")).unwrap_err();
        assert!(e.contains("'-d' is not allowed") && e.contains("mkfs.ext4 options allowed: -b"), "{e}");
        let e = check_mkfs(Fstype::Ext4, &args("/dev/sda")).unwrap_err();
        assert!(e.contains("'/dev/sda' is not an option"), "{e}");
    }

    #[test]
    fn mount_options_that_tune_a_mount_are_allowed() {
        for ok in ["", "noatime", "noatime,discard", "data=journal,commit=30,barrier", "errors=remount-ro,nodelalloc", "defaults"] {
            assert_eq!(check_mount(Fstype::Ext4, ok), Ok(()), "{ok}");
        }
        for ok in ["nouuid", "noatime,nouuid,logbufs=8,logbsize=256k", "inode64,prjquota"] {
            assert_eq!(check_mount(Fstype::Xfs, ok), Ok(()), "{ok}");
        }
        for ok in ["compress=zstd", "compress", "ssd,space_cache=v2"] {
            assert_eq!(check_mount(Fstype::Btrfs, ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn mount_options_with_paths_devices_or_loops_are_refused() {
        for bad in [
            "loop",
            "bind",
            "offset=4096",
            "journal_path=/dev/sda",
            "journal_dev=0x800",
            "usrjquota=/etc/x",
            "errors=panic",
            "noload",
            "sb=1",
            "data=/etc",
            "commit=1;rm",
            "noatime=1",
            "commit",
            "x-mount.mkdir",
            "context=system_u:object_r:etc_t",
            "nouuid",
        ] {
            assert!(check_mount(Fstype::Ext4, bad).is_err(), "{bad}");
        }
        for bad in ["logdev=/dev/sdb", "rtdev=/dev/sdb", "norecovery", "data=ordered"] {
            assert!(check_mount(Fstype::Xfs, bad).is_err(), "{bad}");
        }
        for bad in ["device=/dev/sdb", "subvol=/x", "subvolid=5", "compress=zstd:../x"] {
            assert!(check_mount(Fstype::Btrfs, bad).is_err(), "{bad}");
        }
        let e = check_mount(Fstype::Ext4, "noatime,loop").unwrap_err();
        assert!(e.contains("'loop' is not allowed") && e.contains("ext4 mount options allowed"), "{e}");
    }
}

#[cfg(test)]
mod refused_input {
    use super::*;

    /// A flag followed by a multi-byte character: `arg[..2]` slices inside it.
    #[test]
    fn a_non_ascii_flag_is_refused_never_a_panic() {
        let r = std::panic::catch_unwind(|| check_mkfs(Fstype::Ext4, &["-é".to_string()]));
        assert!(r.is_ok(), "check_mkfs panicked on '-é'");
    }
}

#[cfg(test)]
mod compatibility {
    use super::*;

    /// Mount options the kernel takes and an older rbdvol passed through:
    /// a volume made with them no longer mounts after the upgrade.
    #[test]
    fn common_kernel_mount_options_of_older_volumes_are_allowed() {
        let mut refused = Vec::new();
        for (f, o) in [
            (Fstype::Btrfs, "compress=zstd:3"),
            (Fstype::Btrfs, "discard=async"),
            (Fstype::Btrfs, "space_cache"),
            (Fstype::Btrfs, "ssd_spread"),
            (Fstype::Ext4, "barrier=0"),
            (Fstype::Ext4, "data_err=abort"),
            (Fstype::Ext4, "journal_ioprio=3"),
            (Fstype::Ext4, "auto_da_alloc=0"),
            (Fstype::Xfs, "discard,noalign"),
        ] {
            if let Err(e) = check_mount(f, o) {
                refused.push(format!("{} {o}: {e}", f.as_str()));
            }
        }
        assert!(refused.is_empty(), "{refused:#?}");
    }
}
