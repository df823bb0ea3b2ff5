//! The GitHub Actions workflow `cutover ci github` writes.
//!
//! Its shape: `detect` runs `cutover plan --format github-matrix` once; `build` runs checks and
//! build of each affected service as a matrix job; one `deploy-<env>` job per declared
//! environment runs `cutover --env <env> deploy` on a push to that environment's branch or a
//! manual run choosing it, in the GitHub environment of the same name, one at a time; `summary`
//! turns all of them into one status check (skipped jobs count as success).
//!
//! Generation is a pure function of the validated [`Project`]: the same config gives the same
//! bytes, so the file can be regenerated and diffed.

use std::collections::BTreeSet;

use cutover_config::{EnvValue, EnvironmentDecl, Project, TargetKind};

use super::yaml::{Doc, flow_seq};

/// Where the workflow goes by default, relative to the git repository root.
pub const DEFAULT_PATH: &str = ".github/workflows/cutover.yml";

/// The version the workflow installs by default: this binary's.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The workflow for `project`, whose directory is `project_rel` below the git repository root
/// (`""` at the root, `/` separators).
pub fn github_workflow(project: &Project, project_rel: &str) -> String {
    render(project, project_rel, VERSION)
}

/// The environments that get a deploy job: the declared ones, in declaration order (the
/// implicit `development` environment is for working locally, not for CI).
pub fn deploy_environments(project: &Project) -> Vec<&EnvironmentDecl> {
    project.environments.iter().filter(|e| e.declared).collect()
}

/// The ids of the workflow's jobs, in file order.
pub fn job_ids(project: &Project) -> Vec<String> {
    let mut ids = vec!["detect".to_string(), "build".to_string()];
    ids.extend(deploy_environments(project).iter().map(|e| deploy_job(e)));
    ids.push("summary".to_string());
    ids
}

/// The secrets cutover needs when it runs in environment `env` (services' `{ secret = ... }`
/// env values and webhook secrets), sorted; the jobs map each from the GitHub secret of the
/// same name.
pub fn secret_names(project: &Project, env: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    if let Ok(resolved) = project.resolve(env) {
        for svc in &resolved.services {
            for value in svc.env.values() {
                if let EnvValue::Secret(name) = value {
                    names.insert(name.clone());
                }
            }
        }
    }
    for n in &project.notify {
        if let Some(EnvValue::Secret(name)) = &n.secret {
            names.insert(name.clone());
        }
    }
    names
}

/// The deploy job id of `env`.
fn deploy_job(env: &EnvironmentDecl) -> String {
    format!("deploy-{}", env.name)
}

/// Whether `env`'s deploy job runs on the deploy host itself (a self-hosted runner).
fn on_deploy_host(env: &EnvironmentDecl) -> bool {
    env.target == TargetKind::Local
}

/// `s` as a literal in a `branches:` or `paths:` filter: the characters GitHub reads as
/// pattern syntax (`* ? + [ ] !` and `\\`) are escaped with `\\`.
fn filter_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '+' | '[' | ']' | '!' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `s` as a single-quoted string literal of a GitHub Actions expression.
fn expr_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The workflow, installing `version` of cutover.
fn render(project: &Project, project_rel: &str, version: &str) -> String {
    let envs = deploy_environments(project);
    let below_root = !project_rel.is_empty();
    let cutover = if below_root {
        "cutover -C \"$CUTOVER_PROJECT\""
    } else {
        "cutover"
    };
    let mut branches: Vec<&str> = Vec::new();
    for b in envs.iter().filter_map(|e| e.branch.as_deref()) {
        if !branches.contains(&b) {
            branches.push(b);
        }
    }
    let branch_filters: Vec<String> = branches.iter().map(|b| filter_literal(b)).collect();

    let mut d = Doc::new();
    header(&mut d, project, project_rel, &envs, &branches);
    d.entry(0, "name", "cutover");
    d.blank();

    // Triggers.
    d.open_plain(0, "on");
    let paths = below_root.then(|| format!("{}/**", filter_literal(project_rel)));
    if !branches.is_empty() {
        d.open(1, "push");
        d.raw_entry(2, "branches", &flow_seq(&branch_filters));
        if let Some(p) = &paths {
            d.raw_entry(2, "paths", &flow_seq(&[p]));
        }
    }
    match &paths {
        Some(p) => {
            d.open(1, "pull_request");
            d.raw_entry(2, "paths", &flow_seq(&[p]));
        }
        None => d.raw_entry(1, "pull_request", "{}"),
    }
    if envs.is_empty() {
        d.raw_entry(1, "workflow_dispatch", "{}");
    } else {
        d.open(1, "workflow_dispatch");
        d.open(2, "inputs");
        d.open(3, "environment");
        d.entry(4, "description", "Environment to deploy to");
        d.entry(4, "type", "choice");
        d.raw_entry(4, "required", "true");
        d.entry(4, "default", default_choice(project, &envs));
        d.open(4, "options");
        for e in &envs {
            d.item(5, &e.name);
        }
    }
    d.blank();

    d.open(0, "permissions");
    d.entry(1, "contents", "read");
    d.blank();

    d.open(0, "defaults");
    d.open(1, "run");
    d.comment(2, "bash -e -o pipefail: a failing command fails the step");
    d.entry(2, "shell", "bash");
    d.blank();

    d.open(0, "env");
    d.comment(
        1,
        "The cutover release every job installs (`cargo install cutover --locked`).",
    );
    d.entry(1, "CUTOVER_VERSION", version);
    if below_root {
        d.comment(
            1,
            "The project directory (holding cutover.toml), from the repository root.",
        );
        d.entry(1, "CUTOVER_PROJECT", project_rel);
    }
    d.blank();

    d.open(0, "jobs");
    detect_job(&mut d, cutover);
    d.blank();
    build_job(&mut d, project, cutover);
    for env in &envs {
        d.blank();
        deploy_env_job(&mut d, project, env, cutover);
    }
    d.blank();
    summary_job(&mut d, &job_ids(project));
    d.finish()
}

/// The comment block at the top of the file: what it does, how cutover is installed, what
/// must be set up on GitHub.
fn header(
    d: &mut Doc,
    project: &Project,
    project_rel: &str,
    envs: &[&EnvironmentDecl],
    branches: &[&str],
) {
    let mut lines: Vec<String> = Vec::new();
    let mut add = |s: &str| lines.push(s.to_string());
    let place = if project_rel.is_empty() {
        String::new()
    } else {
        format!(" in {project_rel}/")
    };
    add(&format!(
        "Written by `cutover ci github` for the project {:?}{place}.",
        project.name
    ));
    add("Regenerate it with `cutover ci github --force` after changing environments in");
    add("cutover.toml; edits made here are then lost.");
    add("");
    if branches.is_empty() {
        add("- Pull requests and manual runs (no environment sets `branch`, so pushes do not");
        add("  run it): `detect` runs `cutover plan --format github-matrix`, then `build` runs");
        add("  the checks and build of each affected service.");
    } else {
        add(&format!(
            "- Pull requests, manual runs and pushes to {}: `detect` runs `cutover plan",
            branches.join(", ")
        ));
        add("  --format github-matrix`, then `build` runs the checks and build of each");
        add("  affected service.");
    }
    if envs.is_empty() {
        add("- cutover.toml declares no [environments], so nothing is deployed from here.");
    } else {
        add("- A push to an environment's branch, or a manual run (Actions > cutover > Run");
        add("  workflow) choosing it, then runs `deploy-<env>`: `cutover --env <env> deploy`");
        add("  deploys the affected services in dependency order. Pull requests never deploy.");
    }
    add("- `summary` succeeds when every other job succeeded or was skipped: make it the");
    add("  one required status check in branch protection.");
    add("");
    add("Installing cutover: each job runs `cargo install cutover --locked --version");
    add("$CUTOVER_VERSION` (cached per runner OS and version); set CUTOVER_VERSION below to");
    add("upgrade, or change the \"Install cutover\" steps to install it another way.");
    if !envs.is_empty() {
        let approval: Vec<&str> = envs
            .iter()
            .filter(|e| e.require_approval)
            .map(|e| e.name.as_str())
            .collect();
        add("");
        add("GitHub environments: each deploy job runs in the GitHub environment of the same");
        add("name (created on first use). A workflow file cannot set protection rules: add");
        if approval.is_empty() {
            add("required reviewers to environments that should wait for approval in the");
        } else {
            add(&format!(
                "required reviewers to {} (require_approval = true) in the",
                approval.join(", ")
            ));
        }
        add("repository's Settings > Environments.");
        add("Secrets that cutover.toml references are passed from the GitHub secrets of the");
        add("same name (repository or environment secrets).");
    }
    if envs.iter().any(|e| on_deploy_host(e)) {
        add("");
        add("The local target deploys on the machine that runs the job, so deploy jobs of");
        add("environments with target = \"local\" run on a self-hosted runner: register one on");
        add("the deploy host (with a Rust toolchain). Its checkout keeps .cutover/ (the release");
        add("history) between runs, and the cutover agent keeps serving after the job ends.");
    }
    for line in &lines {
        d.comment(0, line);
    }
    d.blank();
}

/// The environment a manual run deploys to unless another is chosen: `[project] default_env`
/// when it is declared, else the first environment that needs no approval, else the first.
fn default_choice<'a>(project: &Project, envs: &[&'a EnvironmentDecl]) -> &'a str {
    let by_default = project.settings.default_env.as_deref();
    envs.iter()
        .find(|e| Some(e.name.as_str()) == by_default)
        .or_else(|| envs.iter().find(|e| !e.require_approval))
        .or_else(|| envs.first())
        .map(|e| e.name.as_str())
        .unwrap_or_default()
}

/// Checkout, then cutover from the cache or `cargo install`.
fn setup_steps(d: &mut Doc, full_history: bool, keep_state: bool) {
    d.item_entry(3, "uses", "actions/checkout@v4");
    if full_history || keep_state {
        d.open(4, "with");
        if full_history {
            d.comment(
                5,
                "Change detection compares commits: fetch the whole history.",
            );
            d.raw_entry(5, "fetch-depth", "0");
        }
        if keep_state {
            d.comment(5, "Keep .cutover/ (release store, snapshots) between runs.");
            d.raw_entry(5, "clean", "false");
        }
    }
    d.item_entry(3, "name", "Cache cutover");
    d.entry(4, "id", "cutover-cache");
    d.entry(4, "uses", "actions/cache@v4");
    d.open(4, "with");
    d.entry(5, "path", "~/.cargo/bin/cutover");
    d.entry(
        5,
        "key",
        "cutover-${{ runner.os }}-${{ runner.arch }}-${{ env.CUTOVER_VERSION }}",
    );
    d.item_entry(3, "name", "Install cutover");
    d.entry(4, "if", "steps.cutover-cache.outputs.cache-hit != 'true'");
    d.entry(
        4,
        "run",
        "cargo install cutover --locked --version \"$CUTOVER_VERSION\"",
    );
}

/// `env:` mapping each secret from the GitHub secret of the same name, plus `extra` entries.
fn secrets_env(d: &mut Doc, level: usize, secrets: &BTreeSet<String>, extra: &[(&str, &str)]) {
    if secrets.is_empty() && extra.is_empty() {
        return;
    }
    d.open(level, "env");
    for (k, v) in extra {
        d.entry(level + 1, k, v);
    }
    for name in secrets {
        d.entry(level + 1, name, &format!("${{{{ secrets.{name} }}}}"));
    }
}

/// `detect`: the plan as a matrix of affected services, and whether there are any.
fn detect_job(d: &mut Doc, cutover: &str) {
    d.open(1, "detect");
    d.entry(2, "name", "detect changes");
    d.entry(2, "runs-on", "ubuntu-latest");
    d.open(2, "outputs");
    d.entry(3, "matrix", "${{ steps.plan.outputs.matrix }}");
    d.entry(3, "has_services", "${{ steps.plan.outputs.has_services }}");
    d.open(2, "steps");
    setup_steps(d, true, false);
    d.item_entry(3, "name", "Plan");
    d.entry(4, "id", "plan");
    d.open(4, "env");
    d.entry(5, "PR_BASE", "${{ github.event.pull_request.base.sha }}");
    d.entry(5, "PUSH_BEFORE", "${{ github.event.before }}");
    let script = format!(
        r#"# Compare with the pull request's base, or with the commit before the push. Without
# one (a manual run, a new branch, a force push) cutover compares each service with
# its ACTIVE release.
base="${{PR_BASE:-$PUSH_BEFORE}}"
since=()
if [ -n "$base" ] && git cat-file -e "$base^{{commit}}" 2>/dev/null; then
  since=(--since "$base")
fi
{cutover} plan "${{since[@]}}"
matrix=$({cutover} plan --format github-matrix "${{since[@]}}")
delimiter="matrix_$(openssl rand -hex 16)"
{{
  echo "matrix<<$delimiter"
  echo "$matrix"
  echo "$delimiter"
}} >> "$GITHUB_OUTPUT"
if jq -e '.include | length > 0' <<<"$matrix" >/dev/null; then
  echo "has_services=true" >> "$GITHUB_OUTPUT"
else
  echo "has_services=false" >> "$GITHUB_OUTPUT"
fi
"#
    );
    d.script(4, "run", &script);
}

/// `build`: checks and build of each affected service, one matrix job per service.
fn build_job(d: &mut Doc, project: &Project, cutover: &str) {
    d.open(1, "build");
    d.entry(2, "name", "checks and build (${{ matrix.service }})");
    d.entry(2, "needs", "detect");
    d.entry(2, "if", "needs.detect.outputs.has_services == 'true'");
    d.entry(2, "runs-on", "ubuntu-latest");
    d.open(2, "strategy");
    d.raw_entry(3, "fail-fast", "false");
    d.entry(3, "matrix", "${{ fromJSON(needs.detect.outputs.matrix) }}");
    d.open(2, "steps");
    setup_steps(d, false, false);
    d.item_entry(3, "name", "Checks and build");
    let secrets = secret_names(project, project.default_env());
    secrets_env(d, 4, &secrets, &[("SERVICE", "${{ matrix.service }}")]);
    d.entry(4, "run", &format!("{cutover} build \"$SERVICE\""));
}

/// `deploy-<env>`: the whole pipeline for `env`, on a push to its branch or a manual run.
fn deploy_env_job(d: &mut Doc, project: &Project, env: &EnvironmentDecl, cutover: &str) {
    let name = &env.name;
    if env.require_approval {
        d.comment(
            1,
            &format!(
                "require_approval = true: add required reviewers to the GitHub environment {name}"
            ),
        );
        d.comment(
            1,
            "(Settings > Environments); a workflow file cannot set them.",
        );
    }
    d.open(1, &deploy_job(env));
    d.entry(2, "name", &format!("deploy {name}"));
    d.raw_entry(2, "needs", "[detect, build]");
    let mut when = Vec::new();
    if let Some(branch) = &env.branch {
        when.push(format!(
            "(github.event_name == 'push' && github.ref == {})",
            expr_str(&format!("refs/heads/{branch}"))
        ));
    }
    when.push(format!(
        "(github.event_name == 'workflow_dispatch' && inputs.environment == {})",
        expr_str(name)
    ));
    d.entry(
        2,
        "if",
        &format!(
            "${{{{ needs.detect.outputs.has_services == 'true' && ({}) }}}}",
            when.join(" || ")
        ),
    );
    let local = on_deploy_host(env);
    if local {
        d.comment(
            2,
            "The local target deploys on this machine: the deploy host.",
        );
    }
    d.entry(
        2,
        "runs-on",
        if local {
            "self-hosted"
        } else {
            "ubuntu-latest"
        },
    );
    d.entry(2, "environment", name);
    d.open(2, "concurrency");
    d.entry(3, "group", &format!("cutover-{name}"));
    d.raw_entry(3, "cancel-in-progress", "false");
    d.open(2, "steps");
    setup_steps(d, true, local);
    d.item_entry(3, "name", "Deploy");
    let secrets = secret_names(project, name);
    let extra: &[(&str, &str)] = if local {
        &[("RUNNER_TRACKING_ID", "")]
    } else {
        &[]
    };
    if local {
        d.comment(
            4,
            "An empty RUNNER_TRACKING_ID keeps the runner from stopping the cutover agent",
        );
        d.comment(4, "(and the services it runs) when the job ends.");
    }
    secrets_env(d, 4, &secrets, extra);
    d.entry(4, "run", &format!("{cutover} --env {name} deploy"));
}

/// `summary`: one status check over every other job.
fn summary_job(d: &mut Doc, ids: &[String]) {
    let needs: Vec<&String> = ids.iter().filter(|id| *id != "summary").collect();
    d.comment(
        1,
        "The one required status check: fails when a job failed or was cancelled.",
    );
    d.open(1, "summary");
    d.entry(2, "name", "summary");
    d.raw_entry(2, "needs", &flow_seq(&needs));
    d.entry(2, "if", "always()");
    d.entry(2, "runs-on", "ubuntu-latest");
    d.open(2, "steps");
    d.item_entry(3, "name", "Every job succeeded or was skipped");
    d.open(4, "env");
    d.entry(5, "NEEDS", "${{ toJSON(needs) }}");
    d.script(
        4,
        "run",
        r#"jq -r 'to_entries[] | "\(.key): \(.value.result)"' <<<"$NEEDS"
if jq -e 'any(.[]; .result != "success" and .result != "skipped")' <<<"$NEEDS" >/dev/null; then
  echo "::error::a job failed or was cancelled"
  exit 1
fi
"#,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `toml` for a temp project holding the service dirs `api` and `web`.
    fn project(toml: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        for svc in ["api", "web"] {
            std::fs::create_dir_all(dir.path().join(svc)).expect("service dir");
        }
        let file = dir.path().join("cutover.toml");
        cutover_config::parse(toml, &file, dir.path()).unwrap_or_else(|e| panic!("config: {e:?}"))
    }

    const TWO_ENVS: &str = r#"
[project]
name = "fleet"

[services.api]
path = "api"
run = "python3 -m http.server $PORT"
port = 8081
env = { TOKEN = { secret = "API_TOKEN" } }

[services.web]
path = "web"
run = "python3 -m http.server $PORT"
port = 8082
depends_on = ["api"]

[environments.staging]
branch = "staging"

[environments.production]
branch = "main"
require_approval = true
"#;

    #[test]
    fn two_environments_at_the_repository_root() {
        let p = project(TWO_ENVS);
        insta::assert_snapshot!(render(&p, "", "0.0.0-test"));
    }

    #[test]
    fn a_project_below_the_root_and_no_environments() {
        let p = project(
            r#"
[project]
name = "fleet"

[services.api]
path = "api"
run = "true"
port = 8081
"#,
        );
        insta::assert_snapshot!(render(&p, "examples/fleet", "0.0.0-test"));
    }

    #[test]
    fn the_same_config_gives_the_same_bytes() {
        let p = project(TWO_ENVS);
        assert_eq!(github_workflow(&p, "x"), github_workflow(&p, "x"));
        assert!(github_workflow(&p, "").contains(VERSION));
    }

    #[test]
    fn odd_names_are_quoted() {
        let p = project(
            r#"
[project]
name = "odd"
default_env = "on"

[services.api]
path = "api"
run = "true"
port = 8081

[environments.on]
branch = "it's:#1+x"
"#,
        );
        let text = render(&p, "a dir/x: y [1]", "1");
        assert!(!text.contains('\t'));
        assert!(text.contains(r"branches: ['it''s:#1\+x']"), "{text}");
        assert!(
            text.contains("github.ref == 'refs/heads/it''s:#1+x')"),
            "{text}"
        );
        assert!(text.contains("environment: 'on'"), "{text}");
        assert!(text.contains("default: 'on'"), "{text}");
        assert!(text.contains("CUTOVER_PROJECT: 'a dir/x: y [1]'"), "{text}");
        assert!(text.contains(r"paths: ['a dir/x: y \[1\]/**']"), "{text}");
        assert!(text.contains("CUTOVER_VERSION: '1'"), "{text}");
    }

    #[test]
    fn manual_runs_default_to_an_environment_without_approval() {
        let p = project(TWO_ENVS);
        let envs = deploy_environments(&p);
        assert_eq!(default_choice(&p, &envs), "staging");
        assert_eq!(
            job_ids(&p),
            [
                "detect",
                "build",
                "deploy-staging",
                "deploy-production",
                "summary"
            ]
        );
        assert_eq!(
            secret_names(&p, "production")
                .into_iter()
                .collect::<Vec<_>>(),
            ["API_TOKEN"]
        );
    }
}
