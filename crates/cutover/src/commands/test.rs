//! `cutover test [SERVICES] [--junit FILE]`: smoke tests against each service's public URL,
//! a pass/fail table (or `--json`), JUnit XML, and `.cutover/logs/tests/test-<ts>.log`.
//! A service whose ACTIVE release the agent does not serve is not tested: its checks fail with
//! that reason (`smoke_serving`).

use std::io::Write;

use chrono::{SecondsFormat, Utc};
use cutover_engine::redact::Redactor;
use cutover_engine::smoke::{self, ServiceReport, Target};
use cutover_engine::smoke_serving;
use cutover_store::atomic::{Durability, write_atomic};

use crate::cli::{Cli, TestArgs};
use crate::context;
use crate::exit::{CliError, FAILED, OK};
use crate::render::table::Table;

/// Tests the named services (default: every service with a port); exit 1 on any failure.
pub fn run(cli: &Cli, args: &TestArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    // `a,b` as the field notes' script takes them, or `a b`.
    let named: Vec<String> = args
        .services
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut targets = Vec::new();
    if named.is_empty() {
        for svc in &env.services {
            match Target::of(svc) {
                Some(t) => targets.push(t),
                None if !cli.json => {
                    eprintln!(
                        "{}: no `port` and no `hosts` on a [proxy] http listener, nothing to test",
                        svc.name
                    );
                }
                None => {}
            }
        }
    } else {
        for name in &named {
            let svc = context::known_service(&env, name)?;
            let target = Target::of(svc).ok_or_else(|| {
                CliError::usage(
                    format!("service `{name}` has no `port` and no `hosts`: it has no public URL to test"),
                    Some(format!(
                        "give [services.{name}] a `port`, or `hosts` on the [proxy] http listener"
                    )),
                )
            })?;
            if !targets.iter().any(|t: &Target| t.service == target.service) {
                targets.push(target);
            }
        }
    }
    if targets.is_empty() {
        return Err(CliError::usage(
            format!("no service of {} has a `port` to test", env.name),
            Some("smoke tests need a service's public `port`".into()),
        ));
    }
    // Secret values never reach the output, even when a service echoes one back.
    let redactor = Redactor::new(
        context::secrets(&project, &env)
            .unwrap_or_default()
            .into_values(),
    );
    let redact = |s: &str| redactor.redact(s).into_owned();

    let started = Utc::now();
    let runtime = context::runtime()?;
    // Who serves each service: only the ACTIVE release, served by the agent, is tested.
    let agent = match context::agent(&project, false)? {
        Some(client) => runtime.block_on(client.status()).ok(),
        None => None,
    };
    let store = context::store(&project, false)?;
    let mut verdicts = Vec::new();
    for t in &targets {
        let active = match &store {
            Some(store) => store
                .active_release(&t.service, &env.name)
                .map_err(|e| CliError::failed(format!("cannot read the release store: {e}"), None))?
                .map(|r| r.id),
            None => None,
        };
        verdicts.push(smoke_serving::judge(
            agent.as_ref(),
            &env.name,
            &t.service,
            active.as_deref(),
        ));
    }
    let served: Vec<Target> = targets
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.is_ok())
        .map(|(t, _)| t.clone())
        .collect();
    let mut tested = runtime.block_on(smoke::run_all(&served)).into_iter();
    let mut reports: Vec<ServiceReport> = targets
        .iter()
        .zip(&verdicts)
        .filter_map(|(t, v)| match v {
            Ok(()) => tested.next(),
            Err(why) => Some(smoke_serving::unserved(t, why)),
        })
        .collect();
    for r in &mut reports {
        for c in &mut r.checks {
            redactor.redact_in_place(&mut c.message);
        }
    }

    // With a release store, the tests are a run of their own there (typed events per check).
    if let Some(store) = &store {
        cutover_engine::ops::test::record(store.as_ref(), &env.name, started, &reports, &redactor)
            .map_err(|e| CliError::failed(format!("cannot record the tests: {e}"), None))?;
    }
    let log_path = context::state_dir(&project)
        .command_log("test", &format!("test-{}", started.format("%Y%m%d-%H%M%S")));
    write_log(&log_path, &env.name, &reports)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", log_path.display()), None))?;
    if let Some(path) = &args.junit {
        let xml = smoke::junit(&reports, &redact)
            .map_err(|e| CliError::failed(format!("cannot write the JUnit report: {e}"), None))?;
        write_file(path, &xml).map_err(|e| {
            CliError::failed(
                format!("cannot write the JUnit file {}: {e}", path.display()),
                Some("pass a --junit path in a directory that exists and is writable".into()),
            )
        })?;
    }

    let total: usize = reports.iter().map(|r| r.checks.len()).sum();
    let failed: usize = reports.iter().map(|r| r.failures().count()).sum();
    let passed = failed == 0;
    if cli.json {
        let doc = serde_json::json!({
            "env": env.name,
            "passed": passed,
            "tests": total,
            "failures": failed,
            "started_at": started.to_rfc3339_opts(SecondsFormat::Secs, true),
            "services": reports,
            "log": log_path.display().to_string(),
            "junit": args.junit.as_ref().map(|p| p.display().to_string()),
        });
        println!("{doc}");
    } else {
        let mut t = Table::new(&["SERVICE", "CHECK", "RESULT", "TIME", "DETAIL"]);
        for r in &reports {
            for c in &r.checks {
                t.row(vec![
                    r.name.clone(),
                    c.name.clone(),
                    if c.passed { "pass" } else { "FAIL" }.to_string(),
                    format!("{}ms", c.duration_ms),
                    c.message.clone(),
                ]);
            }
        }
        print!("{}", t.render());
        println!(
            "{} in {}: {total} checks, {} passed, {failed} failed",
            if passed { "passed" } else { "failed" },
            env.name,
            total - failed
        );
        println!("log: {}", log_path.display());
        if let Some(p) = &args.junit {
            println!("junit: {}", p.display());
        }
    }
    Ok(if passed { OK } else { FAILED })
}

/// One line per check, appended (two runs in the same second share the file).
fn write_log(path: &std::path::Path, env: &str, reports: &[ServiceReport]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path)?;
    let now = || Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    writeln!(log, "{} smoke tests in {env}", now())?;
    for r in reports {
        writeln!(log, "{} {} at {}", now(), r.name, r.url)?;
        for c in &r.checks {
            writeln!(
                log,
                "{} {} {} {} ({}, {}ms): {}",
                now(),
                r.name,
                c.name,
                if c.passed { "passed" } else { "FAILED" },
                c.request,
                c.duration_ms,
                c.message
            )?;
        }
    }
    let failed: usize = reports.iter().map(|r| r.failures().count()).sum();
    writeln!(
        log,
        "{} {}: {failed} failed",
        now(),
        if failed == 0 { "passed" } else { "failed" }
    )?;
    Ok(())
}

/// Writes `text` to `path` in one step (a report read after the command: not fsynced).
fn write_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    write_atomic(path, text.as_bytes(), Durability::NoSync)
}
