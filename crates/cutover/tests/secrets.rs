//! `cutover secrets`: values read from stdin, encrypted at rest, injected into checks, masked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::{TestProject, code, json, service, stderr, stdout};

const GLOBAL: &str = "global-value-4f1c9e";
const STAGING: &str = "staging-value-8b2d7a";

/// A project whose check writes `$API_KEY` to `out` and echoes it.
fn project(out: &std::path::Path) -> TestProject {
    let p = TestProject::git_repo();
    p.service_dir("api");
    let extra = format!(
        "env = {{ API_KEY = {{ secret = \"API_KEY\" }} }}\n\
         checks = [\"printf %s \\\"$API_KEY\\\" > {}; echo key=$API_KEY\"]",
        out.display()
    );
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"s\"\n{}\n[environments.staging]\n",
            service("api", "api", 9610, &extra)
        ),
    );
    p.commit("init");
    p
}

/// `cutover` with a private config dir and no key or secret in its environment.
fn cmd(p: &TestProject, config: &std::path::Path) -> Command {
    let mut c = p.cutover();
    c.env("XDG_CONFIG_HOME", config)
        .env_remove("CUTOVER_SECRET_KEY")
        .env_remove("API_KEY");
    c
}

fn set(mut c: Command, args: &[&str], value: &str) -> Output {
    let mut child = c
        .args(["secrets", "set"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn all_output(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

#[test]
fn stored_secrets_are_encrypted_injected_overridden_masked_and_removed() {
    let config = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let out_file = scratch.path().join("seen");
    let p = project(&out_file);

    let o = set(cmd(&p, config.path()), &["API_KEY"], &format!("{GLOBAL}\n"));
    assert_eq!(code(&o), 0, "{}", all_output(&o));
    let o = set(
        cmd(&p, config.path()),
        &["API_KEY", "--env", "staging"],
        STAGING,
    );
    assert_eq!(code(&o), 0, "{}", all_output(&o));

    // The key file: created 0600 in the config dir, outside the repo.
    let key = config.path().join("cutover/key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(!key.starts_with(p.path()));

    // Listed by name, environment and time; never the value.
    let o = cmd(&p, config.path())
        .args(["secrets", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0);
    let text = all_output(&o);
    assert!(
        text.contains("API_KEY") && text.contains("staging"),
        "{text}"
    );
    assert!(text.contains('*') && text.contains("UPDATED"), "{text}");
    assert!(!text.contains(GLOBAL) && !text.contains(STAGING), "{text}");
    let o = cmd(&p, config.path())
        .args(["secrets", "list", "--json"])
        .output()
        .unwrap();
    let doc = json(&o);
    let list = doc["secrets"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{doc}");
    assert_eq!(list[0]["name"], "API_KEY");
    assert!(list[0]["env"].is_null());
    assert_eq!(list[1]["env"], "staging");
    assert!(list[1]["updated_at"].as_str().unwrap().contains('T'));

    // The store holds ciphertext only.
    let mut db = std::fs::read(p.path().join(".cutover/state.db")).unwrap();
    if let Ok(wal) = std::fs::read(p.path().join(".cutover/state.db-wal")) {
        db.extend(wal);
    }
    let db = String::from_utf8_lossy(&db);
    assert!(!db.contains(GLOBAL) && !db.contains(STAGING));

    // Without --env: the value for every environment (one trailing newline stripped).
    let o = cmd(&p, config.path())
        .args(["build", "--all"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", all_output(&o));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), GLOBAL);

    // With --env staging: the staging value overrides it; every sink masks it.
    let o = cmd(&p, config.path())
        .args(["build", "--all", "--env", "staging"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", all_output(&o));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), STAGING);
    let text = all_output(&o);
    assert!(!text.contains(STAGING) && !text.contains(GLOBAL), "{text}");
    let mut files = Vec::new();
    common::files_under(&p.path().join(".cutover"), &mut files);
    let mut saw_mask = false;
    for f in files
        .iter()
        .filter(|f| !f.to_string_lossy().contains("state.db"))
    {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        assert!(!text.contains(STAGING), "secret in {}", f.display());
        saw_mask |= text.contains("key=***");
    }
    assert!(saw_mask, "the masked line was logged: {files:?}");

    // A wrong key fails clearly, naming the secret.
    let o = cmd(&p, config.path())
        .env("CUTOVER_SECRET_KEY", "00".repeat(32))
        .args(["build", "--all"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains("secret API_KEY cannot be decrypted with this key"),
        "{err}"
    );
    // A malformed key names the variable and the expected form.
    let o = cmd(&p, config.path())
        .env("CUTOVER_SECRET_KEY", "short")
        .args(["build", "--all"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.contains("CUTOVER_SECRET_KEY") && err.contains("64 hexadecimal"),
        "{err}"
    );

    // rm: once removed everywhere, build and validate fail naming it.
    for args in [&["API_KEY"][..], &["API_KEY", "--env", "staging"]] {
        let o = cmd(&p, config.path())
            .args(["secrets", "rm"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", all_output(&o));
    }
    let o = cmd(&p, config.path())
        .args(["secrets", "rm", "API_KEY"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no secret API_KEY"), "{}", stderr(&o));
    let o = cmd(&p, config.path())
        .args(["build", "--all"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", all_output(&o));
    assert!(stderr(&o).contains("secret `API_KEY` is not set"));
    let o = cmd(&p, config.path()).arg("validate").output().unwrap();
    assert_eq!(code(&o), 2, "{}", all_output(&o));
    assert!(all_output(&o).contains("API_KEY"));

    // The environment variable is still the last resort.
    let o = cmd(&p, config.path())
        .env("API_KEY", "from-env")
        .args(["build", "--all"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", all_output(&o));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "from-env");
}

#[test]
fn set_refuses_empty_values_bad_names_and_group_readable_key_files() {
    let config = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let p = project(&scratch.path().join("seen"));

    let o = set(cmd(&p, config.path()), &["API_KEY"], "");
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
    let o = set(cmd(&p, config.path()), &["API_KEY"], "\n");
    assert_eq!(code(&o), 2);
    let o = set(cmd(&p, config.path()), &["1BAD"], "x");
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not a valid secret name"));
    let o = set(cmd(&p, config.path()), &["API_KEY", "--env", "nope"], "x");
    assert_eq!(code(&o), 2);

    let o = set(cmd(&p, config.path()), &["API_KEY"], "x");
    assert_eq!(code(&o), 0, "{}", all_output(&o));
    let key = config.path().join("cutover/key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = set(cmd(&p, config.path()), &["API_KEY"], "y");
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains("chmod 600") && err.contains("cutover/key"),
        "{err}"
    );
}
