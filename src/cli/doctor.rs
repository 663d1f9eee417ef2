//! `rbdvol doctor`: diagnose this host and the cluster.

use anyhow::{Context, Result};
use rbdvol::config::consul::ConsulSettings;
use rbdvol::config::ConfigError;
use rbdvol::daemon::base_sources;
use rbdvol::host::mapper::MapperConfig;
use rbdvol::settings::resolve;

use super::args::{ClusterArgs, MapperArgs};
use super::config::cli_effective;
use super::output::say;

pub fn doctor(args: &ClusterArgs, mapper: &MapperArgs, json: bool) -> Result<()> {
    use rbdvol::engine::doctor::{self, DoctorInput, SettingOrigins};
    // The settings serve would run with; a Consul that cannot even be set
    // up is reported by the consul check, the rest still runs.
    let eff = cli_effective(args).unwrap_or_else(|e| {
        let mut eff = resolve(&base_sources(args.flag_sources(), args.ceph_sources()), |_| {});
        if eff.ceph.is_err() {
            eff.ceph = Err(ConfigError::Consul(e.to_string()));
        }
        eff
    });
    let origin = |name: &str| eff.shown.iter().find(|s| s.name == name).map(|s| s.source.clone()).unwrap_or_default();
    let origins = SettingOrigins {
        mon_host: origin("RBD_CONF_GLOBAL_MON_HOST"),
        user: origin("RBD_CONF_KEYRING_USER"),
        key: if eff.shown.iter().any(|s| s.name == "RBD_CONF_KEYRING_KEY_FILE") { origin("RBD_CONF_KEYRING_KEY_FILE") } else { origin("RBD_CONF_KEYRING_KEY") },
        looked: eff.looked.clone(),
    };
    let input = DoctorInput {
        origins,
        mapper: mapper.mapper.clone(),
        mapper_config: MapperConfig {
            run_dir: mapper.run_dir.clone(),
            sysfs: mapper.sysfs.clone(),
            exe: std::env::current_exe().context("locating the rbdvol binary")?,
        },
        state_dir: args.state_dir.clone(),
        host_id: args.host_id(),
        settings: eff.ceph,
        dir_pool: eff.defaults.pool,
        consul: ConsulSettings::from_vars(std::env::vars()),
    };
    let checks = doctor::run(&input);
    let ok = doctor::all_ok(&checks);
    let mut text: Vec<String> = checks.iter().map(|c| format!("{:<5} {:<13} {}", c.status.as_str(), c.name, c.detail)).collect();
    text.push((if ok { "ok" } else { "failed: fix the lines marked fail" }).to_string());
    say(json, &doctor::Report { checks: &checks, ok }, &text.join("\n"))?;
    if !ok {
        use std::io::Write;
        std::io::stdout().flush()?;
        std::process::exit(1);
    }
    Ok(())
}
