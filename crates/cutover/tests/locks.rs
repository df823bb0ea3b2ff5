//! Deploy locks: `cutover lock` / `unlock`, `deploy --lock-wait`, and the implicit lock of a
//! running deploy, which dies with its process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::runtime::{AgentGuard, free_port, one_service, wait_until};
use common::{TestProject, code, json, stderr, stdout};

fn releases(p: &TestProject) -> Vec<serde_json::Value> {
    let out = p.run(&["releases", "api", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)["releases"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_locked_environment_refuses_deploys_naming_holder_and_reason() {
    let p = one_service(free_port(), "");
    let out = p.run(&["lock", "--reason", "migration running", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lock = json(&out);
    assert_eq!(lock["env"], "development");
    assert_eq!(lock["reason"], "migration running");
    let holder = lock["holder"].as_str().unwrap().to_string();
    assert!(holder.contains('@'), "{holder}");

    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("development is locked by"), "{err}");
    assert!(err.contains(&holder), "{err}");
    assert!(err.contains("migration running"), "{err}");
    assert!(err.contains(" UTC"), "{err}");
    assert!(err.contains("cutover unlock"), "{err}");
    assert!(releases(&p).is_empty());

    // Rollback is refused the same way.
    let out = p.run(&["rollback"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("is locked by"), "{}", stderr(&out));

    // A second lock is refused, naming the first.
    let out = p.run(&["lock"]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("migration running"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unlock_twice_succeeds_then_is_refused() {
    let p = one_service(free_port(), "");
    assert_eq!(code(&p.run(&["lock"])), 0);
    let out = p.run(&["unlock"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = p.run(&["unlock"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("development is not locked"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_shows_the_lock() {
    let p = one_service(free_port(), "");
    let out = p.run(&["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = json(&out);
    assert!(doc["lock"].is_null(), "{doc}");
    assert!(doc.get("services").is_some() && doc.get("runs").is_some());

    assert_eq!(code(&p.run(&["lock", "--reason", "freeze"])), 0);
    let doc = json(&p.run(&["status", "--json"]));
    assert_eq!(doc["lock"]["reason"], "freeze", "{doc}");
    assert!(doc["lock"]["holder"].as_str().unwrap().contains('@'));
    assert!(doc["lock"]["since"].is_string());

    let out = p.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("development is locked by"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn lock_wait_gives_up_after_its_duration() {
    let p = one_service(free_port(), "");
    assert_eq!(code(&p.run(&["lock"])), 0);
    let started = Instant::now();
    let out = p.run(&["deploy", "--lock-wait", "300ms"]);
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(300));
    let err = stderr(&out);
    assert!(err.contains("300ms"), "{err}");
    assert!(err.contains("is locked by"), "{err}");
    assert!(releases(&p).is_empty());
}

#[test]
fn lock_wait_proceeds_once_unlocked() {
    let p = one_service(free_port(), "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["lock", "--reason", "hold on"])), 0);
    let child = p
        .cutover()
        .args(["deploy", "--lock-wait", "5s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let out = p.run(&["unlock"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let list = releases(&p);
    assert_eq!(list[0]["phase"], "ACTIVE", "{list:?}");
}

#[test]
fn a_killed_deploy_does_not_block_the_next() {
    let p = one_service(free_port(), "checks = [\"sleep 5\"]");
    let _agent = AgentGuard(&p);
    let mut child = p
        .cutover()
        .arg("deploy")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until its run is recorded in progress (its checks sleep).
    assert!(wait_until(Duration::from_secs(10), || {
        let out = p.run(&["status", "--json"]);
        code(&out) == 0 && json(&out)["runs"].as_array().is_some_and(|r| !r.is_empty())
    }));
    // While it runs, it holds the environment: another deploy is refused.
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("is running"), "{}", stderr(&out));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let toml = p
        .read("cutover.toml")
        .replace("checks = [\"sleep 5\"]", "checks = [\"true\"]");
    p.write("cutover.toml", &toml);
    p.commit("quick checks");
    let started = Instant::now();
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    let list = releases(&p);
    assert_eq!(list[0]["phase"], "ACTIVE", "{list:?}");
}

#[test]
fn two_deploys_waiting_for_one_lock_run_one_after_the_other() {
    let p = one_service(free_port(), "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["lock", "--reason", "hold on"])), 0);
    let spawn = || {
        p.cutover()
            .args(["deploy", "--all", "--json", "--lock-wait", "60s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(code(&p.run(&["unlock"])), 0);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for out in [&a, &b] {
        assert_eq!(code(out), 0, "{}{}", stdout(out), stderr(out));
    }
    // Both ran, never at the same time: one waited for the other's run to end.
    let (a, b) = (common::json(&a), common::json(&b));
    let span = |doc: &serde_json::Value| {
        let t = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(doc[k].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        (t("started_at"), t("finished_at"))
    };
    let (first, second) = if span(&a).0 <= span(&b).0 {
        (span(&a), span(&b))
    } else {
        (span(&b), span(&a))
    };
    assert!(
        first.1 <= second.0,
        "the runs overlapped: {first:?} and {second:?}\n{a}\n{b}"
    );
    assert_ne!(a["run"], b["run"]);
}
