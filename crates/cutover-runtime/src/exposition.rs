//! The Prometheus text exposition of the agent (`GET /metrics` on the socket, and on TCP where
//! `[project] metrics_listen` is set).
//!
//! Two sources: the proxies' per-release numbers ([`Metrics`]: requests by code, errors, the
//! latency histogram) and what the agent knows of its services ([`AgentStatus`]: instances,
//! health, release roles, route weights, the canary's step, deploys by result). Every family
//! has its `# HELP` and `# TYPE` lines, even without samples, and its samples together; label
//! values are escaped; names follow the Prometheus conventions `promtool check metrics` lints
//! (base units, `_total` on counters only).
//!
//! The request families are labelled by `service` and `release` only: release ids are unique
//! per service across environments, and the counters of a stopped release are dropped with it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::api::types::AgentStatus;
use crate::metrics::Metrics;

/// Instance states the supervisor reports; each is rendered (0 when none is in it) so a state
/// that empties shows 0 rather than a vanished series.
const INSTANCE_STATES: [&str; 5] = ["running", "starting", "backoff", "exited", "stopped"];

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as the text format spells it (`+Inf`, `-Inf`, `NaN`, else plain decimal).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// Writes `{name="value",...}` (nothing for no labels).
fn labels(out: &mut String, pairs: &[(&str, &str)]) {
    if pairs.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape(value));
    }
    out.push('}');
}

/// One family being written: its header once, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    /// A sample of the family itself.
    fn sample(&mut self, pairs: &[(&str, &str)], value: &str) {
        self.suffixed("", pairs, value);
    }

    /// A sample named `<family><suffix>` (`_bucket`, `_sum`, `_count` of a histogram).
    fn suffixed(&mut self, suffix: &str, pairs: &[(&str, &str)], value: &str) {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        labels(self.out, pairs);
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }
}

/// The whole exposition: the proxies' numbers in `metrics`, the agent's view in `status`.
pub fn prometheus_text(metrics: &Metrics, status: &AgentStatus) -> String {
    let mut out = String::new();
    requests(&mut out, metrics);
    instances(&mut out, status);
    releases(&mut out, status);
    deploys(&mut out, status);
    let mut f = Family::new(
        &mut out,
        "cutover_agent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
    );
    f.sample(&[], &status.uptime_seconds.to_string());
    out
}

/// Requests by code, errors and the latency histogram of every (service, release).
fn requests(out: &mut String, metrics: &Metrics) {
    let all = metrics.all();
    let mut f = Family::new(
        out,
        "cutover_requests_total",
        "counter",
        "Requests served through the proxy, by service, release and status code (a connection error counts as the 502 sent).",
    );
    for (service, release, m) in &all {
        for (code, n) in &m.by_code {
            let code = code.to_string();
            f.sample(
                &[("service", service), ("release", release), ("code", &code)],
                &n.to_string(),
            );
        }
    }
    let mut f = Family::new(
        out,
        "cutover_request_errors_total",
        "counter",
        "5xx answers, connection errors, timeouts and bodies cut short, by service and release.",
    );
    for (service, release, m) in &all {
        f.sample(
            &[("service", service), ("release", release)],
            &m.errors.to_string(),
        );
    }
    let mut f = Family::new(
        out,
        "cutover_request_duration_seconds",
        "histogram",
        "Time from the start of a request to its response head, by service and release.",
    );
    for (service, release, m) in &all {
        for b in &m.latency.buckets {
            let le = number(b.le);
            f.suffixed(
                "_bucket",
                &[("service", service), ("release", release), ("le", &le)],
                &b.count.to_string(),
            );
        }
        let base = [("service", service.as_str()), ("release", release.as_str())];
        f.suffixed(
            "_bucket",
            &[base[0], base[1], ("le", "+Inf")],
            &m.latency.count.to_string(),
        );
        f.suffixed("_sum", &base, &number(m.latency.sum));
        f.suffixed("_count", &base, &m.latency.count.to_string());
    }
}

/// Instances by release set and state, ready instances, desired instances, service health.
fn instances(out: &mut String, status: &AgentStatus) {
    // (service, env, release, role) -> state -> count; maps so no series is written twice.
    let mut by_state: BTreeMap<(&str, &str, &str, &str), BTreeMap<&str, u64>> = BTreeMap::new();
    let mut ready: BTreeMap<(&str, &str, &str, &str), u64> = BTreeMap::new();
    for s in &status.services {
        for set in &s.sets {
            let key = (
                s.service.as_str(),
                s.env.as_str(),
                set.release.as_str(),
                set.role.as_str(),
            );
            let states = by_state
                .entry(key)
                .or_insert_with(|| INSTANCE_STATES.iter().map(|st| (*st, 0)).collect());
            let ready = ready.entry(key).or_default();
            for i in &set.instances {
                *states.entry(i.state.as_str()).or_default() += 1;
                if i.ready {
                    *ready += 1;
                }
            }
        }
    }
    let mut f = Family::new(
        out,
        "cutover_instances",
        "gauge",
        "Instances the agent runs, by service, environment, release, role of the release set and instance state.",
    );
    for ((service, env, release, role), states) in &by_state {
        for (state, n) in states {
            f.sample(
                &[
                    ("service", service),
                    ("env", env),
                    ("release", release),
                    ("role", role),
                    ("state", state),
                ],
                &n.to_string(),
            );
        }
    }
    let mut f = Family::new(
        out,
        "cutover_instances_ready",
        "gauge",
        "Instances whose readiness probe passes, by service, environment, release and role.",
    );
    for ((service, env, release, role), n) in &ready {
        f.sample(
            &[
                ("service", service),
                ("env", env),
                ("release", release),
                ("role", role),
            ],
            &n.to_string(),
        );
    }
    let services: BTreeMap<(&str, &str), (u32, bool)> = status
        .services
        .iter()
        .map(|s| {
            (
                (s.service.as_str(), s.env.as_str()),
                (s.desired, s.health == "healthy"),
            )
        })
        .collect();
    let mut f = Family::new(
        out,
        "cutover_instances_desired",
        "gauge",
        "Instances a service should run, by service and environment.",
    );
    for ((service, env), (desired, _)) in &services {
        f.sample(&[("service", service), ("env", env)], &desired.to_string());
    }
    let mut f = Family::new(
        out,
        "cutover_service_healthy",
        "gauge",
        "1 when a service's live release has every desired instance ready and none crash-looping, else 0 (unhealthy, unknown or stopped).",
    );
    for ((service, env), (_, healthy)) in &services {
        f.sample(
            &[("service", service), ("env", env)],
            if *healthy { "1" } else { "0" },
        );
    }
}

/// Release roles, route weights and the canary's step.
fn releases(out: &mut String, status: &AgentStatus) {
    let mut roles: BTreeSet<(&str, &str, &str, &str)> = BTreeSet::new();
    let mut weights: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    let mut steps: BTreeMap<(&str, &str, &str), u32> = BTreeMap::new();
    for s in &status.services {
        let (service, env) = (s.service.as_str(), s.env.as_str());
        for set in &s.sets {
            roles.insert((service, env, set.release.as_str(), set.role.as_str()));
        }
        if let Some(c) = &s.canary {
            if !s.sets.iter().any(|set| set.release == c.release) {
                roles.insert((service, env, c.release.as_str(), "canary"));
            }
            steps.insert((service, env, c.release.as_str()), c.step);
        }
        for t in &s.traffic {
            *weights
                .entry((service, env, t.release.as_str()))
                .or_default() += u64::from(t.weight);
        }
    }
    let mut f = Family::new(
        out,
        "cutover_release_info",
        "gauge",
        "1 for each release set the agent runs, with its role (live, warm, canary, rolling).",
    );
    for (service, env, release, role) in &roles {
        f.sample(
            &[
                ("service", service),
                ("env", env),
                ("release", release),
                ("role", role),
            ],
            "1",
        );
    }
    let mut f = Family::new(
        out,
        "cutover_traffic_weight",
        "gauge",
        "Percent (0-100) of a service's traffic its route sends to a release.",
    );
    for ((service, env, release), w) in &weights {
        f.sample(
            &[("service", service), ("env", env), ("release", release)],
            &w.to_string(),
        );
    }
    let mut f = Family::new(
        out,
        "cutover_canary_step",
        "gauge",
        "The step (from 1) a canary in progress is at, by service, environment and canary release.",
    );
    for ((service, env, release), step) in &steps {
        f.sample(
            &[("service", service), ("env", env), ("release", release)],
            &step.to_string(),
        );
    }
}

/// Deploys and rollbacks handled since the agent started, by result.
fn deploys(out: &mut String, status: &AgentStatus) {
    let mut counts: BTreeMap<(&str, &str, &str, &str), u64> = BTreeMap::new();
    for d in &status.deploys {
        *counts
            .entry((
                d.service.as_str(),
                d.env.as_str(),
                d.kind.as_str(),
                d.result.as_str(),
            ))
            .or_default() += d.count;
    }
    let mut f = Family::new(
        out,
        "cutover_deploys_total",
        "counter",
        "Deploys and rollbacks the agent handled since it started, by service, environment, kind (deploy, rollback) and result.",
    );
    for ((service, env, kind, result), n) in &counts {
        f.sample(
            &[
                ("service", service),
                ("env", env),
                ("kind", kind),
                ("result", result),
            ],
            &n.to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::api::types::{
        CanaryStatus, DeployCount, InstanceStatus, ReleaseSetStatus, ServiceStatus, Traffic,
    };

    fn instance(index: u32, state: &str, ready: bool) -> InstanceStatus {
        InstanceStatus {
            index,
            port: 40000 + u16::try_from(index).unwrap(),
            pid: Some(100 + index),
            state: state.to_string(),
            ready,
            restarts: 0,
        }
    }

    fn status() -> AgentStatus {
        AgentStatus {
            pid: 42,
            socket: PathBuf::from("/tmp/agent.sock"),
            uptime_seconds: 3600,
            services: vec![
                ServiceStatus {
                    env: "production".into(),
                    service: "pr-review".into(),
                    release: Some("r1".into()),
                    health: "healthy".into(),
                    ready: 2,
                    desired: 2,
                    traffic: vec![
                        Traffic {
                            release: "r1".into(),
                            weight: 75,
                        },
                        Traffic {
                            release: "r2".into(),
                            weight: 25,
                        },
                    ],
                    url: "http://127.0.0.1:9080".into(),
                    sets: vec![
                        ReleaseSetStatus {
                            release: "r1".into(),
                            role: "live".into(),
                            instances: vec![
                                instance(0, "running", true),
                                instance(1, "running", true),
                            ],
                        },
                        ReleaseSetStatus {
                            release: "r2".into(),
                            role: "canary".into(),
                            instances: vec![instance(0, "starting", false)],
                        },
                    ],
                    numbers: None,
                    canary: Some(CanaryStatus {
                        release: "r2".into(),
                        stable: "r1".into(),
                        step: 2,
                        steps: 4,
                        weight: 25,
                        state: "judging".into(),
                        judgement: None,
                    }),
                    problem: None,
                    deploying: None,
                },
                ServiceStatus {
                    env: "dev\"el\\op\nment".into(),
                    service: "web".into(),
                    release: None,
                    health: "stopped".into(),
                    ready: 0,
                    desired: 1,
                    traffic: Vec::new(),
                    url: "http://127.0.0.1:9081".into(),
                    sets: Vec::new(),
                    numbers: None,
                    canary: None,
                    problem: None,
                    deploying: None,
                },
            ],
            deploys: vec![
                DeployCount {
                    env: "production".into(),
                    service: "pr-review".into(),
                    kind: "deploy".into(),
                    result: "active".into(),
                    count: 3,
                },
                DeployCount {
                    env: "production".into(),
                    service: "pr-review".into(),
                    kind: "rollback".into(),
                    result: "active".into(),
                    count: 1,
                },
            ],
        }
    }

    fn metrics() -> std::sync::Arc<Metrics> {
        let m = Metrics::new();
        let c = m.counters("pr-review", "r1");
        for _ in 0..3 {
            c.record(200, Duration::from_millis(4));
        }
        c.record(503, Duration::from_millis(250));
        m.counters("pr-review", "r2")
            .record(200, Duration::from_secs(90));
        m
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn requests_and_errors_by_release() {
        let text = prometheus_text(&metrics(), &status());
        assert_eq!(
            lines(&text, "cutover_requests_total"),
            [
                r#"cutover_requests_total{service="pr-review",release="r1",code="200"} 3"#,
                r#"cutover_requests_total{service="pr-review",release="r1",code="503"} 1"#,
                r#"cutover_requests_total{service="pr-review",release="r2",code="200"} 1"#,
            ]
        );
        assert_eq!(
            lines(&text, "cutover_request_errors_total"),
            [
                r#"cutover_request_errors_total{service="pr-review",release="r1"} 1"#,
                r#"cutover_request_errors_total{service="pr-review",release="r2"} 0"#,
            ]
        );
    }

    #[test]
    fn the_histogram_is_cumulative_with_inf_sum_and_count() {
        let text = prometheus_text(&metrics(), &status());
        let r1 = r#"cutover_request_duration_seconds_bucket{service="pr-review",release="r1","#;
        let buckets = lines(&text, r1);
        assert_eq!(buckets.len(), crate::metrics::LATENCY_BUCKETS.len() + 1);
        assert_eq!(buckets[0], format!(r#"{r1}le="0.0005"}} 0"#));
        assert!(buckets.contains(&format!(r#"{r1}le="0.005"}} 3"#)));
        assert!(buckets.contains(&format!(r#"{r1}le="0.2"}} 3"#)));
        assert!(buckets.contains(&format!(r#"{r1}le="0.3"}} 4"#)));
        assert_eq!(buckets[buckets.len() - 1], format!(r#"{r1}le="+Inf"}} 4"#));
        assert_eq!(
            lines(
                &text,
                r#"cutover_request_duration_seconds_count{service="pr-review",release="r1"}"#
            ),
            [r#"cutover_request_duration_seconds_count{service="pr-review",release="r1"} 4"#]
        );
        let sum = lines(
            &text,
            r#"cutover_request_duration_seconds_sum{service="pr-review",release="r1"}"#,
        );
        let value: f64 = sum[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!((value - 0.262).abs() < 1e-9, "{sum:?}");
        // 90s is past the last bound: only +Inf counts it.
        let r2 = r#"cutover_request_duration_seconds_bucket{service="pr-review",release="r2","#;
        assert!(text.contains(&format!(r#"{r2}le="60"}} 0"#)));
        assert!(text.contains(&format!(r#"{r2}le="+Inf"}} 1"#)));
    }

    #[test]
    fn instances_health_roles_weights_and_deploys() {
        let text = prometheus_text(&metrics(), &status());
        assert!(text.contains(
            "cutover_instances{service=\"pr-review\",env=\"production\",release=\"r1\",role=\"live\",state=\"running\"} 2\n"
        ));
        assert!(text.contains(
            "cutover_instances{service=\"pr-review\",env=\"production\",release=\"r2\",role=\"canary\",state=\"starting\"} 1\n"
        ));
        assert!(text.contains(
            "cutover_instances{service=\"pr-review\",env=\"production\",release=\"r1\",role=\"live\",state=\"backoff\"} 0\n"
        ));
        assert_eq!(
            lines(&text, "cutover_instances_ready{"),
            [
                r#"cutover_instances_ready{service="pr-review",env="production",release="r1",role="live"} 2"#,
                r#"cutover_instances_ready{service="pr-review",env="production",release="r2",role="canary"} 0"#,
            ]
        );
        assert_eq!(
            lines(&text, "cutover_service_healthy{"),
            [
                r#"cutover_service_healthy{service="pr-review",env="production"} 1"#,
                r#"cutover_service_healthy{service="web",env="dev\"el\\op\nment"} 0"#,
            ]
        );
        assert_eq!(
            lines(&text, "cutover_release_info{"),
            [
                r#"cutover_release_info{service="pr-review",env="production",release="r1",role="live"} 1"#,
                r#"cutover_release_info{service="pr-review",env="production",release="r2",role="canary"} 1"#,
            ]
        );
        assert_eq!(
            lines(&text, "cutover_traffic_weight{"),
            [
                r#"cutover_traffic_weight{service="pr-review",env="production",release="r1"} 75"#,
                r#"cutover_traffic_weight{service="pr-review",env="production",release="r2"} 25"#,
            ]
        );
        assert_eq!(
            lines(&text, "cutover_canary_step{"),
            [r#"cutover_canary_step{service="pr-review",env="production",release="r2"} 2"#]
        );
        assert_eq!(
            lines(&text, "cutover_deploys_total{"),
            [
                r#"cutover_deploys_total{service="pr-review",env="production",kind="deploy",result="active"} 3"#,
                r#"cutover_deploys_total{service="pr-review",env="production",kind="rollback",result="active"} 1"#,
            ]
        );
        assert!(text.ends_with(
            "# TYPE cutover_agent_uptime_seconds gauge\ncutover_agent_uptime_seconds 3600\n"
        ));
    }

    #[test]
    fn every_family_has_help_and_type_and_its_samples_together() {
        let text = prometheus_text(&metrics(), &status());
        let mut seen: Vec<String> = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!seen.contains(&name), "{name} twice");
                seen.push(name.clone());
                current = name;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(rest.starts_with(&format!("{current} ")), "{line}");
                continue;
            }
            assert!(line.starts_with(&current), "{line} outside {current}");
        }
        assert_eq!(seen.len(), 12, "{seen:?}");
    }

    /// Prometheus' own linter on the made-up agent (escaped labels, a canary, deploys).
    #[test]
    fn promtool_accepts_the_text() {
        use std::io::Write;
        let text = prometheus_text(&metrics(), &status());
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.is_empty(), "{said}\n{text}");
    }

    #[test]
    fn an_empty_agent_renders_headers_and_uptime() {
        let mut s = status();
        s.services.clear();
        s.deploys.clear();
        let text = prometheus_text(&Metrics::new(), &s);
        assert!(text.contains("# TYPE cutover_requests_total counter\n"));
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn numbers_are_spelled_as_the_format_wants() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.0005), "0.0005");
        assert_eq!(number(60.0), "60");
    }
}
