//! A recording fake mapper for unit tests of the engine: maps to made-up
//! devices, writes every call to a journal (shared with the other fakes,
//! so a test sees the order of all steps), fails the calls it is told to,
//! and holds a `map` until released.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use super::{Mapper, MapperKind, Mapping};
use crate::config::CephSettings;
use crate::host::{HostError, ImageRef};

/// Every step the fakes took, in order ("map rbd/v", "mount /m/v", ...).
pub type Journal = Arc<Mutex<Vec<String>>>;

#[derive(Default)]
struct Gate {
    held: Mutex<bool>,
    opened: Condvar,
    /// How many `map` calls wait at the gate now.
    waiting: Mutex<u32>,
}

#[derive(Clone, Default)]
pub struct FakeMapper {
    pub journal: Journal,
    mapped: Arc<Mutex<BTreeMap<ImageRef, Mapping>>>,
    failing: Arc<Mutex<BTreeSet<String>>>,
    map_gate: Arc<Gate>,
    next: Arc<Mutex<u32>>,
    /// The kind it says it is (user-space unless told otherwise).
    kind: Arc<Mutex<Option<MapperKind>>>,
    /// Mappings whose process died (and the kernel waits for a new one).
    dead: Arc<Mutex<BTreeSet<ImageRef>>>,
    /// The recorded mappings handed to `forget_dead` ("image device").
    forgotten: Arc<Mutex<Vec<String>>>,
}

impl FakeMapper {
    pub fn new(journal: Journal) -> FakeMapper {
        FakeMapper { journal, ..Default::default() }
    }

    /// Makes every later call named `call` ("map", "unmap", "check_features", "list") fail.
    pub fn fail(&self, call: &str) {
        self.failing.lock().unwrap().insert(call.to_string());
    }

    /// Says it is a mapper of `kind` from now on (its map options follow).
    pub fn act_as(&self, kind: MapperKind) {
        *self.kind.lock().unwrap() = Some(kind);
    }

    /// The process of `image`'s mapping dies (rbd-nbd killed with the plugin).
    pub fn kill(&self, image: &ImageRef) {
        self.dead.lock().unwrap().insert(image.clone());
    }

    /// The kernel lets go of `image`'s device (not reattached in time): the
    /// mapping is gone, nothing journaled.
    pub fn lose(&self, image: &ImageRef) {
        self.mapped.lock().unwrap().remove(image);
        self.dead.lock().unwrap().remove(image);
    }

    /// What `forget_dead` was handed, "image device" each.
    pub fn forgotten(&self) -> Vec<String> {
        self.forgotten.lock().unwrap().clone()
    }

    /// Makes every call work again.
    pub fn heal(&self) {
        self.failing.lock().unwrap().clear();
    }

    /// From now on `map` (one not failing on request) waits until `release_map`.
    pub fn hold_map(&self) {
        *self.map_gate.held.lock().unwrap() = true;
    }

    /// How many `map` calls wait for `release_map` now.
    pub fn maps_waiting(&self) -> u32 {
        *self.map_gate.waiting.lock().unwrap()
    }

    pub fn release_map(&self) {
        *self.map_gate.held.lock().unwrap() = false;
        self.map_gate.opened.notify_all();
    }

    /// Adds a mapping as if left by an earlier run.
    pub fn add(&self, image: &ImageRef) -> Mapping {
        let m = Mapping { image: image.clone(), device: self.new_device(), mapper: MapperKind::Userspace, with: Default::default() };
        self.mapped.lock().unwrap().insert(image.clone(), m.clone());
        m
    }

    pub fn mapped(&self) -> Vec<ImageRef> {
        self.mapped.lock().unwrap().keys().cloned().collect()
    }

    fn new_device(&self) -> PathBuf {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        PathBuf::from(format!("/dev/fake{}", *n - 1))
    }

    fn check(&self, call: &str, what: &str) -> Result<(), HostError> {
        if self.failing.lock().unwrap().contains(call) {
            return Err(HostError::Invalid { what: "fail point", value: what.to_string(), reason: format!("{call} fails on request") });
        }
        Ok(())
    }
}

impl Mapper for FakeMapper {
    fn kind(&self) -> MapperKind {
        self.kind.lock().unwrap().unwrap_or(MapperKind::Userspace)
    }

    fn check_features(&self, image: &ImageRef, _features: u64) -> Result<(), HostError> {
        self.check("check_features", &image.to_string())
    }

    fn map(&self, image: &ImageRef, _settings: &CephSettings, how: &super::MapOptions) -> Result<Mapping, HostError> {
        self.check("map", &image.to_string())?;
        let mut held = self.map_gate.held.lock().unwrap();
        *self.map_gate.waiting.lock().unwrap() += 1;
        while *held {
            held = self.map_gate.opened.wait(held).unwrap();
        }
        *self.map_gate.waiting.lock().unwrap() -= 1;
        drop(held);
        if let Some(m) = self.mapped.lock().unwrap().get(image) {
            return Ok(m.clone());
        }
        let with = super::MappedWith { map_options: how.options.clone(), unmap_options: how.unmap_options.clone(), cookie: None, read_only: how.read_only };
        let m = Mapping { image: image.clone(), device: self.new_device(), mapper: self.kind(), with };
        let ro = if how.read_only { " read-only" } else { "" };
        // Options only when there are some: other tests' journals stay as they were.
        if how.options.is_empty() && how.unmap_options.is_empty() {
            self.journal.lock().unwrap().push(format!("map {image}{ro}"));
        } else {
            self.journal.lock().unwrap().push(format!("map {image}{ro} -o {} (unmap -o {})", how.options.join(","), how.unmap_options.join(",")));
        }
        self.mapped.lock().unwrap().insert(image.clone(), m.clone());
        Ok(m)
    }

    fn unmap(&self, mapping: &Mapping) -> Result<(), HostError> {
        self.check("unmap", &mapping.image.to_string())?;
        if self.mapped.lock().unwrap().remove(&mapping.image).is_some() {
            if mapping.with.unmap_options.is_empty() {
                self.journal.lock().unwrap().push(format!("unmap {}", mapping.image));
            } else {
                self.journal.lock().unwrap().push(format!("unmap -o {} {}", mapping.with.unmap_options.join(","), mapping.image));
            }
        }
        Ok(())
    }

    fn unmap_fenced(&self, mapping: &Mapping) -> Result<(), HostError> {
        self.check("unmap", &mapping.image.to_string())?;
        if self.mapped.lock().unwrap().remove(&mapping.image).is_some() {
            self.journal.lock().unwrap().push(format!("unmap --force {}", mapping.image));
        }
        Ok(())
    }

    fn forget_dead(&self, recorded: &Mapping) -> Result<(), HostError> {
        // Kept apart from the journal: other tests' journals stay as they were.
        self.forgotten.lock().unwrap().push(format!("{} {}", recorded.image, recorded.device.display()));
        Ok(())
    }

    fn needs_reattach(&self, mapping: &Mapping) -> bool {
        self.dead.lock().unwrap().contains(&mapping.image)
    }

    fn reattach(&self, mapping: &Mapping, _settings: &CephSettings) -> Result<super::Reattached, HostError> {
        self.check("reattach", &mapping.image.to_string())?;
        if !self.dead.lock().unwrap().remove(&mapping.image) {
            return Ok(super::Reattached::Alive);
        }
        self.journal.lock().unwrap().push(format!("reattach {} -o {}", mapping.image, mapping.with.map_options.join(",")));
        Ok(super::Reattached::Reattached)
    }

    fn list(&self) -> Result<Vec<Mapping>, HostError> {
        self.check("list", "")?;
        Ok(self.mapped.lock().unwrap().values().cloned().collect())
    }

    fn refresh_size(&self, _mapping: &Mapping, _size: u64) -> Result<(), HostError> {
        Ok(())
    }
}
