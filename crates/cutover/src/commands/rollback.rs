//! `cutover rollback [SERVICES] [--to RELEASE]`: back to the previous ACTIVE release, reusing its
//! snapshot (no checks, no build); a route flip when its instances are still warm.

use std::io::Write;

use chrono::{SecondsFormat, Utc};
use cutover_engine::event::{Outcome, Stage};
use cutover_engine::summary::{RunSummary, ServiceSummary, StageSummary};
use cutover_runtime::api::client::AgentClient;
use cutover_store::{Release, ReleasePhase, ReleaseStore, RunKind};

use crate::cli::{Cli, RollbackArgs};
use crate::context;
use crate::exit::{CliError, OK};

/// Rolls back the named services (default: every one with a previous ACTIVE release).
pub fn run(cli: &Cli, args: &RollbackArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    if args.to.is_some() && args.services.len() != 1 {
        return Err(CliError::usage(
            "--to names a release of one service",
            Some(
                "name exactly one service: `cutover rollback api --to 20261123-101500-abc1234`"
                    .into(),
            ),
        ));
    }
    for name in &args.services {
        context::known_service(&env, name)?;
    }
    let secrets = context::secrets(&project, &env)?;
    let store = context::store(&project, true)?
        .ok_or_else(|| CliError::failed("the release store could not be opened", None))?;
    cutover_engine::ops::refuse_locked(store.as_ref(), &env.name)?;
    cutover_engine::ops::refuse_concurrent_deploy(store.as_ref(), &env.name)?;

    // What to roll back, and to what; problems are found before anything changes.
    let mut plan: Vec<(String, Release, Option<Release>)> = Vec::new();
    let names: Vec<String> = if args.services.is_empty() {
        env.services.iter().map(|s| s.name.clone()).collect()
    } else {
        args.services.clone()
    };
    for name in &names {
        let releases = store.releases(name, &env.name, 1000)?;
        let current = releases
            .iter()
            .find(|r| r.phase == ReleasePhase::Active)
            .cloned();
        let target = match &args.to {
            Some(id) => Some(chosen_target(
                &releases,
                current.as_ref(),
                name,
                &env.name,
                id,
            )?),
            None => cutover_engine::rollback::previous_active(&releases, current.as_ref()),
        };
        match target {
            Some(t) if current.as_ref().is_some_and(|c| c.id == t.id) => {
                return Err(CliError::failed(
                    format!("{name}: {} is already ACTIVE", t.id),
                    None,
                ));
            }
            Some(t) => plan.push((name.clone(), t, current)),
            None if args.services.is_empty() => {}
            None => {
                return Err(CliError::failed(
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
        return Err(CliError::failed(
            format!(
                "no service in {} has a previous ACTIVE release to roll back to",
                env.name
            ),
            None,
        ));
    }

    let client = context::agent(&project, true)?
        .ok_or_else(|| CliError::failed("the agent could not be started", None))?;
    let started_at = Utc::now();
    let run = store.create_run(
        RunKind::Rollback,
        &env.name,
        started_at,
        Some(std::process::id()),
    )?;
    // Named after the run, so the terminal lines and the log file say the same name.
    let (log_path, mut log) =
        cutover_engine::ops::open_command_log(&context::state_dir(&project), "rollback", &run.id)?;
    let redactor = cutover_engine::redact::Redactor::new(secrets.values().cloned());
    let mut note = |line: &str| {
        let line = redactor.redact(line);
        let _ = writeln!(
            log,
            "{} {line}",
            Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        if !cli.json {
            eprintln!("{line}");
        }
    };
    note(&format!("{} started in {}", run.id, env.name));

    let runtime = context::runtime()?;
    let mut services = Vec::new();
    for (name, target, current) in &plan {
        let stage_start = Utc::now();
        let result = roll_one(
            &runtime,
            &client,
            store.as_ref(),
            &project,
            &env,
            &secrets,
            name,
            target,
            current.as_ref(),
            &format!("rolled back to {} by `cutover rollback`", target.id),
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
    let notifier = context::notifier(&project, &secrets);
    if let Some(n) = &notifier {
        n.send(cutover_engine::report::webhook::Notification::new(
            "rollback",
            &run.id,
            &env.name,
            summary
                .services
                .iter()
                .map(|s| cutover_engine::report::webhook::NotifiedService {
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
        ));
    }
    note(&format!(
        "{} {}: {}",
        run.id,
        status.as_str(),
        summary.counts()
    ));
    if cli.json {
        let text = serde_json::to_string(&summary)
            .map_err(|e| CliError::failed(format!("encoding the summary: {e}"), None))?;
        println!("{text}");
    } else {
        for s in &summary.services {
            match &s.reason {
                None => println!(
                    "{}: rolled back to {}",
                    s.name,
                    s.release.as_deref().unwrap_or("?")
                ),
                Some(r) => println!("{}: rollback failed: {r}", s.name),
            }
        }
        println!("log: {}", log_path.display());
    }
    if let Some(n) = notifier {
        for e in n.finish(cutover_engine::report::webhook::FINISH_GRACE) {
            crate::diagnostics::warn(&e);
        }
    }
    Ok(if summary.exit_code() == 0 {
        OK
    } else {
        summary.exit_code()
    })
}

/// The release `rollback NAME --to ID` names, when a rollback may make it ACTIVE; else a usage
/// error (exit 2, before anything runs) whose hint lists the releases it may go back to.
fn chosen_target(
    releases: &[Release],
    current: Option<&Release>,
    name: &str,
    env: &str,
    id: &str,
) -> Result<Release, CliError> {
    let candidates: Vec<&str> = releases
        .iter()
        .filter(|r| cutover_engine::rollback::can_roll_back_to(r))
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
        return Err(CliError::usage(
            format!("release `{id}` of {name} does not exist in {env}"),
            Some(hint),
        ));
    };
    let is_current = current.is_some_and(|c| c.id == target.id);
    if is_current || cutover_engine::rollback::can_roll_back_to(target) {
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
    Err(CliError::usage(
        format!("{name} cannot go back to {id}: {why}"),
        Some(hint),
    ))
}

/// `deploy --atomic` after a run where a service failed: every service the run made ACTIVE goes
/// back to its previous release, in reverse dependency order; their results become
/// `rolled_back` and the run's status is recorded again.
#[allow(clippy::too_many_arguments)]
pub fn atomic(
    project: &cutover_config::Project,
    env: &cutover_config::ResolvedEnvironment,
    secrets: &std::collections::BTreeMap<String, String>,
    store: &dyn ReleaseStore,
    mut summary: RunSummary,
    log_path: &std::path::Path,
) -> Result<RunSummary, CliError> {
    let failed: Vec<String> = summary
        .services
        .iter()
        .filter(|s| matches!(s.result, Outcome::Failed | Outcome::RolledBack))
        .map(|s| s.name.clone())
        .collect();
    if failed.is_empty() {
        return Ok(summary);
    }
    let client = context::agent(project, true)?
        .ok_or_else(|| CliError::failed("the agent could not be started", None))?;
    let runtime = context::runtime()?;
    let redactor = cutover_engine::redact::Redactor::new(secrets.values().cloned());
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
        eprintln!("{line}");
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
        let Some(target) = cutover_engine::rollback::previous_active(&releases, current.as_ref())
        else {
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
            project,
            env,
            secrets,
            &s.name,
            &target,
            current.as_ref(),
            &why,
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

#[allow(clippy::too_many_arguments)]
fn roll_one(
    runtime: &tokio::runtime::Runtime,
    client: &AgentClient,
    store: &dyn ReleaseStore,
    project: &cutover_config::Project,
    env: &cutover_config::ResolvedEnvironment,
    secrets: &std::collections::BTreeMap<String, String>,
    name: &str,
    target: &Release,
    current: Option<&Release>,
    why: &str,
    note: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let svc = context::known_service(env, name).map_err(|_| format!("unknown service {name}"))?;
    // Checked before any phase changes, so a pruned snapshot leaves the history as it was.
    let state = context::state_dir(project);
    let dir = state.release(name, &target.id);
    if !dir.is_dir() {
        return Err(format!(
            "the snapshot of {} is gone ({}); it was pruned by keep_releases",
            target.id,
            dir.display()
        ));
    }
    let now = Utc::now();
    store
        .set_phase(name, &target.id, ReleasePhase::Deploying, None, now)
        .map_err(|e| e.to_string())?;
    note(&format!("{name}: rolling back to {}", target.id));
    let answer = runtime.block_on(cutover_engine::rollback::redeploy(
        client,
        &state,
        &env.name,
        svc,
        &target.id,
        secrets,
        cutover_engine::target::docker::ContainerTarget::of(&project.name, env)
            .ok()
            .flatten()
            .as_deref(),
    ));
    match answer {
        Ok(()) => {
            let now = Utc::now();
            if let Some(c) = current {
                store
                    .set_phase(name, &c.id, ReleasePhase::RolledBack, Some(why), now)
                    .map_err(|e| e.to_string())?;
            }
            store
                .set_phase(name, &target.id, ReleasePhase::Active, None, now)
                .map_err(|e| e.to_string())?;
            note(&format!("{name}: {} is ACTIVE", target.id));
            Ok(())
        }
        Err(why) => {
            let _ = store.set_phase(
                name,
                &target.id,
                ReleasePhase::Failed,
                Some(&why),
                Utc::now(),
            );
            note(&format!("{name}: rollback failed: {why}"));
            Err(why)
        }
    }
}
