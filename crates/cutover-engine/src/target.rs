//! The local target: what the agent is asked to run for a release.

use std::collections::BTreeMap;
use std::path::Path;

use cutover_config::{EnvValue, ResolvedService, StrategyKind};
use cutover_runtime::api::types::{EnvVar, ReleaseSpec, Strategy};

/// The agent's description of `release` of `svc` (snapshot in `dir`), with secret values from
/// `secrets` (a secret missing there is left out; callers check secrets before a run starts).
pub fn release_spec(
    env: &str,
    svc: &ResolvedService,
    release: &str,
    dir: &Path,
    run: String,
    port: u16,
    secrets: &BTreeMap<String, String>,
) -> ReleaseSpec {
    let env_vars = svc
        .env
        .iter()
        .filter_map(|(k, v)| match v {
            EnvValue::Plain(s) => Some(EnvVar {
                name: k.clone(),
                value: s.clone(),
                secret: None,
            }),
            EnvValue::Secret(name) => secrets.get(name).map(|s| EnvVar {
                name: k.clone(),
                value: s.clone(),
                secret: Some(name.clone()),
            }),
        })
        .collect();
    ReleaseSpec {
        env: env.to_string(),
        service: svc.name.clone(),
        release: release.to_string(),
        dir: dir.to_path_buf(),
        run,
        port,
        listen: svc.listen,
        instances: svc.instances,
        env_vars,
        health: svc.health.clone(),
        strategy: match svc.strategy {
            StrategyKind::Immediate => Strategy::Immediate,
            _ => Strategy::BlueGreen,
        },
        scale_down_delay_ms: millis(svc.scale_down_delay),
        drain_timeout_ms: millis(svc.drain_timeout),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
