//! The Quick start project builds: every example service's checks (its unit tests) and build
//! pass through the real binary, on a copy of `examples/fleet` in its own git repo.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{TestProject, code, copy_dir, json, stderr};

#[test]
fn the_fleet_example_builds() {
    let p = TestProject::git_repo();
    let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet");
    copy_dir(&fleet, p.path());
    p.commit("fleet");
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = p.run(&["build", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = json(&out);
    let services = summary["services"].as_array().unwrap();
    assert_eq!(services.len(), 5);
    for s in services {
        assert_eq!(s["result"], "succeeded", "{s}");
        let release = s["release"].as_str().unwrap();
        let dir = p.path().join(format!(
            ".cutover/releases/{}/{release}",
            s["name"].as_str().unwrap()
        ));
        assert!(dir.join("app.py").is_file(), "{}", dir.display());
    }
    // visual-diff's build vendors the shared palette into its release.
    let vd = services
        .iter()
        .find(|s| s["name"] == "visual-diff")
        .unwrap();
    let release = vd["release"].as_str().unwrap();
    assert!(
        p.path()
            .join(format!(
                ".cutover/releases/visual-diff/{release}/palette.py"
            ))
            .is_file()
    );
}
