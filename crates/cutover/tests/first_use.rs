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

#[test]
fn a_socket_directory_owned_by_someone_else_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let p = TestProject::git_repo();
    // A project path too long for a socket, so the agent's socket goes to the runtime dir.
    let long = format!("project-{}", "p".repeat(100));
    p.service_dir(&format!("{long}/api"));
    p.write(
        &format!("{long}/cutover.toml"),
        &format!(
            "[project]\nname = \"long\"\n\n{}",
            common::service("api", "api", free_port(), "")
        ),
    );
    let runtime = tempfile::tempdir().unwrap();
    let (base, foreign) = if nix::unistd::Uid::current().is_root() {
        // A world-writable cutover/ made by `nobody`, as another user of /tmp could.
        let dir = runtime.path().join("cutover");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        (runtime.path().to_path_buf(), dir)
    } else {
        // Not root: a directory root owns stands for someone else's.
        (std::path::PathBuf::from("/"), std::path::PathBuf::from("/"))
    };
    let project = p.path().join(&long);
    for args in [&["agent"][..], &["deploy"][..]] {
        let out = std::process::Command::new(common::bin())
            .arg("-C")
            .arg(&project)
            .args(args)
            .env("XDG_RUNTIME_DIR", &base)
            .output()
            .unwrap();
        assert_eq!(code(&out), 1, "{args:?}: {}{}", stdout(&out), stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "refusing the socket directory {}",
                foreign.display()
            )),
            "{err}"
        );
        assert!(err.contains("it is owned by"), "{err}");
        assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
    }
    if nix::unistd::Uid::current().is_root() {
        let mode = std::fs::metadata(&foreign).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o777, "its mode was changed");
        assert_eq!(
            std::fs::read_dir(&foreign).unwrap().count(),
            0,
            "something was put there"
        );
    }
}

fn releases(p: &TestProject) -> Vec<serde_json::Value> {
    let out = p.run(&["releases", "api", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out)["releases"].as_array().cloned().unwrap()
}

#[test]
fn rollback_refuses_releases_that_must_not_serve_again_and_names_its_run() {
    let port = free_port();
    let p = common::runtime::one_service(port, "");
    let _agent = AgentGuard(&p);
    assert_eq!(code(&p.run(&["deploy"])), 0);
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    assert_eq!(code(&p.run(&["deploy"])), 0);
    p.write("svc/api/VERSION", "v3");
    p.write("svc/api/crash", "");
    p.commit("v3 crashes");
    assert_eq!(code(&p.run(&["deploy"])), 1);
    let list = releases(&p);
    let phases: Vec<&str> = list.iter().map(|r| r["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["FAILED", "ACTIVE", "SUPERSEDED"], "{list:?}");
    let id = |i: usize| list[i]["id"].as_str().unwrap().to_string();
    let (failed, v2, v1) = (id(0), id(1), id(2));

    let out = p.run(&["rollback", "api", "--to", &failed]);
    assert_eq!(code(&out), 2, "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("api cannot go back to {failed}: it is FAILED")),
        "{err}"
    );
    assert!(
        err.contains(&format!("can go back to (newest first): {v1}\n")),
        "only v1 may be gone back to (v2 is ACTIVE, v3 FAILED): {err}"
    );
    assert!(!err.contains(&format!("{v2},")), "{err}");
    let out = p.run(&["rollback", "api", "--to", "20990101-000000-0000000"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains(&format!("(newest first): {v1}\n")),
        "{}",
        stderr(&out)
    );
    // Nothing ran: same phases, v2 still serving, no rollback run recorded.
    let after: Vec<String> = releases(&p)
        .iter()
        .map(|r| format!("{} {}", r["id"], r["phase"]))
        .collect();
    let before: Vec<String> = list
        .iter()
        .map(|r| format!("{} {}", r["id"], r["phase"]))
        .collect();
    assert_eq!(after, before);
    assert_eq!(version(port).as_deref(), Some("v2"));
    assert!(!p.path().join(".cutover/logs/rollbacks").exists());

    // A rollback that runs names its run as its log file does.
    let out = p.run(&["rollback", "api", "--to", &v1]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(version(port).as_deref(), Some("v1"));
    let logs: Vec<String> = std::fs::read_dir(p.path().join(".cutover/logs/rollbacks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let run = logs[0].strip_suffix(".log").unwrap().to_string();
    assert!(run.starts_with("rollback-"), "{run}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{run} started in development")),
        "{err}"
    );
    assert!(err.contains(&format!("{run} succeeded")), "{err}");
    assert!(!err.contains("deploy-"), "{err}");
    assert!(stdout(&out).contains(&logs[0]), "{}", stdout(&out));
}
