//! The run summary: what `build`/`deploy --json` print, and the one place an outcome becomes
//! an exit code.

use chrono::{DateTime, SecondsFormat, Utc};
use cutover_store::{Approval, ApprovalState, RunStatus};
use serde::{Deserialize, Serialize, Serializer};

use crate::event::{Outcome, Stage};

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// `{"run", "env", "status", "started_at", "finished_at", "services": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run id.
    pub run: String,
    /// Environment.
    pub env: String,
    /// Overall status.
    pub status: RunStatus,
    /// Start time.
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// End time.
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
    /// Every service of the plan, in plan order.
    pub services: Vec<ServiceSummary>,
    /// The approval gate, when the environment has `require_approval` and the run reached it:
    /// its state, who decided and when.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub approval: Option<Approval>,
}

/// One service in a [`RunSummary`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSummary {
    /// Name.
    pub name: String,
    /// succeeded | failed | skipped | canceled | rolled_back.
    pub result: Outcome,
    /// The release made, if any.
    pub release: Option<String>,
    /// Why, when not succeeded (and for skipped ones).
    pub reason: Option<String>,
    /// The stages it went through.
    pub stages: Vec<StageSummary>,
    /// The failed command's last output lines (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tail: Vec<String>,
}

/// One stage in a [`ServiceSummary`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSummary {
    /// Which stage.
    pub stage: Stage,
    /// How it ended.
    pub result: Outcome,
    /// Start.
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// End (None while running).
    #[serde(serialize_with = "rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl RunSummary {
    /// The overall status from the services' results: any failure → failed; else any
    /// rolled back → rolled_back; else any canceled → canceled; else succeeded.
    pub fn status_from(services: &[ServiceSummary], canceled: bool) -> RunStatus {
        let any = |o: Outcome| services.iter().any(|s| s.result == o);
        if any(Outcome::Failed) {
            RunStatus::Failed
        } else if any(Outcome::RolledBack) {
            RunStatus::RolledBack
        } else if canceled || any(Outcome::Canceled) {
            RunStatus::Canceled
        } else {
            RunStatus::Succeeded
        }
    }

    /// The process exit code for this summary (DESIGN.md "Exit codes").
    pub fn exit_code(&self) -> i32 {
        // Refused or timed-out approval: blocked (the run itself is `canceled`).
        if self.status == RunStatus::Canceled
            && self.approval.as_ref().is_some_and(|a| {
                matches!(a.state, ApprovalState::Rejected | ApprovalState::TimedOut)
            })
        {
            return 3;
        }
        match self.status {
            RunStatus::Succeeded => 0,
            RunStatus::Canceled => 130,
            RunStatus::Failed | RunStatus::RolledBack | RunStatus::InProgress => 1,
        }
    }

    /// Applies `f` to every free-text field.
    pub fn map_text(&mut self, f: &mut dyn FnMut(&mut String)) {
        if let Some(a) = &mut self.approval {
            for s in [&mut a.decided_by, &mut a.reason].into_iter().flatten() {
                f(s);
            }
        }
        for s in &mut self.services {
            if let Some(r) = &mut s.reason {
                f(r);
            }
            s.tail.iter_mut().for_each(&mut *f);
        }
    }

    /// Counts of services by result, in a fixed order, skipping zeros: "3 succeeded, 1 failed".
    pub fn counts(&self) -> String {
        let order = [
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::RolledBack,
            Outcome::Canceled,
            Outcome::Skipped,
        ];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|o| {
                let n = self.services.iter().filter(|s| s.result == *o).count();
                (n > 0).then(|| format!("{n} {}", o.as_str().replace('_', " ")))
            })
            .collect();
        if parts.is_empty() {
            "no services".to_string()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(result: Outcome) -> ServiceSummary {
        ServiceSummary {
            name: "a".into(),
            result,
            release: None,
            reason: None,
            stages: vec![],
            tail: vec![],
        }
    }

    #[test]
    fn status_and_exit_code() {
        let cases = [
            (
                vec![Outcome::Succeeded, Outcome::Skipped],
                false,
                RunStatus::Succeeded,
                0,
            ),
            (
                vec![Outcome::Succeeded, Outcome::Failed],
                false,
                RunStatus::Failed,
                1,
            ),
            (
                vec![Outcome::Canceled, Outcome::Failed],
                true,
                RunStatus::Failed,
                1,
            ),
            (
                vec![Outcome::Succeeded, Outcome::Canceled],
                true,
                RunStatus::Canceled,
                130,
            ),
            (vec![Outcome::RolledBack], false, RunStatus::RolledBack, 1),
            (vec![], false, RunStatus::Succeeded, 0),
        ];
        for (results, canceled, status, code) in cases {
            let services: Vec<_> = results.into_iter().map(svc).collect();
            let got = RunSummary::status_from(&services, canceled);
            assert_eq!(got, status);
            let s = RunSummary {
                run: "r".into(),
                env: "e".into(),
                status: got,
                started_at: Utc::now(),
                finished_at: Utc::now(),
                services,
                approval: None,
            };
            assert_eq!(s.exit_code(), code);
        }
    }
}
