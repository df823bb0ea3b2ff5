//! `cutover releases SERVICE`: history, newest first.

use serde::Serialize;

use crate::cli::{Cli, ReleasesArgs};
use crate::context;
use crate::exit::{CliError, OK};
use crate::render::table::Table;

#[derive(Serialize)]
struct Row {
    id: String,
    phase: String,
    sha: Option<String>,
    dirty: bool,
    /// The branch it was built from (a service branch when deployed from its worktree).
    branch: Option<String>,
    created_at: String,
    reason: Option<String>,
}

/// Prints the release history of one service.
pub fn run(cli: &Cli, args: &ReleasesArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    context::known_service(&env, &args.service)?;
    let releases = match context::store(&project, false)? {
        Some(s) => s.releases(&args.service, &env.name, 100)?,
        None => Vec::new(),
    };
    let rows: Vec<Row> = releases
        .into_iter()
        .map(|r| Row {
            id: r.id,
            phase: r.phase.as_str().to_string(),
            sha: r.sha,
            dirty: r.dirty,
            branch: r.branch,
            created_at: r
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            reason: r.reason,
        })
        .collect();
    if cli.json {
        let doc = serde_json::json!({ "service": args.service, "env": env.name, "releases": rows });
        println!("{doc}");
        return Ok(OK);
    }
    if rows.is_empty() {
        println!("{} has no releases in {} yet", args.service, env.name);
        return Ok(OK);
    }
    let mut t = Table::new(&["RELEASE", "PHASE", "SHA", "CREATED", "REASON"]);
    for r in &rows {
        let sha = r
            .sha
            .as_deref()
            .map(|s| s.get(..7).unwrap_or(s).to_string())
            .unwrap_or_else(|| "-".into());
        t.row(vec![
            r.id.clone(),
            r.phase.clone(),
            if r.dirty { format!("{sha}+dirty") } else { sha },
            r.created_at.clone(),
            r.reason
                .as_deref()
                .and_then(|x| x.lines().next())
                .unwrap_or("")
                .to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(OK)
}
