//! `cutover build` and `cutover deploy`: the pipeline over the affected services (deploy adds
//! the deploy and verify stages through the agent).

use std::io::IsTerminal;
use std::sync::Arc;

use cutover_engine::event::Outcome;
use cutover_engine::plan::{PlanOptions, plan};
use cutover_engine::report::Reporter;
use cutover_engine::report::log_file::LogFiles;
use cutover_engine::report::status_file::StatusFile;
use cutover_engine::report::store::StoreReporter;
use cutover_engine::run::{RunRequest, execute, state_dir};
use cutover_engine::summary::RunSummary;
use cutover_store::RunKind;
use tokio_util::sync::CancellationToken;

use crate::cli::{BuildArgs, Cli};
use crate::context;
use crate::diagnostics;
use crate::exit::CliError;
use crate::render::{plain::Plain, table::Table, tty::Live};

/// Runs the build pipeline and prints its summary.
pub fn run(cli: &Cli, args: &BuildArgs) -> Result<i32, CliError> {
    pipeline(
        cli,
        args,
        RunKind::Build,
        None,
        false,
        std::time::Duration::ZERO,
        false,
    )
}

/// Runs the pipeline of `kind` and prints its summary. A deploy first waits up to `lock_wait`
/// for the environment's lock and any running deploy of it (None: refused at once), with
/// `atomic` rolls every service of a run with a failure back, waits up to `approval_timeout`
/// for `cutover approve` where the environment requires approval, and with `smoke`
/// smoke-tests each deployed service as part of verify.
pub fn pipeline(
    cli: &Cli,
    args: &BuildArgs,
    kind: RunKind,
    lock_wait: Option<std::time::Duration>,
    atomic: bool,
    approval_timeout: std::time::Duration,
    smoke: bool,
) -> Result<i32, CliError> {
    let project = Arc::new(context::load(cli)?);
    let env = Arc::new(context::environment(cli, &project)?);
    let secrets = context::secrets(&project, &env)?;
    // A container target's engine must answer before anything is recorded or changed.
    context::runtime()?.block_on(cutover_engine::target::preflight(&project.name, &env))?;
    let store = context::store(&project, true)?
        .ok_or_else(|| CliError::failed("the release store could not be opened", None))?;
    let (agent, run) = if kind == RunKind::Deploy {
        context::settle_interrupted_runs(store.as_ref(), &project)?;
        let run = cutover_engine::ops::claim_deploy_run(
            store.as_ref(),
            &env.name,
            lock_wait,
            &mut |line| eprintln!("{line}"),
        )?;
        if lock_wait.is_some() {
            // A deploy waited for may have died meanwhile: record it before planning.
            context::settle_interrupted_runs(store.as_ref(), &project)?;
        }
        let agent = context::agent(&project, true)
            .map_err(CliError::from)
            .and_then(|a| {
                a.ok_or_else(|| CliError::failed("the agent could not be started", None))
            });
        match agent {
            Ok(agent) => (Some(agent), Some(run)),
            Err(e) => return Err(abandon(store.as_ref(), &run, e)),
        }
    } else {
        (None, None)
    };
    let opts = PlanOptions {
        all: args.all,
        since: args.since.clone(),
        named: args.services.clone(),
        not_running: match kind {
            RunKind::Deploy => context::not_running(&project, &env.name),
            _ => Default::default(),
        },
    };
    let plan = match plan(&project, &env, Some(store.as_ref()), &opts) {
        Ok(plan) => plan,
        Err(e) => {
            let e = CliError::from(e);
            return Err(match &run {
                Some(run) => abandon(store.as_ref(), run, e),
                None => e,
            });
        }
    };
    let max_parallel = args
        .max_parallel
        .map(|n| n as usize)
        .unwrap_or(project.settings.max_parallel);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}"), None))?;

    let state = state_dir(&project);
    let workdir = cutover_engine::plan::GitRepo::discover(&project.dir)
        .ok()
        .flatten()
        .and_then(|r| r.workdir().map(|p| p.display().to_string()));
    let mut reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(StoreReporter::new(store.clone())),
        Box::new(LogFiles::new(state.clone())),
        Box::new(StatusFile::new(
            state.status_file(),
            plan.head.branch.clone(),
            workdir,
        )),
    ];
    let notifier = match kind {
        RunKind::Deploy => context::notifier(&project, &secrets),
        _ => None,
    };
    if let Some(n) = &notifier {
        reporters.push(Box::new(n.reporter()));
    }
    if std::io::stderr().is_terminal() {
        reporters.push(Box::new(Live::new()));
    } else {
        reporters.push(Box::new(Plain));
    }

    let atomic_inputs = atomic.then(|| (secrets.clone(), store.clone()));
    let request = RunRequest {
        kind,
        project: project.clone(),
        env: env.clone(),
        plan,
        max_parallel,
        secrets,
        agent,
        approval_timeout,
        smoke,
        run,
    };
    let outcome = runtime.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(watch_signals(cancel.clone()));
        execute(request, store, cancel, reporters).await
    })?;
    for e in &outcome.reporter_errors {
        diagnostics::warn(e);
    }
    let mut summary = outcome.summary;
    // Leave no runtime threads blocking the exit on a still-running background task.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    if let Some((secrets, store)) = atomic_inputs {
        let log = state.run_log(&summary.run);
        let before: Vec<_> = summary.services.iter().map(|s| s.result).collect();
        let agents = context::launcher(&project);
        summary = cutover_engine::ops::rollback::atomic(
            &cutover_engine::ops::Context::new(&project, &agents),
            &env,
            &secrets,
            store.as_ref(),
            summary,
            &log,
            &mut |line| eprintln!("{line}"),
        )?;
        // The services --atomic sent back: a `rollback` webhook (the run's own events are over).
        let rolled: Vec<_> = summary
            .services
            .iter()
            .zip(before)
            .filter(|(s, was)| s.result == Outcome::RolledBack && *was != Outcome::RolledBack)
            .map(|(s, _)| s)
            .collect();
        if let Some(n) = &notifier
            && let Some(note) = cutover_engine::report::webhook::rollback_notification(
                &summary.run,
                &summary.env,
                &rolled,
                summary.finished_at,
            )
        {
            n.send(note);
        }
    }
    if cli.json {
        let text = serde_json::to_string(&summary)
            .map_err(|e| CliError::failed(format!("encoding the summary: {e}"), None))?;
        println!("{text}");
    } else {
        print!("{}", render_summary(&summary, &state));
    }
    // Webhooks still being delivered get a short, bounded grace; a dead receiver is a warning.
    if let Some(n) = notifier {
        for e in n.finish(cutover_engine::report::webhook::FINISH_GRACE) {
            diagnostics::warn(&e);
        }
    }
    Ok(summary.exit_code())
}

/// A deploy run claimed before planning ends canceled when the deploy cannot go on, so it
/// holds nothing; `e` is returned as it was.
fn abandon(
    store: &dyn cutover_store::ReleaseStore,
    run: &cutover_store::Run,
    e: CliError,
) -> CliError {
    let _ = store.finish_run(
        &run.id,
        cutover_store::RunStatus::Canceled,
        chrono::Utc::now(),
        Some("the deploy stopped before it began"),
    );
    e
}

/// Ctrl-C (or SIGTERM) cancels the run: every process group gets SIGTERM, then SIGKILL after
/// a grace period, so nothing outlives cutover.
async fn watch_signals(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("\ncanceling: stopping every command");
    cancel.cancel();
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("still stopping: commands that ignore SIGTERM are killed within 3s");
    }
}

/// The summary for people: a line, a table, then each failure with its last output lines.
fn render_summary(summary: &RunSummary, state: &cutover_store::StateDir) -> String {
    let elapsed = (summary.finished_at - summary.started_at)
        .to_std()
        .map(|d| cutover_engine::report::text::ms(u64::try_from(d.as_millis()).unwrap_or(0)))
        .unwrap_or_default();
    let mut out = format!(
        "{} {} in {}: {} ({elapsed})\n",
        summary.run,
        summary.status.as_str(),
        summary.env,
        summary.counts()
    );
    let mut t = Table::new(&["SERVICE", "RESULT", "RELEASE", "TIME", "REASON"]);
    for s in &summary.services {
        let time = match (
            s.stages.first(),
            s.stages.last().and_then(|l| l.finished_at),
        ) {
            (Some(first), Some(end)) => (end - first.started_at)
                .to_std()
                .map(|d| {
                    cutover_engine::report::text::ms(u64::try_from(d.as_millis()).unwrap_or(0))
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        t.row(vec![
            s.name.clone(),
            s.result.as_str().to_string(),
            s.release.clone().unwrap_or_else(|| "-".into()),
            time,
            s.reason.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&t.render());
    for s in summary.services.iter().filter(|s| !s.tail.is_empty()) {
        out.push_str(&format!(
            "\n{} {}: {}\n",
            s.name,
            s.result.as_str(),
            s.reason.as_deref().unwrap_or("")
        ));
        for line in &s.tail {
            out.push_str(&format!("  | {line}\n"));
        }
    }
    if let Some(a) = &summary.approval {
        let by = a
            .decided_by
            .as_deref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        let at = a
            .decided_at
            .map(|t| format!(" at {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        let why = a
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "approval: {}{by}{at}{why}\n",
            a.state.as_str().replace('_', " ")
        ));
    }
    let log = state.run_log(&summary.run);
    out.push_str(&format!("log: {}\n", log.display()));
    out
}
