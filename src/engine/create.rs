//! Create: a new volume (image, rbdvol's metadata, a filesystem), or a
//! copy-on-write clone of another volume's snapshot. The directory entry
//! `creating` goes first, so a crash leaves a volume that the next Create
//! or Mount completes and that Docker never sees; a failure (not a crash)
//! takes back what the call made, in one place (`take_back`).

use super::adopt::Adopter;
use super::directory::image_ref;
use super::format::Blank;
use super::options::{CloneSource, VolumeOptions};
use super::records::{self, DirEntry, EntryState, VolumeMeta, FORMATTED_KEY, MOUNTED_KEY, VOLUME_KEY};
use super::store::{CephStore, CephVolume, Volume};
use super::{fs_options, timing, Created, EngineError, Inner};
use crate::ceph::{CephError, Pool};
use crate::host::fs::Fstype;
use crate::host::mapper::MapOptions;
use crate::host::{crash, HostError, ImageRef};

/// A clone to make: volume `name` from `from`, in `pool`.
struct CloneRequest<'a> {
    store: &'a CephStore,
    pool: &'a Pool,
    entry: &'a DirEntry,
    name: &'a str,
    opts: &'a VolumeOptions,
    from: &'a CloneSource,
    /// A crashed Create of the same name left its entry `creating`.
    resuming: bool,
}

impl Inner {
    pub(super) fn create(&self, name: &str, opts: &VolumeOptions) -> Result<Created, EngineError> {
        let r = self.create_volume(name, opts);
        if let Err(e) = &r {
            self.connection.forget_if_fenced(e);
        }
        r
    }

    fn create_volume(&self, name: &str, opts: &VolumeOptions) -> Result<Created, EngineError> {
        let store = self.ceph_store()?;
        let cluster = store.cluster();
        let resuming = match self.dir_get(&store, name)? {
            Some(DirEntry { state: EntryState::Ready, .. }) => return Ok(Created::AlreadyExisted),
            Some(DirEntry { state: EntryState::Removing, .. }) => {
                // Removed, but its image not yet in the trash: move it
                // there (it frees the name) before creating anew.
                self.trash_removed(name)?;
                false
            }
            Some(DirEntry { state: EntryState::Creating, adopted: Some(image), .. }) if opts.adopt.is_none() => {
                return Err(EngineError::CannotAdopt {
                    image: image.clone(),
                    reason: format!("volume '{name}' is half-made adopting it: repeat that create (with -o image={image}), or rbdvol forget {name}"),
                });
            }
            Some(DirEntry { state: EntryState::Creating, .. }) => true,
            None => false,
        };
        if let Some(image) = &opts.adopt {
            // One adoption of an image at a time here, whatever the name.
            let _image = self.volume_lock_blocking(&format!("image:{}/{}/{image}", opts.pool, opts.namespace));
            let scratch = self.cfg.state_dir.join("format");
            let settle = |image: &ImageRef, fstype: Fstype| self.settle_journal(name, image, fstype);
            let adopter = Adopter {
                cluster,
                dir: store.dir()?,
                tools: &self.tools,
                scratch: &scratch,
                cookie: &self.cookie,
                breaks_own_stale_lock: true,
                settle: Some(&settle),
                unlock_failed: Default::default(),
            };
            self.lock_notes.note(name)?;
            let adopted = adopter.adopt(name, opts);
            if adopter.unlock_failed.get() {
                self.stale_locks.lock().unwrap().insert(name.to_string());
            } else {
                self.lock_notes.clear(name)?;
            }
            self.cache.invalidate(name);
            self.cache.forget_listing();
            return adopted;
        }
        let entry = DirEntry { pool: opts.pool.clone(), namespace: opts.namespace.clone(), state: EntryState::Creating, id: None, trash_delay_s: None, adopted: None };
        // The intent goes first: a crash from here on leaves a `creating`
        // entry, which the next Create or Mount completes.
        self.dir_put(&store, name, &entry)?;
        crash::point("create.intent", name);
        timing::step("directory: creating");
        let pool = match cluster.open_pool(&opts.pool, &opts.namespace) {
            Ok(p) => p,
            Err(e) => return self.take_back(&store, None, name, resuming, e.into()),
        };
        if let Some(from) = &opts.from {
            return self.create_clone(CloneRequest { store: &store, pool: &pool, entry: &entry, name, opts, from, resuming });
        }
        let made_here = match pool.create_image(name, opts.size, &opts.create) {
            Ok(()) => true,
            Err(CephError::AlreadyExists { .. }) => {
                if !self.is_ours(&pool, name, resuming)? {
                    return self.take_back(&store, None, name, resuming, EngineError::NotOurs { image: image_ref(name, &entry).to_string() });
                }
                false
            }
            Err(e) => return self.take_back(&store, None, name, resuming, e.into()),
        };
        timing::step("create image");
        crash::point("create.image", name);
        let made = (|| {
            let vol = store.open_volume(name, &entry)?;
            timing::step("open image");
            if VolumeMeta::of(&vol.metadata()?, name).is_none() {
                self.write_create_metadata(&vol, name, opts)?;
            }
            crash::point("create.marked", name);
            timing::step("metadata");
            let blank = match (made_here, resuming) {
                // One this very call created is thin and all zeros.
                (true, _) => Blank::New(vol.image()?),
                (false, true) => Blank::Unfinished,
                (false, false) => Blank::Probe,
            };
            self.ensure_formatted(&vol, &image_ref(name, &entry), blank)?;
            crash::point("create.formatted", name);
            let id = Some(vol.id().to_string());
            self.dir_put(&store, name, &DirEntry { state: EntryState::Ready, id, ..entry.clone() })?;
            timing::step("directory: ready");
            Ok(())
        })();
        match made {
            Ok(()) => Ok(Created::New),
            Err(e) if made_here => self.take_back(&store, Some((&pool, &format!("create of volume '{name}'"))), name, resuming, e),
            Err(e) => self.take_back(&store, None, name, resuming, e),
        }
    }

    /// Whether the existing image `name` is this volume's own: it bears
    /// rbdvol's marker for it, or — resuming a Create that crashed between
    /// making the image and marking it — it holds no data at all. Any other
    /// is never written to, formatted or deleted.
    fn is_ours(&self, pool: &Pool, name: &str, resuming: bool) -> Result<bool, EngineError> {
        let image = pool.open_image_read_only(name)?;
        if VolumeMeta::of(&image.metadata_list()?, name).is_some() {
            return Ok(true);
        }
        // librbd config overrides (QoS limits) are written before the
        // marker: they alone do not make an image someone else's.
        let foreign_keys = image.metadata_list()?.keys().any(|k| !k.starts_with("conf_"));
        Ok(resuming && !foreign_keys && image.snapshots()?.is_empty() && image.used_bytes()? == 0)
    }

    /// Takes back what a failed Create did (a crash is completed instead),
    /// and only that: the image if this call made it (in `made_in`), then
    /// the directory entry, unless an earlier Create left it `creating`
    /// (`resumed`: it stays for the next one). So a retry starts where it
    /// should, and nothing half-made is ever exposed.
    fn take_back(&self, store: &CephStore, made_in: Option<(&Pool, &str)>, name: &str, resumed: bool, e: EngineError) -> Result<Created, EngineError> {
        if let Some((pool, what)) = made_in {
            tracing::warn!("{what} failed, removing what it made: {e}");
            match pool.remove_image(name) {
                Ok(()) | Err(CephError::NotFound { .. }) => {}
                Err(cleanup) => {
                    let image = ImageRef { pool: pool.name().into(), namespace: pool.namespace().into(), image: name.into() };
                    tracing::error!("cannot remove half-made image {image}: {cleanup}");
                    return Err(e);
                }
            }
        }
        if !resumed || made_in.is_some() {
            self.dir_remove(store, name)?;
        }
        Err(e)
    }

    /// Creates a volume as a copy-on-write clone of a snapshot of another
    /// volume: its filesystem, owner and mode are the snapshot's; nothing
    /// is formatted. The clone is grown when a larger size is asked for
    /// (its filesystem then grows at its first mount).
    fn create_clone(&self, req: CloneRequest<'_>) -> Result<Created, EngineError> {
        let CloneRequest { store, pool, entry, name, opts, from, resuming } = req;
        // Until the clone exists, a failure only takes back the intent.
        let made = (|| {
            let parent_entry = match self.dir_get(store, &from.volume)? {
                Some(e) if e.state == EntryState::Ready => e,
                _ => return Err(EngineError::NotFound(from.volume.clone())),
            };
            let parent_pool = store.cluster().open_pool(&parent_entry.pool, &parent_entry.namespace)?;
            // An adopted parent's image has a name of its own.
            let parent_image = parent_entry.image(&from.volume).to_string();
            let parent = parent_pool.open_image_read_only(&parent_image)?;
            let snap = parent
                .snapshots()?
                .into_iter()
                .find(|s| s.name == from.snapshot)
                .ok_or_else(|| EngineError::NoSuchSnapshot { volume: from.volume.clone(), snapshot: from.snapshot.clone() })?;
            let parent_all = parent.metadata_list()?;
            let parent_meta = VolumeMeta::of(&parent_all, &from.volume).ok_or_else(|| EngineError::NotFound(from.volume.clone()))?;
            fs_options::check_mount(parent_meta.fstype, &opts.mount_options).map_err(|reason| EngineError::InvalidOption {
                option: "mount_options".into(),
                value: opts.mount_options.clone(),
                reason,
            })?;
            if opts.size_given && opts.size < snap.size {
                return Err(EngineError::InvalidOption {
                    option: "size".into(),
                    value: format!("{} MiB", opts.size >> 20),
                    reason: format!("a clone cannot be smaller than its snapshot ({} MiB)", snap.size >> 20),
                });
            }
            let made_here = match pool.clone_image(&parent_pool, &parent_image, &from.snapshot, name, &opts.create) {
                Ok(()) => true,
                // A crashed clone of the same: it still bears its parent's
                // marker (librbd copies the metadata), or already its own.
                Err(CephError::AlreadyExists { .. })
                    if resuming && {
                        let meta = pool.open_image_read_only(name)?.metadata_list()?;
                        VolumeMeta::of(&meta, name).or_else(|| VolumeMeta::of(&meta, &from.volume)).is_some()
                    } =>
                {
                    false
                }
                Err(CephError::AlreadyExists { .. }) => return Err(EngineError::NotOurs { image: image_ref(name, entry).to_string() }),
                Err(e) => return Err(e.into()),
            };
            Ok((snap, parent_all, parent_meta, made_here))
        })();
        let (snap, parent_all, parent_meta, made_here) = match made {
            Ok(made) => made,
            Err(e) => return self.take_back(store, None, name, resuming, e),
        };
        timing::step("clone image");
        crash::point("clone.cloned", name);
        let result = (|| {
            let vol = store.open_volume(name, entry)?;
            let image = vol.image()?;
            if opts.size_given && opts.size > image.size()? {
                image.grow(opts.size, &|_, _| {})?;
            }
            // librbd copies the parent's metadata into the clone: make it
            // this volume's own.
            vol.metadata_remove(MOUNTED_KEY)?;
            let fs_size = records::parse_formatted(parent_all.get(FORMATTED_KEY).map(String::as_str)).unwrap_or(snap.size).min(snap.size);
            vol.metadata_set(FORMATTED_KEY, &fs_size.to_string())?;
            let meta = VolumeMeta {
                name: name.to_string(),
                mount_options: if opts.mount_options.is_empty() { parent_meta.mount_options.clone() } else { opts.mount_options.clone() },
                uid: None,
                gid: None,
                mode: None,
                created_at: records::now_rfc3339(),
                cloned_from: Some(format!("{}@{}", from.volume, from.snapshot)),
                adopted: false,
                read_only: opts.read_only,
                map_options: opts.mapper_options.map.clone().or(parent_meta.map_options.clone()),
                unmap_options: opts.mapper_options.unmap.clone().or(parent_meta.unmap_options.clone()),
                ..parent_meta.clone()
            };
            // Given limits over the parent's (librbd copied its metadata).
            super::qos::apply(&vol as &dyn Volume, &opts.qos)?;
            if opts.read_only {
                // Before the marker: nobody mounts it meanwhile.
                self.settle_journal(name, &image_ref(name, entry), meta.fstype)?;
            }
            vol.metadata_set(VOLUME_KEY, &meta.to_json())?;
            let id = Some(vol.id().to_string());
            self.dir_put(store, name, &DirEntry { state: EntryState::Ready, id, ..entry.clone() })?;
            timing::step("metadata, directory: ready");
            Ok(())
        })();
        let what = format!("clone of {}@{} as volume '{name}'", from.volume, from.snapshot);
        result.map(|()| Created::New).or_else(|e| self.take_back(store, made_here.then_some((pool, what.as_str())), name, resuming, e))
    }

    fn write_create_metadata(&self, vol: &CephVolume, name: &str, opts: &VolumeOptions) -> Result<(), EngineError> {
        let meta = VolumeMeta {
            name: name.to_string(),
            fstype: opts.fstype,
            mkfs_options: opts.mkfs_options.clone(),
            mount_options: opts.mount_options.clone(),
            uid: opts.uid,
            gid: opts.gid,
            mode: opts.mode,
            created_at: records::now_rfc3339(),
            cloned_from: None,
            adopted: false,
            read_only: opts.read_only,
            map_options: opts.mapper_options.map.clone(),
            unmap_options: opts.mapper_options.unmap.clone(),
        };
        // Before the marker: a volume marked has its limits.
        super::qos::apply(vol as &dyn Volume, &opts.qos)?;
        crash::point("create.limited", name);
        vol.metadata_set(VOLUME_KEY, &meta.to_json())?;
        Ok(())
    }
}

impl Inner {
    /// Replays the journal of a read-only volume's filesystem once, before
    /// any host mounts it: a snapshot of a mounted filesystem has one to
    /// replay, and read-only mounts never replay it (`noload`,
    /// `norecovery`). Mapped and mounted read-write here, then unmounted
    /// and unmapped; nothing else can mount it yet.
    pub(super) fn settle_journal(&self, name: &str, image: &ImageRef, fstype: Fstype) -> Result<(), EngineError> {
        let mapping = self.mapper.map(image, &self.connection.settings()?, &MapOptions::default())?;
        let dir = self.cfg.state_dir.join("settle").join(name);
        let settled = (|| -> Result<(), EngineError> {
            std::fs::create_dir_all(&dir).map_err(HostError::io("create", &dir))?;
            self.mount_table.mount(&mapping.device, &dir, fstype.as_str(), fstype.implied_mount_options())?;
            self.mount_table.unmount(&dir)?;
            Ok(())
        })();
        let _ = std::fs::remove_dir(&dir);
        self.mapper.unmap(&mapping)?;
        timing::step("journal replayed");
        settled
    }
}
