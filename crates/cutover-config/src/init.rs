//! `cutover init`: a commented `cutover.toml` for the services found in a directory.
//!
//! A service is a directory (an immediate subdirectory of the project, or one level below) that
//! holds a marker: Dockerfile, requirements.txt, pyproject.toml, package.json, Cargo.toml or
//! go.mod. The guesses for `checks`, `build` and `run` follow the marker; ports count up from 8080.
//!
//! The guesses keep change detection working: checks write nothing into the working tree (a
//! written `__pycache__/` would make every later deploy see a changed service), builds install
//! into the release snapshot (a Python service gets a `.venv` there, so a rollback rolls its
//! dependencies back too), `run` `exec`s the server (signals reach it, not a shell), and
//! [`InitTemplate::ignores`] lists the build outputs to add to `.gitignore`.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

/// The text of a new `cutover.toml` and the services it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitTemplate {
    /// The file's text; it parses with [`crate::parse`].
    pub text: String,
    /// Names of the services found, in file order.
    pub services: Vec<String>,
    /// `.gitignore` lines for the build outputs of the languages found (`.cutover/` first),
    /// without duplicates.
    pub ignores: Vec<&'static str>,
}

/// What cutover itself writes next to `cutover.toml`: never part of a service's changes.
const STATE_IGNORE: &str = ".cutover/";
/// Checks Python syntax like `compileall` but writes no `__pycache__/` (which `compileall`
/// and `py_compile` write whatever PYTHONDONTWRITEBYTECODE says).
const PYTHON_SYNTAX_CHECK: &str = "python3 -c \"import ast, pathlib; [ast.parse(f.read_bytes(), str(f)) for f in pathlib.Path('.').rglob('*.py') if not {'.venv', 'venv', 'node_modules'} & set(f.parts)]\"";

const MARKERS: &[&str] = &[
    "Dockerfile",
    "requirements.txt",
    "pyproject.toml",
    "package.json",
    "Cargo.toml",
    "go.mod",
];
const SKIP: &[&str] = &[
    "target",
    "node_modules",
    "venv",
    "__pycache__",
    "dist",
    "build",
];

struct Found {
    name: String,
    path: String,
    checks: Vec<String>,
    build: Option<String>,
    run: String,
    note: &'static str,
    /// `.gitignore` lines for what its checks and builds write when run by hand.
    ignores: &'static [&'static str],
}

/// Looks at `project_dir`'s subdirectories (depth ≤ 2) for services and writes a template.
pub fn init_template(project_dir: &Path) -> io::Result<InitTemplate> {
    let mut dirs = Vec::new();
    for first in subdirs(project_dir)? {
        if has_marker(&first) {
            dirs.push(first);
        } else {
            dirs.extend(subdirs(&first)?.into_iter().filter(|d| has_marker(d)));
        }
    }
    let mut found: Vec<Found> = Vec::new();
    for dir in dirs {
        let rel = dir.strip_prefix(project_dir).unwrap_or(&dir);
        let path = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let base = sanitize(
            &dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let mut name = base.clone();
        let mut n = 2;
        while found.iter().any(|f| f.name == name) {
            let suffix = format!("-{n}");
            name = format!("{}{suffix}", &base[..base.len().min(63 - suffix.len())]);
            n += 1;
        }
        found.push(guess(&dir, name, path));
    }
    let project = sanitize(
        &project_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let mut ignores = vec![STATE_IGNORE];
    for line in found.iter().flat_map(|f| f.ignores) {
        if !ignores.contains(line) {
            ignores.push(line);
        }
    }
    Ok(InitTemplate {
        text: render(&project, &found),
        services: found.iter().map(|f| f.name.clone()).collect(),
        ignores,
    })
}

fn subdirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || SKIP.contains(&name.as_str()) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn has_marker(dir: &Path) -> bool {
    MARKERS.iter().any(|m| dir.join(m).is_file())
}

/// A name matching `[a-z0-9-]{1,63}` (60 at most, to leave room for a `-N` suffix).
fn sanitize(raw: &str) -> String {
    crate::validate::sanitize_name(raw, 60).unwrap_or_else(|| "service".to_string())
}

fn guess(dir: &Path, name: String, path: String) -> Found {
    let has = |f: &str| dir.join(f).exists();
    if has("requirements.txt") || has("pyproject.toml") {
        let entry = ["app.py", "main.py", "server.py"]
            .into_iter()
            .find(|f| has(f));
        let run = match entry {
            Some(f) => format!("exec .venv/bin/python {f}"),
            None => "exec .venv/bin/python -m app".to_string(),
        };
        let checks = if has("tests") || has("test") {
            // No bytecode and no .pytest_cache in the working tree.
            vec!["PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q -p no:cacheprovider".to_string()]
        } else {
            vec![PYTHON_SYNTAX_CHECK.to_string()]
        };
        // Dependencies go into a virtual environment inside the release snapshot.
        let install = if has("requirements.txt") {
            "-r requirements.txt"
        } else {
            "."
        };
        return Found {
            name,
            path,
            checks,
            build: Some(format!(
                "python3 -m venv .venv && .venv/bin/pip install -q {install}"
            )),
            run,
            note: "Python",
            ignores: &["__pycache__/", "*.pyc", ".venv/", ".pytest_cache/"],
        };
    }
    if has("package.json") {
        let scripts = std::fs::read_to_string(dir.join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("scripts").cloned());
        let has_script = |s: &str| scripts.as_ref().and_then(|v| v.get(s)).is_some();
        let mut checks = Vec::new();
        if has_script("test") {
            checks.push("npm test".to_string());
        }
        let build = if has_script("build") {
            "npm ci && npm run build"
        } else {
            "npm ci"
        };
        return Found {
            name,
            path,
            checks,
            build: Some(build.to_string()),
            run: "exec npm start".to_string(),
            note: "Node.js",
            ignores: &["node_modules/", "dist/"],
        };
    }
    if has("Cargo.toml") {
        let package = std::fs::read_to_string(dir.join("Cargo.toml"))
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_string))
            .unwrap_or_else(|| name.clone());
        return Found {
            checks: vec!["cargo test".to_string()],
            build: Some("cargo build --release".to_string()),
            run: format!("exec ./target/release/{package}"),
            name,
            path,
            note: "Rust",
            ignores: &["target/"],
        };
    }
    if has("go.mod") {
        return Found {
            checks: vec!["go vet ./...".to_string()],
            build: Some("go build -o app .".to_string()),
            run: "exec ./app".to_string(),
            name,
            path,
            note: "Go",
            ignores: &[],
        };
    }
    Found {
        checks: Vec::new(),
        build: None,
        run: "exec docker run --rm -p 127.0.0.1:$PORT:8080 $(docker build -q .)".to_string(),
        name,
        path,
        note: "Dockerfile",
        ignores: &[],
    }
}

/// A TOML basic string (JSON string syntax is a subset of it).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn render(project: &str, found: &[Found]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# cutover.toml, written by `cutover init`. Paths are relative to this file's directory."
    );
    let _ = writeln!(
        t,
        "# Commented lines show a key's default (\"default:\") or an example value (\"e.g.\")."
    );
    let _ = writeln!(
        t,
        "# Check it with `cutover validate`; `cutover schema` prints a JSON Schema for editors."
    );
    let _ = writeln!(t);
    let _ = writeln!(t, "[project]");
    let _ = writeln!(t, "name = {}", q(project));
    t.push_str(concat!(
        "# state = \"sqlite://.cutover/state.db\"    # default: SQLite here; \"postgres://...\" for a shared team store\n",
        "# max_parallel = 16                        # default: services at once per stage\n",
        "# keep_releases = 5                        # default: local snapshots kept per service\n",
        "# branch_prefix = \"service\"                # default: worktree branches service/<name>\n",
        "# metrics_listen = \"127.0.0.1:9464\"        # e.g.; unset by default\n",
        "# default_env = \"development\"             # default: the environment used without --env\n",
        "\n",
        "# [defaults]                               # every service inherits these; services override\n",
        "# strategy = \"blue-green\"                 # default; or rolling, canary, immediate\n",
        "# [defaults.health]\n",
        "# path = \"/health\"                        # default\n",
        "# expect_status = 200                      # default\n",
        "# initial_delay = \"0s\"                    # default: failures before it ends don't count\n",
        "# period = \"1s\"                           # default\n",
        "# timeout = \"1s\"                          # default\n",
        "# success_threshold = 1                    # default\n",
        "# failure_threshold = 3                    # default: failures in a row of a ready instance\n",
        "# ready_timeout = \"60s\"                    # default: a starting instance may take this long\n",
    ));
    if found.is_empty() {
        t.push_str(concat!(
            "\n",
            "# No services found: cutover looked for Dockerfile, requirements.txt, pyproject.toml,\n",
            "# package.json, Cargo.toml and go.mod in subdirectories. Declare one like this:\n",
            "# [services.api]\n",
            "# path = \"api\"                            # source dir and change-detection scope\n",
            "# checks = [\"python3 -m pytest -q\"]\n",
            "# build = \"python3 -m venv .venv && .venv/bin/pip install -r requirements.txt\"\n",
            "# run = \"exec .venv/bin/python app.py\"    # must listen on $PORT\n",
            "# port = 8080                              # public port; the proxy listens here\n",
        ));
    }
    for (i, f) in found.iter().enumerate() {
        let port = 8080 + i;
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "[services.{}]                         # {} in {}",
            f.name, f.note, f.path
        );
        let _ = writeln!(t, "path = {}", q(&f.path));
        let _ = writeln!(
            t,
            "# watch = [\"shared/**\"]                   # e.g.: more paths that affect it"
        );
        let _ = writeln!(
            t,
            "# depends_on = []                         # e.g.: services to deploy first"
        );
        if f.checks.is_empty() {
            let _ = writeln!(
                t,
                "# checks = [\"make test\"]                 # e.g.: lint and tests, run before building"
            );
        } else {
            let list: Vec<String> = f.checks.iter().map(|c| q(c)).collect();
            let _ = writeln!(t, "checks = [{}]", list.join(", "));
        }
        match &f.build {
            Some(b) => {
                let _ = writeln!(t, "build = {}", q(b));
            }
            None => {
                let _ = writeln!(
                    t,
                    "# build = \"make\"                         # e.g.: runs in the release snapshot"
                );
            }
        }
        let _ = writeln!(
            t,
            "run = {}                  # must listen on $PORT",
            q(&f.run)
        );
        let _ = writeln!(
            t,
            "port = {port}                              # public port; the proxy listens here"
        );
        t.push_str(concat!(
            "# listen = \"127.0.0.1\"                   # default\n",
            "# instances = 1                            # default\n",
            "# strategy = \"blue-green\"                 # default\n",
            "# drain_timeout = \"30s\"                   # default\n",
            "# scale_down_delay = \"30s\"                # default\n",
            "# timeout = \"10m\"                         # default: per command (checks, build, hooks)\n",
            "# env = { LOG_LEVEL = \"info\", API_KEY = { secret = \"API_KEY\" } }   # e.g.\n",
        ));
    }
    t.push_str(concat!(
        "\n",
        "# [environments.production]               # e.g.; `development` (local) always exists\n",
        "# target = \"local\"                        # default\n",
        "# require_approval = true\n",
        "# [environments.production.services.NAME]\n",
        "# port = 9080                              # two environments on one host need their own ports\n",
        "\n",
        "# [[notify]]                               # e.g.\n",
        "# url = \"https://example.com/hook\"\n",
        "# on = [\"deploy.succeeded\", \"deploy.failed\", \"rollback\"]\n",
    ));
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("My_Service"), "my-service");
        assert_eq!(sanitize("--x--"), "x");
        assert_eq!(sanitize("日本"), "service");
        assert!(crate::validate::is_name(&sanitize(&"a".repeat(200))));
    }

    fn mkdir(root: &Path, rel: &str, files: &[(&str, &str)]) {
        let d = root.join(rel);
        std::fs::create_dir_all(&d).ok();
        for (f, body) in files {
            std::fs::write(d.join(f), body).ok();
        }
    }

    #[test]
    fn finds_services_and_the_text_parses() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        mkdir(root, "api", &[("requirements.txt", ""), ("app.py", "")]);
        mkdir(
            root,
            "web",
            &[("package.json", r#"{"scripts":{"test":"x","start":"y"}}"#)],
        );
        mkdir(
            root,
            "skills/pr_review",
            &[("pyproject.toml", ""), ("main.py", "")],
        );
        mkdir(
            root,
            "tools/cli",
            &[("Cargo.toml", "[package]\nname = \"cli-tool\"\n")],
        );
        mkdir(root, "svc/api", &[("go.mod", "")]);
        mkdir(root, "box", &[("Dockerfile", "")]);
        mkdir(root, "node_modules/x", &[("package.json", "{}")]);
        mkdir(root, ".hidden", &[("Dockerfile", "")]);
        mkdir(root, "docs", &[]);
        let t = init_template(root)?;
        assert_eq!(
            t.services,
            ["api", "box", "pr-review", "api-2", "cli", "web"]
        );
        assert!(t.text.contains("run = \"exec .venv/bin/python app.py\""));
        assert!(t.text.contains("run = \"exec ./target/release/cli-tool\""));
        assert!(t.text.contains("build = \"npm ci\""));
        assert!(t.text.contains("checks = [\"npm test\"]"));
        let project = crate::parse(&t.text, &root.join("cutover.toml"), root)?;
        let dev = project.resolve("development")?;
        let ports: Vec<_> = dev.services.iter().filter_map(|s| s.port).collect();
        assert_eq!(ports, [8080, 8081, 8082, 8083, 8084, 8085]);
        // Two Python services, one of each other language: each ignore line once.
        assert_eq!(
            t.ignores,
            [
                ".cutover/",
                "__pycache__/",
                "*.pyc",
                ".venv/",
                ".pytest_cache/",
                "target/",
                "node_modules/",
                "dist/"
            ]
        );
        for svc in &dev.services {
            assert!(
                svc.run.as_deref().is_some_and(|r| r.starts_with("exec ")),
                "{svc:?}"
            );
        }
        Ok(())
    }

    /// The whole file `init` writes for a Python, a Node.js and a Rust service, reviewed as
    /// text.
    #[test]
    fn template_text() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("shop");
        mkdir(&root, "api", &[("requirements.txt", ""), ("app.py", "")]);
        mkdir(&root, "worker", &[("pyproject.toml", "")]);
        mkdir(&root, "worker/tests", &[("test_it.py", "")]);
        mkdir(
            &root,
            "web",
            &[("package.json", r#"{"scripts":{"test":"x","build":"y"}}"#)],
        );
        mkdir(
            &root,
            "tools/cli",
            &[("Cargo.toml", "[package]\nname = \"cli\"\n")],
        );
        let t = init_template(&root)?;
        insta::assert_snapshot!(t.text);
        Ok(())
    }

    /// The syntax check fails on a syntax error and leaves the tree as it was.
    #[test]
    fn python_syntax_check_writes_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        mkdir(tmp.path(), "pkg", &[("ok.py", "x = 1\n")]);
        let run = || {
            std::process::Command::new("sh")
                .args(["-c", PYTHON_SYNTAX_CHECK])
                .current_dir(tmp.path())
                .output()
        };
        assert!(run()?.status.success());
        mkdir(tmp.path(), "pkg", &[("bad.py", "def f(:\n")]);
        let out = run()?;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("bad.py"));
        let mut names = Vec::new();
        for e in std::fs::read_dir(tmp.path().join("pkg"))? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        assert_eq!(names, ["bad.py", "ok.py"]);
        Ok(())
    }

    #[test]
    fn empty_dir_gives_a_template_that_parses() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let t = init_template(tmp.path())?;
        assert!(t.services.is_empty());
        assert!(t.text.contains("# [services.api]"));
        let project = crate::parse(&t.text, &tmp.path().join("cutover.toml"), tmp.path())?;
        assert!(project.services.is_empty());
        Ok(())
    }
}
