//! The daemon behind `rbdvol serve`: the engine on the plugin socket, and,
//! with Consul, the settings watch, this host's session, the liveness of
//! other hosts and the volume records.

mod error;
pub mod records;

pub use error::DaemonError;
pub use records::{changed_records, keep_volume_records, sync_record, volume_record, RECORDS};
