//! `cutover build`: the parallel pipeline on real processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestProject, code, json, service, stderr, stdout};

fn project_with(services: &[(&str, &str)]) -> TestProject {
    let p = TestProject::git_repo();
    let mut toml = String::from("[project]\nname = \"demo\"\n\n");
    for (i, (name, extra)) in services.iter().enumerate() {
        p.service_dir(&format!("svc/{name}"));
        let port = 10000 + u16::try_from(i).unwrap();
        toml += &service(name, &format!("svc/{name}"), port, extra);
    }
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\n");
    p.commit("init");
    p
}

fn service_of<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {summary}"))
}

fn time(v: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn twenty_services_run_in_parallel() {
    let names: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    let specs: Vec<(&str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "checks = [\"sleep 1\"]\nbuild = \"sleep 1\""))
        .collect();
    let p = project_with(&specs);
    let out = p.run(&["build", "--all", "--json", "--max-parallel", "20"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    assert_eq!(summary["status"], "succeeded");
    let checks: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        summary["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let st = s["stages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|st| st["stage"] == "checks")
                    .expect("checks stage");
                (time(&st["started_at"]), time(&st["finished_at"]))
            })
            .collect();
    assert_eq!(checks.len(), 20);
    let last_start = checks.iter().map(|c| c.0).max().unwrap();
    let first_end = checks.iter().map(|c| c.1).min().unwrap();
    assert!(
        last_start < first_end,
        "every check started before the first finished: last start {last_start}, first end {first_end}"
    );
    for s in summary["services"].as_array().unwrap() {
        assert_eq!(s["result"], "succeeded");
        let stages: Vec<&str> = s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, ["detect", "checks", "build"]);
    }
}

#[test]
fn max_parallel_bounds_concurrency() {
    let specs = [
        ("a", "checks = [\"sleep 0.5\"]"),
        ("b", "checks = [\"sleep 0.5\"]"),
        ("c", "checks = [\"sleep 0.5\"]"),
    ];
    let p = project_with(&specs);
    let out = p.run(&["build", "--all", "--json", "--max-parallel", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    let mut spans: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let st = &service_of(&summary, n)["stages"][1];
            (time(&st["started_at"]), time(&st["finished_at"]))
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "checks overlapped with max_parallel 1: {spans:?}"
        );
    }
}

#[test]
fn a_failure_is_isolated_and_its_dependents_are_skipped() {
    let specs = [
        (
            "base",
            "checks = [\"echo checking base; for i in $(seq 1 30); do echo line-$i; done; exit 3\"]",
        ),
        ("mid", "depends_on = [\"base\"]\nbuild = \"echo built\""),
        ("top", "depends_on = [\"mid\"]"),
        ("solo", "checks = [\"true\"]\nbuild = \"echo solo\""),
    ];
    let p = project_with(&specs);
    let out = p.run(&["build", "--all", "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let summary = json(&out);
    assert_eq!(summary["status"], "failed");
    let base = service_of(&summary, "base");
    assert_eq!(base["result"], "failed");
    assert!(
        base["reason"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{base}"
    );
    let tail: Vec<&str> = base["tail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(tail.len(), 20);
    assert_eq!(tail.last(), Some(&"line-30"));
    assert_eq!(service_of(&summary, "mid")["result"], "skipped");
    assert_eq!(
        service_of(&summary, "mid")["reason"],
        "dependency `base` failed"
    );
    assert_eq!(service_of(&summary, "top")["result"], "skipped");
    assert_eq!(
        service_of(&summary, "top")["reason"],
        "dependency `mid` skipped"
    );
    assert_eq!(service_of(&summary, "solo")["result"], "succeeded");

    // The human summary shows the failed command's last lines.
    let out = p.run(&["build", "base"]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(text.contains("  | line-30"), "{text}");
    assert!(
        !text.contains("  | line-10\n"),
        "only the last 20 lines: {text}"
    );
}

#[test]
fn dependents_wait_for_their_dependencies() {
    let specs = [
        ("first", "build = \"sleep 0.5\""),
        ("second", "depends_on = [\"first\"]\nbuild = \"true\""),
    ];
    let p = project_with(&specs);
    let out = p.run(&["build", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    let first_build_end = time(&service_of(&summary, "first")["stages"][1]["finished_at"]);
    let second_build_start = time(&service_of(&summary, "second")["stages"][1]["started_at"]);
    assert!(second_build_start >= first_build_end);
}

#[test]
fn timeouts_and_missing_commands_fail_with_clear_reasons() {
    let specs = [
        ("slow", "timeout = \"1s\"\nchecks = [\"sleep 20\"]"),
        ("typo", "checks = [\"no-such-program-xyz --flag\"]"),
    ];
    let p = project_with(&specs);
    let started = Instant::now();
    let out = p.run(&["build", "--all", "--json"]);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(code(&out), 1);
    let summary = json(&out);
    let slow = service_of(&summary, "slow");
    assert_eq!(slow["reason"], "checks: `sleep 20` timed out after 1s");
    let typo = service_of(&summary, "typo");
    assert!(
        typo["reason"]
            .as_str()
            .unwrap()
            .contains("code 127 (command not found)"),
        "{typo}"
    );
    assert!(
        typo["tail"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("not found")),
        "{typo}"
    );
}

#[test]
fn build_snapshots_the_service_and_records_the_release() {
    let p = project_with(&[(
        "api",
        "build = \"test -f app.txt && test ! -e debug.log && echo $CUTOVER_SERVICE $CUTOVER_ENV > built.txt\"",
    )]);
    p.write("svc/api/debug.log", "ignored");
    p.write(".gitignore", ".cutover/\n*.log\n");
    let out = p.run(&["build", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    let release = service_of(&summary, "api")["release"]
        .as_str()
        .unwrap()
        .to_string();
    let sha = p.git(&["rev-parse", "--short=7", "HEAD"]);
    assert!(release.ends_with(&sha), "{release} ends with {sha}");
    let snap = format!(".cutover/releases/api/{release}");
    assert_eq!(
        p.read(&format!("{snap}/built.txt")).trim(),
        "api development"
    );
    assert!(!p.path().join(format!("{snap}/debug.log")).exists());

    let status: serde_json::Value = serde_json::from_str(&p.read(".cutover/status.json")).unwrap();
    assert_eq!(status["deployment_id"], summary["run"]);
    assert_eq!(status["status"], "succeeded");
    assert_eq!(status["env"], "development");
    assert_eq!(status["services"]["api"]["deployment_status"], "BUILT");
    assert_eq!(status["services"]["api"]["release"], release.as_str());
    assert_eq!(status["services"]["api"]["branch"], "main");

    let run = summary["run"].as_str().unwrap();
    assert!(run.starts_with("deploy-"), "{run}");
    let log = p.read(&format!(".cutover/logs/deployments/{run}.log"));
    assert!(log.contains("api: build started"), "{log}");
    let svc_log = p.read(&format!(".cutover/logs/deployments/{run}-api.log"));
    assert!(svc_log.contains("$ test -f app.txt"), "{svc_log}");
}

#[test]
fn named_services_are_forced_and_unknown_names_are_usage_errors() {
    let p = project_with(&[("api", ""), ("web", "")]);
    let out = p.run(&["build", "web", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    assert_eq!(service_of(&summary, "web")["result"], "succeeded");
    assert_eq!(service_of(&summary, "api")["result"], "skipped");
    let out = p.run(&["build", "wbe"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("unknown service `wbe`") && err.contains("did you mean `web`"),
        "{err}"
    );
}

#[test]
fn two_builds_at_once_keep_the_store_consistent() {
    let p = project_with(&[
        ("a", "build = \"sleep 0.3\""),
        ("b", "build = \"sleep 0.3\""),
    ]);
    let c1 = p
        .cutover()
        .args(["build", "--all", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let c2 = p
        .cutover()
        .args(["build", "--all", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (o1, o2) = (
        c1.wait_with_output().unwrap(),
        c2.wait_with_output().unwrap(),
    );
    assert_eq!(code(&o1), 0, "{}", stderr(&o1));
    assert_eq!(code(&o2), 0, "{}", stderr(&o2));
    let (s1, s2) = (json(&o1), json(&o2));
    assert_ne!(s1["run"], s2["run"]);
    for name in ["a", "b"] {
        let (r1, r2) = (
            &service_of(&s1, name)["release"],
            &service_of(&s2, name)["release"],
        );
        assert_ne!(r1, r2);
        for r in [r1, r2] {
            assert!(
                p.path()
                    .join(format!(".cutover/releases/{name}/{}", r.as_str().unwrap()))
                    .is_dir()
            );
        }
    }
}

#[test]
fn outside_git_build_all_works() {
    let p = TestProject::new();
    p.service_dir("a");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"x\"\n{}",
            service("a", "a", 9400, "build = \"true\"")
        ),
    );
    let out = p.run(&["build", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    assert!(
        service_of(&summary, "a")["release"]
            .as_str()
            .unwrap()
            .ends_with("-0000000")
    );
    let out = p.run(&["build"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn plain_progress_lines_on_a_pipe() {
    let p = project_with(&[("api", "checks = [\"true\"]")]);
    let out = p.run(&["build", "--all"]);
    assert_eq!(code(&out), 0);
    let err = stderr(&out);
    assert!(err.contains("api: checks started"), "{err}");
    assert!(err.contains("api: succeeded"), "{err}");
    let text = stdout(&out);
    assert!(
        text.contains("SERVICE") && text.contains("succeeded"),
        "{text}"
    );
}
