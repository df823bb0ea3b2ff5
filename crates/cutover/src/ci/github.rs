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

use super::workflow::{
    ChoiceInput, Concurrency, Defaults, Dispatch, DispatchInputs, Filters, Input, Job, Needs,
    Ordered, RunDefaults, Script, Step, Strategy, Triggers, Workflow, to_yaml,
};

/// Where the workflow goes by default, relative to the git repository root.
pub const DEFAULT_PATH: &str = ".github/workflows/cutover.yml";

/// The version the workflow installs by default: this binary's.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The workflow for `project`, whose directory is `project_rel` below the git repository root
/// (`""` at the root, `/` separators).
///
/// Fails only if the YAML serializer does (it writes into a `String`).
pub fn github_workflow(
    project: &Project,
    project_rel: &str,
) -> Result<String, serde_saphyr::ser_error::Error> {
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

/// The workflow, installing `version` of cutover: the header comment, then the YAML.
fn render(
    project: &Project,
    project_rel: &str,
    version: &str,
) -> Result<String, serde_saphyr::ser_error::Error> {
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
    let paths: Vec<String> = if below_root {
        vec![format!("{}/**", filter_literal(project_rel))]
    } else {
        Vec::new()
    };
    let on = Triggers {
        push: (!branches.is_empty()).then(|| Filters {
            branches: branches.iter().map(|b| filter_literal(b)).collect(),
            paths: paths.clone(),
        }),
        pull_request: Filters {
            branches: Vec::new(),
            paths,
        },
        workflow_dispatch: Dispatch {
            inputs: (!envs.is_empty()).then(|| DispatchInputs {
                environment: ChoiceInput {
                    description: "Environment to deploy to".into(),
                    kind: "choice".into(),
                    required: true,
                    default: default_choice(project, &envs).to_string(),
                    options: envs.iter().map(|e| e.name.clone()).collect(),
                },
            }),
        },
    };
    let mut env = Ordered::default();
    env.push("CUTOVER_VERSION", version.to_string());
    if below_root {
        env.push("CUTOVER_PROJECT", project_rel.to_string());
    }
    let mut jobs = Ordered::default();
    jobs.push("detect", detect_job(cutover));
    jobs.push("build", build_job(project, cutover));
    for e in &envs {
        jobs.push(deploy_job(e), deploy_env_job(project, e, cutover));
    }
    jobs.push("summary", summary_job(&job_ids(project)));
    let workflow = Workflow {
        name: "cutover".into(),
        on,
        permissions: Ordered(vec![("contents".into(), "read".into())]),
        defaults: Defaults {
            run: RunDefaults {
                shell: "bash".into(),
            },
        },
        env,
        jobs,
    };
    let mut text = header(project, project_rel, &envs, &branches);
    text.push_str(&to_yaml(&workflow)?);
    Ok(text)
}

/// The comment block at the top of the file: what it does, how cutover is installed, what
/// must be set up on GitHub, and why some settings are what they are.
fn header(
    project: &Project,
    project_rel: &str,
    envs: &[&EnvironmentDecl],
    branches: &[&str],
) -> String {
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
    add("- `run` steps use bash -e -o pipefail: a failing command fails the step. Jobs that");
    add("  compare commits (`detect`, the deploy jobs) check out the whole history.");
    add("");
    add("Installing cutover: each job runs `cargo install cutover --locked --version");
    add("$CUTOVER_VERSION` (cached per runner OS and version); set CUTOVER_VERSION below to");
    add("upgrade, or change the \"Install cutover\" steps to install it another way.");
    if !project_rel.is_empty() {
        add("CUTOVER_PROJECT below is the project directory (holding cutover.toml), from the");
        add("repository root.");
    }
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
        add("history) between runs (`clean: false`), and the cutover agent keeps serving after");
        add("the job ends: the deploy step's empty RUNNER_TRACKING_ID keeps the runner from");
        add("stopping the agent (and the services it runs).");
    }
    let mut out = String::new();
    for line in &lines {
        out.push('#');
        if !line.is_empty() {
            out.push(' ');
            out.push_str(&comment_text(line));
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

/// `text` with control characters (line breaks included) replaced by spaces, for a comment.
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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

/// Checkout (the whole history with `full_history`, keeping `.cutover/` with `keep_state`),
/// then cutover from the cache or `cargo install`.
fn setup_steps(full_history: bool, keep_state: bool) -> Vec<Step> {
    let mut checkout = Step {
        uses: Some("actions/checkout@v4".into()),
        ..Step::default()
    };
    if full_history {
        checkout.with.push("fetch-depth", Input::Number(0));
    }
    if keep_state {
        checkout.with.push("clean", Input::Flag(false));
    }
    let mut cache = Step {
        name: Some("Cache cutover".into()),
        id: Some("cutover-cache".into()),
        uses: Some("actions/cache@v4".into()),
        ..Step::default()
    };
    cache
        .with
        .push("path", Input::Text("~/.cargo/bin/cutover".into()));
    cache.with.push(
        "key",
        Input::Text(
            "cutover-${{ runner.os }}-${{ runner.arch }}-${{ env.CUTOVER_VERSION }}".into(),
        ),
    );
    let install = Step {
        name: Some("Install cutover".into()),
        when: Some("steps.cutover-cache.outputs.cache-hit != 'true'".into()),
        run: Some(Script::new(
            "cargo install cutover --locked --version \"$CUTOVER_VERSION\"",
        )),
        ..Step::default()
    };
    vec![checkout, cache, install]
}

/// `extra` entries, then each secret from the GitHub secret of the same name.
fn secrets_env(secrets: &BTreeSet<String>, extra: &[(&str, &str)]) -> Ordered<String> {
    let mut env = Ordered::default();
    for (k, v) in extra {
        env.push(*k, (*v).to_string());
    }
    for name in secrets {
        env.push(name.as_str(), format!("${{{{ secrets.{name} }}}}"));
    }
    env
}

/// A job on `runs_on` with nothing else set yet.
fn job(name: impl Into<String>, runs_on: &str) -> Job {
    Job {
        name: name.into(),
        needs: None,
        when: None,
        runs_on: runs_on.into(),
        environment: None,
        outputs: Ordered::default(),
        strategy: None,
        concurrency: None,
        steps: Vec::new(),
    }
}

/// `detect`: the plan as a matrix of affected services, and whether there are any.
fn detect_job(cutover: &str) -> Job {
    let mut j = job("detect changes", "ubuntu-latest");
    j.outputs
        .push("matrix", "${{ steps.plan.outputs.matrix }}".to_string());
    j.outputs.push(
        "has_services",
        "${{ steps.plan.outputs.has_services }}".to_string(),
    );
    j.steps = setup_steps(true, false);
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
    let mut plan = Step {
        name: Some("Plan".into()),
        id: Some("plan".into()),
        run: Some(Script::new(script)),
        ..Step::default()
    };
    plan.env.push(
        "PR_BASE",
        "${{ github.event.pull_request.base.sha }}".to_string(),
    );
    plan.env
        .push("PUSH_BEFORE", "${{ github.event.before }}".to_string());
    j.steps.push(plan);
    j
}

/// `build`: checks and build of each affected service, one matrix job per service.
fn build_job(project: &Project, cutover: &str) -> Job {
    let mut j = job("checks and build (${{ matrix.service }})", "ubuntu-latest");
    j.needs = Some(Needs::One("detect".into()));
    j.when = Some("needs.detect.outputs.has_services == 'true'".into());
    j.strategy = Some(Strategy {
        fail_fast: false,
        matrix: "${{ fromJSON(needs.detect.outputs.matrix) }}".into(),
    });
    j.steps = setup_steps(false, false);
    let secrets = secret_names(project, project.default_env());
    j.steps.push(Step {
        name: Some("Checks and build".into()),
        env: secrets_env(&secrets, &[("SERVICE", "${{ matrix.service }}")]),
        run: Some(Script::new(format!("{cutover} build \"$SERVICE\""))),
        ..Step::default()
    });
    j
}

/// `deploy-<env>`: the whole pipeline for `env`, on a push to its branch or a manual run.
fn deploy_env_job(project: &Project, env: &EnvironmentDecl, cutover: &str) -> Job {
    let name = &env.name;
    let local = on_deploy_host(env);
    let mut j = job(
        format!("deploy {name}"),
        if local {
            "self-hosted"
        } else {
            "ubuntu-latest"
        },
    );
    j.needs = Some(Needs::Many(vec!["detect".into(), "build".into()]));
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
    j.when = Some(format!(
        "${{{{ needs.detect.outputs.has_services == 'true' && ({}) }}}}",
        when.join(" || ")
    ));
    j.environment = Some(name.clone());
    j.concurrency = Some(Concurrency {
        group: format!("cutover-{name}"),
        cancel_in_progress: false,
    });
    j.steps = setup_steps(true, local);
    let secrets = secret_names(project, name);
    let extra: &[(&str, &str)] = if local {
        &[("RUNNER_TRACKING_ID", "")]
    } else {
        &[]
    };
    j.steps.push(Step {
        name: Some("Deploy".into()),
        env: secrets_env(&secrets, extra),
        run: Some(Script::new(format!("{cutover} --env {name} deploy"))),
        ..Step::default()
    });
    j
}

/// `summary`: one status check over every other job.
fn summary_job(ids: &[String]) -> Job {
    let mut j = job("summary", "ubuntu-latest");
    j.needs = Some(Needs::Many(
        ids.iter().filter(|id| *id != "summary").cloned().collect(),
    ));
    j.when = Some("always()".into());
    let mut check = Step {
        name: Some("Every job succeeded or was skipped".into()),
        run: Some(Script::new(
            r#"jq -r 'to_entries[] | "\(.key): \(.value.result)"' <<<"$NEEDS"
if jq -e 'any(.[]; .result != "success" and .result != "skipped")' <<<"$NEEDS" >/dev/null; then
  echo "::error::a job failed or was cancelled"
  exit 1
fi
"#,
        )),
        ..Step::default()
    };
    check.env.push("NEEDS", "${{ toJSON(needs) }}".to_string());
    j.steps.push(check);
    j
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
        insta::assert_snapshot!(render(&p, "", "0.0.0-test").unwrap());
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
        insta::assert_snapshot!(render(&p, "examples/fleet", "0.0.0-test").unwrap());
    }

    #[test]
    fn the_same_config_gives_the_same_bytes() {
        let p = project(TWO_ENVS);
        assert_eq!(
            github_workflow(&p, "x").unwrap(),
            github_workflow(&p, "x").unwrap()
        );
        assert!(github_workflow(&p, "").unwrap().contains(VERSION));
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
        let text = render(&p, "a dir/x: y [1]", "1").unwrap();
        assert!(!text.contains('\t'));
        // YAML 1.1 booleans and numbers are quoted, so every reader gets the strings.
        assert!(text.contains("environment: \"on\"\n"), "{text}");
        assert!(text.contains("default: \"on\"\n"), "{text}");
        assert!(text.contains("CUTOVER_VERSION: \"1\"\n"), "{text}");
        // Read back, every value is the string it was made from.
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let on = &doc["on"];
        assert_eq!(on["push"]["branches"], serde_json::json!([r"it's:#1\+x"]));
        assert_eq!(
            on["pull_request"]["paths"],
            serde_json::json!([r"a dir/x: y \[1\]/**"])
        );
        assert_eq!(
            on["workflow_dispatch"]["inputs"]["environment"]["default"],
            "on"
        );
        assert_eq!(doc["env"]["CUTOVER_PROJECT"], "a dir/x: y [1]");
        assert_eq!(doc["env"]["CUTOVER_VERSION"], "1");
        assert_eq!(doc["jobs"]["deploy-on"]["environment"], "on");
        assert!(
            doc["jobs"]["deploy-on"]["if"]
                .as_str()
                .unwrap()
                .contains("github.ref == 'refs/heads/it''s:#1+x')"),
            "{text}"
        );
        assert_eq!(
            doc["jobs"]["deploy-on"]["steps"][0]["with"],
            serde_json::json!({"fetch-depth": 0, "clean": false})
        );
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
