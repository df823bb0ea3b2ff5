//! `[[notify]]` webhooks against real receivers on 127.0.0.1: bodies, headers, the HMAC
//! signature, redaction, and receivers that are dead or slow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::receiver::{Received, Receiver};
use common::runtime::{AgentGuard, free_port, one_service, version, wait_until};
use common::{TestProject, code, json, stderr, stdout};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const HOOK_KEY: &str = "hook-key-7c1e93";
const API_KEY: &str = "api-secret-2b8f44";

fn verify(r: &Received, key: &str) {
    let header = r
        .headers
        .get("x-cutover-signature")
        .unwrap_or_else(|| panic!("no signature: {:?}", r.headers));
    let hex = header.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&r.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, expected, "signature of {}", r.text());
}

/// The app with a secret its build prints, and the given `[[notify]]` tables.
fn project(port: u16, notify: &str) -> TestProject {
    let p = one_service(
        port,
        "env = { API_KEY = { secret = \"API_KEY\" } }\nbuild = \"echo building with $API_KEY\"",
    );
    let toml = p.read("cutover.toml") + "\n" + notify;
    p.write("cutover.toml", &toml);
    p.commit("notify");
    p
}

fn deploy(p: &TestProject, args: &[&str]) -> std::process::Output {
    p.cutover()
        .args(args)
        .env("API_KEY", API_KEY)
        .env("HOOK_KEY", HOOK_KEY)
        .output()
        .unwrap()
}

#[test]
fn deploys_and_rollbacks_post_signed_redacted_bodies() {
    let json_hook = Receiver::start(Duration::ZERO);
    let slack_hook = Receiver::start(Duration::ZERO);
    let port = free_port();
    let p = project(
        port,
        &format!(
            "[[notify]]\nurl = \"{}\"\nsecret = {{ secret = \"HOOK_KEY\" }}\n\n\
             [[notify]]\nurl = \"{}\"\nformat = \"slack\"\non = [\"deploy.succeeded\"]\n",
            json_hook.url(),
            slack_hook.url()
        ),
    );
    let _agent = AgentGuard(&p);
    let out = deploy(&p, &["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    let run = summary["run"].as_str().unwrap();
    let v1 = summary["services"][0]["release"].as_str().unwrap();

    // Both deliveries were made before the command ended (its grace covers a live receiver).
    let started = json_hook.events("deploy.started");
    let succeeded = json_hook.events("deploy.succeeded");
    assert_eq!(started.len(), 1, "{:?}", json_hook.all());
    assert_eq!(succeeded.len(), 1, "{:?}", json_hook.all());
    let r = &succeeded[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["content-length"], r.body.len().to_string());
    verify(r, HOOK_KEY);
    verify(&started[0], HOOK_KEY);
    let body = r.json();
    assert_eq!(body["run"], run);
    assert_eq!(body["env"], "development");
    assert_eq!(body["services"][0]["name"], "api");
    assert_eq!(body["services"][0]["release"], v1);
    assert_eq!(body["services"][0]["result"], "succeeded");
    assert!(body["at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(body.get("reason").is_some(), "{body}");
    assert_eq!(started[0].json()["services"][0]["name"], "api");

    let slack = slack_hook.all();
    assert_eq!(slack.len(), 1, "only deploy.succeeded is wanted: {slack:?}");
    let s = slack[0].json();
    assert!(s["text"].as_str().unwrap().contains(run), "{s}");
    let blocks = s["blocks"].to_string();
    for field in ["deploy.succeeded", run, "development", v1] {
        assert!(blocks.contains(field), "{field} in {blocks}");
    }
    assert!(!slack[0].headers.contains_key("x-cutover-signature"));

    // v2 then `cutover rollback`: a `rollback` event naming the release gone back to.
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    assert_eq!(code(&deploy(&p, &["deploy"])), 0);
    let out = deploy(&p, &["rollback"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(version(port).as_deref(), Some("v1"));
    let rollback = json_hook.events("rollback");
    assert_eq!(rollback.len(), 1, "{:?}", json_hook.all());
    verify(&rollback[0], HOOK_KEY);
    let body = rollback[0].json();
    assert_eq!(body["services"][0]["release"], v1, "{body}");
    assert_eq!(body["services"][0]["result"], "rolled_back", "{body}");

    // No secret value in any body (the build printed API_KEY; HOOK_KEY only signs).
    for r in json_hook.all().iter().chain(slack_hook.all().iter()) {
        let text = r.text();
        assert!(!text.contains(API_KEY), "{text}");
        assert!(!text.contains(HOOK_KEY), "{text}");
    }
}

#[test]
fn failures_and_automatic_rollbacks_are_notified() {
    let hook = Receiver::start(Duration::ZERO);
    let port = free_port();
    let p = project(port, &format!("[[notify]]\nurl = \"{}\"\n", hook.url()));
    let _agent = AgentGuard(&p);
    assert_eq!(code(&deploy(&p, &["deploy"])), 0);
    // v2's post_deploy fails and rolls back: deploy.failed and rollback.
    let toml = p.read("cutover.toml").replace(
        "build = \"echo building with $API_KEY\"",
        "build = \"echo building with $API_KEY\"\n\
         post_deploy = [\"echo check failed for $API_KEY; exit 1\"]\nrollback_on_hook_failure = true",
    );
    p.write("cutover.toml", &toml);
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    let out = deploy(&p, &["deploy"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let failed = hook.events("deploy.failed");
    assert_eq!(failed.len(), 1, "{:?}", hook.all());
    let body = failed[0].json();
    assert_eq!(body["services"][0]["result"], "rolled_back", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("check failed for ***"), "{reason}");
    let rollback = hook.events("rollback");
    assert_eq!(rollback.len(), 1, "{:?}", hook.all());
    assert_eq!(rollback[0].json()["services"][0]["result"], "rolled_back");
    for r in hook.all() {
        assert!(!r.text().contains(API_KEY), "{}", r.text());
    }
}

#[test]
fn a_dead_or_slow_receiver_neither_fails_nor_holds_the_deploy() {
    // A port nobody listens on, and a receiver that answers only after a minute.
    let dead = free_port();
    let slow = Receiver::start(Duration::from_secs(60));
    let port = free_port();
    let p = project(
        port,
        &format!(
            "[[notify]]\nurl = \"http://127.0.0.1:{dead}/hook\"\n\n[[notify]]\nurl = \"{}\"\n",
            slow.url()
        ),
    );
    let _agent = AgentGuard(&p);
    let started = Instant::now();
    let out = deploy(&p, &["deploy", "--json"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(json(&out)["status"], "succeeded");
    assert_eq!(version(port).as_deref(), Some("v1"));
    // Bounded by the end-of-command grace, far from the receiver's minute.
    assert!(took < Duration::from_secs(30), "deploy took {took:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("webhook http://127.0.0.1:{dead}/hook")),
        "{err}"
    );
    assert!(err.contains("not delivered after 3 tries"), "{err}");
    // The slow receiver did get the request; only its answer was late.
    assert!(wait_until(Duration::from_secs(5), || !slow
        .all()
        .is_empty()));
}

#[test]
fn approval_requests_are_notified() {
    let hook = Receiver::start(Duration::ZERO);
    let port = free_port();
    let p = project(
        port,
        &format!(
            "[[notify]]\nurl = \"{}\"\non = [\"approval.requested\"]\n\n\
             [environments.production]\nrequire_approval = true\n",
            hook.url()
        ),
    );
    let _agent = AgentGuard(&p);
    let child = p
        .cutover()
        .args(["deploy", "--env", "production", "--json"])
        .env("API_KEY", API_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || !hook
            .events("approval.requested")
            .is_empty()),
        "{:?}",
        hook.all()
    );
    let body = hook.events("approval.requested")[0].json();
    let run = body["run"].as_str().unwrap().to_string();
    assert_eq!(body["env"], "production");
    assert_eq!(body["services"][0]["result"], "awaiting_approval");
    assert!(body["services"][0]["release"].is_string(), "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("cutover approve {run}")),
        "{body}"
    );
    assert_eq!(code(&p.run(&["approve", &run])), 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(hook.all().len(), 1, "only approval.requested is wanted");
}

#[test]
fn an_atomic_rollback_is_notified() {
    use common::runtime::{app_service, app_toml};
    let hook = Receiver::start(Duration::ZERO);
    let ports = [free_port(), free_port()];
    let p = TestProject::git_repo();
    let mut toml = "[project]\nname = \"atomic\"\n\n".to_string();
    for (i, name) in ["api", "web"].iter().enumerate() {
        app_service(&p, &format!("svc/{name}"), "v1");
        toml.push_str(&app_toml(name, &format!("svc/{name}"), ports[i], ""));
    }
    toml.push_str(&format!(
        "[[notify]]\nurl = \"{}\"\non = [\"rollback\", \"deploy.failed\"]\n",
        hook.url()
    ));
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    p.write("svc/api/VERSION", "v2");
    p.write("svc/web/VERSION", "v2");
    p.write("svc/web/crash", "");
    p.commit("v2, web broken");
    let out = p.run(&["deploy", "--atomic", "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(version(ports[0]).as_deref(), Some("v1"));
    assert_eq!(hook.events("deploy.failed").len(), 1, "{:?}", hook.all());
    let rollback = hook.events("rollback");
    assert_eq!(rollback.len(), 1, "{:?}", hook.all());
    let body = rollback[0].json();
    assert_eq!(body["services"][0]["name"], "api", "{body}");
    assert_eq!(body["services"][0]["result"], "rolled_back", "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("--atomic"),
        "{body}"
    );
}
