//! Autoscaling under a real load ramp: a service with `autoscale = { min = 1, max = 3,
//! target_inflight = 4 }` grows while many slow requests are in flight and shrinks back to
//! `min` once the load stops, without a failed request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::runtime::{AgentGuard, Load, app_service, app_toml, free_port, wait_until};
use common::{TestProject, code, json, stderr};

fn instances(p: &TestProject) -> (u64, u64) {
    let status = json(&p.run(&["status", "--json"]));
    let i = &status["services"][0]["instances"];
    (
        i["ready"].as_u64().unwrap_or(0),
        i["desired"].as_u64().unwrap_or(0),
    )
}

#[test]
fn instances_follow_the_requests_in_flight_up_and_down() {
    let port = free_port();
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    p.write("svc/api/slow", "0.2");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"scale\"\n\n{}",
            app_toml(
                "api",
                "svc/api",
                port,
                "autoscale = { min = 1, max = 3, target_inflight = 4 }\ndrain_timeout = \"5s\""
            )
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(instances(&p), (1, 1));

    // 16 clients, each with a request of 200 ms in flight: about 16 in flight, 4 per instance
    // wanted: it grows to max.
    let mut load = Load::start(port, 16);
    assert!(
        wait_until(Duration::from_secs(30), || instances(&p) == (3, 3)),
        "grew to 3: {:?}",
        instances(&p)
    );
    std::thread::sleep(Duration::from_secs(1));
    load.stop();
    let failed = load.failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{:?}", load.failures.lock().unwrap());
    let agent_log = std::fs::read_to_string(p.path().join(".cutover/logs/agent.log")).unwrap();
    assert!(agent_log.contains("scaling from 1 to"), "{agent_log}");

    // The load is gone: after the low-load wait it shrinks back to min, a light client still
    // answered throughout.
    let mut light = Load::start(port, 1);
    assert!(
        wait_until(Duration::from_secs(45), || instances(&p) == (1, 1)),
        "shrank to 1: {:?}",
        instances(&p)
    );
    light.stop();
    assert_eq!(
        light.failed.load(Ordering::Relaxed),
        0,
        "{:?}",
        light.failures.lock().unwrap()
    );
    let agent_log = std::fs::read_to_string(p.path().join(".cutover/logs/agent.log")).unwrap();
    assert!(agent_log.contains("scaled from 3 to 1"), "{agent_log}");
    // `status --json` says the last change as data.
    let status = json(&p.run(&["status", "--json"]));
    let scaled = &status["services"][0]["scaled"];
    assert_eq!(scaled["from"], 3, "{status}");
    assert_eq!(scaled["to"], 1, "{status}");
    assert_eq!(scaled["target_inflight"], 4, "{status}");
}
