//! `pre_deploy` and `post_deploy` hooks: real scripts, run in the release snapshot with the
//! service's env, around a real deploy through the agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::runtime::{AgentGuard, free_port, one_service, version};
use common::{TestProject, code, json, stderr, stdout};

fn releases(p: &TestProject) -> Vec<serde_json::Value> {
    let out = p.run(&["releases", "api", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)["releases"].as_array().cloned().unwrap()
}

/// Replaces the `[services.api]` extra keys: commits v2 of the app with `extra` config.
fn v2_with(p: &TestProject, extra: &str) {
    let toml = p.read("cutover.toml") + extra + "\n";
    p.write("cutover.toml", &toml);
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
}

#[test]
fn hooks_run_in_the_snapshot_with_the_service_env_around_the_deploy() {
    let port = free_port();
    let out_dir = tempfile::tempdir().unwrap();
    let pre = out_dir.path().join("pre.txt");
    let post = out_dir.path().join("post.txt");
    // post_deploy asks the public port which version serves: the new release is live by then.
    let extra = format!(
        "env = {{ GREETING = \"hello\", TOKEN = {{ secret = \"HOOK_TOKEN\" }} }}\n\
         pre_deploy = [\"printf '%s|%s|%s|%s|%s|%s' \\\"$CUTOVER_SERVICE\\\" \\\"$CUTOVER_RELEASE\\\" \
         \\\"$CUTOVER_ENV\\\" \\\"$GREETING\\\" \\\"$TOKEN\\\" \\\"$(pwd)\\\" > {pre}\", \"echo second pre hook\"]\n\
         post_deploy = [\"python3 -c 'import urllib.request,sys; \
         sys.stdout.write(urllib.request.urlopen(\\\"http://127.0.0.1:{port}/\\\").read().decode())' > {post}\"]",
        pre = pre.display(),
        post = post.display(),
    );
    let p = one_service(port, &extra);
    let _agent = AgentGuard(&p);
    let out = p
        .cutover()
        .args(["deploy", "--json"])
        .env("HOOK_TOKEN", "tok-51d2")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    let release = summary["services"][0]["release"].as_str().unwrap();
    let stages: Vec<&str> = summary["services"][0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert!(
        stages.ends_with(&["pre_deploy", "deploy", "verify", "post_deploy"]),
        "{stages:?}"
    );

    let fields: Vec<String> = std::fs::read_to_string(&pre)
        .unwrap()
        .split('|')
        .map(str::to_string)
        .collect();
    assert_eq!(fields[0], "api");
    assert_eq!(fields[1], release);
    assert_eq!(fields[2], "development");
    assert_eq!(fields[3], "hello");
    assert_eq!(fields[4], "tok-51d2");
    let snapshot = p
        .path()
        .join(".cutover/releases/api")
        .join(release)
        .canonicalize()
        .unwrap();
    assert_eq!(
        std::path::Path::new(&fields[5]).canonicalize().unwrap(),
        snapshot
    );
    let served: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&post).unwrap()).unwrap();
    assert_eq!(served["version"], "v1");

    // The hooks are in the service's deployment log, the secret masked.
    let run = summary["run"].as_str().unwrap();
    let log = p.read(&format!(".cutover/logs/deployments/{run}-api.log"));
    assert!(log.contains("pre_deploy started"), "{log}");
    assert!(log.contains("[pre_deploy stdout] second pre hook"), "{log}");
    assert!(log.contains("post_deploy succeeded"), "{log}");
    assert!(!log.contains("tok-51d2"), "{log}");
    assert!(!stderr(&out).contains("tok-51d2"));
}

#[test]
fn a_failing_pre_deploy_keeps_the_old_release_serving() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    p.write(
        "svc/api/migrate.sh",
        "#!/bin/sh\necho applying 0042\necho 'migration 0042 failed: column exists' >&2\nexit 4\n",
    );
    v2_with(&p, "pre_deploy = [\"sh migrate.sh\"]");
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    assert_eq!(summary["services"][0]["result"], "failed");
    let reason = summary["services"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("pre_deploy: `sh migrate.sh`"),
        "{reason}"
    );
    assert!(reason.contains("migration 0042 failed"), "{reason}");
    assert_eq!(version(port).as_deref(), Some("v1"));
    let list = releases(&p);
    assert_eq!(list[0]["phase"], "FAILED");
    assert!(
        list[0]["reason"]
            .as_str()
            .unwrap()
            .contains("migration 0042 failed"),
        "{list:?}"
    );
    assert_eq!(list[1]["phase"], "ACTIVE");
}

#[test]
fn a_failing_post_deploy_is_reported_and_the_release_keeps_serving() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    v2_with(&p, "post_deploy = [\"echo cache warmup failed; exit 2\"]");
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    assert_eq!(summary["status"], "failed");
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(summary["services"][0]["result"], "failed");
    let reason = summary["services"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("post_deploy"), "{reason}");
    assert!(reason.contains("cache warmup failed"), "{reason}");
    assert!(reason.contains("stays ACTIVE"), "{reason}");
    assert_eq!(version(port).as_deref(), Some("v2"));
    let list = releases(&p);
    assert_eq!(list[0]["phase"], "ACTIVE", "{list:?}");
    assert_eq!(list[1]["phase"], "SUPERSEDED", "{list:?}");
}

#[test]
fn a_failing_post_deploy_rolls_back_when_asked() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    v2_with(
        &p,
        "post_deploy = [\"echo smoke check failed; exit 1\"]\nrollback_on_hook_failure = true",
    );
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    assert_eq!(summary["status"], "rolled_back");
    // Every phase change was recorded (no store warning).
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(summary["services"][0]["result"], "rolled_back");
    let reason = summary["services"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("smoke check failed"), "{reason}");
    assert!(reason.contains("rolled back to"), "{reason}");
    assert_eq!(version(port).as_deref(), Some("v1"));
    let list = releases(&p);
    assert_eq!(list[0]["phase"], "ROLLED_BACK", "{list:?}");
    assert_eq!(list[1]["phase"], "ACTIVE", "{list:?}");
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(status["services"][0]["release"], list[1]["id"], "{status}");
    let file: serde_json::Value = serde_json::from_str(&p.read(".cutover/status.json")).unwrap();
    assert_eq!(file["status"], "rolled_back", "{file}");
    assert_eq!(file["services"]["api"]["release"], list[0]["id"], "{file}");
    assert_eq!(
        file["services"]["api"]["deployment_status"], "ROLLED_BACK",
        "{file}"
    );
}
