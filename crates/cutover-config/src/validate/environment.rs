//! `[environments.E]` tables, and the checks that only make sense once every layer is applied:
//! each environment's target has what it needs, no two services share a listener or an image,
//! and every Dockerfile is inside the project.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Component, PathBuf};

use crate::error::Diag;
use crate::model::{
    EnvironmentDecl, Project, ServiceDecl, ServiceSettings, StrategyKind, TargetKind,
};
use crate::raw::RawFile;
use crate::resolve::resolve_decl;

use super::{Ctx, Spans, container, edge, name_check, record_layer, settings, suggest};

/// Converts the declared environments, in file order.
pub(crate) fn environments(
    cx: &mut Ctx<'_>,
    raw: &RawFile,
    services: &[ServiceDecl],
    defaults: &ServiceSettings,
    spans: &mut Spans,
) -> Vec<EnvironmentDecl> {
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let mut out = Vec::new();
    for (key, env) in raw
        .environments
        .as_ref()
        .map(|e| &e.get().0[..])
        .unwrap_or_default()
    {
        name_check(cx, key, "environment");
        let name = key.get().clone();
        let section = format!("[environments.{name}]");
        let layer = env.settings();
        record_layer(spans, &layer, "", &name);
        let overrides = settings::settings(cx, &layer, &section);
        let branch = env.branch.as_ref().and_then(|b| {
            let v = b.get().trim();
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                cx.err(
                    Diag::at(
                        b.span(),
                        format!("`branch` must be a git branch name, found {:?}", b.get()),
                    )
                    .help("e.g. branch = \"main\""),
                );
                None
            } else {
                Some(v.to_string())
            }
        });
        let registry = env
            .registry
            .as_ref()
            .and_then(|r| container::registry(cx, r));
        let docker_host = env.docker.as_ref().and_then(|d| {
            let host = d.get().host.as_ref()?;
            container::engine_host(cx, host, &format!("[environments.{name}.docker]"))
        });
        let swarm_host = env.swarm.as_ref().and_then(|d| {
            let host = d.get().host.as_ref()?;
            container::engine_host(cx, host, &format!("[environments.{name}.swarm]"))
        });
        let mut service_overrides = BTreeMap::new();
        for (skey, s) in env
            .services
            .as_ref()
            .map(|s| &s.get().0[..])
            .unwrap_or_default()
        {
            let sname = skey.get();
            if !names.contains(&sname.as_str()) {
                let help = match suggest(sname, names.iter().copied()) {
                    Some(c) => format!(
                        "did you mean `{c}`? declared services: {}",
                        names.join(", ")
                    ),
                    None if names.is_empty() => {
                        "declare the service first as [services.NAME]".to_string()
                    }
                    None => format!("declared services: {}", names.join(", ")),
                };
                cx.err(Diag::at(skey.span(), format!("[environments.{name}.services.{sname}] overrides unknown service `{sname}`"))
                    .help(help));
                continue;
            }
            let layer = s.settings();
            record_layer(spans, &layer, sname, &name);
            let section = format!("[environments.{name}.services.{sname}]");
            service_overrides.insert(sname.clone(), settings::settings(cx, &layer, &section));
        }
        let target = overrides.target.or(defaults.target).unwrap_or_default();
        if target == crate::model::TargetKind::Swarm && env.registry.is_none() {
            let at = env.target.as_ref().map_or_else(|| key.span(), |t| t.span());
            cx.err(
                Diag::at(at, format!("environment `{name}` runs on swarm but sets no `registry`"))
                    .help(format!(
                        "every node pulls the images from a registry: set registry = \"host:port\" in [environments.{name}], e.g. registry = \"10.0.0.1:5000\""
                    )),
            );
        }
        out.push(EnvironmentDecl {
            target,
            name,
            branch,
            require_approval: env.require_approval.as_ref().is_some_and(|r| *r.get()),
            registry,
            docker_host,
            swarm_host,
            overrides,
            service_overrides,
            declared: true,
        });
    }
    out
}

/// The target a service runs on in `env`: env.service ← env ← service ← defaults ← local.
fn target_of(spans: &Spans, service: &str, env: &str) -> TargetKind {
    [(service, env), ("", env), (service, ""), ("", "")]
        .iter()
        .find_map(|(s, e)| spans.target.get(&(s.to_string(), e.to_string())).copied())
        .unwrap_or_default()
}

/// Where a key a service uses in `env` was set (the most specific layer), else the service's
/// own key.
fn layer_span(
    spans: &Spans,
    by_layer: &HashMap<(String, String), Range<usize>>,
    service: &str,
    env: &str,
) -> Option<Range<usize>> {
    [(service, env), ("", env), (service, ""), ("", "")]
        .iter()
        .find_map(|(s, e)| by_layer.get(&(s.to_string(), e.to_string())).cloned())
        .or_else(|| spans.service_key.get(service).cloned())
}

/// Targets that build an image and run containers.
fn builds_image(target: TargetKind) -> bool {
    matches!(
        target,
        TargetKind::Docker | TargetKind::Swarm | TargetKind::Kubernetes
    )
}

fn envs_list(envs: &[String]) -> String {
    let quoted: Vec<String> = envs.iter().map(|e| format!("`{e}`")).collect();
    if envs.len() == 1 {
        format!("environment {}", quoted.join(", "))
    } else {
        format!("environments {}", quoted.join(", "))
    }
}

/// Where a port collision was first seen, and every environment where it happens.
type Clash = (Option<Range<usize>>, Vec<String>);

/// Something wrong with a service's resolved value: where it was set, the value, and every
/// environment where it happens.
type Found<T> = (Option<Range<usize>>, T, Vec<String>);

/// Per-environment checks on the resolved services.
pub(crate) fn check_resolved(cx: &mut Ctx<'_>, project: &Project, spans: &Spans) {
    // (service index, key) → target → environments
    let mut missing: BTreeMap<(usize, &str), BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    let mut no_canary: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    // (first index, second index, port) → (span, environments)
    let mut clashes: BTreeMap<(usize, usize, u16), Clash> = BTreeMap::new();
    let mut used_ports: Vec<u16> = Vec::new();
    // service index → environments where its public listener is the metrics listener.
    let mut metrics_clashes: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let metrics = project.settings.metrics_listen;
    // service index → its Dockerfile when that leaves the project dir.
    let mut outside: BTreeMap<usize, Found<PathBuf>> = BTreeMap::new();
    // service index → its image name and what is wrong with it.
    let mut bad_images: BTreeMap<usize, Found<(String, String, String)>> = BTreeMap::new();
    // (first index, second index) → the image both build.
    let mut same_image: BTreeMap<(usize, usize), Found<String>> = BTreeMap::new();
    // Services that run in containers in a declared environment: the implicit `development`
    // environment does not demand a `run` of them (a deploy there says it is missing).
    let containerized: std::collections::BTreeSet<usize> = project
        .environments
        .iter()
        .filter(|e| e.declared)
        .flat_map(|e| {
            resolve_decl(project, e)
                .services
                .into_iter()
                .enumerate()
                .filter(|(_, s)| builds_image(s.target))
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut claims = edge::Claims::default();
    for env in &project.environments {
        let resolved = resolve_decl(project, env);
        // The most specific layer setting `path_prefix` or `hosts`, else the service's key.
        let claim_span = |service: &str, env: &str| {
            [(service, env), ("", env), (service, ""), ("", "")]
                .iter()
                .find_map(|(s, e)| {
                    let key = (s.to_string(), e.to_string());
                    spans
                        .path_prefix
                        .get(&key)
                        .or(spans.hosts.get(&key))
                        .cloned()
                })
                .or_else(|| spans.service_key.get(service).cloned())
        };
        let tls_span = |service: &str, env: &str| {
            [(service, env), ("", env), (service, ""), ("", "")]
                .iter()
                .find_map(|(s, e)| spans.tls.get(&(s.to_string(), e.to_string())).cloned())
                .or_else(|| spans.service_key.get(service).cloned())
        };
        edge::check_claims(
            project,
            &env.name,
            &resolved.services,
            &claim_span,
            &mut claims,
        );
        edge::check_tls(
            project,
            &env.name,
            &resolved.services,
            &tls_span,
            &mut claims,
        );
        for (i, svc) in resolved.services.iter().enumerate() {
            if svc.container.dockerfile.components().next() == Some(Component::ParentDir) {
                outside
                    .entry(i)
                    .or_insert_with(|| {
                        let span = layer_span(spans, &spans.dockerfile, &svc.name, &env.name);
                        (span, svc.container.dockerfile.clone(), Vec::new())
                    })
                    .2
                    .push(env.name.clone());
            }
            if builds_image(svc.target) {
                if let Some((message, help)) = container::image_problem(&svc.container.image) {
                    bad_images
                        .entry(i)
                        .or_insert_with(|| {
                            let span = layer_span(spans, &spans.image, &svc.name, &env.name);
                            let found = (svc.container.image.clone(), message, help);
                            (span, found, Vec::new())
                        })
                        .2
                        .push(env.name.clone());
                }
                for (j, earlier) in resolved.services[..i].iter().enumerate() {
                    if builds_image(earlier.target)
                        && earlier.container.image == svc.container.image
                    {
                        same_image
                            .entry((j, i))
                            .or_insert_with(|| {
                                let span = layer_span(spans, &spans.image, &svc.name, &env.name);
                                (span, svc.container.image.clone(), Vec::new())
                            })
                            .2
                            .push(env.name.clone());
                    }
                }
            }
            let target = target_of(spans, &svc.name, &env.name);
            if target == TargetKind::Local
                && svc.run.is_none()
                && (env.declared || !containerized.contains(&i))
            {
                missing
                    .entry((i, "run"))
                    .or_default()
                    .entry(target.as_str())
                    .or_default()
                    .push(env.name.clone());
            }
            if matches!(
                target,
                TargetKind::Local | TargetKind::Docker | TargetKind::Swarm
            ) && svc.port.is_none()
                && svc.hosts.is_empty()
            {
                missing
                    .entry((i, "port"))
                    .or_default()
                    .entry(target.as_str())
                    .or_default()
                    .push(env.name.clone());
            }
            if svc.strategy == StrategyKind::Canary && svc.canary.is_none() {
                no_canary.entry(i).or_default().push(env.name.clone());
            }
            used_ports.extend(svc.port);
            if let (Some(m), Some(port)) = (metrics, svc.port)
                && m.port() == port
                && (m.ip() == svc.listen || m.ip().is_unspecified() || svc.listen.is_unspecified())
            {
                metrics_clashes.entry(i).or_default().push(env.name.clone());
            }
            for (j, earlier) in resolved.services[..i].iter().enumerate() {
                let (Some(a), Some(b)) = (earlier.port, svc.port) else {
                    continue;
                };
                let overlap = earlier.listen == svc.listen
                    || earlier.listen.is_unspecified()
                    || svc.listen.is_unspecified();
                if a == b && overlap {
                    let entry = clashes.entry((j, i, a)).or_insert_with(|| {
                        (
                            layer_span(spans, &spans.port, &svc.name, &env.name),
                            Vec::new(),
                        )
                    });
                    entry.1.push(env.name.clone());
                }
            }
        }
    }
    let free_port = (8080..u16::MAX)
        .find(|p| !used_ports.contains(p))
        .unwrap_or(8080);
    for ((i, key), by_target) in missing {
        let name = &project.services[i].name;
        let span = spans.service_key.get(name).cloned();
        let needed: Vec<String> = by_target
            .iter()
            .map(|(target, envs)| format!("the {target} target in {}", envs_list(envs)))
            .collect();
        let example = if key == "run" {
            "run = \"python3 app.py\" (a command that listens on $PORT)".to_string()
        } else {
            format!("port = {free_port} (the public port the proxy listens on)")
        };
        let shared = if key == "port" {
            format!(
                "; or serve it on the shared listener: [proxy] http = \"0.0.0.0:80\" and hosts = [\"{name}.example.com\"]"
            )
        } else {
            String::new()
        };
        cx.err(Diag::new(span, format!("service `{name}` has no `{key}`, needed by {}", needed.join("; ")))
            .help(format!("add {example} to [services.{name}], or to [environments.ENV.services.{name}] for one environment{shared}"))
            .label(format!("`{key}` missing")));
    }
    for (i, envs) in no_canary {
        let name = &project.services[i].name;
        cx.err(Diag::new(spans.service_key.get(name).cloned(),
            format!("service `{name}` uses strategy \"canary\" but has no canary steps in {}", envs_list(&envs)))
            .help(format!("add [services.{name}.canary] with steps = [{{ weight = 10, pause = \"5m\" }}, {{ weight = 100 }}]")));
    }
    for (i, envs) in metrics_clashes {
        let name = &project.services[i].name;
        let port = metrics.map_or(0, |m| m.port());
        cx.err(Diag::new(spans.metrics_listen.clone(), format!(
            "`metrics_listen` uses port {port}, the public port of service `{name}` in {}",
            envs_list(&envs)
        ))
            .help("give metrics_listen a port no service uses, e.g. metrics_listen = \"127.0.0.1:9464\"")
            .label("port already taken"));
    }
    for (i, (span, dockerfile, envs)) in outside {
        let svc = &project.services[i];
        cx.err(Diag::new(span, format!(
            "the Dockerfile of service `{}` is outside the project dir in {}: {}",
            svc.name,
            envs_list(&envs),
            dockerfile.display()
        ))
            .help(format!(
                "`dockerfile` is relative to the service's path ({}) and must stay inside {}, e.g. dockerfile = \"Dockerfile\"",
                svc.path.display(),
                project.dir.display()
            )));
    }
    for (i, (span, (image, message, help), envs)) in bad_images {
        let name = &project.services[i].name;
        cx.err(
            Diag::new(
                span,
                format!(
                    "the image of service `{name}`, {image:?}, {message} (in {})",
                    envs_list(&envs)
                ),
            )
            .help(format!(
                "{help}; without `image` it is <project>-<service>, after the environment's `registry`"
            )),
        );
    }
    for ((j, i), (span, image, envs)) in same_image {
        let (a, b) = (&project.services[j].name, &project.services[i].name);
        cx.err(Diag::new(span, format!("services `{a}` and `{b}` both build image {image:?} in {}", envs_list(&envs)))
            .help(format!("each service needs its own image (cutover tags <image>:<env>-latest per service): give `{b}` its own `image` in [services.{b}], or leave `image` out to get <project>-<service>"))
            .label("image already taken"));
    }
    edge::report_claims(
        cx,
        project,
        &|name| spans.service_key.get(name).cloned(),
        claims,
        &envs_list,
    );
    for ((j, i, port), (span, envs)) in clashes {
        let (a, b) = (&project.services[j].name, &project.services[i].name);
        let env = envs.first().map_or("ENV", String::as_str);
        cx.err(Diag::new(span, format!("services `{a}` and `{b}` both use port {port} in {}", envs_list(&envs)))
            .help(format!("give `{b}` its own port (e.g. port = {free_port}) in [services.{b}], or in [environments.{env}.services.{b}] for one environment"))
            .label("port already taken"));
    }
}
