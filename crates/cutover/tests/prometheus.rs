//! The agent's Prometheus metrics end to end: the real agent after a real deploy and real
//! requests, checked by Prometheus' own `promtool`, served over TCP (`metrics_listen`) and
//! scraped by a real Prometheus server, which the PromQL client then queries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::runtime::{
    AgentGuard, Load, app_service, app_toml, free_port, get, get_accepting, version, wait_until,
};
use common::{TestProject, code, json, stderr, stdout};
use cutover_runtime::promql::{PromError, expand_query, query_scalar};

/// Requests the tests send through the proxy.
const REQUESTS: u64 = 25;

/// A project with one service `api` on `port`, and `project_extra` in `[project]`; deployed.
fn deployed(port: u16, project_extra: &str) -> TestProject {
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"rt\"\n{project_extra}\n\n{}",
            app_toml("api", "svc/api", port, "")
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    p
}

fn deploy(p: &TestProject) {
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

/// Sends `REQUESTS` GETs through the service's proxy, each answered 200.
fn send_requests(port: u16) {
    for i in 0..REQUESTS {
        let (status, body) = get(port, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, 200, "request {i}: {body}");
    }
}

/// `/metrics` from the agent's Unix socket (the path `agent.json` records).
fn socket_metrics(p: &TestProject) -> String {
    let info: serde_json::Value = serde_json::from_str(&p.read(".cutover/agent.json")).unwrap();
    let socket = info["socket"].as_str().unwrap().to_string();
    let client = cutover_runtime::api::client::AgentClient::new(socket);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.metrics())
        .unwrap()
}

/// Pipes `text` into `promtool check metrics`; asserts it exits 0 and prints nothing.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; scripts/test installs it)");
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
    assert!(
        out.status.success(),
        "promtool: {said}\n--- metrics:\n{text}"
    );
    assert!(said.is_empty(), "promtool: {said}\n--- metrics:\n{text}");
}

/// The sum of the samples of `family` whose labels contain every one of `labels`.
fn sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn metrics_on_the_socket_count_requests_and_pass_promtool() {
    let port = free_port();
    let p = deployed(port, "");
    let _agent = AgentGuard(&p);
    deploy(&p);
    send_requests(port);

    let text = socket_metrics(&p);
    promtool_accepts(&text);
    let api = r#"service="api""#;
    assert_eq!(
        sum(&text, "cutover_requests_total", &[api]),
        REQUESTS as f64
    );
    assert_eq!(
        sum(&text, "cutover_requests_total", &[api, r#"code="200""#]),
        REQUESTS as f64
    );
    assert_eq!(sum(&text, "cutover_request_errors_total", &[api]), 0.0);
    assert_eq!(
        sum(&text, "cutover_request_duration_seconds_count", &[api]),
        REQUESTS as f64
    );
    assert_eq!(
        sum(
            &text,
            "cutover_request_duration_seconds_bucket",
            &[api, r#"le="+Inf""#]
        ),
        REQUESTS as f64
    );
    let dev = r#"env="development""#;
    assert_eq!(sum(&text, "cutover_service_healthy", &[api, dev]), 1.0);
    assert_eq!(
        sum(
            &text,
            "cutover_instances",
            &[api, r#"role="live""#, r#"state="running""#]
        ),
        1.0
    );
    assert_eq!(sum(&text, "cutover_instances_ready", &[api, dev]), 1.0);
    assert_eq!(
        sum(&text, "cutover_release_info", &[api, r#"role="live""#]),
        1.0
    );
    assert_eq!(sum(&text, "cutover_traffic_weight", &[api, dev]), 100.0);
    assert!(
        text.contains("# TYPE cutover_deploys_total counter\n"),
        "{text}"
    );
    assert!(text.contains("\ncutover_agent_uptime_seconds "), "{text}");
}

#[test]
fn a_busy_metrics_listen_port_is_logged_and_deploys_still_work() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let port = free_port();
    let p = deployed(port, &format!("metrics_listen = \"{busy_addr}\""));
    let _agent = AgentGuard(&p);
    deploy(&p);
    send_requests(port);
    let log = p.read(".cutover/logs/agent.log");
    assert!(
        log.contains(&format!("cannot serve /metrics on {busy_addr}")),
        "agent log:\n{log}"
    );
    // The socket endpoint still answers.
    let text = socket_metrics(&p);
    assert_eq!(
        sum(&text, "cutover_requests_total", &[r#"service="api""#]),
        REQUESTS as f64
    );
    drop(busy);
}

/// A Prometheus server, killed (and its data dir removed) on drop.
struct PrometheusServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus on a free port, scraping `target` every second.
    fn start(target: std::net::SocketAddr) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: cutover\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (Debian package prometheus; scripts/test installs it)");
        PrometheusServer {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_metrics_listen_and_promql_reads_the_requests() {
    let port = free_port();
    let metrics_port = free_port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let p = deployed(port, &format!("metrics_listen = \"{metrics_addr}\""));
    let _agent = AgentGuard(&p);
    deploy(&p);

    // Plain HTTP on the metrics port: the exposition, valid; nothing else is served there.
    assert!(
        wait_until(Duration::from_secs(10), || get(metrics_port, "/metrics")
            .is_ok_and(|(s, _)| s == 200)),
        "no /metrics on {metrics_addr}; agent log:\n{}",
        p.read(".cutover/logs/agent.log")
    );
    let (_, text) = get(metrics_port, "/metrics").unwrap();
    promtool_accepts(&text);
    assert!(
        text.contains(r#"cutover_release_info{service="api",env="development""#),
        "{text}"
    );
    assert_eq!(get(metrics_port, "/v1/status").unwrap().0, 404);

    // The Accept header chooses the format: OpenMetrics for a scraper that prefers it (what
    // Prometheus sends), the text format otherwise.
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, content_type, om) =
        get_accepting(metrics_port, "/metrics", prometheus_accept).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    assert!(om.contains("# TYPE cutover_requests counter\n"), "{om}");
    assert!(
        om.contains("# UNIT cutover_request_duration_seconds seconds\n"),
        "{om}"
    );
    for accept in [
        "*/*",
        "text/plain",
        "text/plain;q=0.9,application/openmetrics-text;q=0.5",
    ] {
        let (status, content_type, text) = get_accepting(metrics_port, "/metrics", accept).unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "Accept: {accept}"
        );
        assert!(!text.contains("# EOF"), "Accept: {accept}\n{text}");
        promtool_accepts(&text);
    }

    let prometheus = PrometheusServer::start(metrics_addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let query = |q: &str| rt.block_on(query_scalar(&prometheus.url(), q, Duration::from_secs(5)));
    assert!(
        wait_until(Duration::from_secs(30), || query("up{job=\"cutover\"}")
            == Ok(1.0)),
        "the scrape target never came up: {:?}\nprometheus log:\n{}",
        query("up"),
        prometheus.log()
    );

    // Prometheus was served OpenMetrics: the unit it read is in its metadata.
    let metadata = |metric: &str| -> serde_json::Value {
        get(
            prometheus.port,
            &format!("/api/v1/metadata?metric={metric}"),
        )
        .ok()
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .map(|doc| doc["data"][metric][0].clone())
        .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(20), || metadata(
            "cutover_request_duration_seconds"
        )["unit"]
            == "seconds"),
        "{}",
        metadata("cutover_request_duration_seconds")
    );

    send_requests(port);
    let requests = r#"sum(cutover_requests_total{service="api"})"#;
    let mut last = None;
    let counted = wait_until(Duration::from_secs(20), || {
        last = Some(query(requests));
        last == Some(Ok(REQUESTS as f64))
    });
    assert!(counted, "{requests} after {REQUESTS} requests: {last:?}");
    // A canary's query names its service and release with $service and $release.
    let live = release_with_role(&p, "live");
    let per_release = expand_query(
        r#"sum(cutover_requests_total{service="$service",release="$release",code="200"})"#,
        "api",
        &live,
    );
    assert_eq!(query(&per_release), Ok(REQUESTS as f64), "{per_release}");
    // The same through a scalar result.
    assert_eq!(
        query(r#"scalar(sum(cutover_requests_total{service="api"}))"#),
        Ok(REQUESTS as f64)
    );
    // No series: no data (a canary judgement's "no verdict yet"), not a failure.
    assert!(
        matches!(
            query(r#"sum(cutover_requests_total{service="nope"})"#),
            Err(PromError::NoData(_))
        ),
        "{:?}",
        query(r#"sum(cutover_requests_total{service="nope"})"#)
    );
    // 0/0 is NaN: no data too.
    assert!(matches!(
        query(
            r#"sum(cutover_request_errors_total{service="api"}) / sum(cutover_request_errors_total{service="api"})"#
        ),
        Err(PromError::NoData(_))
    ));
    // A bad query fails with what Prometheus said and where.
    let bad = query("sum(cutover_requests_total{");
    assert!(
        matches!(&bad, Err(PromError::Failed(m)) if m.contains(&prometheus.url()) && m.contains("bad_data")),
        "{bad:?}"
    );
    // Several series is a failure: the query must come down to one number.
    let many = query("cutover_request_duration_seconds_bucket");
    assert!(
        matches!(&many, Err(PromError::Failed(m)) if m.contains("series")),
        "{many:?}"
    );
}

/// Kills a foreground agent when a test fails before stopping it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_foreground_agent_reads_metrics_listen_too() {
    let port = free_port();
    let metrics_port = free_port();
    let p = deployed(
        port,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\""),
    );
    let mut agent = ChildGuard(
        p.cutover()
            .arg("agent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _stop = AgentGuard(&p);
    assert!(
        wait_until(Duration::from_secs(10), || get(metrics_port, "/metrics")
            .is_ok_and(
                |(s, body)| s == 200 && body.contains("# TYPE cutover_agent_uptime_seconds gauge")
            )),
        "the foreground agent serves no /metrics on port {metrics_port}"
    );
    // The deploy goes through the foreground agent, and its requests show on the TCP endpoint.
    deploy(&p);
    send_requests(port);
    let (_, text) = get(metrics_port, "/metrics").unwrap();
    promtool_accepts(&text);
    assert_eq!(
        sum(&text, "cutover_requests_total", &[r#"service="api""#]),
        REQUESTS as f64
    );
    let out = p.run(&["agent", "stop"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The `canary` object of `api` in `status --json`, if a canary is in progress.
fn canary_status(p: &TestProject) -> Option<serde_json::Value> {
    let doc = common::json(&p.run(&["status", "--json"]));
    let c = doc["services"][0]["canary"].clone();
    (!c.is_null()).then_some(c)
}

#[test]
fn a_canary_in_progress_shows_its_role_weight_and_step_then_the_deploys_by_result() {
    let port = free_port();
    let p = common::runtime::one_service(
        port,
        "strategy = \"canary\"\n[services.api.canary]\n\
         steps = [{ weight = 30, pause = \"manual\" }, { weight = 100 }]\ninterval = \"300ms\"\n\
         max_error_rate = 0.05\nmax_p99_latency = \"1000ms\"\nmin_requests = 5\n",
    );
    let _agent = AgentGuard(&p);
    deploy(&p);
    let stable = release_with_role(&p, "live");

    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    let child = p
        .cutover()
        .args(["deploy", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || canary_status(&p).is_some()),
        "no canary in progress"
    );
    let canary = canary_status(&p).unwrap()["release"]
        .as_str()
        .unwrap()
        .to_string();
    let text = socket_metrics(&p);
    promtool_accepts(&text);
    let api = r#"service="api""#;
    let of = |release: &str| format!(r#"release="{release}""#);
    assert_eq!(
        sum(
            &text,
            "cutover_release_info",
            &[api, &of(&canary), r#"role="canary""#]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "cutover_release_info",
            &[api, &of(&stable), r#"role="live""#]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&text, "cutover_traffic_weight", &[api, &of(&canary)]),
        30.0
    );
    assert_eq!(
        sum(&text, "cutover_traffic_weight", &[api, &of(&stable)]),
        70.0
    );
    assert_eq!(sum(&text, "cutover_canary_step", &[api, &of(&canary)]), 1.0);

    let out = p.run(&["abort", "api"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));

    let text = socket_metrics(&p);
    promtool_accepts(&text);
    let deploys = |result: &str| {
        sum(
            &text,
            "cutover_deploys_total",
            &[
                api,
                r#"env="development""#,
                r#"kind="deploy""#,
                &format!(r#"result="{result}""#),
            ],
        )
    };
    assert_eq!(deploys("active"), 1.0, "{text}");
    assert_eq!(deploys("rolled_back"), 1.0, "{text}");
    assert_eq!(sum(&text, "cutover_canary_step", &[api]), 0.0, "{text}");
    assert_eq!(
        sum(&text, "cutover_traffic_weight", &[api, &of(&stable)]),
        100.0
    );
}

/// The release of `api`'s set with `role` in `agent status --json`.
fn release_with_role(p: &TestProject, role: &str) -> String {
    let doc = common::json(&p.run(&["agent", "status", "--json"]));
    doc["services"][0]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == role)
        .unwrap_or_else(|| panic!("no {role} set: {doc}"))["release"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_canary_judged_by_a_prometheus_query_is_rolled_back_on_its_value() {
    let port = free_port();
    let metrics_port = free_port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let p = deployed(port, &format!("metrics_listen = \"{metrics_addr}\""));
    let _agent = AgentGuard(&p);
    deploy(&p);
    let prometheus = PrometheusServer::start(metrics_addr);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || rt.block_on(query_scalar(
            &prometheus.url(),
            "up{job=\"cutover\"}",
            Duration::from_secs(5)
        )) == Ok(1.0)),
        "the scrape target never came up:\n{}",
        prometheus.log()
    );

    // The proxy's own limits are wide open: only the Prometheus query can fail this canary.
    let canary = format!(
        "strategy = \"canary\"\n[services.api.canary]\n\
         steps = [{{ weight = 50, pause = \"30s\" }}, {{ weight = 100 }}]\n\
         interval = \"500ms\"\nmax_error_rate = 1.0\nmax_p99_latency = \"10s\"\nmin_requests = 5\n\
         [services.api.canary.prometheus]\nurl = \"{}\"\n\
         query = 'sum(cutover_request_errors_total{{service=\"$service\",release=\"$release\"}})'\n\
         max = 0\n",
        prometheus.url()
    );
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"rt\"\nmetrics_listen = \"{metrics_addr}\"\n\n{}",
            app_toml("api", "svc/api", port, &canary)
        ),
    );
    p.write("svc/api/VERSION", "v2");
    p.write("svc/api/fail_half", "");
    p.commit("v2 fails half, judged by prometheus");
    let mut load = Load::start(port, 2);
    let out = p.run(&["deploy", "--json"]);
    load.stop();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let doc = json(&out);
    let svc = &doc["services"][0];
    assert_eq!(svc["result"], "rolled_back", "{doc}");
    let reason = svc["reason"].as_str().unwrap();
    assert!(
        reason.contains("prometheus: sum(cutover_request_errors_total{service=\"api\",release=\"")
            && reason.contains("> 0"),
        "{reason}"
    );
    assert_eq!(version(port).as_deref(), Some("v1"));
}
