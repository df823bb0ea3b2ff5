//! Crashes at the wrong moment: the agent killed with `kill -9`, stored secrets, `agent stop`,
//! a broken cutover.toml. After any of them the store, `status` and the proxy agree, and
//! services keep serving their last ACTIVE release.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::runtime::{AgentGuard, Load, free_port, one_service, version, wait_until};
use common::{TestProject, code, json, stderr, stdout};

fn agent_status(p: &TestProject) -> serde_json::Value {
    let out = p.run(&["agent", "status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)
}

fn agent_pid(p: &TestProject) -> Option<i32> {
    agent_status(p)["pid"]
        .as_i64()
        .map(|p| i32::try_from(p).unwrap())
}

fn instance_pids(p: &TestProject) -> Vec<i32> {
    let status = agent_status(p);
    let mut pids = Vec::new();
    for s in status["services"].as_array().into_iter().flatten() {
        for set in s["sets"].as_array().into_iter().flatten() {
            for i in set["instances"].as_array().into_iter().flatten() {
                if let Some(pid) = i["pid"].as_i64() {
                    pids.push(i32::try_from(pid).unwrap());
                }
            }
        }
    }
    pids.sort_unstable();
    pids
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_killed_agent_comes_back_by_itself_and_adopts_its_instances() {
    let port = free_port();
    let p = one_service(port, "instances = 2");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = instance_pids(&p);
    assert_eq!(before.len(), 2);
    let old_agent = agent_pid(&p).unwrap();

    let mut load = Load::start(port, 4);
    std::thread::sleep(Duration::from_millis(300));
    let ok_before = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    assert!(ok_before > 0, "the load is answered before the crash");
    let killed_at = Instant::now();
    kill9(old_agent);
    // No command is run: the supervisor starts the agent again, which adopts the instances.
    let back = wait_until(Duration::from_secs(10), || {
        load.ok.load(std::sync::atomic::Ordering::Relaxed) > ok_before + 20
    });
    let resumed_after = killed_at.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    load.stop();
    assert!(back, "traffic resumed by itself");
    let failures = load.failures.lock().unwrap().clone();
    assert!(
        failures.iter().all(|f| !f.starts_with("status 5")),
        "no 5xx from restarts: {failures:?}"
    );
    eprintln!(
        "traffic resumed {resumed_after:?} after the kill; {} failed requests (connection errors while no agent listened)",
        load.failed.load(std::sync::atomic::Ordering::Relaxed)
    );

    let new_agent = agent_pid(&p).unwrap();
    assert_ne!(new_agent, old_agent, "a new agent runs");
    assert_eq!(
        instance_pids(&p),
        before,
        "the same instances serve: adopted, not restarted"
    );
    assert!(before.iter().all(|pid| alive(*pid)));
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(status["services"][0]["health"], "healthy", "{status}");
    assert_eq!(status["services"][0]["instances"]["ready"], 2);
    assert_eq!(status["services"][0]["phase"], "ACTIVE");

    // An adopted instance that dies is restarted like any other.
    kill9(before[0]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = instance_pids(&p);
            now.len() == 2 && !now.contains(&before[0])
        }),
        "the adopted instance that died was replaced"
    );
    assert!(wait_until(Duration::from_secs(5), || version(port)
        .as_deref()
        == Some("v1")));
    // Its output still reaches the release's log after the adoption.
    let logs = p.run(&["logs", "api"]);
    assert!(stdout(&logs).contains("adopted pid"), "{}", stdout(&logs));
}

/// Runs cutover with a secret key file of the test's own (no key in the environment).
fn with_key(p: &TestProject, config: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut c = p.cutover();
    c.args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("CUTOVER_SECRET_KEY")
        .env_remove("API_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn stored_secrets_bring_a_service_back_and_what_cannot_come_back_is_reported() {
    const SECRET: &str = "s3cr3t-token-value-9f2e";
    let port = free_port();
    // The instance refuses to start without its secret.
    let p = one_service(port, "env = { API_TOKEN = { secret = \"API_TOKEN\" } }");
    let toml = p.read("cutover.toml").replace(
        "run = \"exec python3 app.py\"",
        "run = \"test -n \\\"$API_TOKEN\\\" || exit 9; exec python3 app.py\"",
    );
    p.write("cutover.toml", &toml);
    p.commit("needs a secret");
    let config = tempfile::tempdir().unwrap();
    let _agent = AgentGuard(&p);
    let out = with_key(&p, config.path(), &["secrets", "set", "API_TOKEN"], SECRET);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = with_key(&p, config.path(), &["deploy"], "");
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The agent and its instance both die: the new agent must start the instance again, with
    // the secret from the store.
    let instance = instance_pids(&p)[0];
    let old_agent = agent_pid(&p).unwrap();
    kill9(old_agent);
    kill9(instance);
    assert!(
        wait_until(Duration::from_secs(15), || version(port).as_deref()
            == Some("v1")),
        "the service was restarted with its stored secret"
    );
    let status = json(&with_key(&p, config.path(), &["status", "--json"], ""));
    assert_eq!(status["services"][0]["health"], "healthy", "{status}");

    // Without the secret (removed from the store), it cannot come back: status says why and
    // the next deploy redeploys it instead of skipping it as unchanged.
    let out = with_key(&p, config.path(), &["secrets", "rm", "API_TOKEN"], "");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let instance = instance_pids(&p)[0];
    kill9(agent_pid(&p).unwrap());
    kill9(instance);
    let mut status = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(15), || {
            status = json(&with_key(&p, config.path(), &["status", "--json"], ""));
            status["services"][0]["reason"].is_string()
        }),
        "status reports the service it cannot restore"
    );
    let row = &status["services"][0];
    assert_eq!(row["health"], "stopped", "{row}");
    assert!(
        row["reason"].as_str().unwrap().contains("API_TOKEN"),
        "the reason names the secret: {row}"
    );
    let text = stdout(&with_key(&p, config.path(), &["status"], ""));
    assert!(
        text.contains("not running") && text.contains("API_TOKEN"),
        "{text}"
    );
    let out = with_key(&p, config.path(), &["secrets", "set", "API_TOKEN"], SECRET);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = with_key(&p, config.path(), &["deploy", "--json"], "");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    assert_eq!(
        summary["services"][0]["result"], "succeeded",
        "the service that did not run is deployed, not skipped: {summary}"
    );
    assert_eq!(version(port).as_deref(), Some("v1"));

    // The secret's value is nowhere in the project's state, logs included.
    let mut files = Vec::new();
    common::files_under(&p.path().join(".cutover"), &mut files);
    for f in files {
        if f.extension()
            .is_some_and(|x| x == "sock" || x == "db" || x == "db-wal")
        {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "secret in {}",
            f.display()
        );
    }
}

#[test]
fn agent_stop_means_stopped_until_agent_start() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    let out = p.run(&["agent", "stop"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // status starts nothing and says the agent is stopped.
    let out = p.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("agent stopped"), "{}", stdout(&out));
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(status["services"][0]["health"], "stopped");
    assert_eq!(agent_status(&p)["running"], false);
    assert!(version(port).is_none(), "nothing serves");
    // agent start brings the service back.
    let out = p.run(&["agent", "start"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(wait_until(Duration::from_secs(10), || version(port)
        .as_deref()
        == Some("v1")));
}

#[test]
fn a_broken_config_does_not_lock_the_user_out_of_what_runs() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    let good = p.read("cutover.toml");
    p.write("cutover.toml", &format!("{good}\n[services.api\n"));

    let out = p.run(&["agent", "status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(json(&out)["pid"].is_number());
    let out = p.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("cutover.toml"), "{}", stderr(&out));
    assert!(stdout(&out).contains("api") && stdout(&out).contains("healthy"));
    // deploy still refuses a broken config, naming it.
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    let out = p.run(&["down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(version(port).is_none(), "down stopped the service");
    let out = p.run(&["agent", "stop"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(agent_status(&p)["running"], false);
}
