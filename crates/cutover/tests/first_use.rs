//! A new user's first project: what `cutover init` writes keeps working through the next
//! deploys (nothing it runs dirties the tree, every deploy after the first skips what did not
//! change).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::runtime::{APP, AgentGuard, free_port, version, wait_until};
use common::{TestProject, code, json, stderr, stdout};
use std::time::Duration;

#[test]
fn a_project_made_by_init_redeploys_only_what_changed() {
    let p = TestProject::git_repo();
    p.write("api/app.py", APP);
    p.write("api/VERSION", "v1");
    p.write("api/requirements.txt", "");
    p.write("api/tests/test_app.py", "def test_ok():\n    assert True\n");
    p.write("worker/app.py", APP);
    p.write("worker/VERSION", "w1");
    p.write("worker/requirements.txt", "");
    let out = p.run(&["init"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added to .gitignore: .cutover/ __pycache__/"),
        "{}",
        stdout(&out)
    );
    let ignore = p.read(".gitignore");
    for line in [".cutover/", "__pycache__/", "*.pyc", ".venv/"] {
        assert_eq!(
            ignore.lines().filter(|l| *l == line).count(),
            1,
            "{line} once in:\n{ignore}"
        );
    }
    // Free ports instead of 8080 and 8081; pytest may not be installed here: the api's check
    // is made the same bytecode-free syntax check the worker got.
    let (api_port, worker_port) = (free_port(), free_port());
    let toml = p.read("cutover.toml");
    let syntax_check = toml
        .lines()
        .find(|l| l.starts_with("checks = [\"python3 -c"))
        .expect("the worker's syntax check")
        .to_string();
    let toml = toml
        .replace("port = 8080 ", &format!("port = {api_port} "))
        .replace("port = 8081 ", &format!("port = {worker_port} "))
        .replace(
            "checks = [\"PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q -p no:cacheprovider\"]",
            &syntax_check,
        );
    p.write("cutover.toml", &toml);
    p.commit("cutover init");
    let _agent = AgentGuard(&p);

    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(version(api_port).as_deref(), Some("v1"));
    assert_eq!(version(worker_port).as_deref(), Some("w1"));
    // The release installs its dependencies into its own snapshot.
    let api = json(&out)["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "api")
        .cloned()
        .unwrap();
    let release = api["release"].as_str().unwrap();
    assert!(
        p.path()
            .join(format!(".cutover/releases/api/{release}/.venv/bin/python"))
            .exists(),
        "no virtual environment in the release"
    );
    assert_eq!(p.git(&["status", "--porcelain"]), "", "the tree is clean");

    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    for s in summary["services"].as_array().unwrap() {
        assert_eq!(s["result"], "skipped", "{summary}");
    }

    // A change to one service redeploys it alone.
    p.write("worker/VERSION", "w2");
    p.commit("worker w2");
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    let results: Vec<(String, String)> = summary["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("api".to_string(), "skipped".to_string()),
            ("worker".to_string(), "succeeded".to_string())
        ],
        "{summary}"
    );
    assert!(wait_until(Duration::from_secs(10), || version(worker_port)
        .as_deref()
        == Some("w2")));
}
