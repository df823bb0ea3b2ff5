//! Targets: which ones this build drives, and the description of a release for the agent.
//!
//! # Layout
//! - `mod.rs`: the registry ([`DRIVEN`]) and the agent's description of a release.
//! - `docker.rs`: the Docker target's images (build, tags, push, prune) and hook containers.

pub mod docker;

use std::collections::BTreeMap;
use std::path::Path;

use cutover_config::{EnvValue, Pause, ResolvedService, StrategyKind, Tls};
use cutover_runtime::api::types::{
    AcmeSpec, AutoscaleSpec, CanarySpec, CanaryStepSpec, EdgeSpec, EnvVar, PauseSpec,
    PrometheusCheck, ProxySpec, ReleaseSpec, Strategy, TlsSpec,
};

/// The targets this build of cutover drives. Adding a target is its implementation plus its
/// line here; an environment whose services run on any other target is refused (exit 2)
/// before anything runs, never run somewhere else.
pub const DRIVEN: &[cutover_config::TargetKind] = &[
    cutover_config::TargetKind::Local,
    cutover_config::TargetKind::Docker,
    cutover_config::TargetKind::Swarm,
];

/// Refuses `env` when one of its services runs on a target this build cannot drive: the
/// error names the target, the environment and the services.
pub fn check_driven(env: &cutover_config::ResolvedEnvironment) -> Result<(), crate::EngineError> {
    let undriven: Vec<&cutover_config::ResolvedService> = env
        .services
        .iter()
        .filter(|s| !DRIVEN.contains(&s.target))
        .collect();
    let Some(first) = undriven.first() else {
        return Ok(());
    };
    Err(crate::EngineError::UndrivenTarget {
        target: first.target.as_str().to_string(),
        env: env.name.clone(),
        services: undriven.iter().map(|s| s.name.clone()).collect(),
        driven: DRIVEN.iter().map(|t| t.as_str().to_string()).collect(),
    })
}

/// Whether some service of `env` runs on a container target (its engine needs a check).
pub fn has_containers(env: &cutover_config::ResolvedEnvironment) -> bool {
    env.services.iter().any(|s| s.target.runs_images())
}

/// Checks, before a run changes anything, that the engines of `env`'s container services
/// answer: one clear error naming the socket otherwise.
pub async fn preflight(
    project: &str,
    env: &cutover_config::ResolvedEnvironment,
) -> Result<(), crate::EngineError> {
    let unavailable = |why: String| crate::EngineError::TargetUnavailable {
        env: env.name.clone(),
        why: why.replace(
            "[environments.<env>",
            &format!("[environments.{}", env.name),
        ),
    };
    if let Some(t) = docker::ContainerTarget::of(project, env).map_err(unavailable)? {
        t.preflight(env).await.map_err(unavailable)?;
    }
    Ok(())
}

/// The agent's description of `release` of `svc` (snapshot in `dir`), with secret values from
/// `secrets` (a secret missing there is left out; callers check secrets before a run starts).
pub fn release_spec(
    env: &str,
    svc: &ResolvedService,
    release: &str,
    dir: &Path,
    run: String,
    port: Option<u16>,
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
        edge: (!svc.hosts.is_empty()).then(|| EdgeSpec {
            http: svc.shared_listeners.http,
            https: svc.shared_listeners.https,
            hosts: svc.hosts.clone(),
            path_prefix: svc.path_prefix.clone(),
            tls: svc.tls.as_ref().map(|tls| match tls {
                Tls::Files { cert, key } => TlsSpec::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                },
                Tls::Acme => TlsSpec::Acme,
            }),
            redirect_https: svc.shared_listeners.redirect_https,
            acme: (svc.tls == Some(Tls::Acme))
                .then_some(svc.shared_listeners.acme.as_ref())
                .flatten()
                .map(|a| AcmeSpec {
                    directory: a.directory.clone(),
                    email: a.email.clone(),
                    ca: a.ca.clone(),
                    renew_before_ms: a.renew_before.map(millis),
                }),
        }),
        proxy: ProxySpec {
            max_body: svc.max_body,
            upstream_timeout_ms: svc.upstream_timeout.map(millis),
            access_log: svc.access_log,
        },
        // An autoscaled service starts within its bounds.
        instances: svc.container.autoscale.as_ref().map_or(svc.instances, |a| {
            svc.instances.clamp(a.min, a.max.max(a.min))
        }),
        env_vars,
        health: svc.health.clone(),
        strategy: match svc.strategy {
            StrategyKind::Immediate => Strategy::Immediate,
            StrategyKind::BlueGreen => Strategy::BlueGreen,
            StrategyKind::Rolling => Strategy::Rolling,
            StrategyKind::Canary => Strategy::Canary,
        },
        scale_down_delay_ms: millis(svc.scale_down_delay),
        drain_timeout_ms: millis(svc.drain_timeout),
        batch: svc.batch.max(1),
        canary: canary_spec(svc),
        autoscale: svc.container.autoscale.as_ref().map(|a| AutoscaleSpec {
            min: a.min,
            max: a.max,
            target_inflight: a.target_inflight,
        }),
        container: None,
    }
}

/// The canary table of a canary service, as the agent runs it.
fn canary_spec(svc: &ResolvedService) -> Option<CanarySpec> {
    if svc.strategy != StrategyKind::Canary {
        return None;
    }
    let c = svc.canary.as_ref()?;
    Some(CanarySpec {
        steps: c
            .steps
            .iter()
            .map(|s| CanaryStepSpec {
                weight: s.weight,
                pause: match s.pause {
                    Pause::None => PauseSpec::None,
                    Pause::Timed(d) => PauseSpec::Timed { ms: millis(d) },
                    Pause::Manual => PauseSpec::Manual,
                },
            })
            .collect(),
        interval_ms: millis(c.interval),
        max_error_rate: c.max_error_rate,
        max_p99_ms: c.max_p99_latency.as_secs_f64() * 1000.0,
        min_requests: c.min_requests,
        verdict_timeout_ms: millis(c.verdict_timeout),
        sticky: c.sticky,
        prometheus: c.prometheus.as_ref().map(|p| PrometheusCheck {
            url: p.url.clone(),
            query: p.query.clone(),
            max: p.max,
        }),
    })
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
