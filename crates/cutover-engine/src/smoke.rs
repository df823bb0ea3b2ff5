//! Smoke tests: the field notes' five stages, then the service's `[[smoke]]` entries, against
//! a service's public URL (the agent's proxy listener), as `cutover test` and `deploy --smoke`
//! run them.
//!
//! The stages, per service, in order:
//! 1. `health`: the health path answers its expected status (and `expect_json` subset);
//! 2. `response_time`: that request passed stage 1 within [`MAX_RESPONSE_TIME`] (a failed
//!    health answer fails it too);
//! 3. `metadata`: `GET /` answers 200 with a JSON body;
//! 4. `error_handling`: an unknown path answers 404 and `POST` on the health path answers 405;
//! 5. `docs`: `GET /docs` answers 2xx or 3xx (redirects are not followed).
//!
//! Every request has its own connection and a [`REQUEST_TIMEOUT`], so a service that does not
//! run (connection refused) or hangs fails its checks with the reason, never blocks. When the
//! service does not answer the health request at all, the other checks are not tried: they
//! fail with that reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use cutover_config::{ResolvedService, Smoke};
use cutover_runtime::probe::{self, Failure, Mismatch, Response as Answer};
use hyper::Method;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

/// The response-time bound of stage 2 (the field notes' `<5000ms`).
pub const MAX_RESPONSE_TIME: Duration = Duration::from_millis(5000);

/// The longest any one request may take (connect, answer and body) before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The path used to check that an unknown path answers 404.
pub const UNKNOWN_PATH: &str = "/cutover-smoke-test-unknown-path";

/// The names of the five stages, in order.
pub const STAGES: [&str; 5] = [
    "health",
    "response_time",
    "metadata",
    "error_handling",
    "docs",
];

/// What the smoke tests of one service need: where it answers and what it should say.
#[derive(Debug, Clone)]
pub struct Target {
    /// The service.
    pub service: String,
    /// Its public address (the proxy listener).
    pub addr: SocketAddr,
    /// The `Host` asked for on a shared listener (`None`: the address itself).
    pub host: Option<String>,
    /// On a shared listener, the service's `path_prefix` when it claims less than `/`: a path
    /// outside it would reach another service, so such a check fails saying so.
    pub prefix: Option<String>,
    /// The health path.
    pub health_path: String,
    /// The health path's expected status.
    pub expect_status: u16,
    /// A JSON subset the health body must contain.
    pub expect_json: Option<serde_json::Value>,
    /// The `[[services.S.smoke]]` entries.
    pub smoke: Vec<Smoke>,
}

impl Target {
    /// The target of a resolved service: its public `listen:port` (an unspecified listen
    /// address is reached on loopback), else, for a service with `hosts`, the shared `[proxy]
    /// http` listener asked for its first host. None when it has neither.
    pub fn of(svc: &ResolvedService) -> Option<Target> {
        let loopback = |ip: IpAddr| match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let (addr, host, prefix) = match (svc.port, svc.shared_listeners.http, svc.hosts.first()) {
            (Some(port), _, _) => (SocketAddr::new(loopback(svc.listen), port), None, None),
            (None, Some(edge), Some(host)) => (
                SocketAddr::new(loopback(edge.ip()), edge.port()),
                Some(host.clone()),
                Some(svc.path_prefix.trim_end_matches('/').to_string()).filter(|p| !p.is_empty()),
            ),
            _ => return None,
        };
        Some(Target {
            service: svc.name.clone(),
            addr,
            host,
            prefix,
            health_path: svc.health.path.clone(),
            expect_status: svc.health.expect_status,
            expect_json: svc.health.expect_json.clone(),
            smoke: svc.smoke.clone(),
        })
    }

    /// `http://host:port`, as `cutover status` shows it.
    pub fn url(&self) -> String {
        match &self.host {
            Some(host) => format!("http://{host}:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The stage (`health`...) or, for a smoke entry, `smoke METHOD PATH`.
    pub name: String,
    /// The requests it made (`GET /health`; `GET /x, POST /health`).
    pub request: String,
    /// Whether it passed.
    pub passed: bool,
    /// How long its requests took, in milliseconds.
    pub duration_ms: u64,
    /// What was seen: the reason when it failed, a short detail when it passed.
    pub message: String,
}

/// Every check of one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceReport {
    /// The service.
    pub name: String,
    /// Its public URL.
    pub url: String,
    /// Whether every check passed.
    pub passed: bool,
    /// The checks, stages first, then smoke entries.
    pub checks: Vec<Check>,
}

impl ServiceReport {
    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The failures in one line: "2 of 7 checks failed: health: status 500, expected 200; ...".
    pub fn failure_summary(&self) -> String {
        let failed: Vec<String> = self
            .failures()
            .map(|c| format!("{}: {}", c.name, c.message))
            .collect();
        format!(
            "{} of {} smoke checks failed: {}",
            failed.len(),
            self.checks.len(),
            failed.join("; ")
        )
    }
}

/// Runs the stages and smoke entries of one service.
pub async fn run(target: &Target) -> ServiceReport {
    let mut checks = Vec::new();
    let get = Method::GET;
    let health = request(target, &get, &target.health_path).await;
    let health_req = format!("GET {}", target.health_path);

    // 1. health
    let (passed, message) = match &health {
        Ok(a) => judge_health(target, a),
        Err(why) => (false, why.clone()),
    };
    checks.push(Check {
        name: STAGES[0].into(),
        request: health_req.clone(),
        passed,
        duration_ms: elapsed_ms(&health),
        message,
    });

    // 2. response time: of a health answer that passed (a fast error is not a good time).
    let health_passed = passed;
    let (passed, message) = match &health {
        Ok(_) if !health_passed => (
            false,
            "not judged: the health answer failed (see health)".to_string(),
        ),
        Ok(a) if a.elapsed < MAX_RESPONSE_TIME => (
            true,
            format!(
                "{}ms < {}ms",
                a.elapsed.as_millis(),
                MAX_RESPONSE_TIME.as_millis()
            ),
        ),
        Ok(a) => (
            false,
            format!(
                "took {}ms, more than {}ms",
                a.elapsed.as_millis(),
                MAX_RESPONSE_TIME.as_millis()
            ),
        ),
        Err(why) => (false, format!("no answer: {why}")),
    };
    checks.push(Check {
        name: STAGES[1].into(),
        request: health_req,
        passed,
        duration_ms: elapsed_ms(&health),
        message,
    });

    let unreachable = health
        .as_ref()
        .err()
        .map(|why| format!("not tried: the service did not answer the health request ({why})"));
    let not_tried = |name: &str, request: String, why: &str| Check {
        name: name.to_string(),
        request,
        passed: false,
        duration_ms: 0,
        message: why.to_string(),
    };

    // 3. metadata
    let req = "GET /".to_string();
    checks.push(match &unreachable {
        Some(why) => not_tried(STAGES[2], req, why),
        None => {
            let answer = request(target, &get, "/").await;
            let (passed, message) = match &answer {
                Ok(a) if a.status != 200 => (false, format!("status {}, expected 200", a.status)),
                Ok(a) => match serde_json::from_slice::<serde_json::Value>(&a.body) {
                    Ok(_) => (true, "200 with a JSON body".to_string()),
                    Err(_) => (
                        false,
                        format!("200, but the body is not JSON: {}", snippet(&a.body)),
                    ),
                },
                Err(why) => (false, why.clone()),
            };
            Check {
                name: STAGES[2].into(),
                request: req,
                passed,
                duration_ms: elapsed_ms(&answer),
                message,
            }
        }
    });

    // 4. error handling
    let req = format!("GET {UNKNOWN_PATH}, POST {}", target.health_path);
    checks.push(match &unreachable {
        Some(why) => not_tried(STAGES[3], req, why),
        None => {
            let unknown = request(target, &get, UNKNOWN_PATH).await;
            let post = request(target, &Method::POST, &target.health_path).await;
            let mut problems = Vec::new();
            match &unknown {
                Ok(a) if a.status == 404 => {}
                Ok(a) => problems.push(format!(
                    "GET {UNKNOWN_PATH} answered {}, expected 404",
                    a.status
                )),
                Err(why) => problems.push(format!("GET {UNKNOWN_PATH}: {why}")),
            }
            match &post {
                Ok(a) if a.status == 405 => {}
                Ok(a) => problems.push(format!(
                    "POST {} answered {}, expected 405",
                    target.health_path, a.status
                )),
                Err(why) => problems.push(format!("POST {}: {why}", target.health_path)),
            }
            Check {
                name: STAGES[3].into(),
                request: req,
                passed: problems.is_empty(),
                duration_ms: elapsed_ms(&unknown) + elapsed_ms(&post),
                message: if problems.is_empty() {
                    "404 for an unknown path, 405 for POST on the health path".to_string()
                } else {
                    problems.join("; ")
                },
            }
        }
    });

    // 5. docs
    let req = "GET /docs".to_string();
    checks.push(match &unreachable {
        Some(why) => not_tried(STAGES[4], req, why),
        None => {
            let answer = request(target, &get, "/docs").await;
            let (passed, message) = match &answer {
                Ok(a) if (200..400).contains(&a.status) => (true, format!("{}", a.status)),
                Ok(a) => (false, format!("status {}, expected 2xx or 3xx", a.status)),
                Err(why) => (false, why.clone()),
            };
            Check {
                name: STAGES[4].into(),
                request: req,
                passed,
                duration_ms: elapsed_ms(&answer),
                message,
            }
        }
    });

    // Then each [[smoke]] entry.
    for entry in &target.smoke {
        let name = format!("smoke {} {}", entry.method, entry.path);
        let req = format!("{} {}", entry.method, entry.path);
        if let Some(why) = &unreachable {
            checks.push(not_tried(&name, req, why));
            continue;
        }
        let answer = match Method::from_bytes(entry.method.as_bytes()) {
            Ok(method) => request(target, &method, &entry.path).await,
            Err(_) => Err(format!("{:?} is not an HTTP method", entry.method)),
        };
        let (passed, message) = match &answer {
            Ok(a) => judge_smoke(entry, a),
            Err(why) => (false, why.clone()),
        };
        checks.push(Check {
            name,
            request: req,
            passed,
            duration_ms: elapsed_ms(&answer),
            message,
        });
    }

    ServiceReport {
        name: target.service.clone(),
        url: target.url(),
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

/// Runs every target's checks concurrently; reports in the targets' order.
pub async fn run_all(targets: &[Target]) -> Vec<ServiceReport> {
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let t = t.clone();
        set.spawn(async move { (i, run(&t).await) });
    }
    let mut reports: Vec<Option<ServiceReport>> = vec![None; targets.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, report)) = joined
            && let Some(slot) = reports.get_mut(i)
        {
            *slot = Some(report);
        }
    }
    reports
        .into_iter()
        .zip(targets)
        .map(|(r, t)| {
            r.unwrap_or_else(|| ServiceReport {
                name: t.service.clone(),
                url: t.url(),
                passed: false,
                checks: vec![Check {
                    name: STAGES[0].into(),
                    request: format!("GET {}", t.health_path),
                    passed: false,
                    duration_ms: 0,
                    message: "internal error: the smoke task ended without a result".into(),
                }],
            })
        })
        .collect()
}

fn judge_health(target: &Target, a: &Answer) -> (bool, String) {
    let verdict = probe::judge(
        target.expect_status,
        target.expect_json.as_ref(),
        a.status,
        Ok(&a.body),
    );
    let message = match verdict {
        Ok(()) => match &target.expect_json {
            Some(expected) => return (true, format!("{} with {expected}", a.status)),
            None => return (true, a.status.to_string()),
        },
        Err(Mismatch::Status) => format!("status {}, expected {}", a.status, target.expect_status),
        Err(Mismatch::Unread(why)) => format!("reading the body failed: {why}"),
        Err(Mismatch::NotJson(expected)) => {
            format!("the body is not JSON (expected it to contain {expected})")
        }
        Err(Mismatch::Missing(expected)) => format!("the body does not contain {expected}"),
    };
    (false, format!("{message}: {}", snippet(&a.body)))
}

fn judge_smoke(entry: &Smoke, a: &Answer) -> (bool, String) {
    let ms = a.elapsed.as_millis();
    let mut problems = Vec::new();
    if a.status != entry.expect_status {
        problems.push(format!(
            "status {}, expected {}",
            a.status, entry.expect_status
        ));
    }
    if let Some(max) = entry.max_latency
        && a.elapsed > max
    {
        problems.push(format!(
            "took {ms}ms, more than max_latency {}ms",
            max.as_millis()
        ));
    }
    match problems.is_empty() {
        true => (true, format!("{} in {ms}ms", a.status)),
        false => (false, problems.join("; ")),
    }
}

fn elapsed_ms(answer: &Result<Answer, String>) -> u64 {
    answer
        .as_ref()
        .map(|a| u64::try_from(a.elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The start of a body, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out.replace(['\n', '\r'], " ")
}

/// One request on a fresh connection, bounded by [`REQUEST_TIMEOUT`]; a failure in words
/// that name the service's address and the request.
async fn request(target: &Target, method: &Method, path: &str) -> Result<Answer, String> {
    let addr = target.addr;
    if let Some(prefix) = &target.prefix {
        let rest = path.strip_prefix(prefix.as_str());
        if !rest.is_some_and(|r| r.is_empty() || r.starts_with('/') || r.starts_with('?')) {
            return Err(format!(
                "{path} is outside {}'s path_prefix {prefix}: on the shared listener it reaches another service; use a path under {prefix} (e.g. health.path = \"{prefix}/health\")",
                target.service
            ));
        }
    }
    probe::fetch(
        addr,
        target.host.as_deref(),
        method,
        path,
        "cutover-smoke",
        REQUEST_TIMEOUT,
    )
    .await
    .map_err(|failure| match failure {
        Failure::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "connection refused at {addr}: the service is not running (`cutover status` shows it)"
        ),
        Failure::Connect(e) => format!("cannot connect to {addr}: {e}"),
        Failure::Handshake(e) => format!("HTTP handshake with {addr} failed: {e}"),
        Failure::InvalidRequest(e) => format!("invalid request {method} {path:?}: {e}"),
        Failure::Request(e) => format!("{method} {path} failed: {e}"),
        Failure::Body { error, .. } => {
            format!("reading the answer to {method} {path} failed: {error}")
        }
        Failure::TimedOut(t) => format!("no answer from {addr} within {}s", t.as_secs()),
    })
}

/// The reports as JUnit XML, written by `quick-junit` (nextest's writer): a `<testsuite>` per
/// service with its URL as a property, a `<testcase>` per stage or smoke entry (classname = the
/// service), a `<failure>` with the message for each failed check. Every text passes `redact`
/// first; the writer escapes markup and leaves out characters XML cannot hold.
pub fn junit(
    reports: &[ServiceReport],
    redact: &dyn Fn(&str) -> String,
) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new("cutover test");
    let mut all_ms: u64 = 0;
    for r in reports {
        let service = redact(&r.name);
        let mut suite = TestSuite::new(service.as_str());
        suite.add_property(Property::new("url", redact(&r.url)));
        let mut suite_ms: u64 = 0;
        for c in &r.checks {
            let status = if c.passed {
                TestCaseStatus::success()
            } else {
                let message = redact(&c.message);
                let mut failure = TestCaseStatus::non_success(NonSuccessKind::Failure);
                failure
                    .set_message(message.as_str())
                    .set_type("smoke")
                    .set_description(format!("{}: {message}", redact(&c.request)));
                failure
            };
            let mut case = TestCase::new(redact(&c.name), status);
            case.set_classname(service.as_str())
                .set_time(Duration::from_millis(c.duration_ms));
            suite.add_test_case(case);
            suite_ms = suite_ms.saturating_add(c.duration_ms);
        }
        suite.set_time(Duration::from_millis(suite_ms));
        all_ms = all_ms.saturating_add(suite_ms);
        report.add_test_suite(suite);
    }
    report.set_time(Duration::from_millis(all_ms));
    report.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_fast_failed_health_answer_is_not_a_good_response_time() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                    .await;
            }
        });
        let target = Target {
            host: None,
            prefix: None,
            service: "api".into(),
            addr,
            health_path: "/health".into(),
            expect_status: 200,
            expect_json: None,
            smoke: Vec::new(),
        };
        let r = run(&target).await;
        assert!(!r.checks[0].passed, "{:?}", r.checks[0]);
        assert!(!r.checks[1].passed, "{:?}", r.checks[1]);
        assert!(
            r.checks[1].message.contains("health answer failed"),
            "{:?}",
            r.checks[1]
        );
    }

    fn report(checks: Vec<(&str, bool, &str)>) -> ServiceReport {
        ServiceReport {
            name: "api".into(),
            url: "http://127.0.0.1:1".into(),
            passed: checks.iter().all(|c| c.1),
            checks: checks
                .into_iter()
                .map(|(n, p, m)| Check {
                    name: n.into(),
                    request: "GET /".into(),
                    passed: p,
                    duration_ms: 1500,
                    message: m.into(),
                })
                .collect(),
        }
    }

    /// The attributes `name` of the elements `tag` in `xml`, read back by an XML parser.
    fn attributes(xml: &str, tag: &str, name: &str) -> Vec<String> {
        roxmltree::Document::parse(xml)
            .unwrap()
            .descendants()
            .filter(|n| n.has_tag_name(tag))
            .map(|n| n.attribute(name).unwrap().to_string())
            .collect()
    }

    #[test]
    fn markup_reads_back_and_control_characters_are_left_out() {
        let mut r = report(vec![("a<b>&\"c\"'\u{1}", false, "x < y & \"z\"\u{7}")]);
        r.name = "it's <api>".into();
        let xml = junit(&[r], &|s| s.to_string()).unwrap();
        assert_eq!(attributes(&xml, "testcase", "name"), ["a<b>&\"c\"'"]);
        assert_eq!(attributes(&xml, "testcase", "classname"), ["it's <api>"]);
        assert_eq!(attributes(&xml, "failure", "message"), ["x < y & \"z\""]);
    }

    #[test]
    fn junit_counts_and_failures() {
        let r = report(vec![
            ("health", true, "200"),
            ("docs", false, "status 404 <html>"),
        ]);
        let xml = junit(&[r], &|s| s.replace("html", "[redacted]")).unwrap();
        assert_eq!(attributes(&xml, "testsuites", "tests"), ["2"]);
        assert_eq!(attributes(&xml, "testsuites", "failures"), ["1"]);
        assert_eq!(attributes(&xml, "testsuite", "failures"), ["1"]);
        assert_eq!(attributes(&xml, "testcase", "time"), ["1.500", "1.500"]);
        assert!(
            xml.contains("<testcase name=\"health\" classname=\"api\" time=\"1.500\"/>"),
            "{xml}"
        );
        assert_eq!(
            attributes(&xml, "failure", "message"),
            ["status 404 <[redacted]>"]
        );
        assert!(!xml.contains("<html>"));
    }

    #[test]
    fn junit_document() {
        let mut bad = report(vec![
            ("health", true, "200"),
            ("docs", false, "status 404, expected 2xx or 3xx"),
            (
                "smoke GET /a?b=1&c=2",
                false,
                "took 900ms, more than max_latency 100ms",
            ),
        ]);
        bad.name = "bad".into();
        let good = report(vec![("health", true, "200")]);
        insta::assert_snapshot!(junit(&[good, bad], &|s| s.to_string()).unwrap());
    }

    #[test]
    fn failure_summary_names_each_failed_check() {
        let r = report(vec![
            ("health", false, "status 500, expected 200"),
            ("docs", true, "200"),
            (
                "smoke GET /slow",
                false,
                "took 900ms, more than max_latency 100ms",
            ),
        ]);
        assert_eq!(
            r.failure_summary(),
            "2 of 3 smoke checks failed: health: status 500, expected 200; \
             smoke GET /slow: took 900ms, more than max_latency 100ms"
        );
    }

    #[tokio::test]
    async fn a_service_that_does_not_run_fails_every_check_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = Target {
            host: None,
            prefix: None,
            service: "api".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            health_path: "/health".into(),
            expect_status: 200,
            expect_json: None,
            smoke: vec![Smoke {
                path: "/x".into(),
                method: "GET".into(),
                expect_status: 200,
                max_latency: None,
            }],
        };
        let start = Instant::now();
        let r = run(&target).await;
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!r.passed);
        assert_eq!(r.checks.len(), 6);
        assert!(r.checks.iter().all(|c| !c.passed));
        assert!(
            r.checks[0].message.contains("connection refused"),
            "{:?}",
            r.checks[0]
        );
        assert!(r.checks[5].message.starts_with("not tried"));
    }
}
