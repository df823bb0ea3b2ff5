//! `[environments.E]` tables, and the checks that only make sense once every layer is applied:
//! each environment's target has what it needs, and no two services share a listener.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::error::Diag;
use crate::model::{
    EnvironmentDecl, Project, ServiceDecl, ServiceSettings, StrategyKind, TargetKind,
};
use crate::raw::RawFile;
use crate::resolve::resolve_decl;

use super::{Ctx, Spans, name_check, record_layer, settings, suggest};

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
        out.push(EnvironmentDecl {
            target: overrides.target.or(defaults.target).unwrap_or_default(),
            name,
            branch,
            require_approval: env.require_approval.as_ref().is_some_and(|r| *r.get()),
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

/// Where the port a service uses in `env` was set (the most specific layer).
fn port_span(spans: &Spans, service: &str, env: &str) -> Option<Range<usize>> {
    [(service, env), ("", env), (service, ""), ("", "")]
        .iter()
        .find_map(|(s, e)| spans.port.get(&(s.to_string(), e.to_string())).cloned())
        .or_else(|| spans.service_key.get(service).cloned())
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
    for env in &project.environments {
        let resolved = resolve_decl(project, env);
        for (i, svc) in resolved.services.iter().enumerate() {
            let target = target_of(spans, &svc.name, &env.name);
            if target == TargetKind::Local && svc.run.is_none() {
                missing
                    .entry((i, "run"))
                    .or_default()
                    .entry(target.as_str())
                    .or_default()
                    .push(env.name.clone());
            }
            if matches!(target, TargetKind::Local | TargetKind::Docker) && svc.port.is_none() {
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
                    let entry = clashes
                        .entry((j, i, a))
                        .or_insert_with(|| (port_span(spans, &svc.name, &env.name), Vec::new()));
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
        cx.err(Diag::new(span, format!("service `{name}` has no `{key}`, needed by {}", needed.join("; ")))
            .help(format!("add {example} to [services.{name}], or to [environments.ENV.services.{name}] for one environment"))
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
    for ((j, i, port), (span, envs)) in clashes {
        let (a, b) = (&project.services[j].name, &project.services[i].name);
        let env = envs.first().map_or("ENV", String::as_str);
        cx.err(Diag::new(span, format!("services `{a}` and `{b}` both use port {port} in {}", envs_list(&envs)))
            .help(format!("give `{b}` its own port (e.g. port = {free_port}) in [services.{b}], or in [environments.{env}.services.{b}] for one environment"))
            .label("port already taken"));
    }
}
