//! The example fleet (five Python services) across a real two-node swarm: the base image on the
//! manager (`examples/fleet/scripts/base-image`), `deploy --all` of an environment on swarm
//! (two tasks of each service, on both nodes), a new release of every service deployed under
//! HTTP load through the proxy with each service's strategy (blue-green, rolling, canary) and
//! not one failed request, the fleet's smoke tests, then `down`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::runtime::{AgentGuard, Load, free_port, get};
use common::swarm::Cluster;
use common::{TestProject, code, copy_dir, json, stderr, stdout};

const SERVICES: [&str; 5] = [
    "pr-review",
    "odoo-rpc",
    "nl-sql",
    "visual-diff",
    "design-tokens",
];

#[test]
fn the_fleet_runs_across_two_nodes_and_a_new_release_under_load_fails_no_request() {
    let cluster = Cluster::up();
    let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet");
    common::docker::fleet_base_image(&cluster.manager_host);

    let p = TestProject::git_repo();
    copy_dir(&fleet, p.path());
    let mut toml = p.read("cutover.toml");
    toml.push_str(&format!(
        "\n[environments.cluster]\ntarget = \"swarm\"\nregistry = \"{}\"\ninstances = 2\n\
         env = {{ HOST = \"0.0.0.0\" }}\n[environments.cluster.swarm]\nhost = \"{}\"\n",
        cluster.registry, cluster.manager_host
    ));
    // Each strategy: rolling and canary for two of them, blue-green for the rest.
    let mut ports = Vec::new();
    for name in SERVICES {
        let port = free_port();
        let strategy = match name {
            "odoo-rpc" => "strategy = \"rolling\"\n",
            "nl-sql" => {
                "strategy = \"canary\"\ncanary = { steps = [{ weight = 50, pause = \"1s\" }, { weight = 100 }], interval = \"500ms\", min_requests = 5 }\n"
            }
            _ => "",
        };
        toml.push_str(&format!(
            "[environments.cluster.services.{name}]\nport = {port}\n{strategy}"
        ));
        ports.push(port);
    }
    p.write("cutover.toml", &toml);
    p.commit("fleet on swarm");
    let _agent = AgentGuard(&p);
    let out = p.run(&["--env", "cluster", "deploy", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), cluster.logs());
    let summary = json(&out);
    assert_eq!(
        summary["services"].as_array().unwrap().len(),
        5,
        "{summary}"
    );
    let status = json(&p.run(&["--env", "cluster", "status", "--json"]));
    let mut nodes = std::collections::BTreeSet::new();
    for s in status["services"].as_array().unwrap() {
        for t in s["tasks"].as_array().unwrap() {
            nodes.insert(t["node"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        nodes.into_iter().collect::<Vec<_>>(),
        ["node-a", "node-b"],
        "{status}"
    );

    // A new release of every service, under load on all five.
    for name in SERVICES {
        p.write(&format!("skills/{name}/RELEASE_NOTE"), "second release\n");
    }
    p.commit("second release");
    let mut loads: Vec<Load> = ports.iter().map(|port| Load::start(*port, 1)).collect();
    let out = p.run(&["--env", "cluster", "deploy", "--all"]);
    std::thread::sleep(Duration::from_millis(300));
    for l in &mut loads {
        l.stop();
    }
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), cluster.logs());
    for (l, name) in loads.iter().zip(SERVICES) {
        let ok = l.ok.load(std::sync::atomic::Ordering::Relaxed);
        let failed = l.failed.load(std::sync::atomic::Ordering::Relaxed);
        assert!(ok > 10, "{name}: only {ok} requests");
        assert_eq!(failed, 0, "{name}: {:?}", l.failures.lock().unwrap());
    }
    let out = p.run(&["--env", "cluster", "test"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = p.run(&["--env", "cluster", "down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for port in &ports {
        assert!(get(*port, "/").is_err(), "nothing serves after down");
    }
}
