//! Formatting a volume that is not yet: a new, all-zero image is formatted
//! in a scratch file whose written blocks are copied in (no mapping); any
//! other is mapped, probed, and formatted only when blank. The host lock is
//! held meanwhile.

use std::path::Path;
use std::sync::Arc;

use super::records::{self, VolumeMeta, FORMATTED_KEY};
use super::store::Volume;
use super::{fs_options, timing, EngineError, Inner};
use crate::ceph::{self, Image};
use crate::host::{crash, fs};
use crate::host::ImageRef;
use crate::host::tools::Tools;

/// Whether an image may hold data.
pub(super) enum Blank<'a> {
    /// This very call created it: thin and all zeros.
    New(&'a Arc<Image>),
    /// A volume still `creating`: never exposed, so it never held user
    /// data, but a crash may have left a half-copied filesystem that a
    /// probe would take for a good one. Formatted anew, always.
    Unfinished,
    /// Any other: probed, formatted only when blank.
    Probe,
}

impl Inner {
    /// Formats a volume that is not yet (mkfs only on a blank device), and
    /// applies the root's owner and mode. Takes the host lock meanwhile.
    pub(super) fn ensure_formatted(&self, vol: &dyn Volume, image_ref: &ImageRef, blank: Blank<'_>) -> Result<(), EngineError> {
        let all = vol.metadata()?;
        if all.contains_key(FORMATTED_KEY) {
            return Ok(());
        }
        // An adopted image is formatted only by its adoption, only when it
        // held no data: never here.
        let meta = VolumeMeta::of(&all, &image_ref.image).filter(|m| !m.adopted).ok_or_else(|| EngineError::NotFound(image_ref.image.clone()))?;
        fs_options::check_mkfs(meta.fstype, &meta.mkfs_options).map_err(|reason| EngineError::RefusedRecord {
            name: image_ref.image.clone(),
            what: "mkfs options",
            key: records::VOLUME_KEY,
            reason,
        })?;
        let owner = fs::RootOwner { uid: meta.uid, gid: meta.gid, mode: meta.mode };
        self.take_host_lock(vol, &image_ref.image)?;
        timing::step("host lock");
        // Another host may have finished it between the look and the lock.
        if vol.metadata_get(FORMATTED_KEY)?.is_some() {
            self.release_host_lock_or_retry(vol);
            return Ok(());
        }
        let result = (|| {
            match blank {
                Blank::New(image) => self.format_new(image, image_ref, &meta, owner)?,
                Blank::Unfinished => self.format_mapped(vol, image_ref, &meta, owner, true)?,
                Blank::Probe => self.format_mapped(vol, image_ref, &meta, owner, false)?,
            }
            vol.metadata_set(FORMATTED_KEY, &vol.size()?.to_string())?;
            Ok(())
        })();
        self.release_host_lock_or_retry(vol);
        timing::step("formatted, unlocked");
        result
    }

    /// mkfs in a scratch file, then its non-zero blocks into the new image.
    fn format_new(&self, image: &Arc<Image>, image_ref: &ImageRef, meta: &VolumeMeta, owner: fs::RootOwner) -> Result<(), EngineError> {
        format_blank_image(&self.tools, &self.cfg.state_dir.join("format"), image, &image_ref.image, meta, owner)
    }

    /// Maps the image, formats it (`always`, or only if blank), unmaps it.
    fn format_mapped(&self, vol: &dyn Volume, image_ref: &ImageRef, meta: &VolumeMeta, owner: fs::RootOwner, always: bool) -> Result<(), EngineError> {
        self.mapper.check_features(image_ref, vol.features()?)?;
        let mapping = self.mapper.map(image_ref, &self.connection.settings()?, &Default::default())?;
        timing::step("map");
        let formatted = (|| {
            if always {
                fs::format(&self.tools, &mapping.device, meta.fstype, &meta.mkfs_options)?;
            } else {
                fs::format_if_blank(&self.tools, &mapping.device, meta.fstype, &meta.mkfs_options)?;
            }
            if !owner.is_default() {
                let tmp = self.cfg.state_dir.join("format").join(&image_ref.image);
                fs::set_root_owner(&mapping.device, meta.fstype, &tmp, owner)?;
            }
            timing::step("mkfs");
            Ok::<_, EngineError>(())
        })();
        self.mapper.unmap(&mapping)?;
        timing::step("unmap");
        formatted
    }
}

/// Formats an image that holds no data (all zeros): mkfs in a scratch file
/// in `dir`, then the file's non-zero blocks into the image. No mapping.
pub(super) fn format_blank_image(tools: &Tools, dir: &Path, image: &Arc<Image>, name: &str, meta: &VolumeMeta, owner: fs::RootOwner) -> Result<(), EngineError> {
    let scratch = fs::ScratchFs::make(tools, dir, name, image.size()?, meta.fstype, &meta.mkfs_options, owner)?;
    timing::step("mkfs");
    let writer = ceph::aio::BulkWriter::new(image, 16);
    let mut copied = 0u64;
    scratch.for_each_data(4 << 20, |offset, data| {
        if copied > 0 {
            // Part of the filesystem is in the image, the rest is not.
            crash::point("create.copy", name);
        }
        copied += data.len() as u64;
        writer.write(offset, data).map_err(EngineError::from)
    })?;
    writer.finish()?;
    timing::step("copy");
    Ok(())
}
