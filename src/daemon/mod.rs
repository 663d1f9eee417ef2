//! The daemon behind `rbdvol serve`: the engine on the plugin socket, and,
//! with Consul, the settings watch, this host's session, the liveness of
//! other hosts and the volume records.

mod error;
mod liveness;
mod metrics;
mod records;
mod serve;
mod session;
mod settings_watch;

pub use error::DaemonError;
pub use liveness::{liveness_of, ConsulLiveness};
pub use metrics::{bind_metrics, render as render_metrics, serve_metrics, MetricsListener};
pub use records::{changed_records, keep_volume_records, sync_record, volume_record, RECORDS};
pub use serve::{auto_takeover, blocklist_expiry, check_interval, seconds, serve, session_ttl, Front, ServeConfig, SWARM_KEY_FILE};
pub use session::{keep_session, HOSTS};
pub use settings_watch::{add_consul, base_sources, watch_files, CephSources, FILES_INTERVAL, read_consul_cache, save_consul_cache, watch_consul, Reported, CONSUL_CACHE};
