//! What a CSI call names, checked against what is allowed: volume ids are
//! rbdvol volume names, paths are one directory under the plugin's stage
//! or publish root, sizes are whole MiB in the range asked, and the only
//! secret is `key`, a cephx key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::access::{Access, Asked};
use super::proto::CapacityRange;
use super::CsiError;
use crate::config::Secret;
use crate::engine::options::validate_name;

const MIB: u64 = 1 << 20;

/// A volume id (or CreateVolume's name): an rbdvol volume name.
pub fn volume(id: &str) -> Result<String, CsiError> {
    if id.is_empty() {
        return Err(CsiError::Invalid("no volume id given".into()));
    }
    validate_name(id)?;
    Ok(id.to_string())
}

/// `given` as a directory right under `root` whose name is letters,
/// digits, `.`, `_` or `-` (Swarm names them by its volume ids).
pub fn path_under(root: &Path, given: &str, what: &str) -> Result<PathBuf, CsiError> {
    let path = Path::new(given);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let allowed = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && path.parent() == Some(root);
    if !allowed {
        return Err(CsiError::Invalid(format!("{what} '{given}' is not a directory right under {} named with letters, digits, '.', '_' or '-'", root.display())));
    }
    Ok(path.to_path_buf())
}

/// The cephx key among the secrets, if there is one. Any other secret is
/// refused by name; the key itself never appears in an error.
pub fn key(secrets: &HashMap<String, String>) -> Result<Option<Secret>, CsiError> {
    if let Some(other) = secrets.keys().find(|k| k.as_str() != "key") {
        return Err(CsiError::Invalid(format!("secret '{other}' is not one rbdvol takes: give the cephx key as --secret key=<secret id>")));
    }
    let Some(value) = secrets.get("key") else { return Ok(None) };
    // `echo KEY | docker secret create` leaves a newline.
    let value = value.trim();
    let base64 = value.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    if !base64 || value.len() < 16 || value.len() > 512 {
        return Err(CsiError::Invalid("secret 'key' is not a cephx key (the base64 text after 'key = ' in a keyring): recreate the docker secret with the key alone".into()));
    }
    Ok(Some(Secret::new(value)))
}

/// A capacity range in bytes: `required` at least, `limit` at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub required: u64,
    pub limit: Option<u64>,
}

impl Capacity {
    pub fn from(range: Option<&CapacityRange>) -> Result<Option<Capacity>, CsiError> {
        let Some(r) = range else { return Ok(None) };
        if r.required_bytes < 0 || r.limit_bytes < 0 {
            return Err(CsiError::Invalid("a capacity is negative".into()));
        }
        let (required, limit) = (r.required_bytes as u64, (r.limit_bytes > 0).then_some(r.limit_bytes as u64));
        if required == 0 && limit.is_none() {
            return Ok(None);
        }
        if limit.is_some_and(|l| l < required) {
            return Err(CsiError::Invalid(format!("the capacity limit ({} bytes) is below the capacity required ({required} bytes)", limit.unwrap())));
        }
        Ok(Some(Capacity { required, limit }))
    }

    /// The image size for this range: the required bytes rounded up to a
    /// whole MiB (the limit rounded down when only a limit is given).
    pub fn size(&self) -> Result<u64, CsiError> {
        let size = if self.required > 0 { self.required.div_ceil(MIB) * MIB } else { self.limit.unwrap_or(0) / MIB * MIB };
        if size < MIB || self.limit.is_some_and(|l| size > l) {
            return Err(CsiError::OutOfRange(format!(
                "no whole number of MiB (at least 1 MiB) lies between {} and {} bytes: rbdvol sizes volumes in MiB",
                self.required,
                self.limit.map(|l| l.to_string()).unwrap_or_else(|| "no limit".into())
            )));
        }
        Ok(size)
    }

    pub fn fits(&self, size: u64) -> bool {
        size >= self.required && self.limit.is_none_or(|l| size <= l)
    }
}

/// The volume options of a CreateVolume: its parameters (the classic
/// driver's `-o` options, checked by the engine like those), with what the
/// capabilities and the capacity range say. Where both say something they
/// must agree.
pub fn create_options(parameters: &HashMap<String, String>, asked: &Asked, capacity: Option<Capacity>) -> Result<BTreeMap<String, String>, CsiError> {
    let mut opts: BTreeMap<String, String> = parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let readonly_param = opts.get("readonly").map(|v| v.trim().to_ascii_lowercase());
    match asked.access {
        Access::ReadOnly => {
            if readonly_param.as_deref().is_some_and(|v| v != "true") {
                return Err(CsiError::Invalid("-o readonly=false disagrees with --sharing readonly".into()));
            }
            opts.insert("readonly".into(), "true".into());
        }
        Access::Writer => {
            if readonly_param.as_deref() == Some("true") {
                return Err(CsiError::Invalid("-o readonly=true needs --sharing readonly (a read-only volume is read on many nodes, written on none)".into()));
            }
        }
    }
    if let Some(fs) = &asked.fstype {
        match opts.get("fstype") {
            Some(given) if given.trim() != fs => return Err(CsiError::Invalid(format!("-o fstype={given} disagrees with the capability's filesystem type {fs}"))),
            _ => {
                opts.insert("fstype".into(), fs.clone());
            }
        }
    }
    // A read-only volume has its source's size: the range is checked
    // against it once made.
    if let (Some(c), Access::Writer) = (capacity, asked.access) {
        if opts.contains_key("size") {
            return Err(CsiError::Invalid("give the size once: --required-bytes/--limit-bytes or -o size, not both".into()));
        }
        opts.insert("size".into(), format!("{}B", c.size()?));
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> Option<Capacity> {
        Capacity::from(Some(&CapacityRange { required_bytes: required, limit_bytes: limit })).unwrap()
    }

    #[test]
    fn sizes_are_whole_mib_inside_the_range() {
        assert_eq!(range(128 << 20, 0).unwrap().size().unwrap(), 128 << 20);
        assert_eq!(range((128 << 20) + 1, 0).unwrap().size().unwrap(), 129 << 20);
        assert_eq!(range(0, (64 << 20) + 5).unwrap().size().unwrap(), 64 << 20);
        assert!(matches!(range(10, 1000).unwrap().size(), Err(CsiError::OutOfRange(_))));
        assert!(matches!(range((1 << 20) + 1, (2 << 20) - 1).unwrap().size(), Err(CsiError::OutOfRange(_))));
        assert_eq!(range(0, 0), None);
        assert!(Capacity::from(Some(&CapacityRange { required_bytes: 10, limit_bytes: 5 })).is_err());
        assert!(Capacity::from(Some(&CapacityRange { required_bytes: -1, limit_bytes: 0 })).is_err());
        let c = range(100 << 20, 200 << 20).unwrap();
        assert!(c.fits(150 << 20) && !c.fits(99 << 20) && !c.fits(201 << 20));
    }

    #[test]
    fn paths_are_one_plain_directory_under_their_root() {
        let root = Path::new("/data/published");
        assert_eq!(path_under(root, "/data/published/kdwga608zq64umwpa2cvkqvze", "target").unwrap(), Path::new("/data/published/kdwga608zq64umwpa2cvkqvze"));
        for bad in ["/data/published", "/data/published/", "/data/published/a/b", "/data/published/../x", "/data/published/..", "/data/published/.x", "/etc/x", "relative", "/data/published/a b", "/data/published/@state", ""] {
            let e = path_under(root, bad, "target").unwrap_err().to_string();
            assert!(e.contains("/data/published"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_a_cephx_key_is_taken_as_a_secret_and_never_echoed() {
        let key_text = "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==";
        let s = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
        assert_eq!(key(&s(&[("key", &format!("{key_text}\n"))])).unwrap().unwrap().expose(), key_text);
        assert!(key(&s(&[])).unwrap().is_none());
        let e = key(&s(&[("password", "x")])).unwrap_err().to_string();
        assert!(e.contains("'password'"), "{e}");
        let pasted = format!("[client.admin]\n\tkey = {key_text}");
        let e = key(&s(&[("key", &pasted)])).unwrap_err().to_string();
        assert!(!e.contains(key_text) && e.contains("not a cephx key"), "{e}");
    }

    #[test]
    fn create_options_join_parameters_capabilities_and_capacity() {
        let p = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
        let writer = Asked { access: Access::Writer, fstype: Some("xfs".into()) };
        let o = create_options(&p(&[("pool", "rbd")]), &writer, range(128 << 20, 0)).unwrap();
        assert_eq!(o.get("size").unwrap(), "134217728B");
        assert_eq!(o.get("fstype").unwrap(), "xfs");
        assert!(create_options(&p(&[("size", "1G")]), &writer, range(1, 0)).unwrap_err().to_string().contains("not both"));
        assert!(create_options(&p(&[("fstype", "ext4")]), &writer, None).unwrap_err().to_string().contains("disagrees"));
        assert!(create_options(&p(&[("readonly", "true")]), &writer, None).unwrap_err().to_string().contains("--sharing readonly"));
        let reader = Asked { access: Access::ReadOnly, fstype: None };
        let o = create_options(&p(&[("from", "v@s")]), &reader, range(1 << 20, 0)).unwrap();
        assert_eq!(o.get("readonly").unwrap(), "true");
        assert!(!o.contains_key("size"));
    }
}
