//! Targets this build cannot drive: an environment on one is refused (exit 2) naming the target
//! and the environment, before anything runs; never a silent run on this host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::runtime::{app_service, app_toml, free_port};
use common::{TestProject, code, stderr};

fn project(port: u16) -> TestProject {
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"tg\"\n\n{}\n\
             [environments.cluster]\ntarget = \"kubernetes\"\n\
             [environments.platform]\ntarget = \"exec\"\n",
            app_toml("api", "svc/api", port, "")
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    p
}

#[test]
fn an_environment_on_a_target_this_build_cannot_drive_is_refused_before_anything_runs() {
    let port = free_port();
    let p = project(port);
    for (env, target) in [("cluster", "kubernetes"), ("platform", "exec")] {
        for args in [
            vec!["deploy", "--env", env],
            vec!["build", "--env", env],
            vec!["rollback", "api", "--env", env],
            vec!["status", "--env", env],
        ] {
            let out = p.run(&args);
            assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(
                err.contains(&format!("target `{target}`"))
                    && err.contains(&format!("environment `{env}`"))
                    && err.contains("api"),
                "{args:?}: {err}"
            );
            assert!(
                err.contains("target = \"local\""),
                "the fix is named: {err}"
            );
        }
    }
    // Nothing ran: no agent, no release, nothing on the port.
    assert!(
        !p.path().join(".cutover/agent.sock").exists(),
        "no agent was started"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the service's port"
    );
    let releases = p.run(&["releases", "api", "--env", "cluster"]);
    assert_eq!(code(&releases), 2, "{}", stderr(&releases));
    // The local environment still works.
    let out = p.run(&["plan", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}
