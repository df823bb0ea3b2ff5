//! `cutover test` and `deploy --smoke` against real services run by the real agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::runtime::{AgentGuard, free_port, version, wait_until};
use common::{TestProject, code, copy_dir, json, stderr, stdout};

/// A Python stdlib service that behaves like the field notes' FastAPI skills: `/health`,
/// metadata JSON at `/`, `/docs`, 404 for unknown paths, 405 for a wrong method. Files in its
/// directory make it misbehave: `nodocs` (404 at /docs), `lenient` (200 for every path and
/// method), `nojson` (HTML at `/`).
const SMOKE_APP: &str = r#"
import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
VERSION = open("VERSION").read().strip()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def send(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        lenient = os.path.exists("lenient")
        if self.path == "/health":
            self.send(200, {"status": "healthy", "version": VERSION})
        elif self.path == "/":
            if os.path.exists("nojson"):
                self.send(200, '<b>"not json" & more</b>' + os.environ.get("TOKEN", ""), "text/html")
            else:
                self.send(200, {"name": "skill", "version": VERSION})
        elif self.path == "/docs":
            if os.path.exists("nodocs"):
                self.send(404, {"detail": "Not Found"})
            else:
                self.send(200, "<html>docs</html>", "text/html")
        elif self.path == "/api/items":
            self.send(200, [1, 2, 3])
        elif self.path == "/slow":
            time.sleep(0.6)
            self.send(200, {"slow": True})
        elif lenient:
            self.send(200, {"version": VERSION})
        else:
            self.send(404, {"detail": "Not Found"})
    def do_POST(self):
        if os.path.exists("lenient"):
            self.send(200, {"ok": True})
        elif self.path in ("/health", "/", "/docs", "/api/items", "/slow"):
            self.send(405, {"detail": "Method Not Allowed"})
        else:
            self.send(404, {"detail": "Not Found"})
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn smoke_service(p: &TestProject, dir: &str, version: &str, flags: &[&str]) {
    p.write(&format!("{dir}/app.py"), SMOKE_APP);
    p.write(&format!("{dir}/VERSION"), version);
    for f in flags {
        p.write(&format!("{dir}/{f}"), "");
    }
}

fn service_toml(name: &str, dir: &str, port: u16, extra: &str) -> String {
    format!(
        "[services.{name}]\npath = \"{dir}\"\nrun = \"exec python3 app.py\"\nport = {port}\n\
         scale_down_delay = \"60s\"\n\
         health = {{ period = \"100ms\", timeout = \"1s\", failure_threshold = 30, \
         expect_json = {{ status = \"healthy\" }} }}\n{extra}\n"
    )
}

/// A `<testcase>` as read back from the JUnit file.
#[derive(Debug)]
struct Case {
    classname: String,
    name: String,
    failure: Option<String>,
}

fn junit_cases(path: &std::path::Path) -> (roxmltree::Document<'static>, Vec<Case>) {
    let text: &'static str = Box::leak(std::fs::read_to_string(path).unwrap().into_boxed_str());
    let doc = roxmltree::Document::parse(text)
        .unwrap_or_else(|e| panic!("the JUnit file is not valid XML ({e}):\n{text}"));
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| Case {
            classname: n.attribute("classname").unwrap().to_string(),
            name: n.attribute("name").unwrap().to_string(),
            failure: n
                .children()
                .find(|c| c.has_tag_name("failure"))
                .map(|f| f.attribute("message").unwrap().to_string()),
        })
        .collect();
    (doc, cases)
}

fn check<'a>(report: &'a serde_json::Value, service: &str, name: &str) -> &'a serde_json::Value {
    let svc = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("no service {service} in {report}"));
    svc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} of {service} in {svc}"))
}

#[test]
fn cutover_test_passes_a_good_service_and_names_every_failure_of_the_others() {
    let (good, bad, ghost) = (free_port(), free_port(), free_port());
    let p = TestProject::git_repo();
    smoke_service(&p, "svc/good", "g1", &[]);
    smoke_service(&p, "svc/bad", "b1", &["nodocs", "lenient", "nojson"]);
    smoke_service(&p, "svc/ghost", "x1", &[]);
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"smoke\"\n\n{}{}{}",
            service_toml(
                "good",
                "svc/good",
                good,
                "[[services.good.smoke]]\npath = \"/api/items\"\nmax_latency = \"3s\"\n"
            ),
            service_toml(
                "bad",
                "svc/bad",
                bad,
                "[[services.bad.smoke]]\npath = \"/slow\"\nmax_latency = \"100ms\"\n\
                 [[services.bad.smoke]]\npath = \"/api/items\"\nexpect_status = 201\n"
            ),
            service_toml("ghost", "svc/ghost", ghost, ""),
        ),
    );
    p.write(".gitignore", ".cutover/\n*.xml\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy", "good", "bad"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    // A service that passes every stage and its smoke entry: exit 0, JUnit without failures.
    let good_xml = p.path().join("good.xml");
    let out = p.run(&["test", "good", "--junit", good_xml.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for stage in [
        "health",
        "response_time",
        "metadata",
        "error_handling",
        "docs",
        "smoke GET /api/items",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("good") && l.contains(stage) && l.contains("pass")),
            "no passing {stage} row:\n{text}"
        );
    }
    let (_, cases) = junit_cases(&good_xml);
    assert_eq!(cases.len(), 6, "{cases:?}");
    assert!(
        cases
            .iter()
            .all(|c| c.classname == "good" && c.failure.is_none())
    );

    // Every service (the default): the bad one and the one that never ran fail, exit 1.
    let all_xml = p.path().join("all.xml");
    let out = p.run(&["test", "--json", "--junit", all_xml.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let report = json(&out);
    assert_eq!(report["passed"], false);
    let services: Vec<&str> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["good", "bad", "ghost"]);
    assert_eq!(report["services"][0]["passed"], true);
    assert_eq!(
        report["services"][1]["url"],
        format!("http://127.0.0.1:{bad}")
    );

    // bad: healthy and fast, but everything else is wrong, each with its reason.
    assert_eq!(check(&report, "bad", "health")["passed"], true);
    assert_eq!(check(&report, "bad", "response_time")["passed"], true);
    let metadata = check(&report, "bad", "metadata");
    assert_eq!(metadata["passed"], false);
    assert!(
        metadata["message"].as_str().unwrap().contains("not JSON"),
        "{metadata}"
    );
    let errors = check(&report, "bad", "error_handling")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        errors.contains("answered 200, expected 404") && errors.contains("expected 405"),
        "{errors}"
    );
    let docs = check(&report, "bad", "docs");
    assert_eq!(docs["passed"], false);
    assert!(docs["message"].as_str().unwrap().contains("404"), "{docs}");
    let slow = check(&report, "bad", "smoke GET /slow");
    assert_eq!(slow["passed"], false);
    assert!(
        slow["message"]
            .as_str()
            .unwrap()
            .contains("more than max_latency 100ms"),
        "{slow}"
    );
    let wrong = check(&report, "bad", "smoke GET /api/items");
    assert_eq!(wrong["passed"], false, "{wrong}");
    assert_eq!(wrong["message"], "status 200, expected 201");

    // ghost never ran: every check fails at once with the reason, no hang.
    let health = check(&report, "ghost", "health");
    assert_eq!(health["passed"], false);
    assert!(
        health["message"]
            .as_str()
            .unwrap()
            .contains("ghost has no ACTIVE release in development"),
        "{health}"
    );
    assert_eq!(report["services"][2]["checks"].as_array().unwrap().len(), 5);

    // The JUnit file says the same, one <testcase> per service × stage or smoke entry.
    let (doc, cases) = junit_cases(&all_xml);
    assert_eq!(cases.len(), 6 + 7 + 5, "{cases:?}");
    let failures = report["failures"].as_u64().unwrap() as usize;
    assert_eq!(
        cases.iter().filter(|c| c.failure.is_some()).count(),
        failures
    );
    let root = doc.root_element();
    assert_eq!(
        root.attribute("failures"),
        Some(failures.to_string().as_str())
    );
    assert_eq!(root.attribute("tests"), Some("18"));
    let meta = cases
        .iter()
        .find(|c| c.classname == "bad" && c.name == "metadata")
        .unwrap();
    // Markup in a message survives as text (escaped in the file).
    assert!(
        meta.failure
            .as_deref()
            .unwrap()
            .contains(r#"<b>"not json" & more</b>"#),
        "{meta:?}"
    );
    assert!(
        cases
            .iter()
            .filter(|c| c.classname == "ghost")
            .all(|c| c.failure.is_some())
    );

    // And the log file under .cutover/logs/tests/.
    let logs: Vec<_> = std::fs::read_dir(p.path().join(".cutover/logs/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!logs.is_empty());
    let name = logs[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("test-")
            && name.ends_with(".log")
            && name.len() == "test-20261123-101500.log".len(),
        "{name}"
    );
    let log: String = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .collect();
    assert!(log.contains("bad docs FAILED"), "{log}");
    assert!(log.contains("good health passed"), "{log}");
}

#[test]
fn cutover_test_refuses_unknown_services_and_unwritable_junit() {
    let port = free_port();
    let p = TestProject::git_repo();
    smoke_service(&p, "svc/api", "v1", &[]);
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"smoke\"\n\n{}",
            service_toml("api", "svc/api", port, "")
        ),
    );
    p.commit("v1");
    let out = p.run(&["test", "nosuch"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
    // Not running: exit 1 with the reason, quickly.
    let start = std::time::Instant::now();
    let out = p.run(&["test", "api", "--junit", "/nonexistent-dir/x.xml"]);
    assert!(start.elapsed() < Duration::from_secs(8));
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("JUnit"), "{}", stderr(&out));
    let out = p.run(&["test", "api"]);
    assert_eq!(code(&out), 1);
    assert!(
        stdout(&out).contains("agent does not run"),
        "{}",
        stdout(&out)
    );
    // Another program answering on the service's port, healthy as can be, is not the service.
    let dir = p.path().join("svc/api");
    let mut impostor = std::process::Command::new("python3")
        .arg("app.py")
        .current_dir(&dir)
        .env("PORT", port.to_string())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || version(port).is_some()));
    let out = p.run(&["test", "api", "--json"]);
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let report = json(&out);
    let health = check(&report, "api", "health");
    assert_eq!(health["passed"], false, "{health}");
    assert!(
        health["message"]
            .as_str()
            .unwrap()
            .contains("agent does not run"),
        "{health}"
    );
}

#[test]
fn deploy_smoke_fails_a_release_whose_smoke_tests_fail_and_rolls_it_back() {
    let port = free_port();
    let p = TestProject::git_repo();
    smoke_service(&p, "svc/api", "v0", &["nodocs"]);
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"smoke\"\n\n{}",
            service_toml("api", "svc/api", port, "")
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v0");
    let _agent = AgentGuard(&p);
    // A first release has nothing to go back to: it fails, and the reason says it still serves.
    let out = p.run(&["deploy", "--smoke", "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let reason = json(&out)["services"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("docs: status 404")
            && reason.contains("no previous release to roll back to"),
        "{reason}"
    );

    std::fs::remove_file(p.path().join("svc/api/nodocs")).unwrap();
    smoke_service(&p, "svc/api", "v1", &[]);
    p.commit("v1");
    let out = p.run(&["deploy", "--smoke", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let v1 = json(&out)["services"][0]["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(version(port).as_deref(), Some("v1"));

    // v2 is healthy (the agent's probes pass) but has no /docs: the smoke tests fail it.
    smoke_service(&p, "svc/api", "v2", &["nodocs"]);
    p.commit("v2 without docs");
    let out = p.run(&["deploy", "--smoke", "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    let svc = &summary["services"][0];
    assert_eq!(summary["status"], "failed");
    assert_eq!(svc["result"], "failed");
    let reason = svc["reason"].as_str().unwrap();
    assert!(reason.contains("docs: status 404"), "{reason}");
    assert!(reason.contains(&format!("rolled back to {v1}")), "{reason}");
    let v2 = svc["release"].as_str().unwrap().to_string();
    // Traffic is back on v1, and the store says so.
    assert!(wait_until(Duration::from_secs(10), || version(port)
        .as_deref()
        == Some("v1")));
    let rel = json(&p.run(&["releases", "api", "--json"]));
    let phase = |id: &str| {
        rel["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["phase"]
            .clone()
    };
    assert_eq!(phase(&v2), "FAILED");
    assert_eq!(phase(&v1), "ACTIVE");
    // The checks are in the service's deployment log.
    let run = summary["run"].as_str().unwrap();
    let log = p.read(&format!(".cutover/logs/deployments/{run}-api.log"));
    assert!(log.contains("smoke docs FAILED"), "{log}");

    // v3 fixes it: deploy --smoke passes and serves it.
    std::fs::remove_file(p.path().join("svc/api/nodocs")).unwrap();
    smoke_service(&p, "svc/api", "v3", &[]);
    p.commit("v3");
    let out = p.run(&["deploy", "--smoke", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(json(&out)["services"][0]["result"], "succeeded");
    assert_eq!(version(port).as_deref(), Some("v3"));
}

#[test]
fn the_fleet_example_passes_its_smoke_tests() {
    let p = TestProject::git_repo();
    let fleet = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet");
    copy_dir(&fleet, p.path());
    // Its own free ports instead of 8081-8085.
    let mut toml = p.read("cutover.toml");
    for fixed in 8081..=8085 {
        toml = toml.replace(
            &format!("port = {fixed}"),
            &format!("port = {}", free_port()),
        );
    }
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\n*.xml\n");
    p.commit("fleet");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy", "--all", "--smoke", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let xml = p.path().join("fleet.xml");
    let out = p.run(&["test", "--junit", xml.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let (_, cases) = junit_cases(&xml);
    // Five stages for each of the five skills, and design-tokens' smoke entry.
    assert_eq!(cases.len(), 5 * 5 + 1, "{cases:?}");
    assert!(cases.iter().all(|c| c.failure.is_none()), "{cases:?}");
    assert!(
        cases
            .iter()
            .any(|c| c.classname == "design-tokens" && c.name == "smoke GET /api/tokens")
    );
}

#[test]
fn a_secret_a_service_echoes_never_reaches_the_test_output() {
    const TOKEN: &str = "smoke-canary-5f1e0c9a";
    let port = free_port();
    let p = TestProject::git_repo();
    smoke_service(&p, "svc/api", "v1", &["nojson"]);
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"smoke\"\n\n{}",
            service_toml(
                "api",
                "svc/api",
                port,
                "env = { TOKEN = { secret = \"SMOKE_TOKEN\" } }"
            )
        ),
    );
    p.write(".gitignore", ".cutover/\n*.xml\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    let out = p
        .cutover()
        .env("SMOKE_TOKEN", TOKEN)
        .arg("deploy")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    // The service really serves it...
    let (_, body) = common::runtime::get(port, "/").unwrap();
    assert!(body.contains(TOKEN));
    // ...and the failed metadata check quotes the body, masked everywhere.
    let xml = p.path().join("t.xml");
    for args in [vec!["test", "--json"], vec!["test"]] {
        let out = p
            .cutover()
            .env("SMOKE_TOKEN", TOKEN)
            .args(&args)
            .args(["--junit", xml.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(code(&out), 1);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains(TOKEN), "{all}");
        assert!(all.contains("more</b>***"), "{all}");
        let junit = std::fs::read_to_string(&xml).unwrap();
        assert!(!junit.contains(TOKEN) && junit.contains("***"), "{junit}");
    }
    // Each test run is a run in the store, its checks typed events, masked too.
    let events = common::store_events(&p.path().join(".cutover/state.db"), "test.check");
    assert!(events.contains("test.check api"), "{events}");
    assert!(events.contains("\"passed\":false"), "{events}");
    assert!(!events.contains(TOKEN), "{events}");
    let mut logs = Vec::new();
    common::files_under(&p.path().join(".cutover/logs/tests"), &mut logs);
    assert!(!logs.is_empty());
    for f in logs {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(TOKEN), "{}: {text}", f.display());
    }
}
