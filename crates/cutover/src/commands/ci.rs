//! `cutover ci github`: writes a GitHub Actions workflow for the project.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cutover_config::{Project, TargetKind};
use cutover_engine::plan::GitRepo;
use cutover_store::atomic::{Durability, write_atomic};

use crate::ci::github;
use crate::cli::{CiArgs, CiGithubArgs, CiProvider, Cli};
use crate::context;
use crate::exit::{CliError, OK};

/// Writes the workflow for the CI service named.
pub fn run(cli: &Cli, args: &CiArgs) -> Result<i32, CliError> {
    match &args.provider {
        CiProvider::Github(a) => run_github(cli, a),
    }
}

/// Writes `.github/workflows/cutover.yml` (or `--output`), refusing to overwrite a file
/// without `--force`.
fn run_github(cli: &Cli, args: &CiGithubArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let root = repo_root(&project)?;
    let project_rel = relative_to(&project.dir, &root)?;
    let text = github::github_workflow(&project, &project_rel)
        .map_err(|e| CliError::failed(format!("cannot write the workflow as YAML: {e}"), None))?;

    if args.output.as_deref() == Some(Path::new("-")) {
        print!("{text}");
        return Ok(OK);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::failed(format!("cannot read the current directory: {e}"), None))?;
    let file = match &args.output {
        Some(p) => cwd.join(p),
        None => root.join(github::DEFAULT_PATH),
    };
    let shown = file.strip_prefix(&cwd).unwrap_or(&file).to_path_buf();
    if file.exists() && !args.force {
        return Err(CliError::failed(
            format!("{} already exists; nothing written", shown.display()),
            Some("pass --force to replace it, or --output PATH to write elsewhere".into()),
        ));
    }
    write_file(&file, &text)?;

    let jobs = github::job_ids(&project);
    let envs = github::deploy_environments(&project);
    let mut secrets: BTreeSet<String> = github::secret_names(&project, project.default_env());
    for e in &envs {
        secrets.extend(github::secret_names(&project, &e.name));
    }
    if cli.json {
        let doc = serde_json::json!({
            "file": file.display().to_string(),
            "project_dir": project_rel,
            "jobs": jobs,
            "environments": envs.iter().map(|e| serde_json::json!({
                "name": e.name,
                "branch": e.branch,
                "require_approval": e.require_approval,
            })).collect::<Vec<_>>(),
            "secrets": secrets,
        });
        println!("{doc}");
        return Ok(OK);
    }
    println!("wrote {}", shown.display());
    println!("jobs: {}", jobs.join(", "));
    println!("next:");
    println!("  - review it, then commit and push it");
    if !envs.is_empty() {
        let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
        let approval: Vec<&str> = envs
            .iter()
            .filter(|e| e.require_approval)
            .map(|e| e.name.as_str())
            .collect();
        let mut line = format!(
            "  - GitHub environments {} are created on first use",
            names.join(", ")
        );
        if !approval.is_empty() {
            line += &format!(
                "; add required reviewers to {} in Settings > Environments",
                approval.join(", ")
            );
        }
        println!("{line}");
    }
    if !secrets.is_empty() {
        println!(
            "  - add these GitHub secrets (repository or environment): {}",
            secrets.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if envs.iter().any(|e| e.target == TargetKind::Local) {
        println!(
            "  - register a self-hosted runner on the deploy host: target \"local\" deploys where the job runs"
        );
    }
    println!("  - make the `summary` job the required status check in branch protection");
    Ok(OK)
}

/// The work tree root of the git repository holding the project (canonical).
fn repo_root(project: &Project) -> Result<PathBuf, CliError> {
    let repo = GitRepo::discover(&project.dir)?;
    let workdir = repo.as_ref().and_then(GitRepo::workdir).ok_or_else(|| {
        CliError::usage(
            format!(
                "{} is not in a git repository; GitHub Actions runs on one",
                project.dir.display()
            ),
            Some("run `git init` (and push it to GitHub), then `cutover ci github`".into()),
        )
    })?;
    Ok(std::fs::canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf()))
}

/// `dir` relative to `root`, with `/` separators (`""` when they are the same).
fn relative_to(dir: &Path, root: &Path) -> Result<String, CliError> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let rel = dir.strip_prefix(root).map_err(|_| {
        CliError::failed(
            format!(
                "the project {} is not inside its repository's work tree {}",
                dir.display(),
                root.display()
            ),
            None,
        )
    })?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(parts.join("/"))
}

/// Writes `text` to `file` in one step, creating parent directories; fsynced (a file the
/// user commits).
fn write_file(file: &Path, text: &str) -> Result<(), CliError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .and_then(|()| write_atomic(file, text.as_bytes(), Durability::Fsync))
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", file.display()), None))
}
