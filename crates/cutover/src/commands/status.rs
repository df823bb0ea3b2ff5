//! `cutover status`: every service of the environment as it is now.

use cutover_runtime::api::types::{AgentStatus, CanaryStatus, LiveNumbers, Traffic};
use serde::Serialize;

use crate::cli::Cli;
use crate::context;
use crate::exit::{CliError, OK};
use crate::render::table::Table;

#[derive(Serialize)]
struct Instances {
    ready: u32,
    desired: u32,
}

#[derive(Serialize)]
struct ServiceRow {
    name: String,
    release: Option<String>,
    phase: Option<String>,
    health: String,
    instances: Instances,
    traffic: Vec<Traffic>,
    url: String,
    /// The canary in progress: its weight, step and live numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    canary: Option<CanaryStatus>,
    /// Requests per second, error rate and p99 over the last seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    numbers: Option<LiveNumbers>,
    /// Why it does not run what it should (the agent could not bring it back).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct RunRow {
    id: String,
    phase: String,
    /// What waits for approval (phase `awaiting_approval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<String>,
}

/// Prints the status table (or `--json`).
pub fn run(cli: &Cli) -> Result<i32, CliError> {
    let project = match context::load_lenient(cli)? {
        context::Loaded::Project(p) => *p,
        context::Loaded::Broken {
            error,
            dir,
            state_dir,
        } => return what_runs(cli, &error, &dir, &state_dir),
    };
    let env = context::environment(cli, &project)?;
    let store = context::store(&project, false)?;
    // Services that should be running (the agent recorded them) bring an agent that died back,
    // unless `cutover agent stop` stopped it; then status waits until the agent has restored
    // them, so it reports them as they are.
    let state = context::state_dir(&project);
    let stopped_by_user = state.agent_stopped().exists();
    let desired = state.agent_desired();
    let expected = std::fs::read(&desired)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<serde_json::Value>>(&b).ok())
        .map_or(0, |specs| specs.len());
    let was_running = context::agent(&project, false)?.is_some();
    let start = expected > 0 && !stopped_by_user;
    let agent: Option<AgentStatus> = match context::agent(&project, start)? {
        Some(client) => {
            let runtime = context::runtime()?;
            if !was_running {
                if !cli.json {
                    eprintln!(
                        "the agent was not running: started it; restoring {expected} service(s)"
                    );
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while std::time::Instant::now() < deadline {
                    let restored = runtime.block_on(client.status()).map_or(0, |s| {
                        s.services
                            .iter()
                            .filter(|x| x.release.is_some() || x.problem.is_some())
                            .count()
                    });
                    if restored >= expected {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            runtime.block_on(client.status()).ok()
        }
        None => None,
    };
    if let Some(store) = &store {
        context::settle_interrupted_runs(store.as_ref(), &project)?;
    }
    let mut rows = Vec::new();
    for svc in &env.services {
        let live = agent.as_ref().and_then(|a| {
            a.services
                .iter()
                .find(|s| s.env == env.name && s.service == svc.name)
        });
        let active = match &store {
            Some(s) => s.active_release(&svc.name, &env.name)?,
            None => None,
        };
        let release = live
            .and_then(|l| l.release.clone())
            .or_else(|| active.as_ref().map(|a| a.id.clone()));
        let phase = match (&store, &release) {
            (Some(s), Some(r)) => s
                .release(&svc.name, r)?
                .map(|r| r.phase.as_str().to_string()),
            _ => None,
        };
        let host = if svc.listen.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            svc.listen.to_string()
        };
        rows.push(ServiceRow {
            name: svc.name.clone(),
            release,
            phase,
            health: live.map_or("stopped".to_string(), |l| l.health.clone()),
            instances: Instances {
                ready: live.map_or(0, |l| l.ready),
                desired: live.map_or(svc.instances, |l| l.desired),
            },
            traffic: live.map(|l| l.traffic.clone()).unwrap_or_default(),
            canary: live.and_then(|l| l.canary.clone()),
            numbers: live.and_then(|l| l.numbers.clone()),
            reason: live.and_then(|l| l.problem.clone()),
            url: live.map(|l| l.url.clone()).unwrap_or_else(|| {
                svc.port
                    .map(|p| format!("http://{host}:{p}"))
                    .unwrap_or_default()
            }),
        });
    }
    let runs: Vec<RunRow> = match &store {
        Some(s) => s
            .runs_in_progress()?
            .into_iter()
            .filter(|r| r.env == env.name)
            .map(|r| {
                let waiting = s
                    .approval(&r.id)
                    .ok()
                    .flatten()
                    .filter(|a| a.state == cutover_store::ApprovalState::Waiting);
                RunRow {
                    phase: match waiting {
                        Some(_) => "awaiting_approval".to_string(),
                        None => "running".to_string(),
                    },
                    waiting: waiting.map(|a| a.waiting),
                    id: r.id,
                }
            })
            .collect(),
        None => Vec::new(),
    };
    let lock = match &store {
        Some(s) => s.current_lock(&env.name)?,
        None => None,
    };
    if cli.json {
        let lock_doc = lock.as_ref().map(
            |l| serde_json::json!({ "holder": l.holder, "reason": l.reason, "since": l.since }),
        );
        let doc = serde_json::json!({
            "env": env.name,
            "services": rows,
            "runs": runs,
            "lock": lock_doc,
        });
        println!("{doc}");
        return Ok(OK);
    }
    println!(
        "{} ({})",
        env.name,
        match (&agent, stopped_by_user) {
            (Some(_), _) => "agent running",
            (None, true) => {
                "agent stopped by `cutover agent stop`: nothing runs until `cutover agent start` \
                 or the next deploy"
            }
            (None, false) => "no agent: nothing runs",
        }
    );
    let mut t = Table::new(&[
        "SERVICE",
        "RELEASE",
        "PHASE",
        "HEALTH",
        "INSTANCES",
        "TRAFFIC",
        "URL",
    ]);
    for r in &rows {
        let traffic = r
            .traffic
            .iter()
            .map(|t| format!("{}% {}", t.weight, t.release))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            r.name.clone(),
            r.release.clone().unwrap_or_else(|| "-".into()),
            r.phase.clone().unwrap_or_else(|| "-".into()),
            r.health.clone(),
            format!("{}/{}", r.instances.ready, r.instances.desired),
            if traffic.is_empty() {
                "-".into()
            } else {
                traffic
            },
            r.url.clone(),
        ]);
    }
    print!("{}", t.render());
    for r in &rows {
        if let Some(why) = &r.reason {
            println!("{}: not running: {why}", r.name);
        }
        if let Some(c) = &r.canary {
            let state = match c.state.as_str() {
                "waiting_for_promote" => "waiting for `cutover promote`",
                "paused" => "paused",
                _ => "judging",
            };
            println!(
                "{}: canary {} at {}% (step {}/{}, {state}); stable {}",
                r.name, c.release, c.weight, c.step, c.steps, c.stable
            );
            if let Some(j) = &c.judgement {
                println!(
                    "  last judgement: {}: {}",
                    j.verdict.replace('_', " "),
                    j.detail
                );
            }
        }
    }
    if let Some(lock) = &lock {
        println!("{}", cutover_engine::ops::lock::describe(lock));
    }
    for r in &runs {
        match &r.waiting {
            Some(what) => println!(
                "run {} is awaiting_approval ({what}): `cutover approve {}` lets it go on",
                r.id, r.id
            ),
            None => println!("run {} is {}", r.id, r.phase),
        }
    }
    Ok(OK)
}

/// `status` when cutover.toml does not load: the error as a warning, then what the agent runs
/// (from its own record), without starting anything.
fn what_runs(
    cli: &Cli,
    error: &CliError,
    dir: &std::path::Path,
    state_dir: &cutover_store::StateDir,
) -> Result<i32, CliError> {
    crate::diagnostics::warn(&format!(
        "cutover.toml does not load, so this shows only what the agent runs: {}",
        error.headline()
    ));
    let status = match context::agent_in(state_dir, dir, false)? {
        Some(client) => context::runtime()?.block_on(client.status()).ok(),
        None => None,
    };
    let services = status.map(|s| s.services).unwrap_or_default();
    if cli.json {
        let rows: Vec<serde_json::Value> = services
            .iter()
            .map(|s| {
                serde_json::json!({
                    "env": s.env, "name": s.service, "release": s.release, "health": s.health,
                    "instances": { "ready": s.ready, "desired": s.desired },
                    "traffic": s.traffic, "url": s.url, "reason": s.problem,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "services": rows, "config_error": error.headline() })
        );
        return Ok(OK);
    }
    if services.is_empty() {
        println!("no agent runs for {}", dir.display());
        return Ok(OK);
    }
    let mut t = Table::new(&["ENV", "SERVICE", "RELEASE", "HEALTH", "INSTANCES", "URL"]);
    for s in &services {
        t.row(vec![
            s.env.clone(),
            s.service.clone(),
            s.release.clone().unwrap_or_else(|| "-".into()),
            s.health.clone(),
            format!("{}/{}", s.ready, s.desired),
            s.url.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(OK)
}
