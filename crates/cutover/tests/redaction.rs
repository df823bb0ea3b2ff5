//! A secret's value never reaches any sink: terminal, JSON, log files, status file, store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestProject, code, service};

const SECRET: &str = "hunter2-very-secret-value";

#[test]
fn secret_values_are_masked_in_every_sink() {
    let p = TestProject::git_repo();
    p.service_dir("api");
    let extra = "env = { API_KEY = { secret = \"API_KEY\" }, MODE = \"test\" }\n\
                 checks = [\"echo key=$API_KEY mode=$MODE\", \"echo $API_KEY >&2; exit 1\"]";
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"r\"\n{}",
            service("api", "api", 9600, extra)
        ),
    );
    p.commit("init");
    for json in [true, false] {
        let mut cmd = p.cutover();
        cmd.args(["build", "--all"]).env("API_KEY", SECRET);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert_eq!(code(&out), 1);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(SECRET), "secret in terminal output:\n{all}");
        assert!(all.contains("***"), "{all}");
    }
    let mut files = Vec::new();
    common::files_under(&p.path().join(".cutover"), &mut files);
    let logs: Vec<_> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(logs.len() >= 2, "{files:?}");
    let mut saw_mask = false;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(SECRET), "secret in {}", f.display());
        saw_mask |= text.contains("key=*** mode=test");
    }
    assert!(saw_mask, "the masked line was logged somewhere");

    // A missing secret stops the run before anything starts, naming it.
    let out = p
        .cutover()
        .args(["build", "--all"])
        .env_remove("API_KEY")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secret `API_KEY` is not set"), "{err}");
}
