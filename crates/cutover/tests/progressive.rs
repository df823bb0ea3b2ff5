//! Progressive delivery end to end: canary steps judged on the proxy's own numbers, automatic
//! rollback with the numbers, promote/abort from a second process, rolling updates and
//! `--atomic`, with the real binary, a real agent and real HTTP load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::runtime::{
    AgentGuard, Load, app_service, app_toml, free_port, one_service, version, wait_until,
};
use common::{TestProject, code, json, stderr, stdout};

/// A canary table: `steps` as TOML, judged every 300ms.
fn canary(steps: &str, extra: &str) -> String {
    format!(
        "strategy = \"canary\"\n[services.api.canary]\nsteps = {steps}\ninterval = \"300ms\"\n\
         max_error_rate = 0.05\nmax_p99_latency = \"1000ms\"\nmin_requests = 20\n{extra}\n"
    )
}

/// Starts `cutover deploy --json` in the background.
fn deploy_in_background(p: &TestProject, args: &[&str]) -> Child {
    let mut all = vec!["deploy", "--json"];
    all.extend_from_slice(args);
    p.cutover()
        .args(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a background deploy; (exit code, summary JSON, stderr).
fn finish(child: Child) -> (i32, serde_json::Value, String) {
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    let doc = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {}\n{err}", stdout(&out)));
    (code(&out), doc, err)
}

/// The `canary` object of `api` in `status --json`, if a canary is in progress.
fn canary_status(p: &TestProject) -> Option<serde_json::Value> {
    let doc = json(&p.run(&["status", "--json"]));
    let c = doc["services"][0]["canary"].clone();
    (!c.is_null()).then_some(c)
}

fn counts(load: &Load) -> BTreeMap<String, u64> {
    load.versions.lock().unwrap().clone()
}

/// Requests per version served between two snapshots.
fn served(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(v, n)| (v.clone(), n - before.get(v).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn service_result(doc: &serde_json::Value, name: &str) -> (String, String) {
    let s = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc}"));
    (
        s["result"].as_str().unwrap_or("").to_string(),
        s["reason"].as_str().unwrap_or("").to_string(),
    )
}

fn phase_of(p: &TestProject, service: &str, release: &str) -> String {
    let doc = json(&p.run(&["releases", service, "--json"]));
    doc["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == release)
        .map(|r| r["phase"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn a_canary_shares_traffic_by_weight_then_goes_live_without_a_failed_request() {
    let port = free_port();
    let p = one_service(
        port,
        &canary(r#"[{ weight = 25, pause = "4s" }, { weight = 100 }]"#, ""),
    );
    let _agent = AgentGuard(&p);
    // The first release has no stable set to compare with: it goes live like blue-green.
    let first = p.run(&["deploy", "--json"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert_eq!(version(port).as_deref(), Some("v1"));

    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    let mut load = Load::start(port, 4);
    let child = deploy_in_background(&p, &[]);
    assert!(
        wait_until(Duration::from_secs(30), || canary_status(&p)
            .is_some_and(|c| c["weight"] == 25)),
        "the canary never reached 25%"
    );
    let status = json(&p.run(&["status", "--json"]));
    let traffic = &status["services"][0]["traffic"];
    assert_eq!(traffic.as_array().unwrap().len(), 2, "{status}");
    assert!(
        traffic
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["weight"] == 25),
        "{status}"
    );
    // The share over a window of the step: within a few percent of the weight.
    let before = counts(&load);
    std::thread::sleep(Duration::from_millis(2500));
    let during = served(&before, &counts(&load));
    let total: u64 = during.values().sum();
    let canary_share = *during.get("v2").unwrap_or(&0) as f64 / total as f64;
    assert!(
        total >= 100,
        "too little load to judge the split: {during:?}"
    );
    assert!(
        (canary_share - 0.25).abs() <= 0.05,
        "canary share {canary_share:.3} over {total} requests is not 25% ± 5: {during:?}"
    );
    // The plain status shows the step, weight and the canary's judgement.
    let plain = stdout(&p.run(&["status"]));
    assert!(
        plain.contains("canary") && plain.contains("at 25%"),
        "{plain}"
    );

    let (exit, doc, err) = finish(child);
    assert_eq!(exit, 0, "{doc}\n{err}");
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert!(err.contains("canary step 1/2"), "{err}");
    let before = counts(&load);
    std::thread::sleep(Duration::from_millis(800));
    let after = served(&before, &counts(&load));
    load.stop();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["v2"],
        "only v2 at the end: {after:?}"
    );
    assert_eq!(
        load.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "failed requests: {:?}",
        load.failures.lock().unwrap()
    );
    assert!(canary_status(&p).is_none());
}

#[test]
fn a_failing_canary_is_rolled_back_with_its_numbers_while_stable_keeps_serving() {
    let port = free_port();
    let p = one_service(
        port,
        &canary(r#"[{ weight = 50, pause = "30s" }, { weight = 100 }]"#, ""),
    );
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    let v1 = json(&p.run(&["status", "--json"]))["services"][0]["release"]
        .as_str()
        .unwrap()
        .to_string();

    // v2 answers 500 on every other request.
    p.write("svc/api/VERSION", "v2");
    p.write("svc/api/fail_half", "");
    p.commit("v2 fails half");
    let mut load = Load::start(port, 4);
    let (exit, doc, err) = finish(deploy_in_background(&p, &[]));
    // Requests already on their way to the canary when it was judged finish first.
    std::thread::sleep(Duration::from_millis(300));
    let before = counts(&load);
    std::thread::sleep(Duration::from_millis(500));
    let after = served(&before, &counts(&load));
    load.stop();

    assert_eq!(exit, 1, "{doc}\n{err}");
    assert_eq!(doc["status"], "rolled_back", "{doc}");
    let (result, reason) = service_result(&doc, "api");
    assert_eq!(result, "rolled_back", "{doc}");
    assert!(
        reason.contains("error rate")
            && reason.contains("> 0.05 over")
            && reason.contains("at 50%"),
        "the reason has the numbers: {reason}"
    );
    let v2 = doc["services"][0]["release"].as_str().unwrap();
    assert_eq!(phase_of(&p, "api", v2), "ROLLED_BACK");
    assert_eq!(phase_of(&p, "api", &v1), "ACTIVE");
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["v1"],
        "stable serves alone: {after:?}"
    );
    assert!(
        *counts(&load).get("v1").unwrap() > 50,
        "stable kept serving"
    );
    assert_eq!(version(port).as_deref(), Some("v1"));
}

#[test]
fn a_slow_canary_is_rolled_back_and_low_traffic_gives_no_verdict() {
    let port = free_port();
    let p = one_service(
        port,
        &canary(r#"[{ weight = 50, pause = "20s" }, { weight = 100 }]"#, ""),
    );
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);

    // p99 over the 1000ms limit.
    p.write("svc/api/VERSION", "v2");
    p.write("svc/api/slow", "1.2");
    p.commit("v2 slow");
    let mut load = Load::start(port, 8);
    let (exit, doc, err) = finish(deploy_in_background(&p, &[]));
    load.stop();
    assert_eq!(exit, 1, "{doc}\n{err}");
    let (result, reason) = service_result(&doc, "api");
    assert_eq!(result, "rolled_back");
    assert!(
        reason.contains("p99") && reason.contains("> 1000ms"),
        "{reason}"
    );
    assert_eq!(version(port).as_deref(), Some("v1"));

    // No load at all: judgements say "no verdict" until verdict_timeout, then roll back.
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"rt\"\n\n{}",
            app_toml(
                "api",
                "svc/api",
                port,
                &canary(
                    r#"[{ weight = 50 }, { weight = 100 }]"#,
                    "verdict_timeout = \"2s\""
                )
            )
        ),
    );
    std::fs::remove_file(p.path().join("svc/api/slow")).unwrap();
    p.write("svc/api/VERSION", "v3");
    p.commit("v3, no traffic");
    let child = deploy_in_background(&p, &[]);
    assert!(
        wait_until(Duration::from_secs(30), || canary_status(&p)
            .is_some_and(|c| c["judgement"]["verdict"] == "no_verdict")),
        "status never showed a judgement without verdict"
    );
    let (exit, doc, err) = finish(child);
    assert_eq!(exit, 1, "{doc}\n{err}");
    let (result, reason) = service_result(&doc, "api");
    assert_eq!(result, "rolled_back");
    assert!(
        reason.contains("no verdict:") && reason.contains("< min_requests 20 in 2s"),
        "{reason}"
    );
    assert_eq!(version(port).as_deref(), Some("v1"));
}

#[test]
fn promote_abort_and_manual_pauses_work_from_a_second_process() {
    let port = free_port();
    let p = one_service(
        port,
        &canary(
            r#"[{ weight = 20, pause = "manual" }, { weight = 60, pause = "manual" }, { weight = 100 }]"#,
            "",
        ),
    );
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);

    // Nothing to promote yet.
    let none = p.run(&["promote", "api"]);
    assert_eq!(code(&none), 1);
    assert!(
        stderr(&none).contains("no canary of api is in progress"),
        "{}",
        stderr(&none)
    );

    let mut load = Load::start(port, 2);
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    let child = deploy_in_background(&p, &[]);
    assert!(
        wait_until(Duration::from_secs(30), || canary_status(&p).is_some_and(
            |c| {
                c["step"] == 1
                    && c["state"] == "waiting_for_promote"
                    && c["judgement"]["verdict"] == "pass"
            }
        )),
        "step 1 never waited for promote with a passing judgement: {:?}",
        canary_status(&p)
    );
    // A manual pause holds: still step 1 a moment later.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(canary_status(&p).unwrap()["step"], 1);
    let promoted = p.run(&["promote", "api"]);
    assert_eq!(code(&promoted), 0, "{}", stderr(&promoted));
    // `promote` ends this and every later pause: the deploy finishes on its own.
    let (exit, doc, err) = finish(child);
    assert_eq!(exit, 0, "{doc}\n{err}");
    assert!(err.contains("canary step 3/3"), "{err}");
    assert_eq!(version(port).as_deref(), Some("v2"));

    // Abort from a second process.
    p.write("svc/api/VERSION", "v3");
    p.commit("v3");
    let child = deploy_in_background(&p, &[]);
    assert!(wait_until(Duration::from_secs(30), || canary_status(&p).is_some()));
    let aborted = p.run(&["abort", "api"]);
    assert_eq!(code(&aborted), 0, "{}", stderr(&aborted));
    let (exit, doc, _) = finish(child);
    assert_eq!(exit, 1);
    let (result, reason) = service_result(&doc, "api");
    assert_eq!(result, "rolled_back");
    assert!(reason.contains("aborted by `cutover abort`"), "{reason}");
    assert_eq!(version(port).as_deref(), Some("v2"));

    // promote --full: 100% at once, no more steps.
    p.write("svc/api/VERSION", "v4");
    p.commit("v4");
    let child = deploy_in_background(&p, &[]);
    assert!(wait_until(Duration::from_secs(30), || canary_status(&p).is_some()));
    assert_eq!(code(&p.run(&["promote", "api", "--full"])), 0);
    let (exit, doc, err) = finish(child);
    assert_eq!(exit, 0, "{doc}\n{err}");
    assert!(!err.contains("canary step 2/3"), "{err}");
    load.stop();
    assert_eq!(version(port).as_deref(), Some("v4"));
    assert_eq!(load.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn a_rolling_update_under_load_fails_no_request_and_a_bad_instance_stops_it() {
    let port = free_port();
    let p = one_service(port, "strategy = \"rolling\"\ninstances = 2");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);

    // v2 with one more instance: replaced one at a time, scaled up on the way.
    let toml = p
        .read("cutover.toml")
        .replace("instances = 2", "instances = 3");
    p.write("cutover.toml", &toml);
    p.write("svc/api/VERSION", "v2");
    p.commit("v2 x3");
    let mut load = Load::start(port, 4);
    let (exit, doc, err) = finish(deploy_in_background(&p, &[]));
    assert_eq!(exit, 0, "{doc}\n{err}");
    assert!(err.contains("3/3 instances replaced"), "{err}");
    let before = counts(&load);
    std::thread::sleep(Duration::from_millis(500));
    let after = served(&before, &counts(&load));
    assert_eq!(after.keys().collect::<Vec<_>>(), ["v2"], "{after:?}");
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(status["services"][0]["instances"]["ready"], 3, "{status}");
    assert_eq!(status["services"][0]["instances"]["desired"], 3, "{status}");

    // v3 never becomes healthy (within its ready_timeout): the roll stops and v2 keeps its
    // three instances.
    p.write("svc/api/VERSION", "v3");
    p.write("svc/api/unhealthy", "");
    let toml = p.read("cutover.toml").replace(
        "failure_threshold = 30 }",
        "failure_threshold = 30, ready_timeout = \"3s\" }",
    );
    p.write("cutover.toml", &toml);
    p.commit("v3 sick");
    let (exit, doc, _) = finish(deploy_in_background(&p, &[]));
    load.stop();
    assert_eq!(exit, 1, "{doc}");
    let (result, reason) = service_result(&doc, "api");
    assert_eq!(result, "failed");
    assert!(reason.contains("the roll stopped"), "{reason}");
    assert_eq!(version(port).as_deref(), Some("v2"));
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(status["services"][0]["instances"]["ready"], 3, "{status}");
    assert_eq!(
        load.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "failed requests: {:?}",
        load.failures.lock().unwrap()
    );
}

#[test]
fn atomic_returns_every_service_of_the_run_to_its_previous_release() {
    let ports = [free_port(), free_port(), free_port()];
    let p = TestProject::git_repo();
    let mut toml = "[project]\nname = \"atomic\"\n\n".to_string();
    for (i, name) in ["db", "api", "web"].iter().enumerate() {
        app_service(&p, &format!("svc/{name}"), "v1");
        let deps = match *name {
            "api" => "depends_on = [\"db\"]",
            "web" => "depends_on = [\"api\"]",
            _ => "",
        };
        toml.push_str(&app_toml(name, &format!("svc/{name}"), ports[i], deps));
    }
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);

    for name in ["db", "api", "web"] {
        p.write(&format!("svc/{name}/VERSION"), "v2");
    }
    // web's v2 exits at start.
    p.write("svc/web/crash", "");
    p.commit("v2, web broken");
    let out = p.run(&["deploy", "--atomic", "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(service_result(&doc, "web").0, "failed", "{doc}");
    for name in ["db", "api"] {
        let (result, reason) = service_result(&doc, name);
        assert_eq!(result, "rolled_back", "{doc}");
        assert!(
            reason.contains("--atomic") && reason.contains("web failed"),
            "{reason}"
        );
    }
    for port in ports {
        assert_eq!(version(port).as_deref(), Some("v1"));
    }
    // dependents first: api went back before db.
    let err = stderr(&out);
    let (api_at, db_at) = (
        err.find("api: rolling back").unwrap(),
        err.find("db: rolling back").unwrap(),
    );
    assert!(api_at < db_at, "{err}");
    let db_v2 = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap()["release"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(phase_of(&p, "db", &db_v2), "ROLLED_BACK");
    // The rollbacks are typed events of the run in the store, as a deploy's events are.
    let db = p.path().join(".cutover/state.db");
    let events = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             for (k, s, d) in c.execute(\"select kind, service, data from events where kind like 'rollback.%' order by seq\"):\n\
             \x20   print(k, s, json.loads(d).get('result', ''))",
        ])
        .arg(&db)
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    for line in [
        "rollback.started api",
        "rollback.finished api succeeded",
        "rollback.started db",
        "rollback.finished db succeeded",
    ] {
        assert!(events.contains(line), "{line} in:\n{events}");
    }
}

#[test]
fn ctrl_c_during_a_canary_puts_all_traffic_back_on_stable() {
    let port = free_port();
    let p = one_service(
        port,
        &canary(
            r#"[{ weight = 50, pause = "manual" }, { weight = 100 }]"#,
            "",
        ),
    );
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    let child = deploy_in_background(&p, &[]);
    assert!(wait_until(Duration::from_secs(30), || canary_status(&p).is_some()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (exit, doc, err) = finish(child);
    assert_eq!(exit, 130, "{doc}\n{err}");
    let (result, reason) = service_result(&doc, "api");
    assert_eq!(result, "canceled", "{doc}");
    assert!(reason.contains("back on the stable release"), "{reason}");
    assert!(canary_status(&p).is_none());
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(
        status["services"][0]["traffic"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    assert_eq!(version(port).as_deref(), Some("v1"));
}

#[test]
fn a_deploy_killed_mid_canary_goes_on_under_the_agent_and_the_store_agrees() {
    let port = free_port();
    let p = one_service(
        port,
        &canary(
            r#"[{ weight = 20, pause = "1s" }, { weight = 50, pause = "manual" }, { weight = 100 }]"#,
            "",
        ),
    );
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    let mut load = Load::start(port, 2);
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    let mut child = deploy_in_background(&p, &[]);
    assert!(
        wait_until(Duration::from_secs(30), || canary_status(&p).is_some_and(
            |c| c["step"] == 2 && c["state"] == "waiting_for_promote"
        )),
        "the canary never reached its manual step: {:?}",
        canary_status(&p)
    );
    let canary_release = canary_status(&p).unwrap()["release"]
        .as_str()
        .unwrap()
        .to_string();
    child.kill().unwrap(); // SIGKILL: the deploy's process dies mid-canary.
    let _ = child.wait();

    // The agent goes on with it, and the store says so: the run is in progress, the release is
    // not CANCELED.
    let status = json(&p.run(&["status", "--json"]));
    assert_eq!(status["services"][0]["canary"]["weight"], 50, "{status}");
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "the run is still in progress: {status}");
    let releases = json(&p.run(&["releases", "api", "--json"]));
    let phase = releases["releases"][0]["phase"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(releases["releases"][0]["id"], canary_release.as_str());
    assert!(
        phase == "DEPLOYING" || phase == "VERIFYING",
        "the canary release is in progress, not {phase}"
    );

    // A new deploy of the service does not wait silently: it refuses at once naming the canary.
    p.write("svc/api/VERSION", "v3");
    p.commit("v3");
    let started = std::time::Instant::now();
    let out = p.run(&["deploy", "api"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = stderr(&out);
    assert!(
        err.contains("canary of api") && err.contains("50%") && err.contains("cutover promote api"),
        "{err}"
    );

    // promote finishes it under the agent; the agent records the outcome.
    let out = p.run(&["promote", "api"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        wait_until(Duration::from_secs(30), || {
            let r = json(&p.run(&["releases", "api", "--json"]));
            r["releases"][0]["phase"] == "ACTIVE"
        }),
        "the agent recorded the canary ACTIVE"
    );
    load.stop();
    assert_eq!(version(port).as_deref(), Some("v2"));
    let releases = json(&p.run(&["releases", "api", "--json"]));
    assert_eq!(releases["releases"][0]["id"], canary_release.as_str());
    assert_eq!(releases["releases"][1]["phase"], "SUPERSEDED");
    let status = json(&p.run(&["status", "--json"]));
    assert!(status["runs"].as_array().unwrap().is_empty(), "{status}");
    assert_eq!(status["services"][0]["release"], canary_release.as_str());
    assert_eq!(status["services"][0]["phase"], "ACTIVE");
    assert_eq!(load.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The next deploy is no longer refused: its own canary starts (and is aborted here).
    let child = deploy_in_background(&p, &["api"]);
    assert!(wait_until(Duration::from_secs(30), || canary_status(&p)
        .is_some_and(|c| c["release"] != canary_release.as_str())));
    assert_eq!(code(&p.run(&["abort", "api"])), 0);
    let (exit, doc, err) = finish(child);
    assert_eq!(exit, 1, "{doc}\n{err}");
    assert_eq!(service_result(&doc, "api").0, "rolled_back");
}
