//! `deploy --smoke`: once a release is ACTIVE on the agent, its smoke tests run as part of
//! verify; a failure fails the service and sends traffic back to the previous ACTIVE release.

use cutover_runtime::api::client::AgentClient;

use super::executor::{ExecMsg, Executor};
use crate::command::Stream;
use crate::event::{EventKind, Stage};
use crate::smoke::{self, Target};

impl Executor {
    /// Smoke-tests the release just made ACTIVE; Err is the reason the service fails (every
    /// failed check, and what became of the rollback).
    pub(super) async fn smoke_verify(
        &self,
        release: &str,
        agent: &AgentClient,
    ) -> Result<(), String> {
        let Some(target) = Target::of(&self.service) else {
            return Ok(());
        };
        let report = smoke::run(&target).await;
        for c in &report.checks {
            let _ = self.tx.send(ExecMsg::Event(EventKind::Output {
                service: self.service.name.clone(),
                stage: Stage::Verify,
                stream: Stream::Stdout,
                line: format!(
                    "smoke {} {} ({}ms): {}",
                    c.name,
                    if c.passed { "passed" } else { "FAILED" },
                    c.duration_ms,
                    c.message
                ),
            }));
        }
        if report.passed {
            return Ok(());
        }
        let failures = report.failure_summary();
        // The store still records the release this one replaces as ACTIVE: the new one only
        // becomes ACTIVE there when its service succeeds.
        let (store, svc, env) = (
            self.store.clone(),
            self.service.name.clone(),
            self.env.clone(),
        );
        let previous = tokio::task::spawn_blocking(move || store.active_release(&svc, &env))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .filter(|p| p.id != release);
        let Some(previous) = previous else {
            return Err(format!(
                "{failures}; no previous release to roll back to: {release} keeps serving"
            ));
        };
        self.send(EventKind::RollbackStarted {
            service: self.service.name.clone(),
            from: Some(release.to_string()),
            to: previous.id.clone(),
            reason: failures.clone(),
        });
        let rolled = crate::rollback::redeploy(
            agent,
            &self.state_dir,
            &self.env,
            &self.service,
            &previous.id,
            &self.secrets,
            self.container.as_deref(),
        )
        .await;
        self.rollback_finished(&previous.id, &rolled);
        match rolled {
            Ok(()) => Err(format!("{failures}; rolled back to {}", previous.id)),
            Err(why) => Err(format!(
                "{failures}; rolling back to {} failed: {why}",
                previous.id
            )),
        }
    }
}
