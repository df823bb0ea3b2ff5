//! `cutover build` and `cutover deploy`: the pipeline over the affected services (deploy adds
//! the deploy and verify stages through the agent). The work is `ops::deploy`'s; this file
//! turns arguments into its request, shows the run on the terminal and prints the summary.

use std::io::IsTerminal;

use cutover_engine::ops;
use cutover_engine::ops::deploy::{Pipeline, PipelineRequest};
use cutover_engine::report::Reporter;
use cutover_engine::summary::RunSummary;
use tokio_util::sync::CancellationToken;

use crate::cli::{BuildArgs, Cli};
use crate::context;
use crate::diagnostics;
use crate::exit::CliError;
use crate::render::{plain::Plain, table::Table, tty::Live};

/// Runs the build pipeline and prints its summary.
pub fn run(cli: &Cli, args: &BuildArgs) -> Result<i32, CliError> {
    pipeline(cli, args, PipelineRequest::build())
}

/// Runs the pipeline `request` says (its services, `--all`, `--since` and `--max-parallel`
/// taken from `args`) and prints its summary; the exit code is the summary's.
pub fn pipeline(cli: &Cli, args: &BuildArgs, request: PipelineRequest) -> Result<i32, CliError> {
    let request = PipelineRequest {
        services: args.services.clone(),
        all: args.all,
        since: args.since.clone(),
        max_parallel: args.max_parallel.map(|n| n as usize),
        ..request
    };
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let agents = context::launcher(&project);
    let cx = ops::Context::new(&project, &agents);
    let prepared = Pipeline::prepare(&cx, &env, &request, &mut |line| eprintln!("{line}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}"), None))?;
    let terminal: Box<dyn Reporter> = if std::io::stderr().is_terminal() {
        Box::new(Live::new())
    } else {
        Box::new(Plain)
    };
    let ran = runtime.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(watch_signals(cancel.clone()));
        prepared.execute(vec![terminal], cancel).await
    })?;
    for e in ran.reporter_errors() {
        diagnostics::warn(e);
    }
    // Leave no runtime threads blocking the exit on a still-running background task.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    let outcome = ran.finish(&cx, &mut |line| eprintln!("{line}"))?;
    let summary = &outcome.summary;
    if cli.json {
        let text = serde_json::to_string(summary)
            .map_err(|e| CliError::failed(format!("encoding the summary: {e}"), None))?;
        println!("{text}");
    } else {
        print!("{}", render_summary(summary, &outcome.log));
    }
    // Webhooks still being delivered get a short, bounded grace; a dead receiver is a warning.
    if let Some(n) = outcome.webhooks {
        for e in n.finish(cutover_engine::report::webhook::FINISH_GRACE) {
            diagnostics::warn(&e);
        }
    }
    Ok(summary.exit_code())
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
fn render_summary(summary: &RunSummary, log: &std::path::Path) -> String {
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
    out.push_str(&format!("log: {}\n", log.display()));
    out
}
