//! Runs in progress: settling those whose process died, and claiming a deploy run past locks
//! and deploys already running.

use std::path::PathBuf;

use cutover_store::{
    ApprovalState, Blocker, ReleasePhase, ReleaseStore, Run, RunKind, RunStatus, StateDir,
};

use super::Context;
use super::lock::describe as describe_lock;
use crate::EngineError;

/// How often a deploy waiting for a lock (`--lock-wait`) looks at the store again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether a process with this pid is alive (a zombie is not).
pub fn pid_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// Runs still marked in progress whose process died (kill -9, power loss) are settled so the
/// store agrees with what the agent serves: a release the agent serves is recorded ACTIVE; a
/// release the agent is still deploying (a canary's pauses, a rolling update, a verification)
/// is handed to the agent, which records how it ends (the run stays in progress, now under the
/// agent's pid); the rest, which never went live, are CANCELED, and the run with them.
pub fn settle_interrupted_runs(cx: &Context, store: &dyn ReleaseStore) -> Result<(), EngineError> {
    let project = cx.project;
    let dead: Vec<Run> = store
        .runs_in_progress()?
        .into_iter()
        .filter(|run| !run.pid.is_some_and(pid_alive))
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    let client = cx.agent(false).ok().flatten();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok();
    let serving = match (&client, &rt) {
        (Some(c), Some(rt)) => rt.block_on(c.status()).ok(),
        _ => None,
    };
    let now = chrono::Utc::now();
    for run in dead {
        let mut handed_over = false;
        for svc in &project.services {
            for rel in store.releases(&svc.name, &run.env, 20)? {
                if rel.run_id != run.id
                    || rel.phase.is_terminal()
                    || rel.phase == ReleasePhase::Active
                {
                    continue;
                }
                let row = serving.as_ref().and_then(|s| {
                    s.services
                        .iter()
                        .find(|x| x.env == run.env && x.service == svc.name)
                });
                let live = row.is_some_and(|x| x.release.as_deref() == Some(rel.id.as_str()));
                let deploying =
                    row.is_some_and(|x| x.deploying.as_deref() == Some(rel.id.as_str()));
                if deploying && let (Some(c), Some(rt)) = (&client, &rt) {
                    let request = cutover_runtime::api::types::HandOverRequest {
                        run: run.id.clone(),
                        env: run.env.clone(),
                        service: svc.name.clone(),
                        release: rel.id.clone(),
                    };
                    if rt.block_on(c.hand_over(&request)).is_ok() {
                        handed_over = true;
                        continue;
                    }
                }
                // The agent may have finished it meanwhile: look again before canceling.
                let live = live
                    || match (&client, &rt) {
                        (Some(c), Some(rt)) => rt.block_on(c.status()).is_ok_and(|s| {
                            s.services.iter().any(|x| {
                                x.env == run.env
                                    && x.service == svc.name
                                    && x.release.as_deref() == Some(rel.id.as_str())
                            })
                        }),
                        _ => false,
                    };
                let (phase, reason) = if live {
                    (ReleasePhase::Active, None)
                } else {
                    (
                        ReleasePhase::Canceled,
                        Some("interrupted: the run's process died before it went live"),
                    )
                };
                let _ = store.set_phase(&svc.name, &rel.id, phase, reason, now);
            }
        }
        // Its checks, builds and hooks outlived it (reparented to PID 1): end them.
        crate::command::end_leftovers(&run.id, cx.state_dir().path());
        if handed_over {
            continue;
        }
        store.finish_run(
            &run.id,
            RunStatus::Canceled,
            now,
            Some("interrupted: the process running it died"),
        )?;
        // A run that died waiting for approval can no longer be approved.
        let _ = store.decide_approval(
            &run.id,
            ApprovalState::Canceled,
            None,
            Some("the deploy waiting for it died"),
            now,
        )?;
    }
    Ok(())
}

/// A deploy of the same environment already running blocks this one (exit 3).
pub fn refuse_concurrent_deploy(store: &dyn ReleaseStore, env: &str) -> Result<(), EngineError> {
    let running = store
        .runs_in_progress()?
        .into_iter()
        .find(|r| r.env == env && r.kind == RunKind::Deploy && r.pid.is_some_and(pid_alive));
    match running {
        Some(r) => Err(deploy_running(&r, env)),
        None => Ok(()),
    }
}

/// Exit 3 when the environment is locked (`cutover lock`).
pub fn refuse_locked(store: &dyn ReleaseStore, env: &str) -> Result<(), EngineError> {
    match store.current_lock(env)? {
        Some(lock) => Err(locked(&lock)),
        None => Ok(()),
    }
}

/// Before a deploy: records its run, in one store transaction with checking that the
/// environment is not locked and no other deploy of it runs; refuses (exit 3) when it is. With
/// `wait`, tries again until both are gone, up to `wait`, then refuses saying so (`notes`
/// hears once what it waits for). Of several deploys waiting for one lock, exactly one gets
/// the run when it goes.
pub fn claim_deploy_run(
    store: &dyn ReleaseStore,
    env: &str,
    wait: Option<std::time::Duration>,
    notes: &mut dyn FnMut(&str),
) -> Result<Run, EngineError> {
    let check = || {
        let claimed = store.claim_run(
            RunKind::Deploy,
            env,
            chrono::Utc::now(),
            std::process::id(),
            &pid_alive,
        )?;
        match claimed {
            Ok(run) => Ok(run),
            Err(Blocker::Locked(lock)) => Err(locked(&lock)),
            Err(Blocker::Running(r)) => Err(deploy_running(&r, env)),
        }
    };
    let Some(wait) = wait else {
        return check();
    };
    let deadline = std::time::Instant::now() + wait;
    let mut announced = false;
    loop {
        let blocked = match check() {
            Ok(run) => return Ok(run),
            Err(EngineError::Blocked { message, .. }) => message,
            Err(e) => return Err(e),
        };
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(EngineError::Blocked {
                message: format!(
                    "still blocked after waiting {}: {blocked}",
                    cutover_config::format_duration(wait)
                ),
                help: Some(
                    "`cutover unlock` releases a lock; a longer --lock-wait waits longer".into(),
                ),
            });
        }
        if !announced {
            notes(&format!(
                "waiting up to {}: {blocked}",
                cutover_config::format_duration(wait)
            ));
            announced = true;
        }
        std::thread::sleep(LOCK_POLL.min(deadline - now));
    }
}

/// The refusal of a deploy or rollback of a locked environment (exit 3).
fn locked(lock: &cutover_store::Lock) -> EngineError {
    EngineError::Blocked {
        message: describe_lock(lock),
        help: Some("`cutover unlock` releases it".into()),
    }
}

/// "deploy X of ENV is running", exit 3; when the agent goes on with it after its command
/// died, what it is doing (a canary waiting for `promote`) and how to end it.
fn deploy_running(r: &Run, env: &str) -> EngineError {
    if let Some(agent_run) = agent_run_description(r, env) {
        return agent_run;
    }
    EngineError::Blocked {
        message: format!(
            "deploy {} of {env} is running (pid {}, started {})",
            r.id,
            r.pid.unwrap_or_default(),
            r.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        help: Some("wait for it to finish, or stop it with Ctrl-C in its terminal".into()),
    }
}

/// The refusal when `r` is a run the agent took over (its pid is the agent's).
fn agent_run_description(r: &Run, env: &str) -> Option<EngineError> {
    let pid = r.pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
    if !stat.contains("--worker") {
        return None;
    }
    // The agent runs in the state directory it serves.
    let info = StateDir::new(format!("/proc/{pid}/cwd")).agent_info();
    let socket = std::fs::read_to_string(info)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["socket"].as_str().map(PathBuf::from))?;
    let client = cutover_runtime::api::client::AgentClient::new(&socket);
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?
        .block_on(client.status())
        .ok()?;
    let mut what = Vec::new();
    let mut services = Vec::new();
    for s in status.services.iter().filter(|s| s.env == env) {
        let Some(release) = &s.deploying else {
            continue;
        };
        services.push(s.service.clone());
        what.push(match &s.canary {
            Some(c) => format!(
                "the canary of {} (release {release}) is at {}% (step {}/{}{})",
                s.service,
                c.weight,
                c.step,
                c.steps,
                match c.state.as_str() {
                    "waiting_for_promote" =>
                        format!(", waiting for `cutover promote {}`", s.service),
                    _ => String::new(),
                }
            ),
            None => format!("{} is deploying release {release}", s.service),
        });
    }
    if what.is_empty() {
        return None;
    }
    let first = services.first().cloned().unwrap_or_default();
    Some(EngineError::Blocked {
        message: format!(
            "deploy {} of {env} goes on in the agent after its command died: {}",
            r.id,
            what.join("; ")
        ),
        help: Some(format!(
            "`cutover promote {first}` or `cutover abort {first}` ends it; `cutover status` shows it"
        )),
    })
}
