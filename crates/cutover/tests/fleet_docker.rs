//! The container version of the Quick start deploys as the README says: the local Python base
//! image (`examples/fleet/scripts/base-image`), then `deploy --all` and `test` of the
//! `containers` environment against the private engine, then `down`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::docker::engine_host;
use common::runtime::{AgentGuard, free_port, get};
use common::{TestProject, code, copy_dir, json, stderr, stdout};

#[test]
fn the_fleet_deploys_in_containers_and_passes_its_smoke_tests() {
    let host = engine_host();
    let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet");
    // The base image, as the README says (idempotent: skipped when the engine has it).
    common::docker::fleet_base_image(&host);

    let p = TestProject::git_repo();
    copy_dir(&fleet, p.path());
    // This engine, and ports no other test uses.
    let mut toml = p.read("cutover.toml").replace(
        "[environments.containers]\ntarget = \"docker\"\n",
        &format!(
            "[environments.containers]\ntarget = \"docker\"\n\
             docker = {{ host = \"{host}\" }}\n"
        ),
    );
    let mut ports = Vec::new();
    for n in 1..=5 {
        let port = free_port();
        toml = toml.replace(&format!("port = 908{n}\n"), &format!("port = {port}\n"));
        ports.push(port);
    }
    p.write("cutover.toml", &toml);
    p.commit("fleet");
    let _agent = AgentGuard(&p);
    let out = p.run(&["--env", "containers", "deploy", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    assert_eq!(
        summary["services"].as_array().unwrap().len(),
        5,
        "{summary}"
    );
    for port in &ports {
        let (status, body) = get(*port, "/").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"release\""), "{body}");
    }
    let out = p.run(&["--env", "containers", "test"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("0 failed") || stderr(&out).contains("0 failed"));
    let out = p.run(&["--env", "containers", "down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for port in &ports {
        assert!(get(*port, "/").is_err(), "nothing serves after down");
    }
}
