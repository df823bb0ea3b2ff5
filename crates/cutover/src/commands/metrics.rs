//! `cutover metrics [--since 30d]`: the DORA metrics of the environment, from its release
//! history (definitions in docs/metrics.md and `cutover_store::dora`).

use std::collections::HashMap;

use chrono::{SecondsFormat, Utc};
use cutover_engine::plan::GitRepo;
use cutover_store::dora::{self, History};

use crate::cli::{Cli, MetricsArgs};
use crate::context;
use crate::exit::{CliError, OK};
use crate::render::table::Table;

/// Prints the metrics table (or `--json`).
pub fn run(cli: &Cli, args: &MetricsArgs) -> Result<i32, CliError> {
    let window = parse_window(&args.since)?;
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    let until = Utc::now();
    let since = until - window;

    let history = match context::store(&project, false)? {
        Some(store) => {
            let services: Vec<String> = env.services.iter().map(|s| s.name.clone()).collect();
            History::load(store.as_ref(), &env.name, &services, since)?
        }
        None => History::default(),
    };
    // Commit times of the releases' shas, from the project's repository.
    let mut commit_times = HashMap::new();
    if let Ok(Some(repo)) = GitRepo::discover(&project.dir) {
        for sha in history.releases.iter().filter_map(|r| r.sha.as_deref()) {
            if commit_times.contains_key(sha) {
                continue;
            }
            if let Some(at) = repo.commit_time(sha) {
                commit_times.insert(sha.to_string(), at);
            }
        }
    }
    let d = dora::compute(&history, &commit_times, since, until);

    if cli.json {
        let mut doc = serde_json::to_value(&d)
            .map_err(|e| CliError::failed(format!("encoding the metrics: {e}"), None))?;
        if let Some(map) = doc.as_object_mut() {
            map.insert("env".into(), env.name.clone().into());
            map.insert("since".into(), args.since.trim().into());
            map.insert(
                "from".into(),
                since.to_rfc3339_opts(SecondsFormat::Secs, true).into(),
            );
            map.insert(
                "until".into(),
                until.to_rfc3339_opts(SecondsFormat::Secs, true).into(),
            );
        }
        println!("{doc}");
        return Ok(OK);
    }

    println!(
        "DORA metrics of {} over the last {} ({} to {})",
        env.name,
        args.since.trim(),
        since.format("%Y-%m-%d %H:%M UTC"),
        until.format("%Y-%m-%d %H:%M UTC")
    );
    let mut t = Table::new(&["METRIC", "VALUE", "DEFINITION"]);
    t.row(vec![
        "deployment frequency".into(),
        format!(
            "{:.2}/day ({} deployment{})",
            d.deployment_frequency_per_day,
            d.deployments,
            if d.deployments == 1 { "" } else { "s" }
        ),
        "releases that became ACTIVE in deploy runs, per day".into(),
    ]);
    let skipped = match d.lead_time_skipped {
        0 => String::new(),
        n => format!(", {n} skipped: sha unknown to git"),
    };
    t.row(vec![
        "lead time for changes".into(),
        match (d.lead_time_seconds.median, d.lead_time_seconds.p90) {
            (Some(m), Some(p)) => format!(
                "median {}, p90 {} ({} measured{skipped})",
                human(m),
                human(p),
                d.lead_time_samples
            ),
            _ => format!("no data{skipped}"),
        },
        "commit time of the release's sha to when it became ACTIVE".into(),
    ]);
    t.row(vec![
        "change failure rate".into(),
        match d.change_failure_rate {
            Some(r) => format!(
                "{:.1}% ({} of {} deploy runs)",
                r * 100.0,
                d.failed_deploy_runs,
                d.deploy_runs
            ),
            None => "no data".into(),
        },
        "deploy runs that failed or were rolled back / deploy runs that reached deploy".into(),
    ]);
    let unrestored = match d.unrestored_failures {
        0 => String::new(),
        n => format!(", {n} not restored yet"),
    };
    t.row(vec![
        "time to restore".into(),
        match d.time_to_restore_seconds.median {
            Some(m) => format!(
                "median {} ({} restored{unrestored})",
                human(m),
                d.restored_failures
            ),
            None => format!("no data{unrestored}"),
        },
        "failed or rolled-back deployment to the service's next ACTIVE release".into(),
    ]);
    print!("{}", t.render());
    Ok(OK)
}

/// `--since`: a positive duration such as 30d, 7d or 12h.
fn parse_window(text: &str) -> Result<chrono::TimeDelta, CliError> {
    let help = Some("give a duration such as --since 30d, 7d, 12h or 90m".to_string());
    let d = cutover_config::parse_duration(text)
        .map_err(|e| CliError::usage(format!("--since: {e}"), help.clone()))?;
    if d.is_zero() {
        return Err(CliError::usage(
            format!("--since {text}: the window must be longer than 0"),
            help,
        ));
    }
    chrono::TimeDelta::from_std(d)
        .ok()
        .filter(|w| Utc::now().checked_sub_signed(*w).is_some())
        .ok_or_else(|| CliError::usage(format!("--since {text}: too long a window"), help))
}

/// Seconds for people: 45s, 12m 5s, 3h 20m, 2d 4h.
fn human(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        assert_eq!(human(0.4), "0s");
        assert_eq!(human(45.0), "45s");
        assert_eq!(human(725.0), "12m 5s");
        assert_eq!(human(3.0 * 3600.0 + 20.0 * 60.0 + 7.0), "3h 20m");
        assert_eq!(human(2.0 * 86_400.0 + 4.0 * 3600.0), "2d 4h");
    }

    #[test]
    fn the_window_is_a_positive_duration() {
        assert_eq!(parse_window("30d").ok(), Some(chrono::TimeDelta::days(30)));
        assert_eq!(
            parse_window("1h30m").ok(),
            Some(chrono::TimeDelta::minutes(90))
        );
        for bad in ["", "0", "30", "thirty days", "-1d", "99999999999d"] {
            assert!(
                matches!(parse_window(bad), Err(CliError::Usage { .. })),
                "{bad:?}"
            );
        }
    }
}
