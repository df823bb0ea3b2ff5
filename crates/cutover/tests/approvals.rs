//! Approval gates: a deploy of an environment with `require_approval = true` stops before any
//! traffic changes until `cutover approve RUN` (from another process), `--reject`, its
//! `--approval-timeout`, Ctrl-C, or the death of its process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::runtime::{AgentGuard, free_port, one_service, version, wait_until};
use common::{TestProject, code, json, stderr, stdout};

/// The app service with a production environment that requires approval.
fn gated(port: u16) -> TestProject {
    let p = one_service(port, "");
    let toml = p.read("cutover.toml") + "\n[environments.production]\nrequire_approval = true\n";
    p.write("cutover.toml", &toml);
    p.commit("gate production");
    p
}

fn spawn_deploy(p: &TestProject, extra: &[&str]) -> Child {
    p.cutover()
        .args(["deploy", "--env", "production", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the environment shows a run awaiting approval; returns its id.
fn waiting_run(p: &TestProject) -> String {
    let mut id = None;
    let found = wait_until(Duration::from_secs(60), || {
        let out = p.run(&["status", "--env", "production", "--json"]);
        if code(&out) != 0 {
            return false;
        }
        let doc = json(&out);
        id = doc["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["phase"] == "awaiting_approval")
            .and_then(|r| r["id"].as_str().map(str::to_string));
        id.is_some()
    });
    assert!(found, "no run awaiting approval");
    id.unwrap()
}

fn releases(p: &TestProject) -> Vec<serde_json::Value> {
    let out = p.run(&["releases", "api", "--env", "production", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)["releases"].as_array().cloned().unwrap()
}

#[test]
fn approval_from_a_second_process_lets_the_deploy_go_on() {
    let port = free_port();
    let p = gated(port);
    let _agent = AgentGuard(&p);
    let child = spawn_deploy(&p, &[]);
    let run = waiting_run(&p);

    // Nothing changed in traffic while it waits: nothing serves, the release is not deployed.
    assert_eq!(version(port), None);
    let list = releases(&p);
    assert_eq!(list.len(), 1);
    assert_ne!(list[0]["phase"], "ACTIVE");
    assert_ne!(list[0]["phase"], "DEPLOYING");
    let text = stdout(&p.run(&["status", "--env", "production"]));
    assert!(text.contains(&run), "{text}");
    assert!(text.contains("awaiting_approval"), "{text}");
    assert!(text.contains(&format!("cutover approve {run}")), "{text}");

    let out = p.run(&["approve", &run, "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let decided = json(&out);
    assert_eq!(decided["state"], "approved");
    assert!(decided["decided_by"].as_str().unwrap().contains('@'));

    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("awaiting approval"), "{err}");
    assert!(err.contains(&format!("cutover approve {run}")), "{err}");
    let summary = json(&out);
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(summary["approval"]["state"], "approved");
    assert!(summary["approval"]["decided_at"].is_string());
    assert_eq!(version(port).as_deref(), Some("v1"));
    assert_eq!(releases(&p)[0]["phase"], "ACTIVE");

    // Who approved is in the run log.
    let log = p.read(&format!(".cutover/logs/deployments/{run}.log"));
    assert!(log.contains("approved by"), "{log}");

    // It is not waiting any more: a second approval is refused.
    let out = p.run(&["approve", &run]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not waiting for approval"),
        "{}",
        stderr(&out)
    );
    let doc = json(&p.run(&["status", "--env", "production", "--json"]));
    assert_eq!(doc["runs"], serde_json::json!([]), "{doc}");
}

#[test]
fn a_rejected_or_timed_out_approval_exits_3_and_deploys_nothing() {
    let port = free_port();
    let p = gated(port);
    let _agent = AgentGuard(&p);
    let child = spawn_deploy(&p, &[]);
    let run = waiting_run(&p);
    let out = p.run(&["approve", &run, "--reject", "--reason", "not on a friday"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    assert_eq!(summary["approval"]["state"], "rejected");
    assert_eq!(summary["approval"]["reason"], "not on a friday");
    let reason = summary["services"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("rejected by"), "{reason}");
    assert!(reason.contains("not on a friday"), "{reason}");
    assert_eq!(version(port), None);
    assert_eq!(releases(&p)[0]["phase"], "CANCELED");

    let out = p
        .cutover()
        .args([
            "deploy",
            "--env",
            "production",
            "--all",
            "--approval-timeout",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("timed out"), "{all}");
    assert_eq!(version(port), None);
}

#[test]
fn approving_a_run_that_is_not_waiting_exits_1() {
    let port = free_port();
    let p = gated(port);
    let _agent = AgentGuard(&p);
    // Development needs no approval: its run never waits.
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let run = json(&out)["run"].as_str().unwrap().to_string();
    let out = p.run(&["approve", &run]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains(&format!("run {run} is not waiting for approval")),
        "{}",
        stderr(&out)
    );
    let out = p.run(&["approve", "deploy-19990101-000000"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("deploy-19990101-000000 does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_killed_waiting_deploy_cannot_be_approved_and_ctrl_c_cancels() {
    let port = free_port();
    let p = gated(port);
    let _agent = AgentGuard(&p);
    let mut child = spawn_deploy(&p, &[]);
    let run = waiting_run(&p);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let out = p.run(&["approve", &run]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("canceled"), "{}", stderr(&out));
    let doc = json(&p.run(&["status", "--env", "production", "--json"]));
    assert_eq!(doc["runs"], serde_json::json!([]), "{doc}");

    // Ctrl-C while waiting: canceled, exit 130, and the gate can no longer be approved.
    let child = spawn_deploy(&p, &["--all"]);
    let run = waiting_run(&p);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(json(&out)["status"], "canceled");
    let out = p.run(&["approve", &run]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(version(port), None);
}
