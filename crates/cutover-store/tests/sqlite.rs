//! The SQLite release store against real database files in temp dirs.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cutover_store::{
    NewRelease, ReleasePhase, ReleaseStore, RunKind, RunStatus, SqliteStore, StoreError,
};
use serde_json::json;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn t0() -> DateTime<Utc> {
    at("2026-11-23T10:15:00.123Z")
}

fn store(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join(".cutover/state.db")).unwrap()
}

fn new_release(
    service: &str,
    env: &str,
    run_id: &str,
    sha: Option<&str>,
    created_at: DateTime<Utc>,
) -> NewRelease {
    NewRelease {
        service: service.to_string(),
        env: env.to_string(),
        run_id: run_id.to_string(),
        sha: sha.map(str::to_string),
        dirty: false,
        branch: Some("main".to_string()),
        config_hash: "cfg-1".to_string(),
        commit_at: Some(at("2026-11-23T09:00:00.000Z")),
        created_at,
    }
}

const SHA: &str = "abc1234def5678abc1234def5678abc1234def56";

#[test]
fn store_is_send_sync_and_object_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SqliteStore>();
    let dir = tempfile::tempdir().unwrap();
    let boxed: Box<dyn ReleaseStore> = Box::new(store(dir.path()));
    assert!(boxed.runs(None, 10).unwrap().is_empty());
}

#[test]
fn run_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), Some(4242))
        .unwrap();
    assert_eq!(run.id, "deploy-20261123-101500");
    assert_eq!(run.kind, RunKind::Deploy);
    assert_eq!(run.env, "staging");
    assert_eq!(run.status, RunStatus::InProgress);
    assert_eq!(run.started_at, t0());
    assert_eq!(run.finished_at, None);
    assert_eq!(run.pid, Some(4242));
    assert_eq!(run.reason, None);
    assert_eq!(s.run(&run.id).unwrap(), Some(run.clone()));
    assert_eq!(s.runs_in_progress().unwrap(), vec![run.clone()]);

    let end = t0() + Duration::seconds(42);
    s.finish_run(
        &run.id,
        RunStatus::Failed,
        end,
        Some("api: probe /health got 503"),
    )
    .unwrap();
    let finished = s.run(&run.id).unwrap().unwrap();
    assert_eq!(finished.status, RunStatus::Failed);
    assert_eq!(finished.finished_at, Some(end));
    assert_eq!(
        finished.reason.as_deref(),
        Some("api: probe /health got 503")
    );
    assert!(s.runs_in_progress().unwrap().is_empty());
    assert_eq!(s.run("deploy-19990101-000000").unwrap(), None);
}

#[test]
fn finish_unknown_run_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let err = s
        .finish_run("deploy-nope", RunStatus::Succeeded, t0(), None)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref what } if what.contains("deploy-nope")),
        "{err}"
    );
}

#[test]
fn run_ids_get_suffixes_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let a = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    // Same second, another millisecond and kind and env: the id space is shared (rollbacks
    // have their own prefix).
    let b = s
        .create_run(
            RunKind::Build,
            "production",
            t0() + Duration::milliseconds(500),
            None,
        )
        .unwrap();
    let c = s
        .create_run(RunKind::Rollback, "staging", t0(), None)
        .unwrap();
    let d = s
        .create_run(
            RunKind::Deploy,
            "staging",
            t0() + Duration::seconds(1),
            None,
        )
        .unwrap();
    assert_eq!(a.id, "deploy-20261123-101500");
    assert_eq!(b.id, "deploy-20261123-101500-2");
    // A rollback's id says it is one, as its log file's name does.
    assert_eq!(c.id, "rollback-20261123-101500");
    assert_eq!(d.id, "deploy-20261123-101501");
    let e = s
        .create_run(RunKind::Rollback, "production", t0(), None)
        .unwrap();
    assert_eq!(e.id, "rollback-20261123-101500-2");
}

#[test]
fn run_ids_use_utc() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let local = chrono::FixedOffset::east_opt(5 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 11, 23, 15, 15, 0)
        .unwrap();
    let run = s
        .create_run(RunKind::Deploy, "staging", local.with_timezone(&Utc), None)
        .unwrap();
    assert_eq!(run.id, "deploy-20261123-101500");
}

#[test]
fn runs_are_listed_newest_first_per_env_with_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let old = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let newest = s
        .create_run(RunKind::Deploy, "staging", t0() + Duration::hours(2), None)
        .unwrap();
    let prod = s
        .create_run(
            RunKind::Deploy,
            "production",
            t0() + Duration::hours(1),
            None,
        )
        .unwrap();
    let same_second = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();

    let ids = |runs: Vec<cutover_store::Run>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.runs(Some("staging"), 10).unwrap()),
        vec![newest.id.clone(), same_second.id.clone(), old.id.clone()]
    );
    assert_eq!(
        ids(s.runs(None, 10).unwrap()),
        vec![
            newest.id.clone(),
            prod.id.clone(),
            same_second.id.clone(),
            old.id.clone()
        ]
    );
    assert_eq!(
        ids(s.runs(Some("staging"), 1).unwrap()),
        vec![newest.id.clone()]
    );
    assert!(s.runs(Some("staging"), 0).unwrap().is_empty());
    assert!(s.runs(Some("nowhere"), 10).unwrap().is_empty());
    assert_eq!(s.runs(None, usize::MAX).unwrap().len(), 4);
    assert_eq!(s.runs_in_progress().unwrap().len(), 4);
}

#[test]
fn release_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let mut new = new_release("pr-review", "staging", &run.id, Some(SHA), t0());
    new.dirty = true;
    let r = s.create_release(&new).unwrap();
    assert_eq!(r.id, "20261123-101500-abc1234");
    assert_eq!(r.service, "pr-review");
    assert_eq!(r.env, "staging");
    assert_eq!(r.run_id, run.id);
    assert_eq!(r.sha.as_deref(), Some(SHA));
    assert!(r.dirty);
    assert_eq!(r.branch.as_deref(), Some("main"));
    assert_eq!(r.config_hash, "cfg-1");
    assert_eq!(r.artifact, None);
    assert_eq!(r.phase, ReleasePhase::Pending);
    assert_eq!(r.reason, None);
    assert_eq!(r.created_at, t0());
    assert_eq!(r.updated_at, t0());
    assert_eq!(r.activated_at, None);
    assert_eq!(r.commit_at, Some(at("2026-11-23T09:00:00Z")));
    assert_eq!(s.release("pr-review", &r.id).unwrap(), Some(r.clone()));
    assert_eq!(s.release("other", &r.id).unwrap(), None);

    s.set_artifact("pr-review", &r.id, ".cutover/releases/pr-review/x")
        .unwrap();
    let with_artifact = s.release("pr-review", &r.id).unwrap().unwrap();
    assert_eq!(
        with_artifact.artifact.as_deref(),
        Some(".cutover/releases/pr-review/x")
    );
    assert_eq!(
        s.releases("pr-review", "staging", 10).unwrap(),
        vec![with_artifact]
    );

    let err = s.set_artifact("pr-review", "nope", "x").unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[test]
fn release_without_sha_or_optional_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Build, "development", t0(), None)
        .unwrap();
    let mut new = new_release("bot", "development", &run.id, None, t0());
    new.branch = None;
    new.commit_at = None;
    let r = s.create_release(&new).unwrap();
    assert_eq!(r.id, "20261123-101500-0000000");
    assert_eq!(r.sha, None);
    assert_eq!(r.branch, None);
    assert_eq!(r.commit_at, None);
    assert_eq!(s.release("bot", &r.id).unwrap(), Some(r));
}

#[test]
fn release_needs_an_existing_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let err = s
        .create_release(&new_release(
            "api",
            "staging",
            "deploy-missing",
            Some(SHA),
            t0(),
        ))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref what } if what.contains("deploy-missing")),
        "{err}"
    );
}

#[test]
fn release_ids_get_suffixes_per_service_across_envs() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let id = |service: &str, env: &str| {
        s.create_release(&new_release(service, env, &run.id, Some(SHA), t0()))
            .unwrap()
            .id
    };
    assert_eq!(id("api", "staging"), "20261123-101500-abc1234");
    assert_eq!(id("api", "staging"), "20261123-101500-abc1234-2");
    assert_eq!(id("api", "production"), "20261123-101500-abc1234-3");
    // Another service has its own id space.
    assert_eq!(id("web", "staging"), "20261123-101500-abc1234");
    // Another sha in the same second is another id.
    let other = s
        .create_release(&new_release(
            "api",
            "staging",
            &run.id,
            Some("fffffff0"),
            t0(),
        ))
        .unwrap();
    assert_eq!(other.id, "20261123-101500-fffffff");
}

#[test]
fn releases_are_newest_first_even_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let later = s
        .create_release(&new_release(
            "api",
            "staging",
            &run.id,
            Some(SHA),
            t0() + Duration::minutes(5),
        ))
        .unwrap();
    let first = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();
    let second = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();
    let third = s
        .create_release(&new_release("api", "staging", &run.id, None, t0()))
        .unwrap();
    s.create_release(&new_release(
        "api",
        "production",
        &run.id,
        Some(SHA),
        t0() + Duration::hours(1),
    ))
    .unwrap();
    s.create_release(&new_release(
        "web",
        "staging",
        &run.id,
        Some(SHA),
        t0() + Duration::hours(1),
    ))
    .unwrap();

    let ids: Vec<_> = s
        .releases("api", "staging", 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![later.id.clone(), third.id, second.id, first.id]);
    let limited: Vec<_> = s
        .releases("api", "staging", 1)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(limited, vec![later.id]);
    assert!(s.releases("api", "nowhere", 10).unwrap().is_empty());
}

#[test]
fn phases_move_forward_to_active() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let r = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();

    let mut now = t0();
    for phase in [
        ReleasePhase::Validating,
        ReleasePhase::Building,
        ReleasePhase::Deploying,
        ReleasePhase::Verifying,
    ] {
        now += Duration::seconds(1);
        let updated = s.set_phase("api", &r.id, phase, None, now).unwrap();
        assert_eq!(updated.phase, phase);
        assert_eq!(updated.updated_at, now);
        assert_eq!(updated.activated_at, None);
    }
    let verifying = s
        .set_phase("api", &r.id, ReleasePhase::Verifying, Some("x"), now)
        .unwrap_err();
    assert!(matches!(verifying, StoreError::InvalidTransition { .. }));

    now += Duration::seconds(1);
    let active = s
        .set_phase("api", &r.id, ReleasePhase::Active, None, now)
        .unwrap();
    assert_eq!(active.phase, ReleasePhase::Active);
    assert_eq!(active.activated_at, Some(now));
    assert_eq!(active.updated_at, now);
    assert_eq!(active.created_at, t0());
    assert_eq!(
        s.active_release("api", "staging").unwrap(),
        Some(active.clone())
    );
    assert_eq!(s.active_release("api", "production").unwrap(), None);
    assert_eq!(s.release("api", &r.id).unwrap(), Some(active));
}

#[test]
fn reason_is_set_when_given_and_kept_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let r = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();
    let r1 = s
        .set_phase(
            "api",
            &r.id,
            ReleasePhase::Deploying,
            Some("manual rollback target"),
            t0(),
        )
        .unwrap();
    assert_eq!(r1.reason.as_deref(), Some("manual rollback target"));
    let r2 = s
        .set_phase("api", &r.id, ReleasePhase::Verifying, None, t0())
        .unwrap();
    assert_eq!(r2.reason.as_deref(), Some("manual rollback target"));
    let r3 = s
        .set_phase(
            "api",
            &r.id,
            ReleasePhase::Failed,
            Some("probe /health: 503 x3"),
            t0(),
        )
        .unwrap();
    assert_eq!(r3.reason.as_deref(), Some("probe /health: 503 x3"));
    assert_eq!(r3.activated_at, None);
}

#[test]
fn activating_supersedes_the_previous_active_release_of_that_env() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let make = |service: &str, env: &str, minutes: i64| {
        s.create_release(&new_release(
            service,
            env,
            &run.id,
            Some(SHA),
            t0() + Duration::minutes(minutes),
        ))
        .unwrap()
    };
    let activate = |service: &str, id: &str, minutes: i64| {
        s.set_phase(
            service,
            id,
            ReleasePhase::Active,
            None,
            t0() + Duration::minutes(minutes),
        )
        .unwrap()
    };
    let a1 = make("api", "staging", 0);
    let a2 = make("api", "staging", 1);
    let a3 = make("api", "staging", 2);
    let p1 = make("api", "production", 0);
    let w1 = make("web", "staging", 0);
    activate("api", &a1.id, 10);
    activate("api", &p1.id, 10);
    activate("web", &w1.id, 10);

    let now_a2 = activate("api", &a2.id, 20);
    let old = s.release("api", &a1.id).unwrap().unwrap();
    assert_eq!(old.phase, ReleasePhase::Superseded);
    assert_eq!(old.updated_at, t0() + Duration::minutes(20));
    assert_eq!(old.activated_at, Some(t0() + Duration::minutes(10)));
    assert!(
        old.reason.as_deref().unwrap().contains(&a2.id),
        "{:?}",
        old.reason
    );
    assert_eq!(s.active_release("api", "staging").unwrap(), Some(now_a2));
    // Other environments and services are untouched.
    assert_eq!(
        s.release("api", &p1.id).unwrap().unwrap().phase,
        ReleasePhase::Active
    );
    assert_eq!(
        s.release("web", &w1.id).unwrap().unwrap().phase,
        ReleasePhase::Active
    );

    // Chaining: a3 supersedes a2; a1 stays superseded.
    activate("api", &a3.id, 30);
    let phases: Vec<_> = s
        .releases("api", "staging", 10)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.phase))
        .collect();
    assert_eq!(
        phases,
        vec![
            (a3.id.clone(), ReleasePhase::Active),
            (a2.id.clone(), ReleasePhase::Superseded),
            (a1.id.clone(), ReleasePhase::Superseded),
        ]
    );

    // Rolling back to a1: it deploys again, and becoming ACTIVE supersedes a3.
    s.set_phase(
        "api",
        &a1.id,
        ReleasePhase::Deploying,
        Some("rollback"),
        t0() + Duration::minutes(40),
    )
    .unwrap();
    let back = activate("api", &a1.id, 41);
    assert_eq!(back.activated_at, Some(t0() + Duration::minutes(41)));
    assert_eq!(
        s.release("api", &a3.id).unwrap().unwrap().phase,
        ReleasePhase::Superseded
    );
    assert_eq!(
        s.active_release("api", "staging").unwrap().unwrap().id,
        a1.id
    );
}

#[test]
fn invalid_transitions_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let active = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();
    s.set_phase("api", &active.id, ReleasePhase::Active, None, t0())
        .unwrap();
    let r = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();
    s.set_phase(
        "api",
        &r.id,
        ReleasePhase::Failed,
        Some("checks failed"),
        t0(),
    )
    .unwrap();
    let before = s.release("api", &r.id).unwrap().unwrap();
    let active_before = s.release("api", &active.id).unwrap().unwrap();

    for to in [
        ReleasePhase::Active,
        ReleasePhase::Pending,
        ReleasePhase::Deploying,
        ReleasePhase::Failed,
    ] {
        let err = s
            .set_phase(
                "api",
                &r.id,
                to,
                Some("should not stick"),
                t0() + Duration::hours(1),
            )
            .unwrap_err();
        match err {
            StoreError::InvalidTransition {
                ref service,
                ref release,
                from,
                to: got,
            } => {
                assert_eq!(service, "api");
                assert_eq!(release, &r.id);
                assert_eq!(from, ReleasePhase::Failed);
                assert_eq!(got, to);
                let message = err.to_string();
                assert!(
                    message.contains("api") && message.contains(&r.id),
                    "{message}"
                );
                assert!(
                    message.contains("FAILED") && message.contains(to.as_str()),
                    "{message}"
                );
            }
            other => panic!("expected InvalidTransition, got {other}"),
        }
    }
    assert_eq!(s.release("api", &r.id).unwrap().unwrap(), before);
    // The failed ACTIVE attempt did not supersede the ACTIVE release.
    assert_eq!(
        s.release("api", &active.id).unwrap().unwrap(),
        active_before
    );

    let pending = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();
    let err = s
        .set_phase("api", &pending.id, ReleasePhase::Superseded, None, t0())
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::InvalidTransition {
            from: ReleasePhase::Pending,
            ..
        }
    ));
    assert_eq!(s.release("api", &pending.id).unwrap().unwrap(), pending);

    let err = s
        .set_phase("api", "no-such-release", ReleasePhase::Failed, None, t0())
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

#[test]
fn built_releases_can_be_deployed_later() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s.create_run(RunKind::Build, "staging", t0(), None).unwrap();
    let r = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();
    s.set_phase("api", &r.id, ReleasePhase::Building, None, t0())
        .unwrap();
    s.set_phase("api", &r.id, ReleasePhase::Built, None, t0())
        .unwrap();
    assert!(
        s.set_phase("api", &r.id, ReleasePhase::Failed, None, t0())
            .is_err()
    );
    s.set_phase("api", &r.id, ReleasePhase::Deploying, None, t0())
        .unwrap();
    s.set_phase("api", &r.id, ReleasePhase::Active, None, t0())
        .unwrap();
}

#[test]
fn events_round_trip_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let other = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let data1 = json!({"kind": "run.started", "services": ["api", "web"], "n": 1.5});
    let data2 = json!({"kind": "stage.started", "stage": "build", "nested": {"a": [null, true]}});
    s.append_event(&run.id, t0(), None, "run.started", &data1)
        .unwrap();
    s.append_event(&other.id, t0(), Some("web"), "stage.started", &data2)
        .unwrap();
    s.append_event(
        &run.id,
        t0() + Duration::milliseconds(1),
        Some("api"),
        "stage.started",
        &data2,
    )
    .unwrap();
    // An earlier timestamp appended later still comes later: order is append order.
    s.append_event(
        &run.id,
        t0() - Duration::seconds(1),
        Some("api"),
        "late",
        &json!(null),
    )
    .unwrap();

    let events = s.events(&run.id).unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(events[0].run_id, run.id);
    assert_eq!(events[0].at, t0());
    assert_eq!(events[0].service, None);
    assert_eq!(events[0].kind, "run.started");
    assert_eq!(events[0].data, data1);
    assert_eq!(events[1].service.as_deref(), Some("api"));
    assert_eq!(events[1].at, t0() + Duration::milliseconds(1));
    assert_eq!(events[1].data, data2);
    assert_eq!(events[2].kind, "late");
    assert_eq!(events[2].data, json!(null));
    assert_eq!(s.events(&other.id).unwrap().len(), 1);
    assert!(s.events("deploy-none").unwrap().is_empty());

    let err = s
        .append_event("deploy-none", t0(), None, "x", &json!({}))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { ref what } if what.contains("deploy-none")),
        "{err}"
    );
}

#[test]
fn timestamps_round_trip_at_millisecond_precision() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let precise = Utc.timestamp_opt(1_795_000_000, 123_456_789).unwrap();
    let run = s
        .create_run(RunKind::Deploy, "staging", precise, None)
        .unwrap();
    assert_eq!(
        run.started_at,
        Utc.timestamp_opt(1_795_000_000, 123_000_000).unwrap()
    );
    assert_eq!(s.run(&run.id).unwrap().unwrap().started_at, run.started_at);
    // Whatever comes back can be written and read again unchanged.
    let r = s
        .create_release(&new_release(
            "api",
            "staging",
            &run.id,
            Some(SHA),
            run.started_at,
        ))
        .unwrap();
    assert_eq!(r.created_at, run.started_at);
    let before_epoch = at("1969-12-31T23:59:59.999Z");
    s.append_event(&run.id, before_epoch, None, "x", &json!({}))
        .unwrap();
    assert_eq!(s.events(&run.id).unwrap()[0].at, before_epoch);
}

#[test]
fn reopening_keeps_data_and_applies_migrations_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep/er/state.db");
    let run_id = {
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.path(), path);
        assert_eq!(s.schema_version().unwrap(), 4);
        let run = s
            .create_run(RunKind::Deploy, "staging", t0(), None)
            .unwrap();
        s.create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
            .unwrap();
        run.id
    };
    for _ in 0..3 {
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), 4);
        assert!(s.run(&run_id).unwrap().is_some());
        assert_eq!(s.releases("api", "staging", 10).unwrap().len(), 1);
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::Unsupported(ref m) if m.contains("99")),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_an_sqlite_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_parent_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "").unwrap();
    let err = SqliteStore::open(&dir.path().join("blocker/state.db")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}

#[test]
fn open_url_variants() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");

    let relative = SqliteStore::open_url("sqlite://.cutover/state.db", &project).unwrap();
    assert_eq!(relative.path(), project.join(".cutover/state.db"));
    assert!(project.join(".cutover/state.db").exists());

    let absolute_path = dir.path().join("elsewhere/team.db");
    let url = format!("sqlite://{}", absolute_path.display());
    assert!(url.starts_with("sqlite:///"));
    let absolute = SqliteStore::open_url(&url, &project).unwrap();
    assert_eq!(absolute.path(), absolute_path);

    for url in [
        "postgres://deployer:hunter2@db.example/cutover",
        "postgresql://deployer:hunter2@db.example/cutover",
        "POSTGRES://db/cutover",
    ] {
        let err = SqliteStore::open_url(url, &project).unwrap_err();
        assert!(matches!(err, StoreError::Unsupported(_)), "{url}: {err}");
        assert_eq!(
            err.to_string(),
            "the PostgreSQL store is not available yet; use sqlite://"
        );
    }
    for url in [
        "mysql://root:hunter2@db/x",
        ".cutover/state.db",
        "sqlite://",
        "",
        "sqlite:state.db",
    ] {
        let err = SqliteStore::open_url(url, &project).unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{url:?}: {err}");
        let message = err.to_string();
        assert!(message.contains("sqlite://"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

/// Writes a bad value straight into the file and expects [`StoreError::Corrupt`], not a panic.
#[test]
fn bad_rows_are_corrupt_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let s = SqliteStore::open(&path).unwrap();
    let run = s
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let r = s
        .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
        .unwrap();
    s.append_event(&run.id, t0(), None, "x", &json!({}))
        .unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    let corrupt = |sql: &str| {
        raw.execute_batch(&format!("BEGIN; {sql}; COMMIT;"))
            .unwrap();
    };
    let is_corrupt = |result: Result<(), StoreError>, needle: &str| match result {
        Err(StoreError::Corrupt(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected Corrupt mentioning {needle:?}, got {other:?}"),
    };
    let release = || s.release("api", &r.id).map(drop);
    let run_read = || s.run(&run.id).map(drop);

    corrupt("UPDATE releases SET phase = 'SHIPPED'");
    is_corrupt(release(), "SHIPPED");
    is_corrupt(s.releases("api", "staging", 10).map(drop), "SHIPPED");
    is_corrupt(
        s.set_phase("api", &r.id, ReleasePhase::Failed, None, t0())
            .map(drop),
        "SHIPPED",
    );
    corrupt("UPDATE releases SET phase = 'PENDING', dirty = 7");
    is_corrupt(release(), "dirty");
    corrupt("UPDATE releases SET dirty = 'yes'");
    is_corrupt(release(), "");
    corrupt("UPDATE releases SET dirty = 0, created_at = 'yesterday'");
    is_corrupt(release(), "created_at");
    corrupt("UPDATE releases SET created_at = '2026-11-23T10:15:00.000Z', commit_at = 'soon'");
    is_corrupt(release(), "commit_at");
    corrupt("UPDATE releases SET commit_at = NULL");
    release().unwrap();

    corrupt("UPDATE runs SET status = 'exploded'");
    is_corrupt(run_read(), "exploded");
    is_corrupt(s.runs(None, 10).map(drop), "exploded");
    corrupt("UPDATE runs SET status = 'succeeded', kind = 'teleport'");
    is_corrupt(run_read(), "teleport");
    corrupt("UPDATE runs SET kind = 'deploy', pid = -1");
    is_corrupt(run_read(), "pid");
    corrupt("UPDATE runs SET pid = NULL, started_at = 'noon'");
    is_corrupt(run_read(), "started_at");
    corrupt("UPDATE runs SET started_at = '2026-11-23T10:15:00.000Z'");
    run_read().unwrap();

    corrupt("UPDATE events SET data = '{not json'");
    is_corrupt(s.events(&run.id).map(drop), "JSON");
    corrupt("UPDATE events SET data = '{}', at = 42");
    is_corrupt(s.events(&run.id).map(drop), "");
}

/// Two stores (two connections, as two processes would have) on one file, four threads each,
/// all in the same second: every id unique, no "database is locked".
#[test]
fn two_connections_hammering_one_file() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".cutover/state.db");
    let stores = [
        Arc::new(SqliteStore::open(&path).unwrap()),
        Arc::new(SqliteStore::open(&path).unwrap()),
    ];
    let seed = stores[0]
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();

    let handles: Vec<_> = stores
        .iter()
        .flat_map(|store| (0..THREADS).map(move |_| Arc::clone(store)))
        .map(|store| {
            let seed = seed.id.clone();
            std::thread::spawn(move || {
                let mut runs = Vec::new();
                let mut releases = Vec::new();
                for _ in 0..PER_THREAD {
                    runs.push(store.create_run(RunKind::Deploy, "staging", t0(), None)?.id);
                    releases.push(
                        store
                            .create_release(&new_release("api", "staging", &seed, Some(SHA), t0()))?
                            .id,
                    );
                }
                Ok::<_, StoreError>((runs, releases))
            })
        })
        .collect();

    let mut run_ids = HashSet::new();
    let mut release_ids = HashSet::new();
    for handle in handles {
        let (runs, releases) = handle.join().unwrap().unwrap();
        for id in runs {
            assert!(run_ids.insert(id.clone()), "duplicate run id {id}");
        }
        for id in releases {
            assert!(release_ids.insert(id.clone()), "duplicate release id {id}");
        }
    }
    let total = 2 * THREADS * PER_THREAD;
    assert_eq!(run_ids.len(), total);
    assert_eq!(release_ids.len(), total);
    // The ids are exactly the base and -2 ... -N, with no gaps.
    let expected_runs: HashSet<_> = (2..=total + 1)
        .map(|n| format!("deploy-20261123-101500-{n}"))
        .collect();
    assert_eq!(run_ids, expected_runs);
    let mut expected_releases: HashSet<_> = (2..=total)
        .map(|n| format!("20261123-101500-abc1234-{n}"))
        .collect();
    expected_releases.insert("20261123-101500-abc1234".to_string());
    assert_eq!(release_ids, expected_releases);
    assert_eq!(stores[1].runs(None, usize::MAX).unwrap().len(), total + 1);
    assert_eq!(
        stores[0]
            .releases("api", "staging", usize::MAX)
            .unwrap()
            .len(),
        total
    );
}

/// Activating releases of one service from two connections at once leaves exactly one ACTIVE.
#[test]
fn concurrent_activations_leave_one_active_release() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let a = Arc::new(SqliteStore::open(&path).unwrap());
    let b = Arc::new(SqliteStore::open(&path).unwrap());
    let run = a
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    let ids: Vec<_> = (0..40)
        .map(|_| {
            let r = a
                .create_release(&new_release("api", "staging", &run.id, Some(SHA), t0()))
                .unwrap();
            a.set_phase("api", &r.id, ReleasePhase::Verifying, None, t0())
                .unwrap();
            r.id
        })
        .collect();
    let handles: Vec<_> = ids
        .chunks(10)
        .enumerate()
        .map(|(i, chunk)| {
            let store = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                for id in chunk {
                    store.set_phase("api", &id, ReleasePhase::Active, None, t0())?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let all = a.releases("api", "staging", 100).unwrap();
    let active: Vec<_> = all
        .iter()
        .filter(|r| r.phase == ReleasePhase::Active)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(
        all.iter()
            .filter(|r| r.phase == ReleasePhase::Superseded)
            .count(),
        ids.len() - 1
    );
    assert_eq!(
        b.active_release("api", "staging").unwrap().as_ref(),
        active.first().copied()
    );
}

const CHILD_ENV: &str = "CUTOVER_STORE_TEST_CHILD_DB";
const CHILD_COUNT: usize = 60;

/// Not a test on its own: the body of each child process of `two_processes_share_one_file`.
#[test]
#[ignore = "run as a child process by two_processes_share_one_file"]
fn child_process_writer() {
    let path = std::env::var_os(CHILD_ENV).expect("run by two_processes_share_one_file");
    let store = SqliteStore::open(Path::new(&path)).unwrap();
    let seed = store.runs(None, usize::MAX).unwrap().pop().unwrap();
    for i in 0..CHILD_COUNT {
        store
            .create_run(RunKind::Deploy, "staging", t0(), Some(std::process::id()))
            .unwrap();
        let r = store
            .create_release(&new_release("api", "staging", &seed.id, Some(SHA), t0()))
            .unwrap();
        store
            .append_event(
                &seed.id,
                t0(),
                Some("api"),
                "release.created",
                &json!({ "id": r.id, "i": i }),
            )
            .unwrap();
    }
}

/// Real separate processes (this test binary, re-run) writing one file at the same time.
#[test]
fn two_processes_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".cutover/state.db");
    let store = SqliteStore::open(&path).unwrap();
    let seed = store
        .create_run(RunKind::Deploy, "staging", t0(), None)
        .unwrap();
    store
        .finish_run(&seed.id, RunStatus::Succeeded, t0(), None)
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "child_process_writer",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
    let runs = store.runs(None, usize::MAX).unwrap();
    assert_eq!(runs.len(), 3 * CHILD_COUNT + 1);
    assert_eq!(
        runs.iter().map(|r| &r.id).collect::<HashSet<_>>().len(),
        runs.len()
    );
    let pids: HashSet<_> = runs.iter().filter_map(|r| r.pid).collect();
    assert_eq!(pids.len(), 3);
    let releases = store.releases("api", "staging", usize::MAX).unwrap();
    assert_eq!(releases.len(), 3 * CHILD_COUNT);
    assert_eq!(
        releases.iter().map(|r| &r.id).collect::<HashSet<_>>().len(),
        releases.len()
    );
    let events = store.events(&seed.id).unwrap();
    assert_eq!(events.len(), 3 * CHILD_COUNT);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// Several stores opening a brand-new file at once: the schema is applied exactly once.
#[test]
fn concurrent_first_opens_migrate_once() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join(".cutover/state.db"));
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (path, barrier) = (Arc::clone(&path), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let store = SqliteStore::open(&path)?;
                    store.create_run(RunKind::Deploy, "staging", t0(), None)?;
                    store.schema_version()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), 4);
        }
        assert_eq!(
            SqliteStore::open(&path)
                .unwrap()
                .runs(None, 100)
                .unwrap()
                .len(),
            6
        );
    }
}

#[test]
fn a_batch_applies_in_order_and_a_bad_write_does_not_stop_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let run = s.create_run(RunKind::Build, "dev", t0(), None).unwrap();
    let rel = s
        .create_release(&new_release("api", "dev", &run.id, Some(SHA), t0()))
        .unwrap();
    let phase = |p: ReleasePhase| cutover_store::StoreWrite::Phase {
        service: "api".into(),
        release: rel.id.clone(),
        phase: p,
        reason: None,
        at: t0(),
    };
    let event = |kind: &str| cutover_store::StoreWrite::Event {
        run_id: run.id.clone(),
        at: t0(),
        service: Some("api".into()),
        kind: kind.into(),
        data: json!({"k": kind}),
    };
    let batch = vec![
        phase(ReleasePhase::Validating),
        event("stage.started"),
        phase(ReleasePhase::Superseded), // VALIDATING → SUPERSEDED is not allowed
        phase(ReleasePhase::Building),
        event("stage.finished"),
    ];
    let errors = s.record(&batch).unwrap();
    assert_eq!(errors.len(), 1);
    assert!(matches!(errors[0], StoreError::InvalidTransition { .. }));
    assert_eq!(
        s.release("api", &rel.id).unwrap().unwrap().phase,
        ReleasePhase::Building
    );
    let kinds: Vec<String> = s
        .events(&run.id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["stage.started", "stage.finished"]);
}

#[test]
fn secrets_are_stored_per_environment_and_listed_without_values() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    assert!(s.secret("K", None).unwrap().is_none());
    s.put_secret("K", None, b"n1", b"c1", t0()).unwrap();
    s.put_secret("K", Some("prod"), b"n2", b"c2", t0()).unwrap();
    s.put_secret("K", None, b"n3", b"c3", t0()).unwrap();
    assert_eq!(
        s.secret("K", None).unwrap(),
        Some((b"n3".to_vec(), b"c3".to_vec()))
    );
    assert_eq!(
        s.secret("K", Some("prod")).unwrap(),
        Some((b"n2".to_vec(), b"c2".to_vec()))
    );
    assert!(s.secret("K", Some("staging")).unwrap().is_none());
    let list = s.secrets_list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].env, None);
    assert_eq!(list[1].env.as_deref(), Some("prod"));
    assert!(s.remove_secret("K", Some("prod")).unwrap());
    assert!(!s.remove_secret("K", Some("prod")).unwrap());
    assert_eq!(s.secrets_list().unwrap().len(), 1);
}

#[test]
fn locks_are_taken_once_per_environment_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(s.current_lock("production").unwrap(), None);
    assert_eq!(
        s.lock("production", "ana@build1", Some("migration"), t0())
            .unwrap(),
        Ok(())
    );
    let held = s
        .lock("production", "bo@build2", None, t0())
        .unwrap()
        .unwrap_err();
    assert_eq!(held.holder, "ana@build1");
    assert_eq!(held.reason.as_deref(), Some("migration"));
    assert_eq!(held.since, t0());
    assert_eq!(s.current_lock("production").unwrap(), Some(held.clone()));
    // Other environments are not affected.
    assert_eq!(s.current_lock("staging").unwrap(), None);
    assert_eq!(s.lock("staging", "bo@build2", None, t0()).unwrap(), Ok(()));
    assert_eq!(s.unlock("production").unwrap(), Some(held));
    assert_eq!(s.unlock("production").unwrap(), None);
    assert_eq!(s.current_lock("production").unwrap(), None);
    assert!(s.current_lock("staging").unwrap().is_some());
}

/// An approval gate: requested, decided once (the first decision wins), and refused to a run
/// that never asked.
#[test]
fn approvals_are_decided_once() {
    use cutover_store::ApprovalState;
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
    let run = s
        .create_run(RunKind::Deploy, "production", t0(), Some(1))
        .unwrap();
    assert_eq!(s.approval(&run.id).unwrap(), None);
    assert_eq!(
        s.decide_approval(&run.id, ApprovalState::Approved, Some("a@h"), None, t0())
            .unwrap(),
        Err(None)
    );
    let waiting = s
        .request_approval(&run.id, "production", "api 20261123-101500-abc1234", t0())
        .unwrap();
    assert_eq!(waiting.state, ApprovalState::Waiting);
    assert_eq!(waiting.waiting, "api 20261123-101500-abc1234");
    let later = t0() + Duration::seconds(5);
    let rejected = s
        .decide_approval(
            &run.id,
            ApprovalState::Rejected,
            Some("ana@build1"),
            Some("not today"),
            later,
        )
        .unwrap()
        .unwrap();
    assert_eq!(rejected.state, ApprovalState::Rejected);
    assert_eq!(rejected.decided_by.as_deref(), Some("ana@build1"));
    assert_eq!(rejected.decided_at, Some(later));
    assert_eq!(rejected.reason.as_deref(), Some("not today"));
    // A timeout arriving after the rejection does not overwrite it.
    let again = s
        .decide_approval(&run.id, ApprovalState::TimedOut, None, None, later)
        .unwrap();
    assert_eq!(again, Err(Some(rejected.clone())));
    assert_eq!(s.approval(&run.id).unwrap(), Some(rejected));
    // A run that does not exist cannot wait.
    assert!(
        s.request_approval("deploy-19990101-000000", "production", "x", t0())
            .is_err()
    );
}

#[test]
fn claim_run_checks_the_lock_and_live_runs_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
    let alive = |pid: u32| pid == 42;
    // A lock blocks, naming who holds it.
    assert!(
        s.lock("prod", "ana@host", Some("freeze"), at)
            .unwrap()
            .is_ok()
    );
    match s
        .claim_run(RunKind::Deploy, "prod", at, 42, &alive)
        .unwrap()
    {
        Err(cutover_store::Blocker::Locked(l)) => assert_eq!(l.holder, "ana@host"),
        other => panic!("{other:?}"),
    }
    s.unlock("prod").unwrap();
    // The first claim gets the run; a second, while its process lives, is told which run holds.
    let first = s
        .claim_run(RunKind::Deploy, "prod", at, 42, &alive)
        .unwrap()
        .unwrap();
    match s
        .claim_run(RunKind::Deploy, "prod", at, 43, &alive)
        .unwrap()
    {
        Err(cutover_store::Blocker::Running(r)) => assert_eq!(r.id, first.id),
        other => panic!("{other:?}"),
    }
    // Other environments and other kinds are not held.
    assert!(
        s.claim_run(RunKind::Deploy, "staging", at, 43, &alive)
            .unwrap()
            .is_ok()
    );
    assert!(
        s.claim_run(RunKind::Build, "prod", at, 43, &alive)
            .unwrap()
            .is_ok()
    );
    // A run whose process died blocks nothing.
    let nobody = |_: u32| false;
    assert!(
        s.claim_run(RunKind::Deploy, "prod", at, 44, &nobody)
            .unwrap()
            .is_ok()
    );
}

#[test]
fn of_many_concurrent_claims_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".cutover/state.db");
    drop(SqliteStore::open(&path).unwrap());
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
    let threads: Vec<_> = (0..8u32)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let s = SqliteStore::open(&path).unwrap();
                s.claim_run(RunKind::Deploy, "prod", at, 100 + i, &|_| true)
                    .unwrap()
                    .is_ok()
            })
        })
        .collect();
    let won = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|w| *w)
        .count();
    assert_eq!(won, 1);
}
