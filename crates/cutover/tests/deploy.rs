//! The local target end to end: the real agent, real instances, real HTTP load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::runtime::{
    AgentGuard, Load, app_service, app_toml, free_port, get, one_service, version, wait_until,
};
use common::{TestProject, code, json, stderr, stdout};

fn agent_status(p: &TestProject) -> serde_json::Value {
    let out = p.run(&["agent", "status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)
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
    pids
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

#[test]
fn zero_failed_requests_through_ten_deploys_and_five_rollbacks() {
    let port = free_port();
    let p = one_service(port, "instances = 2");
    // Five rollbacks walk back five releases: keep their snapshots.
    let toml = p
        .read("cutover.toml")
        .replace("name = \"rt\"", "name = \"rt\"\nkeep_releases = 20");
    p.write("cutover.toml", &toml);
    p.commit("keep more");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(version(port).as_deref(), Some("v1"));

    let mut load = Load::start(port, 4);
    assert!(wait_until(Duration::from_secs(5), || load
        .ok
        .load(std::sync::atomic::Ordering::Relaxed)
        > 20));
    for i in 2..=11 {
        let v = format!("v{i}");
        p.write("svc/api/VERSION", &v);
        p.commit(&v);
        let out = p.run(&["deploy"]);
        assert_eq!(
            code(&out),
            0,
            "deploy {v}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(version(port), Some(v.clone()), "served after deploying {v}");
        // The load itself gets an answer from each release before the next change.
        assert!(
            wait_until(Duration::from_secs(10), || load
                .versions
                .lock()
                .unwrap()
                .contains_key(&v)),
            "the load never got an answer from {v}"
        );
    }
    for back in (6..=10).rev() {
        let out = p.run(&["rollback"]);
        assert_eq!(code(&out), 0, "rollback: {}{}", stdout(&out), stderr(&out));
        assert_eq!(
            version(port),
            Some(format!("v{back}")),
            "served after rolling back"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    load.stop();
    let failed = load.failed.load(std::sync::atomic::Ordering::Relaxed);
    let ok = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "{failed} failed of {}: {:?}",
        ok + failed,
        load.failures.lock().unwrap()
    );
    let seen = load.versions.lock().unwrap().clone();
    assert!(seen.len() >= 11, "versions served under load: {seen:?}");

    let out = p.run(&["releases", "api", "--json"]);
    let releases = json(&out);
    let phases: Vec<&str> = releases["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.len(), 11);
    assert_eq!(phases.iter().filter(|p| **p == "ACTIVE").count(), 1);
    assert_eq!(phases.iter().filter(|p| **p == "ROLLED_BACK").count(), 5);
    let rollback_logs = std::fs::read_dir(p.path().join(".cutover/logs/rollbacks"))
        .unwrap()
        .count();
    assert!(rollback_logs >= 1);
}

#[test]
fn a_failing_health_check_or_crash_keeps_the_old_release_serving() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    let mut load = Load::start(port, 4);

    // Answers 500 on /health: never ready; fails once ready_timeout is over, quoting the
    // last probe.
    p.write("svc/api/VERSION", "v2");
    p.write("svc/api/unhealthy", "");
    let toml = p.read("cutover.toml").replace(
        "failure_threshold = 30 }",
        "failure_threshold = 30, ready_timeout = \"2s\" }",
    );
    p.write("cutover.toml", &toml);
    p.commit("v2 unhealthy");
    let started = Instant::now();
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
    let summary = json(&out);
    let reason = summary["services"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains(
            "was not ready within 2s (ready_timeout); last probe: status 500, expected 200"
        ),
        "{reason}"
    );
    assert_eq!(version(port).as_deref(), Some("v1"));

    // Crashes at start: fails at once, with its output.
    std::fs::remove_file(p.path().join("svc/api/unhealthy")).unwrap();
    p.write("svc/api/crash", "");
    p.commit("v2 crash");
    let started = Instant::now();
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an exit fails the deploy at once"
    );
    let reason = json(&out)["services"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert!(reason.contains("crashing on purpose"), "{reason}");
    assert_eq!(version(port).as_deref(), Some("v1"));

    load.stop();
    assert_eq!(
        load.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{:?}",
        load.failures.lock().unwrap()
    );
    let releases = json(&p.run(&["releases", "api", "--json"]));
    let list = releases["releases"].as_array().unwrap();
    assert_eq!(list[0]["phase"], "FAILED");
    assert_eq!(list[1]["phase"], "FAILED");
    assert_eq!(list[2]["phase"], "ACTIVE");
    assert!(list[1]["reason"].as_str().unwrap().contains("status 500"));
}

#[test]
fn only_the_changed_service_gets_a_new_release() {
    let p = TestProject::git_repo();
    let mut toml = String::from("[project]\nname = \"five\"\n\n");
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    for (i, port) in ports.iter().enumerate() {
        app_service(&p, &format!("svc/s{i}"), "v1");
        toml += &app_toml(&format!("s{i}"), &format!("svc/s{i}"), *port, "");
    }
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\n");
    p.commit("five");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        json(&out)["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["result"] == "succeeded")
    );

    p.write("svc/s3/VERSION", "v2");
    p.commit("s3 v2");
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    for s in summary["services"].as_array().unwrap() {
        let expect = if s["name"] == "s3" {
            "succeeded"
        } else {
            "skipped"
        };
        assert_eq!(s["result"], expect, "{s}");
    }
    assert_eq!(version(ports[3]).as_deref(), Some("v2"));
    assert_eq!(version(ports[2]).as_deref(), Some("v1"));

    let status = json(&p.run(&["status", "--json"]));
    let services = status["services"].as_array().unwrap();
    assert_eq!(services.len(), 5);
    for s in services {
        assert_eq!(s["health"], "healthy", "{s}");
        assert_eq!(s["phase"], "ACTIVE");
        assert_eq!(s["instances"]["ready"], 1);
        assert_eq!(s["traffic"][0]["weight"], 100);
        assert!(s["url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    }
}

#[test]
fn killed_instances_and_a_killed_agent_come_back() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);

    let pid = instance_pids(&p)[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            version(port).as_deref() == Some("v1")
                && instance_pids(&p).first().is_some_and(|p| *p != pid)
        }),
        "the instance was restarted and routed"
    );

    let agent_pid = i32::try_from(agent_status(&p)["pid"].as_i64().unwrap()).unwrap();
    let old_instance = instance_pids(&p)[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(5), || !alive(agent_pid)));
    // The agent comes back by itself and adopts the running instance: no command needed, no
    // restart, no duplicate.
    assert!(
        wait_until(Duration::from_secs(10), || version(port).as_deref()
            == Some("v1")),
        "the service serves again without any command"
    );
    assert!(alive(old_instance), "the instance was adopted, not killed");
    assert_eq!(instance_pids(&p), vec![old_instance]);
    let out = p.run(&["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json(&out)["services"][0]["health"], "healthy");
}

#[test]
fn nothing_outlives_down_or_agent_stop() {
    let port = free_port();
    let p = one_service(port, "instances = 2");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    let pids = instance_pids(&p);
    assert_eq!(pids.len(), 2);
    let out = p.run(&["down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(wait_until(Duration::from_secs(5), || pids
        .iter()
        .all(|p| !alive(*p))));
    assert!(
        get(port, "/").is_err(),
        "the public port is closed after down"
    );

    assert_eq!(code(&p.run(&["deploy", "--all"])), 0);
    let pids = instance_pids(&p);
    let agent_pid = i32::try_from(agent_status(&p)["pid"].as_i64().unwrap()).unwrap();
    assert_eq!(code(&p.run(&["agent", "stop"])), 0);
    assert!(wait_until(Duration::from_secs(5), || pids
        .iter()
        .all(|p| !alive(*p))
        && !alive(agent_pid)));
    assert!(!p.path().join(".cutover/agent.sock").exists());
}

#[test]
fn bad_input_gets_clear_answers() {
    // Port in use: named.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 1);
    let reason = json(&out)["services"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains(&port.to_string()) && reason.contains("in use"),
        "{reason}"
    );
    drop(holder);

    // A run command that does not exist.
    p.write(
        "cutover.toml",
        &format!("[project]\nname = \"rt\"\n\n[services.api]\npath = \"svc/api\"\nrun = \"no-such-server-binary\"\nport = {port}\n"),
    );
    p.commit("typo");
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 1);
    let reason = json(&out)["services"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("exited with code 127"), "{reason}");
    assert!(reason.contains("not found"), "{reason}");

    // Rollback to a release that does not exist.
    let out = p.run(&["rollback", "api", "--to", "20990101-000000-0000000"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn a_second_deploy_of_the_same_environment_is_blocked() {
    let port = free_port();
    let p = one_service(port, "checks = [\"sleep 3\"]");
    let _agent = AgentGuard(&p);
    let first = p
        .cutover()
        .args(["deploy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        p.run(&["status", "--json"]).status.success()
            && json(&p.run(&["status", "--json"]))["runs"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
    }));
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("is running"), "{}", stderr(&out));
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success());
}

#[test]
fn a_killed_cli_leaves_the_agent_to_finish_and_the_run_is_marked() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    // v2 takes a second to start listening: kill the CLI while the agent verifies it.
    p.write("svc/api/VERSION", "v2");
    let slow = common::runtime::APP.replace(
        "VERSION = open",
        "import time; time.sleep(1.5)\nVERSION = open",
    );
    p.write("svc/api/app.py", &slow);
    p.commit("v2 slow start");
    let mut cli = p
        .cutover()
        .args(["deploy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        let releases = json(&p.run(&["releases", "api", "--json"]));
        releases["releases"][0]["phase"] == "VERIFYING"
    }));
    assert_eq!(version(port).as_deref(), Some("v1"));
    cli.kill().unwrap();
    let _ = cli.wait();
    // The route never points at nothing: v1 answers until v2 is ready, then v2.
    assert!(wait_until(Duration::from_secs(10), || version(port)
        .as_deref()
        == Some("v2")));
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(status["services"][0]["phase"], "ACTIVE", "{status}");
    assert!(status["runs"].as_array().unwrap().is_empty(), "{status}");
    let releases = json(&p.run(&["releases", "api", "--json"]));
    assert_eq!(releases["releases"][0]["phase"], "ACTIVE");
    assert_eq!(releases["releases"][1]["phase"], "SUPERSEDED");
}

#[test]
fn old_snapshots_are_pruned_but_the_rollback_target_is_kept() {
    let port = free_port();
    let p = one_service(port, "");
    let toml = p
        .read("cutover.toml")
        .replace("name = \"rt\"", "name = \"rt\"\nkeep_releases = 2");
    p.write("cutover.toml", &toml);
    p.commit("keep 2");
    let _agent = AgentGuard(&p);
    for i in 2..=5 {
        p.write("svc/api/VERSION", &format!("v{i}"));
        p.commit(&format!("v{i}"));
        assert_eq!(code(&p.run(&["deploy"])), 0);
    }
    let snapshots: Vec<String> = std::fs::read_dir(p.path().join(".cutover/releases/api"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(snapshots.len(), 2, "keep_releases = 2: {snapshots:?}");
    let out = p.run(&["rollback"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(version(port).as_deref(), Some("v4"));
}

#[test]
fn a_deployed_services_secret_is_in_no_file_and_no_output() {
    const SECRET: &str = "tok-4b8e1f-very-secret";
    let port = free_port();
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    let extra = "env = { API_TOKEN = { secret = \"API_TOKEN\" } }";
    let toml = app_toml("api", "svc/api", port, extra).replace(
        "run = \"exec python3 app.py\"",
        "run = \"echo token=$API_TOKEN; exec python3 app.py\"",
    );
    p.write(
        "cutover.toml",
        &format!("[project]\nname = \"rt\"\n\n{toml}"),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    let out = p
        .cutover()
        .args(["deploy"])
        .env("API_TOKEN", SECRET)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(version(port).as_deref(), Some("v1"));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(SECRET));
    let svc_log = std::fs::read_dir(p.path().join(".cutover/logs/services/api"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&svc_log)
            .unwrap_or_default()
            .contains("token=***")),
        "the instance's output is logged, masked"
    );
    let mut stack = vec![p.path().join(".cutover")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_none_or(|x| x != "sock") {
                let bytes = std::fs::read(&path).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(SECRET),
                    "secret in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn a_deploy_that_starts_the_agent_is_not_undone_by_its_recovery() {
    let port = free_port();
    let p = one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    // The agent stops; it recorded v1 as what should run.
    assert_eq!(code(&p.run(&["agent", "stop"])), 0);
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    // This deploy starts a new agent, which restores v1 while v2 comes in.
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(version(port).as_deref(), Some("v2"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        version(port).as_deref(),
        Some("v2"),
        "recovery swapped the old release back"
    );
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(status["services"][0]["phase"], "ACTIVE");
}
