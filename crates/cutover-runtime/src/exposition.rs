//! The agent's metrics exposition (`GET /metrics` on the socket, and on TCP where
//! `[project] metrics_listen` is set), encoded by `prometheus-client`.
//!
//! Two sources: the proxies' per-release numbers ([`Metrics`]: requests by code, errors, the
//! latency histogram) and what the agent knows of its services ([`AgentStatus`]: instances,
//! health, release roles, route weights, the canary's step, deploys by result). They are handed
//! to `prometheus-client` as one [`Collector`] read once per scrape, and it writes either format
//! ([`Format`]): the Prometheus text format (0.0.4), which `promtool check metrics` lints, or
//! OpenMetrics text (1.0.0) when the scraper's `Accept` header prefers it, as Prometheus' does.
//! Every family has its HELP and TYPE lines, even without samples.
//!
//! The request families are labelled by `service` and `release` only: release ids are unique
//! per service across environments, and the counters of a stopped release are dropped with it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::api::types::AgentStatus;
use crate::metrics::{Metrics, ReleaseMetrics};

/// Instance states the supervisor reports; each is rendered (0 when none is in it) so a state
/// that empties shows 0 rather than a vanished series.
const INSTANCE_STATES: [&str; 5] = ["running", "starting", "backoff", "exited", "stopped"];

/// The content type of OpenMetrics text, the version `prometheus-client` writes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which text format `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: the default, for curl, `promtool check metrics` and
    /// any scraper that does not ask for OpenMetrics.
    Text,
    /// OpenMetrics text 1.0.0 (`# UNIT` lines, counter families named without `_total`,
    /// `# EOF` at the end), for a scraper whose `Accept` header prefers it.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a quality above 0 that no other acceptable type
    /// beats (Prometheus sends it first, with the text format at `q=0.5`); the text format
    /// otherwise, without a header too. The OpenMetrics `version` parameter is not looked at:
    /// the one version written (1.0.0) is what scrapers asking for 0.0.1 parse as well.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut openmetrics = 0.0_f32;
        let mut others = 0.0_f32;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            if media == "application/openmetrics-text" {
                openmetrics = openmetrics.max(q);
            } else if !media.is_empty() {
                others = others.max(q);
            }
        }
        if openmetrics > 0.0 && openmetrics >= others {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The whole exposition in `format`: the proxies' numbers in `metrics`, the agent's view in
/// `status`.
///
/// Fails only when the encoder does (it writes into a `String`, so in practice never).
pub fn encode(
    metrics: &Metrics,
    status: AgentStatus,
    format: Format,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        requests: metrics.all(),
        status,
    }));
    let mut out = String::new();
    match format {
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?,
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

/// What one scrape shows, taken when it starts.
#[derive(Debug)]
struct Scrape {
    /// `(service, release, numbers)` of every release the proxies count.
    requests: Vec<(String, String, ReleaseMetrics)>,
    status: AgentStatus,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        requests(&mut encoder, &self.requests)?;
        instances(&mut encoder, &self.status)?;
        releases(&mut encoder, &self.status)?;
        deploys(&mut encoder, &self.status)?;
        let mut f = encoder.encode_descriptor(
            "cutover_agent_uptime",
            "Seconds since the agent started.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        f.encode_gauge(&self.status.uptime_seconds)
    }
}

/// One labelled gauge sample of the family `f`.
fn gauge(f: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    f.encode_family(labels)?.encode_gauge(&value)
}

/// One labelled counter sample of the family `f`.
fn counter(f: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    f.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

/// Requests by code, errors and the latency histogram of every (service, release).
fn requests(
    encoder: &mut DescriptorEncoder,
    all: &[(String, String, ReleaseMetrics)],
) -> fmt::Result {
    let mut f = encoder.encode_descriptor(
        "cutover_requests",
        "Requests served through the proxy, by service, release and status code (a connection error counts as the 502 sent).",
        None,
        MetricType::Counter,
    )?;
    for (service, release, m) in all {
        for (code, n) in &m.by_code {
            let code = code.to_string();
            counter(
                &mut f,
                &[
                    ("service", service.as_str()),
                    ("release", release.as_str()),
                    ("code", code.as_str()),
                ],
                *n,
            )?;
        }
    }
    // One sample per (service, release) each: name, help, type, value.
    type Of = fn(&ReleaseMetrics) -> u64;
    let per_release: [(&str, &str, MetricType, Of); 3] = [
        (
            "cutover_request_errors",
            "5xx answers, connection errors, timeouts and bodies cut short, by service and release.",
            MetricType::Counter,
            |m| m.errors,
        ),
        (
            "cutover_upgrades",
            "Connections upgraded through the proxy (WebSocket and other Upgrade requests), by service and release.",
            MetricType::Counter,
            |m| m.upgrades,
        ),
        (
            "cutover_upgraded_connections",
            "Upgraded connections open now (they count as in flight for their release), by service and release.",
            MetricType::Gauge,
            |m| m.upgraded_open,
        ),
    ];
    for (name, help, kind, of) in per_release {
        let gauge_family = matches!(kind, MetricType::Gauge);
        let mut f = encoder.encode_descriptor(name, help, None, kind)?;
        for (service, release, m) in all {
            let labels = [("service", service.as_str()), ("release", release.as_str())];
            if gauge_family {
                gauge(&mut f, &labels, of(m))?;
            } else {
                counter(&mut f, &labels, of(m))?;
            }
        }
    }
    let mut f = encoder.encode_descriptor(
        "cutover_request_duration",
        "Time from the start of a request to its response head, by service and release.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (service, release, m) in all {
        // The encoder takes each bucket's own count and adds them up; ours are cumulative.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(m.latency.buckets.len() + 1);
        for b in &m.latency.buckets {
            buckets.push((b.le, b.count.saturating_sub(below)));
            below = b.count;
        }
        buckets.push((f64::INFINITY, m.latency.count.saturating_sub(below)));
        f.encode_family(&[("service", service.as_str()), ("release", release.as_str())])?
            .encode_histogram::<NoLabelSet>(m.latency.sum, m.latency.count, &buckets, None)?;
    }
    Ok(())
}

/// Instances by release set and state, ready instances, desired instances, service health.
fn instances(encoder: &mut DescriptorEncoder, status: &AgentStatus) -> fmt::Result {
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
    let mut f = encoder.encode_descriptor(
        "cutover_instances",
        "Instances the agent runs, by service, environment, release, role of the release set and instance state.",
        None,
        MetricType::Gauge,
    )?;
    for (&(service, env, release, role), states) in &by_state {
        for (&state, n) in states {
            gauge(
                &mut f,
                &[
                    ("service", service),
                    ("env", env),
                    ("release", release),
                    ("role", role),
                    ("state", state),
                ],
                *n,
            )?;
        }
    }
    let mut f = encoder.encode_descriptor(
        "cutover_instances_ready",
        "Instances whose readiness probe passes, by service, environment, release and role.",
        None,
        MetricType::Gauge,
    )?;
    for (&(service, env, release, role), n) in &ready {
        gauge(
            &mut f,
            &[
                ("service", service),
                ("env", env),
                ("release", release),
                ("role", role),
            ],
            *n,
        )?;
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
    let mut f = encoder.encode_descriptor(
        "cutover_instances_desired",
        "Instances a service should run, by service and environment.",
        None,
        MetricType::Gauge,
    )?;
    for (&(service, env), (desired, _)) in &services {
        gauge(
            &mut f,
            &[("service", service), ("env", env)],
            u64::from(*desired),
        )?;
    }
    let mut f = encoder.encode_descriptor(
        "cutover_service_healthy",
        "1 when a service's live release has every desired instance ready and none crash-looping, else 0 (unhealthy, unknown or stopped).",
        None,
        MetricType::Gauge,
    )?;
    for (&(service, env), (_, healthy)) in &services {
        gauge(
            &mut f,
            &[("service", service), ("env", env)],
            u64::from(*healthy),
        )?;
    }
    Ok(())
}

/// Release roles, route weights and the canary's step.
fn releases(encoder: &mut DescriptorEncoder, status: &AgentStatus) -> fmt::Result {
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
    // An info family: `cutover_release_info`, a gauge of 1 in the text format.
    let mut f = encoder.encode_descriptor(
        "cutover_release",
        "1 for each release set the agent runs, with its role (live, warm, canary, rolling).",
        None,
        MetricType::Info,
    )?;
    for &(service, env, release, role) in &roles {
        f.encode_info(&[
            ("service", service),
            ("env", env),
            ("release", release),
            ("role", role),
        ])?;
    }
    let mut f = encoder.encode_descriptor(
        "cutover_traffic_weight",
        "Percent (0-100) of a service's traffic its route sends to a release.",
        None,
        MetricType::Gauge,
    )?;
    for (&(service, env, release), w) in &weights {
        gauge(
            &mut f,
            &[("service", service), ("env", env), ("release", release)],
            *w,
        )?;
    }
    let mut f = encoder.encode_descriptor(
        "cutover_canary_step",
        "The step (from 1) a canary in progress is at, by service, environment and canary release.",
        None,
        MetricType::Gauge,
    )?;
    for (&(service, env, release), step) in &steps {
        gauge(
            &mut f,
            &[("service", service), ("env", env), ("release", release)],
            u64::from(*step),
        )?;
    }
    Ok(())
}

/// Deploys and rollbacks handled since the agent started, by result.
fn deploys(encoder: &mut DescriptorEncoder, status: &AgentStatus) -> fmt::Result {
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
    let mut f = encoder.encode_descriptor(
        "cutover_deploys",
        "Deploys and rollbacks the agent handled since it started, by service, environment, kind (deploy, rollback) and result.",
        None,
        MetricType::Counter,
    )?;
    for (&(service, env, kind, result), n) in &counts {
        counter(
            &mut f,
            &[
                ("service", service),
                ("env", env),
                ("kind", kind),
                ("result", result),
            ],
            *n,
        )?;
    }
    Ok(())
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
            node: None,
            addr: None,
            unit: None,
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
                    scaled: None,
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
                    scaled: None,
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

    /// The exposition in the Prometheus text format.
    fn text(metrics: &Metrics, status: AgentStatus) -> String {
        encode(metrics, status, Format::Text).unwrap()
    }

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn requests_and_errors_by_release() {
        let text = text(&metrics(), status());
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
        let text = text(&metrics(), status());
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
        let text = text(&metrics(), status());
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
        let text = text(&metrics(), status());
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
        assert_eq!(seen.len(), 14, "{seen:?}");
    }

    /// Prometheus' own linter on the made-up agent (escaped labels, a canary, deploys).
    #[test]
    fn promtool_accepts_the_text() {
        use std::io::Write;
        let text = text(&metrics(), status());
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
        let text = text(&Metrics::new(), s);
        assert!(text.contains("# TYPE cutover_requests_total counter\n"));
        assert_eq!(
            text.lines().filter(|l| !l.starts_with('#')).count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn openmetrics_has_the_same_samples_with_units_info_and_eof() {
        let classic = text(&metrics(), status());
        let om = encode(&metrics(), status(), Format::OpenMetrics).unwrap();
        // OpenMetrics names a counter family without `_total` and an info family without
        // `_info`, states units, and ends with `# EOF`; the samples keep their names.
        for want in [
            "# TYPE cutover_requests counter\n",
            "# TYPE cutover_deploys counter\n",
            "# TYPE cutover_release info\n",
            "# UNIT cutover_request_duration_seconds seconds\n",
            "# UNIT cutover_agent_uptime_seconds seconds\n",
            r#"cutover_requests_total{service="pr-review",release="r1",code="200"} 3"#,
            r#"cutover_release_info{service="pr-review",env="production",release="r2",role="canary"} 1"#,
            r#"cutover_request_duration_seconds_bucket{le="+Inf",service="pr-review",release="r1"} 4"#,
        ] {
            assert!(om.contains(want), "{want} missing from\n{om}");
        }
        assert!(
            om.ends_with("cutover_agent_uptime_seconds 3600\n# EOF\n"),
            "{om}"
        );
        // Every sample of the text format is in OpenMetrics too, but for the order of the
        // labels (`le` first there) and the spelling of whole numbers (`60` here, `60.0` there).
        let samples = |t: &str| -> Vec<(String, Vec<String>, f64)> {
            let mut v: Vec<_> = t
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| {
                    let (series, value) = l.rsplit_once(' ').unwrap();
                    let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
                    let mut labels: Vec<String> = labels
                        .trim_end_matches('}')
                        .split("\",")
                        .filter(|l| !l.is_empty())
                        .map(|l| match l.trim_end_matches('"').strip_prefix("le=\"") {
                            Some(le) => format!("le={}", le.parse::<f64>().unwrap()),
                            None => l.trim_end_matches('"').to_string(),
                        })
                        .collect();
                    labels.sort();
                    (name.to_string(), labels, value.parse::<f64>().unwrap())
                })
                .collect();
            v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            v
        };
        assert_eq!(samples(&classic), samples(&om));
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        // What Prometheus 2.x sends: OpenMetrics first.
        let prometheus = "application/openmetrics-text;version=1.0.0,\
                          application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text; version=0.0.1")),
            Format::OpenMetrics
        );
        // No header, anything, or the text format preferred: the text format.
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4,application/openmetrics-text;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
}
