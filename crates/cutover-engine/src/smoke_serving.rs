//! Who serves a service before `cutover test` judges it: the smoke checks are about the
//! service's ACTIVE release, so they run only when cutover's agent serves that release on the
//! service's public port. Whatever else answers there (nothing, another program, another
//! release) fails every check with the reason, instead of passing on someone else's answers.

use cutover_runtime::api::types::AgentStatus;

use crate::smoke::{Check, STAGES, ServiceReport, Target};

/// Whether the agent serves `service`'s ACTIVE release in `env`.
///
/// `agent` is the agent's status (None when no agent runs for the project); `active` is the
/// store's ACTIVE release of the service in `env` (None when it has none).
///
/// # Errors
/// The reason the checks must not run, in words a user can act on.
pub fn judge(
    agent: Option<&AgentStatus>,
    env: &str,
    service: &str,
    active: Option<&str>,
) -> Result<(), String> {
    let Some(status) = agent else {
        return Err(format!(
            "cutover's agent does not run for this project, so whatever answers on {service}'s port is not its ACTIVE release: deploy it first (`cutover deploy {service}`)"
        ));
    };
    let Some(active) = active else {
        return Err(format!(
            "{service} has no ACTIVE release in {env}: deploy it first (`cutover deploy {service}`)"
        ));
    };
    let served = status
        .services
        .iter()
        .find(|s| s.env == env && s.service == service);
    match served.and_then(|s| s.release.as_deref()) {
        None => Err(format!(
            "the agent does not serve {service} in {env} (its ACTIVE release is {active}): `cutover status` shows what runs"
        )),
        Some(live) if live != active => Err(format!(
            "the agent serves release {live} of {service}, not its ACTIVE release {active}: `cutover status` shows what runs"
        )),
        Some(_) => Ok(()),
    }
}

/// The report of a service that was not tested because it is not served as it should be:
/// every check fails with `why`.
pub fn unserved(target: &Target, why: &str) -> ServiceReport {
    let mut checks: Vec<Check> = STAGES
        .iter()
        .map(|stage| Check {
            name: (*stage).to_string(),
            request: String::new(),
            passed: false,
            duration_ms: 0,
            message: format!("not tried: {why}"),
        })
        .collect();
    for entry in &target.smoke {
        checks.push(Check {
            name: format!("smoke {} {}", entry.method, entry.path),
            request: format!("{} {}", entry.method, entry.path),
            passed: false,
            duration_ms: 0,
            message: format!("not tried: {why}"),
        });
    }
    if let Some(first) = checks.first_mut() {
        first.request = format!("GET {}", target.health_path);
        first.message = why.to_string();
    }
    ServiceReport {
        name: target.service.clone(),
        url: target.url(),
        passed: false,
        checks,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use cutover_runtime::api::types::ServiceStatus;

    fn status(release: Option<&str>) -> AgentStatus {
        AgentStatus {
            pid: 1,
            socket: "/x.sock".into(),
            uptime_seconds: 1,
            services: vec![ServiceStatus {
                env: "development".into(),
                service: "api".into(),
                release: release.map(str::to_string),
                health: "healthy".into(),
                ready: 1,
                desired: 1,
                traffic: Vec::new(),
                url: "http://127.0.0.1:1".into(),
                sets: Vec::new(),
                numbers: None,
                canary: None,
                problem: None,
                deploying: None,
                scaled: None,
            }],
            deploys: Vec::new(),
        }
    }

    #[test]
    fn only_the_active_release_served_by_the_agent_passes() {
        let s = status(Some("r2"));
        assert_eq!(judge(Some(&s), "development", "api", Some("r2")), Ok(()));
        let e = judge(Some(&s), "development", "api", Some("r1")).unwrap_err();
        assert!(
            e.contains("serves release r2 of api, not its ACTIVE release r1"),
            "{e}"
        );
        let e = judge(None, "development", "api", Some("r2")).unwrap_err();
        assert!(e.contains("agent does not run"), "{e}");
        let e = judge(Some(&s), "production", "api", Some("r2")).unwrap_err();
        assert!(e.contains("does not serve api in production"), "{e}");
        let e = judge(Some(&status(None)), "development", "api", Some("r2")).unwrap_err();
        assert!(e.contains("does not serve api"), "{e}");
        let e = judge(Some(&s), "development", "api", None).unwrap_err();
        assert!(e.contains("no ACTIVE release"), "{e}");
    }
}
