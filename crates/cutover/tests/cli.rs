//! init, validate, schema, configuration errors and help, from the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestProject, code, json, service, stderr, stdout};

#[test]
fn init_writes_a_valid_file_and_refuses_to_overwrite() {
    let p = TestProject::git_repo();
    p.write("api/requirements.txt", "fastapi\n");
    p.write("api/main.py", "app = None\n");
    p.write("web/package.json", "{\"name\": \"web\"}\n");
    let out = p.run(&["init"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = p.read("cutover.toml");
    assert!(
        text.contains("[services.api]") && text.contains("[services.web]"),
        "{text}"
    );
    assert!(p.read(".gitignore").contains(".cutover/"));
    let out = p.run(&["plan", "--json"]);
    assert_eq!(code(&out), 0, "generated file parses: {}", stderr(&out));
    let out = p.run(&["init"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("already exists"));
    assert_eq!(p.read("cutover.toml"), text, "nothing lost");
}

#[test]
fn config_errors_name_file_line_column_and_a_fix() {
    let p = TestProject::new();
    p.service_dir("api");
    p.write(
        "cutover.toml",
        "[project]\nname = \"x\"\n\n[services.api]\npath = \"api\"\nrun = \"true\"\nport = 8080\nhelth = { path = \"/h\" }\n",
    );
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("cutover.toml:8:1"), "{err}");
    assert!(err.contains("helth"), "{err}");
    assert!(err.contains("did you mean `health`"), "{err}");

    p.write(
        "cutover.toml",
        "[project]\nname = \"x\"\n\n[services.api]\npath = \"api\"\nrun = \"true\"\nport = 8080\ndepends_on = [\"web\"]\n\n[services.web]\npath = \"api\"\nrun = \"true\"\nport = 8081\ndepends_on = [\"api\"]\n",
    );
    let out = p.run(&["plan", "--all"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("cycle"), "{err}");
    assert!(
        err.contains("api → web → api") || err.contains("web → api → web"),
        "{err}"
    );

    p.write("cutover.toml", "[project\nname = \"x\"\n");
    let out = p.run(&["build", "--all"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("cutover.toml:1:"), "{}", stderr(&out));
}

#[test]
fn missing_file_says_how_to_start() {
    let p = TestProject::new();
    let out = p.run(&["plan"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("no cutover.toml") && err.contains("cutover init"),
        "{err}"
    );
}

#[test]
fn validate_reports_missing_programs_and_secrets() {
    let p = TestProject::new();
    p.service_dir("api");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"x\"\n{}",
            service("api", "api", 9700, "checks = [\"definitely-not-installed-tool .\"]\nenv = { K = { secret = \"SOME_TOKEN\" } }")
        ),
    );
    let out = p
        .cutover()
        .arg("validate")
        .env_remove("SOME_TOKEN")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("definitely-not-installed-tool"), "{err}");
    assert!(err.contains("SOME_TOKEN"), "{err}");
    let out = p
        .cutover()
        .args(["validate", "--json"])
        .env("SOME_TOKEN", "v")
        .output()
        .unwrap();
    let doc = json(&out);
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["problems"].as_array().unwrap().len(), 1, "{doc}");
}

#[test]
fn schema_is_json_with_services() {
    let out = std::process::Command::new(common::bin())
        .arg("schema")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let schema = json(&out);
    assert!(schema["properties"]["services"].is_object(), "{schema}");
}

#[test]
fn help_and_version() {
    let out = std::process::Command::new(common::bin())
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for verb in ["init", "validate", "schema", "plan", "build"] {
        assert!(text.contains(verb), "{text}");
    }
    let out = std::process::Command::new(common::bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(stdout(&out).starts_with("cutover "));
}

#[test]
fn each_config_error_is_printed_once() {
    let p = TestProject::new();
    p.service_dir("api");
    p.write(
        "cutover.toml",
        "[project]\nname = \"x\"\n\n[services.api]\npath = \"api\"\nrun = \"true\"\nport = 8080\ninstances = 99999999999\nhelth = 1\n",
    );
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert_eq!(
        err.matches("`instances` is too large: 99999999999, at most 10000")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("unknown key `helth`").count(), 1, "{err}");
    assert_eq!(err.matches("error: ").count(), 2, "{err}");
    assert!(
        err.lines().any(|l| l.trim_start().starts_with("error: ")
            && l.ends_with(
                "cutover.toml:8:13: `instances` is too large: 99999999999, at most 10000"
            )),
        "{err}"
    );
}

#[test]
fn a_project_name_that_is_a_path_is_refused_before_anything_is_made() {
    let p = TestProject::git_repo();
    p.service_dir("api");
    let escape = format!("escaped-{}", std::process::id());
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"../../../../../../{escape}\"\n\n{}",
            service("api", "api", 8080, "")
        ),
    );
    p.commit("init");
    for args in [&["validate"][..], &["worktree", "setup"][..]] {
        let out = p.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("cutover.toml:2:8"), "{err}");
        assert!(err.contains("project name"), "{err}");
        assert!(err.contains(&format!("e.g. \"{escape}\"")), "{err}");
    }
    assert!(!std::path::Path::new("/").join(&escape).exists());
    assert!(
        !std::path::Path::new("/")
            .join(format!("{escape}-worktrees"))
            .exists()
    );
}
