//! Raw bindings to librados and librbd as shipped by Debian 12 (Ceph 16.2:
//! librados 2, librbd 1.16). Generated with bindgen by `generate.sh` and
//! checked in, so building needs no libclang; `build.rs` only links `rbd` and
//! `rados`. The safe layer is `rbdvol::ceph`; nothing else should use this.
//! The layout tests bindgen emits (`bindgen_test_layout_*`) check every struct
//! against the C layout the headers describe.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all)]
#![allow(deref_nullptr)]

include!("bindings.rs");

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    // bindgen also emits compile-time layout assertions for every struct in
    // bindings.rs; these check the ones the safe layer fills by hand against
    // the C layout (x86_64, Debian 12 headers).
    #[test]
    fn image_info_layout() {
        assert_eq!(size_of::<rbd_image_info_t>(), 160);
        assert_eq!(offset_of!(rbd_image_info_t, order), 24);
        assert_eq!(offset_of!(rbd_image_info_t, block_name_prefix), 28);
        assert_eq!(offset_of!(rbd_image_info_t, parent_pool), 56);
    }

    #[test]
    fn list_entry_layouts() {
        assert_eq!(size_of::<rbd_image_spec_t>(), 16);
        assert_eq!(size_of::<rbd_image_watcher_t>(), 24);
        assert_eq!(offset_of!(rbd_image_watcher_t, cookie), 16);
        assert_eq!(size_of::<rbd_trash_image_info_t>(), 40);
        assert_eq!(align_of::<rbd_trash_image_info_t>(), 8);
        assert_eq!(size_of::<rbd_lock_mode_t>(), 4);
    }

    #[test]
    fn linked_libraries_match_the_headers() {
        let (mut major, mut minor, mut extra) = (0, 0, 0);
        // SAFETY: three valid out-pointers; the call only writes them.
        unsafe { rbd_version(&mut major, &mut minor, &mut extra) };
        assert_eq!((major as u32, minor as u32), (LIBRBD_VER_MAJOR, LIBRBD_VER_MINOR));
        // SAFETY: as above.
        unsafe { rados_version(&mut major, &mut minor, &mut extra) };
        assert_eq!(major as u32, LIBRADOS_VER_MAJOR);
        assert!(minor as u32 >= LIBRADOS_VER_MINOR);
    }
}
