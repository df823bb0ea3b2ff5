//! Deploys whose command died: the agent goes on with them (a canary's pauses, a rolling
//! update) and, once the command's run was handed to it, records how they end in the release
//! store, so the store and what the agent serves always agree.

use std::collections::BTreeMap;
use std::sync::PoisonError;

use cutover_store::{ReleasePhase, ReleaseStore, RunStatus};

use super::{Agent, log};
use crate::api::types::HandOverRequest;

/// Runs handed to the agent: which releases it records for each, and how those ended.
#[derive(Debug, Default)]
pub(crate) struct HandedOver {
    /// (env, service, release) → run.
    releases: BTreeMap<(String, String, String), String>,
    /// run → the results of its handed-over releases that ended ("active", "failed",
    /// "rolled_back").
    ended: BTreeMap<String, Vec<&'static str>>,
    /// (env, service) → how its latest deploy ended: (release, result, reason), so a hand-over
    /// racing the end of its deploy still records it.
    last: BTreeMap<(String, String), (String, &'static str, Option<String>)>,
}

impl Agent {
    /// Takes over recording `request.release`: the run's pid becomes the agent's (so the run
    /// shows as in progress and blocks other deploys of the environment), and the release's
    /// end is recorded when it comes. Refused when the agent is not deploying that release.
    pub async fn hand_over(&self, request: HandOverRequest) -> Result<(), String> {
        let rt = self
            .services
            .lock()
            .await
            .get(&(request.env.clone(), request.service.clone()))
            .cloned();
        let deploying = rt.is_some_and(|rt| rt.in_progress().as_deref() == Some(&request.release));
        if !deploying {
            return Err(format!(
                "{} in {} is not deploying {}",
                request.service, request.env, request.release
            ));
        }
        let location = self
            .store
            .as_ref()
            .ok_or("the agent does not know the release store")?;
        let store = location.open()?;
        let taken = store
            .hand_over_run(&request.run, std::process::id())
            .map_err(|e| format!("recording the hand-over of {}: {e}", request.run))?;
        if !taken {
            return Err(format!("run {} is not in progress", request.run));
        }
        log(&format!(
            "{}/{} {}: its deploy {} died; the agent records how it ends",
            request.env, request.service, request.release, request.run
        ));
        let ended = {
            let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
            handed.releases.insert(
                (
                    request.env.clone(),
                    request.service.clone(),
                    request.release.clone(),
                ),
                request.run,
            );
            handed
                .last
                .get(&(request.env.clone(), request.service.clone()))
                .filter(|(release, _, _)| *release == request.release)
                .cloned()
        };
        // The deploy ended between the check above and now: record it here.
        if let Some((_, result, reason)) = ended {
            self.record_if_handed_over(
                &request.env,
                &request.service,
                &request.release,
                result,
                reason.as_deref(),
            );
        }
        Ok(())
    }

    /// A deploy of `release` ended with `result`: remembered (a hand-over racing this end still
    /// records it) and recorded in the store when its run was handed over.
    pub(crate) fn deploy_ended(
        &self,
        env: &str,
        service: &str,
        release: &str,
        result: &'static str,
        reason: Option<&str>,
    ) {
        self.note_end(env, service, release, result, reason);
        self.record_if_handed_over(env, service, release, result, reason);
    }

    /// Remembers how the latest deploy of a service ended (see [`HandedOver`]).
    fn note_end(
        &self,
        env: &str,
        service: &str,
        release: &str,
        result: &'static str,
        reason: Option<&str>,
    ) {
        self.handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .insert(
                (env.to_string(), service.to_string()),
                (release.to_string(), result, reason.map(str::to_string)),
            );
    }

    /// After a deploy of `release` ended with `result` (`reason` when it did not go live):
    /// records it in the store when its run was handed over, and finishes the run once its
    /// last handed-over release ended.
    fn record_if_handed_over(
        &self,
        env: &str,
        service: &str,
        release: &str,
        result: &'static str,
        reason: Option<&str>,
    ) {
        let (run, finished) = {
            let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (env.to_string(), service.to_string(), release.to_string());
            let Some(run) = handed.releases.remove(&key) else {
                return;
            };
            handed.ended.entry(run.clone()).or_default().push(result);
            let pending = handed.releases.values().any(|r| *r == run);
            let finished = match pending {
                true => None,
                false => handed.ended.remove(&run),
            };
            (run, finished)
        };
        let Some(location) = &self.store else {
            return;
        };
        let recorded = location.open().and_then(|store| {
            let now = chrono::Utc::now();
            let phase = match result {
                "active" => ReleasePhase::Active,
                "rolled_back" => ReleasePhase::RolledBack,
                _ => ReleasePhase::Failed,
            };
            store
                .set_phase(service, release, phase, reason, now)
                .map_err(|e| e.to_string())?;
            if let Some(results) = finished {
                let status = if results.contains(&"failed") {
                    RunStatus::Failed
                } else if results.contains(&"rolled_back") {
                    RunStatus::RolledBack
                } else {
                    RunStatus::Succeeded
                };
                let why = (status != RunStatus::Succeeded)
                    .then_some("finished by the agent after the command that started it died");
                store
                    .finish_run(&run, status, now, why)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        match recorded {
            Ok(()) => log(&format!(
                "{env}/{service} {release}: recorded {result} for run {run}"
            )),
            Err(e) => log(&format!(
                "{env}/{service} {release}: could not record {result} for run {run}: {e}"
            )),
        }
    }
}
