//! `cutover metrics`: DORA numbers checked against a history made with the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use chrono::{DateTime, Utc};
use common::runtime::{AgentGuard, app_service, app_toml, free_port, version};
use common::{TestProject, code, json, stderr, stdout};

/// Commits everything with this committer (and author) time.
fn commit_at(p: &TestProject, msg: &str, at: DateTime<Utc>) -> String {
    p.git(&["add", "-A"]);
    let date = format!("{} +0000", at.timestamp());
    let out = Command::new("git")
        .args(["commit", "-q", "-m", msg])
        .env("GIT_COMMITTER_DATE", &date)
        .env("GIT_AUTHOR_DATE", &date)
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.git(&["rev-parse", "HEAD"])
}

/// Deploys and returns (exit code, time before, time after).
fn deploy(p: &TestProject) -> (i32, DateTime<Utc>, DateTime<Utc>) {
    let before = Utc::now();
    let out = p.run(&["deploy"]);
    let after = Utc::now();
    (code(&out), before, after)
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// `lo - 1s <= x <= hi + 1s` (commit times have whole seconds).
fn within(x: f64, lo: f64, hi: f64, what: &str) {
    assert!(
        x >= lo - 1.0 && x <= hi + 1.0,
        "{what}: {x} not in [{lo}, {hi}]"
    );
}

#[test]
fn dora_numbers_match_a_history_with_a_failure_and_its_restore() {
    let port = free_port();
    let staging_port = free_port();
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"dora\"\n\n{}\n[environments.staging]\n[environments.staging.services.api]\nport = {staging_port}\n",
            app_toml("api", "svc/api", port, "")
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    let now = Utc::now();
    let c1 = now - chrono::TimeDelta::hours(3);
    let c2 = now - chrono::TimeDelta::hours(2);
    let c3 = now - chrono::TimeDelta::hours(1);
    let _agent = AgentGuard(&p);

    // 1. v1, committed 3h ago: deployed.
    commit_at(&p, "v1", c1);
    let (rc, b1, a1) = deploy(&p);
    assert_eq!(rc, 0);
    // 2. v2, committed 2h ago, never gets healthy: the deploy fails at verify.
    app_service(&p, "svc/api", "v2");
    p.write("svc/api/unhealthy", "");
    let toml = p.read("cutover.toml").replace(
        "failure_threshold = 30 }",
        "failure_threshold = 30, ready_timeout = \"2s\" }",
    );
    p.write("cutover.toml", &toml);
    commit_at(&p, "v2 broken", c2);
    let (rc, b2, a2) = deploy(&p);
    assert_eq!(rc, 1);
    assert_eq!(version(port).as_deref(), Some("v1"));
    // 3. v3, committed 1h ago, fixes it: restored.
    std::fs::remove_file(p.path().join("svc/api/unhealthy")).unwrap();
    app_service(&p, "svc/api", "v3");
    commit_at(&p, "v3 fixed", c3);
    let (rc, b3, a3) = deploy(&p);
    assert_eq!(rc, 0);
    assert_eq!(version(port).as_deref(), Some("v3"));

    let out = p.run(&["metrics", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let m = json(&out);
    assert_eq!(m["env"], "development");
    // Two deployments (v1, v3) over the default 30 days.
    assert_eq!(m["deployments"], 2);
    assert_eq!(num(&m["deployment_frequency_per_day"]), 2.0 / 30.0);
    // Lead times: v1 ~3h, v3 ~1h, each from its commit to its deploy.
    let (l1_lo, l1_hi) = (secs(b1 - c1), secs(a1 - c1));
    let (l3_lo, l3_hi) = (secs(b3 - c3), secs(a3 - c3));
    within(
        num(&m["lead_time_seconds"]["median"]),
        (l1_lo + l3_lo) / 2.0,
        (l1_hi + l3_hi) / 2.0,
        "lead time median",
    );
    within(
        num(&m["lead_time_seconds"]["p90"]),
        l1_lo,
        l1_hi,
        "lead time p90",
    );
    assert_eq!(m["lead_time_skipped"], 0);
    // One of three deploy runs failed.
    assert_eq!(num(&m["change_failure_rate"]), 1.0 / 3.0);
    // v2's failure was restored when v3 became ACTIVE.
    within(
        num(&m["time_to_restore_seconds"]["median"]),
        secs(b3 - a2),
        secs(a3 - b2),
        "time to restore",
    );

    // Per environment: staging has no history.
    let out = p.run(&["metrics", "--env", "staging", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = json(&out);
    assert_eq!(s["deployments"], 0);
    assert_eq!(num(&s["deployment_frequency_per_day"]), 0.0);
    assert!(s["lead_time_seconds"]["median"].is_null());
    assert!(s["lead_time_seconds"]["p90"].is_null());
    assert!(s["change_failure_rate"].is_null());
    assert!(s["time_to_restore_seconds"]["median"].is_null());

    // The table for people, with the definitions.
    let out = p.run(&["metrics", "--since", "7d"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "deployment frequency",
        "lead time for changes",
        "change failure rate",
        "33.3% (1 of 3 deploy runs)",
        "time to restore",
        "commit time of the release's sha",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert_eq!(
        num(
            &json(&p.run(&["metrics", "--since", "12h", "--json"]))["deployment_frequency_per_day"]
        ),
        4.0
    );

    // Commits git no longer knows (history rewritten and pruned) are skipped and counted.
    p.git(&["reset", "-q", "--hard", "HEAD~2"]);
    p.git(&["reflog", "expire", "--expire=now", "--all"]);
    p.git(&["gc", "-q", "--prune=now"]);
    let m = json(&p.run(&["metrics", "--json"]));
    assert_eq!(m["deployments"], 2);
    assert_eq!(m["lead_time_skipped"], 1);
    within(
        num(&m["lead_time_seconds"]["median"]),
        l1_lo,
        l1_hi,
        "lead time of v1 alone",
    );
    let text = stdout(&p.run(&["metrics"]));
    assert!(text.contains("1 skipped: sha unknown to git"), "{text}");
}

#[test]
fn metrics_refuses_a_window_that_is_not_a_duration() {
    let p = TestProject::git_repo();
    p.write("cutover.toml", "[project]\nname = \"dora\"\n");
    for bad in ["thirty days", "0", "-3d", ""] {
        let out = p.run(&["metrics", &format!("--since={bad}")]);
        assert_eq!(code(&out), 2, "--since {bad:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("--since"), "{err}");
        assert!(err.contains("30d"), "the help names a valid value: {err}");
    }
    // No history at all: zero deployments, no numbers, exit 0.
    let out = p.run(&["metrics", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let m = json(&out);
    assert_eq!(m["deployments"], 0);
    assert!(m["change_failure_rate"].is_null());
    assert!(
        !p.path().join(".cutover").exists(),
        "metrics leaves no state"
    );
}
