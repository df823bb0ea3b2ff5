//! `rollback [SERVICES] [--to RELEASE]`: back to the previous ACTIVE release, reusing its
//! snapshot (no checks, no build); a route flip when its instances are still warm. Also the
//! `--atomic` rollback of a deploy run where a service failed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use cutover_config::ResolvedEnvironment;
use cutover_runtime::api::client::AgentClient;
use cutover_store::{Release, ReleasePhase, ReleaseStore, RunKind};

use super::Context;
use super::RunEvents;
use crate::EngineError;
use crate::event::{EventKind, Outcome, Stage};
use crate::redact::Redactor;
use crate::report::webhook::{Notification, NotifiedService, Notifier};
use crate::summary::{RunSummary, ServiceSummary, StageSummary};

/// What to roll back.
#[derive(Debug, Clone, Default)]
pub struct RollbackRequest {
    /// The services (none: every one with a previous ACTIVE release).
    pub services: Vec<String>,
    /// The release to go back to (one service only), instead of the previous ACTIVE one.
    pub to: Option<String>,
}

/// A finished rollback run.
pub struct RollbackOutcome {
    /// The run summary (`rollback --json`), reasons redacted.
    pub summary: RunSummary,
    /// The run's log, `.cutover/logs/rollbacks/<run>.log`.
    pub log: PathBuf,
    /// The webhooks still delivering the `rollback` notification: the caller gives them
    /// [`Notifier::finish`] once it has shown the result.
    pub webhooks: Option<Notifier>,
}

/// Rolls back the requested services of `env` in a run of its own, recorded in the store and
/// logged; `notes` hears each step (one line each, secrets redacted). Problems with the
/// request are found before anything changes (unknown service: exit 2; no release to go back
/// to: exit 1; locked or a deploy running: exit 3). A service whose rollback fails is
/// `failed` in the summary, not an error.
pub fn rollback(
    cx: &Context,
    env: &ResolvedEnvironment,
    request: &RollbackRequest,
    notes: &mut dyn FnMut(&str),
) -> Result<RollbackOutcome, EngineError> {
    if request.to.is_some() && request.services.len() != 1 {
        return Err(EngineError::invalid(
            "--to names a release of one service",
            Some(
                "name exactly one service: `cutover rollback api --to 20261123-101500-abc1234`"
                    .into(),
            ),
        ));
    }
    for name in &request.services {
        super::known_service(env, name)?;
    }
    let secrets = cx.secrets(env)?;
    let store = cx.created_store()?;
    super::refuse_locked(store.as_ref(), &env.name)?;
    super::refuse_concurrent_deploy(store.as_ref(), &env.name)?;

    // What to roll back, and to what; problems are found before anything changes.
    let mut plan: Vec<(String, Release, Option<Release>)> = Vec::new();
    let names: Vec<String> = if request.services.is_empty() {
        env.services.iter().map(|s| s.name.clone()).collect()
    } else {
        request.services.clone()
    };
    for name in &names {
        let releases = store.releases(name, &env.name, 1000)?;
        let current = releases
            .iter()
            .find(|r| r.phase == ReleasePhase::Active)
            .cloned();
        let target = match &request.to {
            Some(id) => Some(chosen_target(
                &releases,
                current.as_ref(),
                name,
                &env.name,
                id,
            )?),
            None => crate::rollback::previous_active(&releases, current.as_ref()),
        };
        match target {
            Some(t) if current.as_ref().is_some_and(|c| c.id == t.id) => {
                return Err(EngineError::refused(
                    format!("{name}: {} is already ACTIVE", t.id),
                    None,
                ));
            }
            Some(t) => plan.push((name.clone(), t, current)),
            None if request.services.is_empty() => {}
            None => {
                return Err(EngineError::refused(
                    format!(
                        "{name} has no previous ACTIVE release in {} to roll back to",
                        env.name
                    ),
                    Some(format!("`cutover releases {name}` shows its history")),
                ));
            }
        }
    }
    if plan.is_empty() {
        return Err(EngineError::refused(
            format!(
                "no service in {} has a previous ACTIVE release to roll back to",
                env.name
            ),
            None,
        ));
    }

    let client = cx.started_agent()?;
    let started_at = Utc::now();
    let run = store.create_run(
        RunKind::Rollback,
        &env.name,
        started_at,
        Some(std::process::id()),
    )?;
    // Named after the run, so the notes and the log file say the same name.
    let (log_path, mut log) = super::open_command_log(&cx.state_dir(), "rollback", &run.id)?;
    let redactor = Redactor::new(secrets.values().cloned());
    let mut note = |line: &str| {
        let line = redactor.redact(line);
        let _ = writeln!(
            log,
            "{} {line}",
            Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        notes(&line);
    };
    note(&format!("{} started in {}", run.id, env.name));

    let runtime = super::runtime()?;
    let mut services = Vec::new();
    for (name, target, current) in &plan {
        let stage_start = Utc::now();
        let result = roll_one(
            &runtime,
            &client,
            store.as_ref(),
            cx,
            env,
            &secrets,
            name,
            target,
            current.as_ref(),
            &format!("rolled back to {} by `cutover rollback`", target.id),
            &RunEvents {
                store: store.as_ref(),
                run: &run.id,
                redactor: &redactor,
            },
            &mut note,
        );
        let (outcome, reason) = match result {
            Ok(()) => (Outcome::Succeeded, None),
            Err(why) => (Outcome::Failed, Some(why)),
        };
        services.push(ServiceSummary {
            name: name.clone(),
            result: outcome,
            release: Some(target.id.clone()),
            reason: reason.map(|r| redactor.redact(&r).into_owned()),
            stages: vec![StageSummary {
                stage: Stage::Deploy,
                result: outcome,
                started_at: stage_start,
                finished_at: Some(Utc::now()),
            }],
            tail: Vec::new(),
        });
    }
    let status = RunSummary::status_from(&services, false);
    let summary = RunSummary {
        run: run.id.clone(),
        env: env.name.clone(),
        status,
        started_at,
        finished_at: Utc::now(),
        services,
        approval: None,
    };
    store.finish_run(&run.id, status, summary.finished_at, None)?;
    // `rollback` webhooks: which services went back to which release.
    let webhooks = cx.notifier(&secrets);
    if let Some(n) = &webhooks {
        n.send(notification(&summary));
    }
    note(&format!(
        "{} {}: {}",
        run.id,
        status.as_str(),
        summary.counts()
    ));
    Ok(RollbackOutcome {
        summary,
        log: log_path,
        webhooks,
    })
}

/// The `rollback` webhook of a finished rollback run.
fn notification(summary: &RunSummary) -> Notification {
    Notification::new(
        "rollback",
        &summary.run,
        &summary.env,
        summary
            .services
            .iter()
            .map(|s| NotifiedService {
                name: s.name.clone(),
                release: s.release.clone(),
                result: match s.result {
                    Outcome::Succeeded => "rolled_back".to_string(),
                    other => other.as_str().to_string(),
                },
            })
            .collect(),
        summary.finished_at,
        Some(
            summary
                .services
                .iter()
                .map(|s| match &s.reason {
                    None => format!(
                        "{} rolled back to {} by `cutover rollback`",
                        s.name,
                        s.release.as_deref().unwrap_or("?")
                    ),
                    Some(r) => format!("{}: rollback failed: {r}", s.name),
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
    )
}

/// The release `rollback NAME --to ID` names, when a rollback may make it ACTIVE; else an
/// invalid request (exit 2, before anything runs) whose hint lists the releases it may go
/// back to.
fn chosen_target(
    releases: &[Release],
    current: Option<&Release>,
    name: &str,
    env: &str,
    id: &str,
) -> Result<Release, EngineError> {
    let candidates: Vec<&str> = releases
        .iter()
        .filter(|r| crate::rollback::can_roll_back_to(r))
        .filter(|r| current.is_none_or(|c| c.id != r.id))
        .take(5)
        .map(|r| r.id.as_str())
        .collect();
    let hint = if candidates.is_empty() {
        format!(
            "{name} has no release it can go back to in {env}; `cutover releases {name}` shows its history"
        )
    } else {
        format!(
            "releases {name} can go back to (newest first): {}",
            candidates.join(", ")
        )
    };
    let Some(target) = releases.iter().find(|r| r.id == id) else {
        return Err(EngineError::invalid(
            format!("release `{id}` of {name} does not exist in {env}"),
            Some(hint),
        ));
    };
    let is_current = current.is_some_and(|c| c.id == target.id);
    if is_current || crate::rollback::can_roll_back_to(target) {
        return Ok(target.clone());
    }
    let why = match target.phase {
        ReleasePhase::Failed | ReleasePhase::RolledBack | ReleasePhase::Canceled => format!(
            "it is {}{}",
            target.phase.as_str(),
            target
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        _ => format!("it never served ({})", target.phase.as_str()),
    };
    Err(EngineError::invalid(
        format!("{name} cannot go back to {id}: {why}"),
        Some(hint),
    ))
}

/// `deploy --atomic` after a run where a service failed: every service the run made ACTIVE goes
/// back to its previous release, in reverse dependency order; their results become
/// `rolled_back` and the run's status is recorded again. What happens is appended to the run's
/// log at `log_path` and told to `notes`.
pub fn atomic(
    cx: &Context,
    env: &ResolvedEnvironment,
    secrets: &BTreeMap<String, String>,
    store: &dyn ReleaseStore,
    mut summary: RunSummary,
    log_path: &Path,
    notes: &mut dyn FnMut(&str),
) -> Result<RunSummary, EngineError> {
    let failed: Vec<String> = summary
        .services
        .iter()
        .filter(|s| matches!(s.result, Outcome::Failed | Outcome::RolledBack))
        .map(|s| s.name.clone())
        .collect();
    if failed.is_empty() {
        return Ok(summary);
    }
    let client = cx.started_agent()?;
    let runtime = super::runtime()?;
    let redactor = Redactor::new(secrets.values().cloned());
    let mut log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .ok();
    let mut note = |line: &str| {
        let line = redactor.redact(line);
        if let Some(log) = log.as_mut() {
            let _ = writeln!(
                log,
                "{} {line}",
                Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
        notes(&line);
    };
    let why = format!(
        "rolled back by --atomic: {} failed in run {}",
        failed.join(", "),
        summary.run
    );
    note(&format!(
        "--atomic: {} failed; rolling back every service of the run",
        failed.join(", ")
    ));
    // The summary lists services in dependency order: dependents go back first.
    for s in summary.services.iter_mut().rev() {
        if s.result != Outcome::Succeeded {
            continue;
        }
        let Some(release) = s.release.clone() else {
            continue;
        };
        let releases = store.releases(&s.name, &env.name, 1000)?;
        let current = releases.iter().find(|r| r.id == release).cloned();
        let Some(target) = crate::rollback::previous_active(&releases, current.as_ref()) else {
            note(&format!(
                "{}: no previous release to return to; {release} stays",
                s.name
            ));
            continue;
        };
        let started = Utc::now();
        match roll_one(
            &runtime,
            &client,
            store,
            cx,
            env,
            secrets,
            &s.name,
            &target,
            current.as_ref(),
            &why,
            &RunEvents {
                store,
                run: &summary.run,
                redactor: &redactor,
            },
            &mut note,
        ) {
            Ok(()) => {
                s.result = Outcome::RolledBack;
                s.reason = Some(format!("{why}; back on {}", target.id));
            }
            Err(e) => {
                s.result = Outcome::Failed;
                s.reason = Some(
                    redactor
                        .redact(&format!("--atomic rollback to {} failed: {e}", target.id))
                        .into_owned(),
                );
            }
        }
        s.stages.push(StageSummary {
            stage: Stage::Deploy,
            result: s.result,
            started_at: started,
            finished_at: Some(Utc::now()),
        });
    }
    summary.status = RunSummary::status_from(&summary.services, false);
    summary.finished_at = Utc::now();
    store.finish_run(&summary.run, summary.status, summary.finished_at, None)?;
    Ok(summary)
}

/// Makes `target` ACTIVE again in place of `current`, recording the phases (`why` is the
/// reason `current` gets); Err says why it could not, in plain words.
#[allow(clippy::too_many_arguments)]
fn roll_one(
    runtime: &tokio::runtime::Runtime,
    client: &AgentClient,
    store: &dyn ReleaseStore,
    cx: &Context,
    env: &ResolvedEnvironment,
    secrets: &BTreeMap<String, String>,
    name: &str,
    target: &Release,
    current: Option<&Release>,
    why: &str,
    events: &RunEvents<'_>,
    note: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let svc = super::known_service(env, name).map_err(|_| format!("unknown service {name}"))?;
    // Checked before any phase changes, so a pruned snapshot leaves the history as it was.
    let state = cx.state_dir();
    let dir = state.release(name, &target.id);
    if !dir.is_dir() {
        return Err(format!(
            "the snapshot of {} is gone ({}); it was pruned by keep_releases",
            target.id,
            dir.display()
        ));
    }
    let phases = crate::rollback::RollbackPhases {
        target: &target.id,
        current: current.map(|c| c.id.as_str()),
        why,
    };
    phases
        .started()
        .record(store, name, Utc::now())
        .map_err(|e| e.to_string())?;
    events.emit(
        EventKind::RollbackStarted {
            service: name.to_string(),
            from: current.map(|c| c.id.clone()),
            to: target.id.clone(),
            reason: why.to_string(),
        },
        note,
    );
    let answer = runtime.block_on(crate::rollback::redeploy(
        client,
        &state,
        &env.name,
        svc,
        &target.id,
        secrets,
        crate::target::docker::ContainerTarget::of(&cx.project.name, env)
            .ok()
            .flatten()
            .as_deref(),
    ));
    let now = Utc::now();
    for step in phases.finished(&answer) {
        let recorded = step.record(store, name, now);
        // A failed rollback's reason matters more than a failure to record it.
        if answer.is_ok() {
            recorded.map_err(|e| e.to_string())?;
        }
    }
    events.emit(
        crate::rollback::finished_event(name, &target.id, &answer),
        note,
    );
    answer
}
