//! One layer's overridable keys (`[defaults]`, `[services.S]`, `[environments.E]`,
//! `[environments.E.services.S]`) → [`ServiceSettings`], checking each value.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{
    Canary, CanaryStep, EnvValue, HealthSettings, Pause, ProbeKind, PrometheusAnalysis, Smoke,
    StrategyKind, TargetKind,
};
use crate::raw::{
    RawCanary, RawEnvValue, RawHealth, RawProbeKind, RawSettings, RawSmoke, RawStep, RawStrategy,
    RawTarget, Sp,
};
use crate::{Diag, ServiceSettings};

use super::{Ctx, container, is_env_name};

/// Converts and checks one layer; `section` names it in messages (`[services.api]`).
pub(crate) fn settings(cx: &mut Ctx<'_>, raw: &RawSettings, section: &str) -> ServiceSettings {
    ServiceSettings {
        checks: cx.commands(&raw.checks, "checks"),
        build: cx.command(&raw.build, "build", "remove `build` to skip building, or write a command such as \"pip install -r requirements.txt\""),
        run: cx.command(&raw.run, "run", "write the command that starts one instance and listens on $PORT, e.g. run = \"python3 app.py\""),
        port: cx.int(&raw.port, "port", "", 1, 65535).and_then(|p| u16::try_from(p).ok()),
        listen: raw.listen.as_ref().and_then(|l| listen(cx, l)),
        hosts: raw.hosts.as_ref().and_then(|h| super::edge::hosts(cx, h)),
        path_prefix: raw.path_prefix.as_ref().and_then(|p| super::edge::path_prefix(cx, p)),
        max_body: raw.max_body.as_ref().and_then(|m| super::edge::size(cx, m, "max_body")),
        upstream_timeout: cx.duration(&raw.upstream_timeout, "upstream_timeout", true),
        access_log: raw.access_log.as_ref().map(|b| *b.get()),
        tls: raw.tls.as_ref().and_then(|t| super::edge::tls(cx, t)),
        instances: cx.int(&raw.instances, "instances", "", 1, 10_000).and_then(|n| u32::try_from(n).ok()),
        batch: cx.int(&raw.batch, "batch", "", 1, 10_000).and_then(|n| u32::try_from(n).ok()),
        drain_timeout: cx.duration(&raw.drain_timeout, "drain_timeout", false),
        scale_down_delay: cx.duration(&raw.scale_down_delay, "scale_down_delay", false),
        timeout: cx.duration(&raw.timeout, "timeout", true),
        pre_deploy: cx.commands(&raw.pre_deploy, "pre_deploy"),
        post_deploy: cx.commands(&raw.post_deploy, "post_deploy"),
        rollback_on_hook_failure: raw.rollback_on_hook_failure.as_ref().map(|b| *b.get()),
        env: raw.env.as_ref().map(|env| {
            let mut out = BTreeMap::new();
            for (name, value) in &env.get().0 {
                if !is_env_name(name.get()) {
                    cx.err(Diag::at(name.span(), format!("`{}` is not a valid environment variable name", name.get()))
                        .help("names are letters, digits and _, not starting with a digit: LOG_LEVEL, OPENAI_API_KEY"));
                    continue;
                }
                if let Some(v) = env_value(cx, value) {
                    out.insert(name.get().clone(), v);
                }
            }
            out
        }),
        strategy: raw.strategy.as_ref().map(|s| match s.get() {
            RawStrategy::BlueGreen => StrategyKind::BlueGreen,
            RawStrategy::Rolling => StrategyKind::Rolling,
            RawStrategy::Canary => StrategyKind::Canary,
            RawStrategy::Immediate => StrategyKind::Immediate,
        }),
        health: raw.health.as_ref().map(|h| health(cx, h.get())),
        canary: raw.canary.as_ref().and_then(|c| canary(cx, c, section)),
        smoke: raw
            .smoke
            .as_ref()
            .map(|list| list.get().iter().filter_map(|s| smoke(cx, s, section)).collect()),
        target: raw.target.as_ref().map(|t| target(*t.get())),
        dockerfile: raw.dockerfile.as_ref().and_then(|d| container::dockerfile(cx, d)),
        image: raw.image.as_ref().and_then(|i| container::image(cx, i)),
        build_args: raw.build_args.as_ref().map(|b| container::build_args(cx, b.get())),
        container_port: cx.int(&raw.container_port, "container_port", "", 1, 65535).and_then(|p| u16::try_from(p).ok()),
        autoscale: raw.autoscale.as_ref().and_then(|a| container::autoscale(cx, a)),
        nano_cpus: raw.cpus.as_ref().and_then(|c| container::cpus(cx, c)),
        memory: raw.memory.as_ref().and_then(|m| container::memory(cx, m)),
        constraints: raw.constraints.as_ref().map(|c| container::constraints(cx, c.get())),
    }
}

pub(crate) fn target(t: RawTarget) -> TargetKind {
    match t {
        RawTarget::Local => TargetKind::Local,
        RawTarget::Docker => TargetKind::Docker,
        RawTarget::Swarm => TargetKind::Swarm,
        RawTarget::Kubernetes => TargetKind::Kubernetes,
        RawTarget::Exec => TargetKind::Exec,
    }
}

fn listen(cx: &mut Ctx<'_>, l: &Sp<String>) -> Option<IpAddr> {
    match l.get().trim().parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            let help = if l.get().contains(':')
                && l.get()
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                "`listen` is only the address; the port goes in `port`".to_string()
            } else {
                "use 127.0.0.1 (this host only, the default) or 0.0.0.0 (every interface)"
                    .to_string()
            };
            cx.err(
                Diag::at(
                    l.span(),
                    format!("`listen` must be an IP address, found {:?}", l.get()),
                )
                .help(help),
            );
            None
        }
    }
}

/// An `env` value or a notify secret.
pub(crate) fn env_value(cx: &mut Ctx<'_>, value: &Sp<RawEnvValue>) -> Option<EnvValue> {
    match value.get() {
        RawEnvValue::Plain(s) => Some(EnvValue::Plain(s.clone())),
        RawEnvValue::Secret(name) => {
            if is_env_name(name.get()) {
                Some(EnvValue::Secret(name.get().clone()))
            } else {
                cx.err(Diag::at(name.span(), format!("`{}` is not a valid secret name", name.get()))
                    .help("secret names are letters, digits and _, not starting with a digit: OPENAI_API_KEY"));
                None
            }
        }
    }
}

fn health(cx: &mut Ctx<'_>, h: &RawHealth) -> HealthSettings {
    if let Some(json) = &h.expect_json
        && !json.get().is_object()
    {
        cx.err(
            Diag::at(
                json.span(),
                "`expect_json` must be a table, e.g. { status = \"healthy\" }",
            )
            .help(
                "the JSON body must contain this subset; write expect_json = { key = \"value\" }",
            ),
        );
    }
    HealthSettings {
        kind: h.kind.as_ref().map(|k| match k.get() {
            RawProbeKind::Http => ProbeKind::Http,
            RawProbeKind::Tcp => ProbeKind::Tcp,
        }),
        path: h.path.as_ref().and_then(|p| url_path(cx, p)),
        expect_status: cx
            .int(&h.expect_status, "expect_status", "", 100, 599)
            .and_then(|n| u16::try_from(n).ok()),
        expect_json: h
            .expect_json
            .as_ref()
            .map(|j| j.get().clone())
            .filter(|j| j.is_object()),
        initial_delay: cx.duration(&h.initial_delay, "initial_delay", false),
        period: cx.duration(&h.period, "period", true),
        timeout: cx.duration(&h.timeout, "timeout", true),
        success_threshold: cx
            .int(&h.success_threshold, "success_threshold", "", 1, 1_000)
            .and_then(|n| u32::try_from(n).ok()),
        failure_threshold: cx
            .int(&h.failure_threshold, "failure_threshold", "", 1, 1_000)
            .and_then(|n| u32::try_from(n).ok()),
        ready_timeout: cx.duration(&h.ready_timeout, "ready_timeout", true),
    }
}

fn url_path(cx: &mut Ctx<'_>, p: &Sp<String>) -> Option<String> {
    if p.get().starts_with('/') && !p.get().chars().any(char::is_whitespace) {
        Some(p.get().clone())
    } else {
        cx.err(
            Diag::at(
                p.span(),
                format!(
                    "`path` must be a URL path starting with /, found {:?}",
                    p.get()
                ),
            )
            .help("e.g. path = \"/health\""),
        );
        None
    }
}

fn canary(cx: &mut Ctx<'_>, c: &Sp<RawCanary>, section: &str) -> Option<Canary> {
    let raw = c.get();
    let before = cx.diags.len();
    let steps = match &raw.steps {
        None => {
            cx.err(
                Diag::at(c.span(), format!("the canary of {section} has no `steps`"))
                    .help("add steps = [{ weight = 10, pause = \"5m\" }, { weight = 100 }]"),
            );
            Vec::new()
        }
        Some(list) if list.get().is_empty() => {
            cx.err(Diag::at(list.span(), "`steps` is empty")
                .help("add at least one step: steps = [{ weight = 10, pause = \"5m\" }, { weight = 100 }]"));
            Vec::new()
        }
        Some(list) => {
            let mut steps: Vec<CanaryStep> = Vec::new();
            let mut last: Option<u8> = None;
            for step in list.get() {
                let Some(s) = canary_step(cx, step) else {
                    continue;
                };
                if let Some(prev) = last
                    && s.weight < prev
                {
                    cx.err(Diag::at(step.span(), format!("canary weights must not decrease: {} after {prev}", s.weight))
                        .help("list steps from the smallest weight to the largest, e.g. 5, 25, 50, 100"));
                }
                last = Some(s.weight);
                steps.push(s);
            }
            steps
        }
    };
    let max_error_rate = match &raw.max_error_rate {
        Some(r) if !(0.0..=1.0).contains(&r.get().0) => {
            cx.err(
                Diag::at(
                    r.span(),
                    format!(
                        "`max_error_rate` must be a number from 0 to 1, found {}",
                        r.get().0
                    ),
                )
                .help("it is a fraction: 0.05 means 5% of requests may fail"),
            );
            None
        }
        other => other.as_ref().map(|r| r.get().0),
    };
    let prometheus = raw.prometheus.as_ref().and_then(|p| {
        let pr = p.get();
        let url = pr.url.as_ref().map(|u| u.get().clone());
        if let Some(u) = &pr.url
            && !(u.get().starts_with("http://") || u.get().starts_with("https://"))
        {
            cx.err(Diag::at(u.span(), format!("`url` must start with http:// or https://, found {:?}", u.get())));
        }
        let query = pr.query.as_ref().map(|q| q.get().trim().to_string()).filter(|q| !q.is_empty());
        let max = pr.max.as_ref().map(|m| m.get().0);
        let (Some(url), Some(query), Some(max)) = (url, query, max) else {
            cx.err(Diag::at(p.span(), "`prometheus` needs `url`, `query` and `max`")
                .help("e.g. prometheus = { url = \"http://127.0.0.1:9090\", query = \"...\", max = 0.01 }"));
            return None;
        };
        Some(PrometheusAnalysis { url, query, max })
    });
    let canary = Canary {
        steps,
        interval: cx
            .duration(&raw.interval, "interval", true)
            .unwrap_or(std::time::Duration::from_secs(10)),
        max_error_rate: max_error_rate.unwrap_or(0.05),
        max_p99_latency: cx
            .duration(&raw.max_p99_latency, "max_p99_latency", true)
            .unwrap_or(std::time::Duration::from_millis(1000)),
        min_requests: cx
            .int(&raw.min_requests, "min_requests", "", 1, i64::MAX)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(20),
        verdict_timeout: cx
            .duration(&raw.verdict_timeout, "verdict_timeout", true)
            .unwrap_or(std::time::Duration::from_secs(600)),
        sticky: raw.sticky.as_ref().is_some_and(|s| *s.get()),
        prometheus,
    };
    (cx.diags.len() == before).then_some(canary)
}

fn canary_step(cx: &mut Ctx<'_>, step: &Sp<RawStep>) -> Option<CanaryStep> {
    let raw = step.get();
    let Some(weight) = &raw.weight else {
        cx.err(
            Diag::at(step.span(), "a canary step needs a `weight`")
                .help("e.g. { weight = 25, pause = \"15m\" }"),
        );
        return None;
    };
    let weight = cx
        .int(&Some(weight.clone()), "weight", "", 1, 100)
        .and_then(|w| u8::try_from(w).ok())?;
    let pause = match &raw.pause {
        None => Pause::None,
        Some(p) if p.get().trim() == "manual" => Pause::Manual,
        Some(p) => match crate::parse_duration(p.get()) {
            Ok(d) => Pause::Timed(d),
            Err(_) => {
                cx.err(
                    Diag::at(p.span(), format!("`pause`: invalid duration {:?}", p.get())).help(
                        format!(
                            "{}; or \"manual\" to wait for `cutover promote`",
                            crate::duration::DURATION_HELP
                        ),
                    ),
                );
                return None;
            }
        },
    };
    Some(CanaryStep { weight, pause })
}

fn smoke(cx: &mut Ctx<'_>, s: &Sp<RawSmoke>, section: &str) -> Option<Smoke> {
    let raw = s.get();
    let before = cx.diags.len();
    let path = match &raw.path {
        Some(p) => url_path(cx, p),
        None => {
            cx.err(
                Diag::at(
                    s.span(),
                    format!("a smoke check in {section} needs a `path`"),
                )
                .help("e.g. path = \"/api/items\""),
            );
            None
        }
    };
    let method = match &raw.method {
        None => "GET".to_string(),
        Some(m) => {
            let upper = m.get().trim().to_ascii_uppercase();
            if upper.is_empty() || !upper.chars().all(|c| c.is_ascii_alphabetic()) {
                cx.err(
                    Diag::at(
                        m.span(),
                        format!("`method` must be an HTTP method, found {:?}", m.get()),
                    )
                    .help("e.g. GET, POST, PUT, DELETE, HEAD"),
                );
            }
            upper
        }
    };
    let expect_status = cx
        .int(&raw.expect_status, "expect_status", "", 100, 599)
        .and_then(|n| u16::try_from(n).ok());
    let max_latency = cx.duration(&raw.max_latency, "max_latency", true);
    let path = path?;
    (cx.diags.len() == before).then_some(Smoke {
        path,
        method,
        expect_status: expect_status.unwrap_or(200),
        max_latency,
    })
}
