//! Environments end to end: per-environment overrides, and release history, locks and status
//! kept apart per environment, with the real binary and one agent serving two environments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::runtime::{AgentGuard, app_service, free_port, version};
use common::{TestProject, code, json, stderr};

#[test]
fn each_environment_has_its_overrides_history_lock_and_status() {
    let (staging_port, production_port) = (free_port(), free_port());
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"envs\"\n\n\
             [services.api]\npath = \"svc/api\"\nrun = \"exec python3 app.py\"\nport = {staging_port}\n\
             health = {{ period = \"100ms\", failure_threshold = 30 }}\n\n\
             [environments.staging]\ntarget = \"local\"\n\n\
             [environments.production]\ntarget = \"local\"\ninstances = 2\n\
             [environments.production.services.api]\nport = {production_port}\ninstances = 3\n\
             strategy = \"rolling\"\n"
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);

    // An unknown environment names the known ones.
    let bad = p.run(&["status", "--env", "prod"]);
    assert_eq!(code(&bad), 2);
    let err = stderr(&bad);
    assert!(
        err.contains("production") && err.contains("staging"),
        "{err}"
    );

    for env in ["staging", "production"] {
        let out = p.run(&["deploy", "--env", env]);
        assert_eq!(code(&out), 0, "{env}: {}", stderr(&out));
    }
    assert_eq!(version(staging_port).as_deref(), Some("v1"));
    assert_eq!(version(production_port).as_deref(), Some("v1"));
    let status = |env: &str| json(&p.run(&["status", "--env", env, "--json"]));
    let staging = status("staging");
    let production = status("production");
    assert_eq!(staging["env"], "staging");
    assert_eq!(
        staging["services"][0]["instances"]["desired"], 1,
        "{staging}"
    );
    // The service's override wins over the environment's, which wins over the service's.
    assert_eq!(
        production["services"][0]["instances"]["desired"], 3,
        "{production}"
    );
    assert_eq!(
        production["services"][0]["instances"]["ready"], 3,
        "{production}"
    );
    assert_eq!(
        production["services"][0]["url"],
        format!("http://127.0.0.1:{production_port}")
    );
    assert_ne!(
        staging["services"][0]["release"], production["services"][0]["release"],
        "releases are per environment"
    );

    // A lock holds one environment only.
    assert_eq!(
        code(&p.run(&["lock", "--env", "staging", "--reason", "freeze"])),
        0
    );
    p.write("svc/api/VERSION", "v2");
    p.commit("v2");
    let refused = p.run(&["deploy", "--env", "staging"]);
    assert_eq!(code(&refused), 3, "{}", stderr(&refused));
    assert!(stderr(&refused).contains("freeze"), "{}", stderr(&refused));
    let rolled = p.run(&["deploy", "--env", "production"]);
    assert_eq!(code(&rolled), 0, "{}", stderr(&rolled));
    assert_eq!(version(production_port).as_deref(), Some("v2"));
    assert_eq!(version(staging_port).as_deref(), Some("v1"));
    assert_eq!(code(&p.run(&["unlock", "--env", "staging"])), 0);

    // History per environment: production has two releases, staging one.
    let history = |env: &str| {
        json(&p.run(&["releases", "api", "--env", env, "--json"]))["releases"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(history("production"), 2);
    assert_eq!(history("staging"), 1);
    // The default environment (development) was never deployed.
    let dev = json(&p.run(&["status", "--json"]));
    assert_eq!(dev["env"], "development");
    assert_eq!(dev["services"][0]["health"], "stopped", "{dev}");
}
