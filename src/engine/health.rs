//! Whether the cluster answers, as one background prober sees it — not a
//! timeout per Docker call. The prober asks the monitors (`mon stat`) and
//! the OSDs of every pool a volume lives in (a read of the pool's rbd
//! metadata; in the directory's pool that read *is* the directory, which
//! refreshes the listing kept for reads), each probe bounded by
//! `PROBE_BOUND`. While a part is unreachable, calls that need it fail at
//! once saying since when and what was tried; reads answer from memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::records::{self, rfc3339};
use super::{Engine, EngineError, Inner};
use crate::ceph;

/// A probe that has not answered after this long counts as a failure.
pub const PROBE_BOUND: Duration = Duration::from_secs(3);
/// How long a mutating call waits for the first probe's verdict (a call
/// right after start-up, when nothing is known yet).
pub const FIRST_VERDICT: Duration = Duration::from_millis(3500);
/// How much longer a probe that stalled while connecting is given (a busy
/// VM takes seconds to connect; the connect has its own timeout,
/// `RBDVOL_CONNECT_TIMEOUT`, 10 s by default).
pub const CONNECT_STAGE_BOUND: Duration = Duration::from_secs(15);
/// How long the probe waits for the read of a pool other than the
/// directory's (each in a thread of its own): within `PROBE_BOUND`, so a
/// stalled pool is that pool's verdict, not the cluster's.
pub const POOL_BOUND: Duration = Duration::from_millis(1500);

/// Why (part of) the cluster counts as unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Down {
    pub since: SystemTime,
    /// What was tried and how it failed.
    pub what: String,
}

impl Down {
    pub fn describe(&self) -> String {
        format!("unreachable since {} ({})", rfc3339(self.since), self.what)
    }
}

#[derive(Debug, Default, Clone)]
struct Verdict {
    /// A probe has finished since start-up.
    known: bool,
    /// The monitors (or the connection) are down.
    cluster: Option<Down>,
    /// Pools whose OSDs do not answer.
    pools: BTreeMap<String, Down>,
}

/// A probe that failed.
enum Probed {
    /// Something did not answer (in time): what was tried, how it failed.
    Down(String),
    /// The settings are wrong (a bad key): not a question of reachability.
    Misconfigured,
}

pub(super) struct Health {
    verdict: Mutex<Verdict>,
    changed: tokio::sync::Notify,
    /// A prober runs (serve); without one (the CLI, unit tests) nothing is
    /// waited for.
    watched: std::sync::atomic::AtomicBool,
    /// What the running probe is doing, for the verdict when it stalls.
    stage: Mutex<String>,
    /// The running probe is making the connection.
    connecting: std::sync::atomic::AtomicBool,
    /// Pools whose probe read has not returned yet (never two at once).
    pool_reads: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// When a probe last found the monitors and every pool answering (for
    /// the metrics).
    last_success: Mutex<Option<SystemTime>>,
    /// The last probe found the settings wrong: not up, though not down.
    misconfigured: std::sync::atomic::AtomicBool,
}

impl Default for Health {
    fn default() -> Health {
        Health { verdict: Mutex::new(Verdict::default()), changed: tokio::sync::Notify::new(), watched: Default::default(), stage: Mutex::default(), connecting: Default::default(), pool_reads: Default::default(), last_success: Mutex::default(), misconfigured: Default::default() }
    }
}

impl Health {
    /// Why a call touching `pools` cannot reach the cluster now, if so.
    pub fn down_for<'a>(&self, pools: impl IntoIterator<Item = &'a str>) -> Option<Down> {
        let v = self.verdict.lock().unwrap();
        if let Some(d) = &v.cluster {
            return Some(d.clone());
        }
        pools.into_iter().find_map(|p| v.pools.get(p).cloned())
    }

    /// Why the cluster (monitors, or any pool probed) cannot be reached now.
    pub fn down_anywhere(&self) -> Option<Down> {
        let v = self.verdict.lock().unwrap();
        v.cluster.clone().or_else(|| v.pools.values().next().cloned())
    }

    /// Whether the last probe found the monitors and every pool answering
    /// (and no call saw a timeout since), and when one last did.
    pub fn up(&self) -> (bool, Option<SystemTime>) {
        let last = *self.last_success.lock().unwrap();
        let v = self.verdict.lock().unwrap();
        let up = last.is_some() && v.known && v.cluster.is_none() && v.pools.is_empty() && !self.misconfigured.load(std::sync::atomic::Ordering::Relaxed);
        (up, last)
    }

    fn known(&self) -> bool {
        !self.watched.load(std::sync::atomic::Ordering::Relaxed) || self.verdict.lock().unwrap().known
    }

    /// Records a probe's result: the cluster failed (`Err`), or answered
    /// except for the pools listed.
    fn record(&self, result: Result<BTreeMap<String, String>, Probed>) {
        let now = SystemTime::now();
        let mut v = self.verdict.lock().unwrap();
        let result = match result {
            // Not a question of reachability: each call says what to fix.
            Err(Probed::Misconfigured) => {
                self.misconfigured.store(true, std::sync::atomic::Ordering::Relaxed);
                v.known = true;
                v.cluster = None;
                drop(v);
                self.changed.notify_waiters();
                return;
            }
            Err(Probed::Down(what)) => Err(what),
            Ok(pools) => Ok(pools),
        };
        self.misconfigured.store(false, std::sync::atomic::Ordering::Relaxed);
        let was_down = v.cluster.is_some() || !v.pools.is_empty();
        v.known = true;
        match result {
            Err(what) => {
                if v.cluster.is_none() {
                    tracing::error!("the cluster does not answer ({what}): calls that need it fail at once until it does; reads answer from memory");
                    v.cluster = Some(Down { since: now, what });
                } else if let Some(d) = v.cluster.as_mut() {
                    d.what = what;
                }
            }
            Ok(failed_pools) => {
                if failed_pools.is_empty() {
                    *self.last_success.lock().unwrap() = Some(now);
                }
                v.cluster = None;
                v.pools.retain(|p, _| failed_pools.contains_key(p));
                for (pool, what) in failed_pools {
                    match v.pools.get_mut(&pool) {
                        Some(d) => d.what = what,
                        None => {
                            tracing::error!("pool '{pool}' does not answer ({what}): calls on its volumes fail at once until it does");
                            v.pools.insert(pool, Down { since: now, what });
                        }
                    }
                }
                if v.pools.is_empty() && was_down {
                    tracing::info!("the cluster answers again");
                }
            }
        }
        drop(v);
        self.changed.notify_waiters();
    }

    /// Sets the verdict (unit tests): down with `what`, or up.
    #[cfg(test)]
    pub fn set(&self, down: Option<&str>) {
        let mut v = self.verdict.lock().unwrap();
        v.known = true;
        v.pools.clear();
        v.cluster = down.map(|what| Down { since: SystemTime::now(), what: what.to_string() });
    }

    /// Marks the cluster down at once when a call saw it time out (the
    /// prober confirms or lifts it at its next round).
    pub fn saw(&self, e: &EngineError) {
        if is_unanswered(e) {
            let mut v = self.verdict.lock().unwrap();
            if v.cluster.is_none() {
                v.cluster = Some(Down { since: SystemTime::now(), what: e.to_string() });
            }
        }
    }
}

/// For a one-shot caller (the admin CLI) with no prober: fails at once
/// unless the monitors and the OSDs of `pool` answer within `bound`, so a
/// command against a stalled cluster never waits the cluster's 30 s
/// timeouts.
pub fn preflight(cluster: &ceph::Cluster, pool: &str, bound: Duration) -> Result<(), EngineError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (c, p) = (cluster.clone(), pool.to_string());
    let stage = Arc::new(Mutex::new(format!("asking the monitors at {}", cluster.mon_host())));
    let at = Arc::clone(&stage);
    std::thread::spawn(move || {
        let mons = ask_monitors(&c);
        *at.lock().unwrap() = format!("reading pool '{p}' (its OSDs)");
        let read = mons.and_then(|_| read_pool(&c, &p));
        let _ = tx.send(read);
    });
    match rx.recv_timeout(bound) {
        Ok(Ok(_)) => Ok(()),
        // Refused (caps, no such pool): the command itself says so.
        Ok(Err(e)) => {
            let e = EngineError::Ceph(e);
            if is_unanswered(&e) {
                Err(e)
            } else {
                Ok(())
            }
        }
        Err(_) => Err(EngineError::ClusterUnreachable {
            detail: format!("unreachable (no answer within {} ms while {})", bound.as_millis(), stage.lock().unwrap()),
        }),
    }
}

/// The monitors' part of a probe: a command they answer without the OSDs.
fn ask_monitors(cluster: &ceph::Cluster) -> Result<(), ceph::CephError> {
    cluster.mon_command(&serde_json::json!({"prefix": "mon stat", "format": "json"}), ceph::Target::Cluster { mon_host: cluster.mon_host().to_string() }).map(drop)
}

/// A pool's part of a probe: one read its OSDs answer (a missing key is an
/// answer).
fn read_pool(cluster: &ceph::Cluster, pool: &str) -> Result<(), ceph::CephError> {
    cluster.open_pool(pool, "").and_then(|p| p.metadata_get(records::PROBE_KEY)).map(drop)
}

/// Whether `e` says the cluster did not answer (rather than refused).
pub fn is_unanswered(e: &EngineError) -> bool {
    match e {
        EngineError::Connect { source, .. } => matches!(**source, ceph::CephError::TimedOut { .. }),
        e => matches!(e, EngineError::Ceph(ceph::CephError::TimedOut { .. }) | EngineError::ClusterUnreachable { .. }),
    }
}

impl Inner {
    /// One probe: the connection, the monitors, and the OSDs of each pool
    /// volumes live in. `Ok` lists the pools that failed.
    fn probe(&self) -> Result<BTreeMap<String, String>, Probed> {
        let stage = |what: String| *self.health.stage.lock().unwrap() = what;
        let mon_host = self.connection.settings().map(|s| s.mon_host).unwrap_or_default();
        stage(format!("connecting to the monitors at {mon_host} (RBD_CONF_GLOBAL_MON_HOST)"));
        let connecting = !self.connection.is_connected();
        self.health.connecting.store(connecting, std::sync::atomic::Ordering::Relaxed);
        let connected = self.connection.cluster();
        self.health.connecting.store(false, std::sync::atomic::Ordering::Relaxed);
        let cluster = match connected {
            Ok(c) => c,
            Err(e @ EngineError::Connect { .. }) if is_unanswered(&e) => return Err(Probed::Down(format!("connecting: {e}"))),
            // The connect it waited for (another caller's) timed out.
            Err(EngineError::ClusterUnreachable { detail }) => return Err(Probed::Down(detail)),
            Err(_) => return Err(Probed::Misconfigured),
        };
        stage(format!("asking the monitors at {mon_host}"));
        // Only a cluster that does not answer is down. One that refuses
        // (caps, a missing pool) is the call's to report; one that fenced
        // this plugin's own client (a takeover) is answered by a new client.
        let unanswered = |e: ceph::CephError| -> Option<String> {
            let e = EngineError::Ceph(e);
            self.connection.forget_if_fenced(&e);
            is_unanswered(&e).then(|| e.to_string())
        };
        let mons = ask_monitors(&cluster);
        if let Some(what) = mons.err().and_then(unanswered) {
            return Err(Probed::Down(format!("asking the monitors: {what}")));
        }
        let mut failed = BTreeMap::new();
        let dir_pool = self.defaults.read().unwrap().pool.clone();
        // The directory's pool: reading it is reading the directory.
        stage(format!("reading the volume directory in pool '{dir_pool}' (its OSDs)"));
        match self.read_directory() {
            Ok(map) => self.cache.put_listing_for_memory(map),
            Err(EngineError::Ceph(e)) => {
                if let Some(what) = unanswered(e) {
                    failed.insert(dir_pool.clone(), format!("reading the volume directory in pool '{dir_pool}': {what}"));
                }
            }
            Err(_) => {}
        }
        // Every other pool in a thread of its own, bounded on its own: a pool
        // whose OSDs stall is that pool's verdict, not the cluster's.
        stage("reading the other pools volumes live in (their OSDs)".into());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut waiting = std::collections::BTreeSet::new();
        for pool in self.volume_pools().into_iter().filter(|p| *p != dir_pool) {
            if !self.health.pool_reads.lock().unwrap().insert(pool.clone()) {
                failed.insert(pool.clone(), format!("reading pool '{pool}': no answer yet to a read started earlier"));
                continue;
            }
            waiting.insert(pool.clone());
            let (cluster, tx, in_flight) = (cluster.clone(), tx.clone(), Arc::clone(&self.health.pool_reads));
            std::thread::spawn(move || {
                let read = read_pool(&cluster, &pool);
                in_flight.lock().unwrap().remove(&pool);
                let _ = tx.send((pool, read.err()));
            });
        }
        let deadline = Instant::now() + POOL_BOUND;
        while !waiting.is_empty() {
            let Ok((pool, error)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else { break };
            waiting.remove(&pool);
            if let Some(what) = error.and_then(unanswered) {
                failed.insert(pool.clone(), format!("reading pool '{pool}': {what}"));
            }
        }
        for pool in waiting {
            failed.insert(pool.clone(), format!("reading pool '{pool}': no answer within {} ms", POOL_BOUND.as_millis()));
        }
        Ok(failed)
    }

    /// The pools volumes live in (as last known), and those of the volumes
    /// mounted here.
    fn volume_pools(&self) -> std::collections::BTreeSet<String> {
        let mut pools: std::collections::BTreeSet<String> = self.cache.known_listing().map(|(_, m)| m.values().map(|e| e.pool.clone()).collect()).unwrap_or_default();
        pools.extend(self.mounted.lock().unwrap().values().map(|v| v.pool.clone()));
        pools
    }

    /// Fails when the cluster (or one of `pools`) is known to be unreachable.
    pub(super) fn require_reachable<S: AsRef<str>>(&self, pools: &[S]) -> Result<(), EngineError> {
        match self.health.down_for(pools.iter().map(AsRef::as_ref)) {
            Some(down) => Err(EngineError::ClusterUnreachable { detail: down.describe() }),
            None => Ok(()),
        }
    }
}

impl Engine {
    /// Probes the cluster now and then, for as long as the plugin runs:
    /// every `every` while it answers, and again as soon as a stalled probe
    /// returns while it does not.
    pub async fn watch_health(&self, every: Duration) {
        self.health_watched();
        loop {
            let inner = Arc::clone(&self.inner);
            let mut probe = tokio::spawn(ceph::offload(move || inner.probe()));
            let started = Instant::now();
            match tokio::time::timeout(PROBE_BOUND, &mut probe).await {
                Ok(done) => self.inner.health.record(done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))),
                Err(_) => {
                    // A connect has its own bound (RBDVOL_CONNECT_TIMEOUT) and
                    // a slow host (a busy VM) takes seconds to make one: its
                    // result is the verdict, not its duration. Calls that need
                    // the cluster meanwhile wait for that same connect.
                    let mut waited = PROBE_BOUND;
                    if self.inner.health.connecting.load(std::sync::atomic::Ordering::Relaxed) {
                        // Judged by its result, within the connect timeout
                        // and a probe's bound after it.
                        if let Ok(done) = tokio::time::timeout(CONNECT_STAGE_BOUND, &mut probe).await {
                            let done = done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                            let answered = done.is_ok();
                            self.inner.health.record(done);
                            if answered {
                                tokio::time::sleep(every).await;
                            }
                            continue;
                        }
                        waited += CONNECT_STAGE_BOUND;
                    }
                    let stage = self.inner.health.stage.lock().unwrap().clone();
                    self.inner.health.record(Err(Probed::Down(format!("no answer within {} ms while {stage}", waited.as_millis()))));
                    // The stalled probe ends by itself (the cluster's own
                    // timeouts); its result is the next verdict, at once.
                    let done = probe.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                    let answered = done.is_ok();
                    self.inner.health.record(done);
                    if answered {
                        continue;
                    }
                }
            }
            tokio::time::sleep(every.saturating_sub(started.elapsed())).await;
        }
    }

    /// From now on mutating calls wait (briefly) for the prober's first
    /// verdict: called before the prober is spawned, so no early call slips by.
    pub fn health_watched(&self) {
        self.inner.health.watched.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fails fast when the cluster (or one of `pools`) cannot be reached;
    /// right after start-up, waits briefly for the first verdict.
    pub(super) async fn reachable<S: AsRef<str> + Sync>(&self, pools: &[S]) -> Result<(), EngineError> {
        self.first_verdict().await;
        self.inner.require_reachable(pools)
    }

    /// Right after start-up, waits briefly for the prober's first verdict.
    pub(super) async fn first_verdict(&self) {
        if !self.inner.health.known() {
            let notified = self.inner.health.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.inner.health.known() {
                let _ = tokio::time::timeout(FIRST_VERDICT, notified).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pool_down_fails_only_the_calls_that_need_it() {
        let h = Health::default();
        h.record(Ok(BTreeMap::from([("ssd".to_string(), "reading pool 'ssd': timed out".to_string())])));
        assert!(h.down_for(["rbd"]).is_none());
        let down = h.down_for(["rbd", "ssd"]).expect("ssd is down");
        assert!(down.describe().starts_with("unreachable since ") && down.describe().contains("reading pool 'ssd'"), "{}", down.describe());
        // The pool answers again; then the monitors do not.
        h.record(Ok(BTreeMap::new()));
        assert!(h.down_anywhere().is_none());
        h.record(Err(Probed::Down("asking the monitors: timed out".into())));
        assert!(h.down_for(["rbd"]).is_some_and(|d| d.what.contains("monitors")));
    }

    #[test]
    fn a_wrong_key_is_not_an_outage() {
        let h = Health::default();
        h.record(Err(Probed::Misconfigured));
        assert!(h.known() && h.down_anywhere().is_none());
    }

    #[test]
    fn the_first_outage_keeps_its_start_time_while_it_lasts() {
        let h = Health::default();
        h.record(Err(Probed::Down("no answer within 1500 ms".into())));
        let since = h.down_anywhere().unwrap().since;
        std::thread::sleep(Duration::from_millis(20));
        h.record(Err(Probed::Down("asking the monitors: timed out".into())));
        let d = h.down_anywhere().unwrap();
        assert_eq!(d.since, since);
        assert!(d.what.contains("asking the monitors"));
    }

    #[test]
    fn up_for_the_metrics_means_the_last_probe_found_everything_answering() {
        let h = Health::default();
        assert_eq!(h.up(), (false, None), "no probe yet");
        h.record(Ok(BTreeMap::new()));
        let (up, last) = h.up();
        assert!(up && last.is_some());
        h.record(Ok(BTreeMap::from([("rbd".to_string(), "no answer".to_string())])));
        assert_eq!(h.up(), (false, last), "a pool that does not answer is not up; the last success stays");
        h.record(Err(Probed::Down("no answer".into())));
        assert_eq!(h.up(), (false, last));
        h.record(Err(Probed::Misconfigured));
        assert_eq!(h.up(), (false, last), "a wrong key is not up either");
        h.record(Ok(BTreeMap::new()));
        assert!(h.up().0);
        h.saw(&EngineError::ClusterUnreachable { detail: "timed out".into() });
        assert!(!h.up().0, "a call saw a timeout since");
    }
}
