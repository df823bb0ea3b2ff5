//! `cutover plan` on real git repos: change detection, watch globs, --since, layers, formats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestProject, code, json, service, stderr, stdout};

fn three_services() -> TestProject {
    let p = TestProject::git_repo();
    p.service_dir("svc/api")
        .service_dir("svc/web")
        .service_dir("svc/worker")
        .write("shared/lib.txt", "v1");
    let mut toml = String::from("[project]\nname = \"demo\"\n\n");
    toml += &service("api", "svc/api", 9001, "");
    toml += &service(
        "web",
        "svc/web",
        9002,
        "depends_on = [\"api\"]\nwatch = [\"shared/**\"]",
    );
    toml += &service("worker", "svc/worker", 9003, "depends_on = [\"web\"]");
    p.write("cutover.toml", &toml);
    p.commit("initial");
    p
}

fn affected(plan: &serde_json::Value) -> Vec<String> {
    plan["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter(|s| s["affected"] == true)
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn no_release_yet_means_every_service_is_affected() {
    let p = three_services();
    let out = p.run(&["plan", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = json(&out);
    assert_eq!(plan["env"], "development");
    assert_eq!(affected(&plan), ["api", "web", "worker"]);
    assert_eq!(
        plan["services"][0]["reason"],
        "no ACTIVE release in development"
    );
    let layers: Vec<u64> = plan["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["layer"].as_u64().unwrap())
        .collect();
    assert_eq!(layers, [0, 1, 2]);
    assert_eq!(plan["services"][1]["strategy"], "blue-green");
}

#[test]
fn a_change_in_one_service_affects_only_it() {
    let p = three_services();
    let base = p.git(&["rev-parse", "HEAD"]);
    p.write("svc/api/app.txt", "changed");
    p.commit("change api");
    let out = p.run(&["plan", "--since", &base, "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = json(&out);
    assert_eq!(affected(&plan), ["api"]);
    let api = &plan["services"][0];
    assert_eq!(api["changed_paths"], serde_json::json!(["svc/api/app.txt"]));
    assert!(
        api["reason"].as_str().unwrap().contains("svc/api/app.txt"),
        "{api}"
    );
    assert!(
        plan["services"][1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no changes since"),
        "{plan}"
    );
}

#[test]
fn watch_globs_and_untracked_files_count() {
    let p = three_services();
    p.write("shared/new-untracked.txt", "x");
    let out = p.run(&["plan", "--since", "HEAD", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(affected(&json(&out)), ["web"]);

    // Uncommitted edit of a tracked file counts too.
    p.write("svc/worker/app.txt", "edited");
    let out = p.run(&["plan", "--since", "HEAD", "--format", "github-matrix"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        json(&out),
        serde_json::json!({"include": [{"service": "web"}, {"service": "worker"}]})
    );
}

#[test]
fn files_git_ignores_are_no_change() {
    let p = three_services();
    p.write(".gitignore", "__pycache__/\n*.pyc\nsvc/api/build-output/\n");
    p.commit("ignore build outputs");
    // What a check or build run by hand leaves behind, in the root .gitignore and in a
    // service's own one.
    p.write("svc/api/__pycache__/app.cpython-311.pyc", "bytecode");
    p.write("svc/web/lib.pyc", "bytecode");
    p.write("svc/api/build-output/bundle.js", "x");
    p.write("svc/worker/.gitignore", "node_modules/\n");
    p.commit("worker ignores node_modules");
    p.write("svc/worker/node_modules/x/index.js", "x");
    let out = p.run(&["plan", "--since", "HEAD", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = json(&out);
    assert!(affected(&plan).is_empty(), "{plan}");
    for s in plan["services"].as_array().unwrap() {
        assert_eq!(s["dirty"], false, "{s}");
    }
    // An untracked file git does not ignore still counts.
    p.write("svc/api/new.txt", "x");
    let out = p.run(&["plan", "--since", "HEAD", "--json"]);
    assert_eq!(affected(&json(&out)), ["api"]);
}

#[test]
fn nothing_changed_means_nothing_affected() {
    let p = three_services();
    let out = p.run(&["plan", "--since", "HEAD", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(affected(&json(&out)).is_empty());
    let table = p.run(&["plan", "--since", "HEAD"]);
    let text = stdout(&table);
    assert!(text.contains("0 of 3 services affected"), "{text}");
    assert!(text.contains("LAYER"), "{text}");
}

#[test]
fn project_below_the_repo_root() {
    let p = TestProject::git_repo();
    p.service_dir("examples/fleet/a").service_dir("other/b");
    p.write(
        "examples/fleet/cutover.toml",
        &format!("[project]\nname = \"f\"\n{}", service("a", "a", 9100, "")),
    );
    p.commit("init");
    p.write("other/b/app.txt", "outside the project");
    let out = p
        .cutover()
        .arg("-C")
        .arg(p.path().join("examples/fleet"))
        .args(["plan", "--since", "HEAD", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(affected(&json(&out)).is_empty());
    p.write("examples/fleet/a/app.txt", "inside");
    let out = p
        .cutover()
        .arg("-C")
        .arg(p.path().join("examples/fleet"))
        .args(["plan", "--since", "HEAD", "--json"])
        .output()
        .unwrap();
    let plan = json(&out);
    assert_eq!(affected(&plan), ["a"]);
    assert_eq!(
        plan["services"][0]["changed_paths"],
        serde_json::json!(["a/app.txt"])
    );
}

#[test]
fn outside_git_plan_explains_and_all_works() {
    let p = TestProject::new();
    p.service_dir("a");
    p.write(
        "cutover.toml",
        &format!("[project]\nname = \"x\"\n{}", service("a", "a", 9200, "")),
    );
    let out = p.run(&["plan"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("not inside a git repository"), "{err}");
    assert!(err.contains("--all"), "{err}");
    let out = p.run(&["plan", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(affected(&json(&out)), ["a"]);
}

#[test]
fn repo_without_commits() {
    let p = TestProject::git_repo();
    p.service_dir("a");
    p.write(
        "cutover.toml",
        &format!("[project]\nname = \"x\"\n{}", service("a", "a", 9300, "")),
    );
    let out = p.run(&["plan", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(affected(&json(&out)), ["a"]);
    let out = p.run(&["plan", "--since", "HEAD"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no commits yet"), "{}", stderr(&out));
}

#[test]
fn unknown_environment_lists_known_ones() {
    let p = three_services();
    let out = p.run(&["plan", "--env", "prod"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("prod") && err.contains("development"), "{err}");
}

#[test]
fn global_options_after_the_command() {
    let p = three_services();
    let out = p
        .cutover()
        .args(["plan", "--json", "--since", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    json(&out);
}

#[test]
fn plan_shows_each_strategy_and_its_minimum_time() {
    let p = TestProject::git_repo();
    p.service_dir("svc/review").service_dir("svc/api");
    let mut toml = String::from("[project]\nname = \"demo\"\n\n");
    toml += &service(
        "review",
        "svc/review",
        9001,
        "strategy = \"canary\"\n[services.review.canary]\n\
         steps = [{ weight = 5, pause = \"30m\" }, { weight = 25, pause = \"manual\" }, \
         { weight = 50, pause = \"15m\" }, { weight = 100 }]\ninterval = \"10s\"\n\
         max_error_rate = 0.05\nmax_p99_latency = \"1000ms\"\nmin_requests = 20",
    );
    // initial_delay is a grace, not a wait: only the two extra successes (2 × 2s) count.
    toml += &service(
        "api",
        "svc/api",
        9002,
        "[services.api.health]\ninitial_delay = \"30s\"\nperiod = \"2s\"\nsuccess_threshold = 3",
    );
    p.write("cutover.toml", &toml);
    p.commit("initial");

    let out = p.run(&["plan", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = json(&out);
    let review = &plan["services"][0];
    assert_eq!(review["name"], "review");
    assert_eq!(review["strategy"], "canary");
    // Per step its pause or, when shorter, the first judgement (one 10s interval):
    // 30m + 10s (manual, counted apart) + 15m + 10s.
    assert_eq!(review["min_duration_seconds"], 2720.0);
    assert_eq!(review["manual_pauses"], 1);
    let api = &plan["services"][1];
    assert_eq!(api["strategy"], "blue-green");
    assert_eq!(api["min_duration_seconds"], 4.0);
    assert_eq!(api["manual_pauses"], 0);

    let out = p.run(&["plan"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("MIN TIME"), "{text}");
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .to_string()
    };
    let review = row("review");
    assert!(
        review.contains("canary") && review.contains("45m20s + manual promote"),
        "{review}"
    );
    let api = row("api");
    assert!(api.contains("blue-green") && api.contains(" 4s "), "{api}");
}
