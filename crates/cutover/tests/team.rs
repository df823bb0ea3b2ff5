//! The team workflow end to end: a worktree per service, deploys from a worktree with the
//! state kept in the main one, and merges gated on the deployed release's health.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::runtime::{APP, free_port, version, wait_until};
use common::{bin, code, json, stderr, stdout};

/// A repository at `<tmp>/repo` whose project `rt` lives in `proj/` with two app services.
struct Repo {
    tmp: tempfile::TempDir,
    api_port: u16,
    web_port: u16,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let r = Repo {
            tmp,
            api_port: free_port(),
            web_port: free_port(),
        };
        std::fs::create_dir_all(r.root()).unwrap();
        r.git(&["init", "-q", "-b", "main"]);
        r.git(&["config", "user.email", "test@example.invalid"]);
        r.git(&["config", "user.name", "Test"]);
        r.git(&["config", "commit.gpgsign", "false"]);
        for svc in ["api", "web"] {
            r.write(&format!("proj/svc/{svc}/app.py"), APP);
            r.write(&format!("proj/svc/{svc}/VERSION"), "v1");
        }
        let toml = format!(
            "[project]\nname = \"rt\"\n\n{}{}",
            service("api", r.api_port),
            service("web", r.web_port)
        );
        r.write("proj/cutover.toml", &toml);
        r.write(".gitignore", ".cutover/\n");
        r.commit_all(&r.root(), "v1");
        r
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn proj(&self) -> PathBuf {
        self.root().join("proj")
    }

    fn write(&self, rel: &str, body: &str) {
        write(&self.root().join(rel), body);
    }

    fn git(&self, args: &[&str]) -> String {
        git(&self.root(), args)
    }

    fn commit_all(&self, dir: &Path, msg: &str) -> String {
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-q", "-m", msg]);
        git(dir, &["rev-parse", "HEAD"])
    }

    /// cutover run in `dir`.
    fn run_in(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("-C")
            .arg(dir)
            .args(args)
            .env_remove("NO_COLOR")
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in(&self.proj(), args)
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        let _ = self.run(&["agent", "stop"]);
    }
}

fn service(name: &str, port: u16) -> String {
    format!(
        "[services.{name}]\npath = \"svc/{name}\"\nrun = \"exec python3 app.py\"\nport = {port}\n\
         health = {{ period = \"100ms\", timeout = \"1s\", failure_threshold = 30 }}\n\n"
    )
}

fn write(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ok(o: &Output) {
    assert_eq!(code(o), 0, "stdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}

fn service_entry<'a>(doc: &'a serde_json::Value, key: &str, name: &str) -> &'a serde_json::Value {
    doc[key]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name || s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc}"))
}

#[test]
fn setup_deploy_from_a_worktree_and_merge_only_what_is_healthy() {
    let r = Repo::new();
    // Default place: ../<project>-worktrees/<service> beside the repository root.
    let out = r.run(&["worktree", "setup"]);
    ok(&out);
    let wts = r.tmp.path().join("rt-worktrees");
    let api_wt = wts.join("api");
    assert!(api_wt.join("proj/cutover.toml").is_file());
    assert!(wts.join("web/proj/svc/web/app.py").is_file());
    assert_eq!(git(&api_wt, &["branch", "--show-current"]), "service/api");
    // Idempotent.
    let again = r.run(&["worktree", "setup", "api"]);
    ok(&again);
    assert!(stdout(&again).contains("exists"), "{}", stdout(&again));
    // git itself sees the worktrees.
    let listed = r.git(&["worktree", "list"]);
    assert!(listed.contains("[service/api]"), "{listed}");

    // Edit the service in its worktree, commit, deploy from there.
    write(&api_wt.join("proj/svc/api/VERSION"), "v2");
    let head = r.commit_all(&api_wt, "api v2");
    let listing = json(&r.run(&["worktree", "list", "--json"]));
    let api = service_entry(&listing, "worktrees", "api");
    assert_eq!(api["branch"], "service/api");
    assert_eq!(api["ahead"], 1);
    assert_eq!(api["behind"], 0);
    assert_eq!(api["dirty"], false);
    assert_eq!(api["health"], "stopped");
    assert!(api["release"].is_null());

    let wt_proj = api_wt.join("proj");
    let out = r.run_in(&wt_proj, &["deploy", "api"]);
    ok(&out);
    assert_eq!(version(r.api_port).as_deref(), Some("v2"));
    // The state is the main worktree's: store, agent, status file.
    assert!(r.proj().join(".cutover/state.db").is_file());
    assert!(!wt_proj.join(".cutover").exists());
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(r.proj().join(".cutover/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["services"]["api"]["branch"], "service/api");
    let wt_path = status["services"]["api"]["worktree"].as_str().unwrap();
    assert_eq!(
        std::fs::canonicalize(wt_path).unwrap(),
        std::fs::canonicalize(&api_wt).unwrap()
    );
    let releases = json(&r.run(&["releases", "api", "--json"]));
    let release = releases["releases"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(releases["releases"][0]["sha"], head.as_str());
    assert_eq!(releases["releases"][0]["branch"], "service/api");
    // The same agent answers from the main worktree, and list shows the release.
    let listing = json(&r.run(&["worktree", "list", "--json"]));
    let api = service_entry(&listing, "worktrees", "api");
    assert_eq!(api["release"], release.as_str());
    assert_eq!(api["health"], "healthy");

    // A newer commit that is not deployed: skipped, saying why; web has no release at all.
    write(&api_wt.join("proj/svc/api/notes.txt"), "more");
    let head3 = r.commit_all(&api_wt, "api notes");
    let main_before = r.git(&["rev-parse", "HEAD"]);
    let out = r.run(&["merge", "--json"]);
    ok(&out);
    let doc = json(&out);
    let api = service_entry(&doc, "services", "api");
    assert_eq!(api["result"], "skipped");
    assert!(
        api["reason"]
            .as_str()
            .unwrap()
            .contains("not from service/api's head"),
        "{api}"
    );
    let events = common::store_events(&r.proj().join(".cutover/state.db"), "merge.");
    assert!(
        events.contains("merge.service api") && events.contains("\"result\":\"skipped\""),
        "{events}"
    );
    let web = service_entry(&doc, "services", "web");
    assert_eq!(web["result"], "skipped");
    assert!(
        web["reason"]
            .as_str()
            .unwrap()
            .contains("no ACTIVE release"),
        "{web}"
    );
    assert_eq!(r.git(&["rev-parse", "HEAD"]), main_before);

    // Deploy the head; make it unhealthy: still skipped.
    ok(&r.run_in(&wt_proj, &["deploy", "api"]));
    let releases = json(&r.run(&["releases", "api", "--json"]));
    let release = releases["releases"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(releases["releases"][0]["sha"], head3.as_str());
    let sick = r
        .proj()
        .join(".cutover/releases/api")
        .join(&release)
        .join("unhealthy");
    write(&sick, "");
    let health = || {
        let s = json(&r.run(&["status", "--json"]));
        service_entry(&s, "services", "api")["health"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(wait_until(Duration::from_secs(20), || health() == "unhealthy"));
    let out = r.run(&["merge", "api", "--json"]);
    ok(&out);
    let doc = json(&out);
    let api = service_entry(&doc, "services", "api");
    assert_eq!(api["result"], "skipped");
    assert!(
        api["reason"].as_str().unwrap().contains("unhealthy"),
        "{api}"
    );
    assert_eq!(r.git(&["rev-parse", "HEAD"]), main_before);

    // Healthy again: merged with a merge commit recording service, release and health.
    std::fs::remove_file(&sick).unwrap();
    assert!(wait_until(Duration::from_secs(20), || health() == "healthy"));
    let out = r.run(&["merge", "api", "--cleanup"]);
    ok(&out);
    assert!(stdout(&out).contains("merged"), "{}", stdout(&out));
    let parents = r.git(&["log", "-1", "--format=%P"]);
    assert_eq!(
        parents.split_whitespace().collect::<Vec<_>>(),
        vec![main_before.as_str(), head3.as_str()]
    );
    let message = r.git(&["log", "-1", "--format=%B"]);
    assert!(message.contains("Cutover-Service: api"), "{message}");
    assert!(
        message.contains(&format!("Cutover-Release: {release}")),
        "{message}"
    );
    assert!(message.contains("Cutover-Health: healthy"), "{message}");
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(r.proj().join("svc/api/notes.txt")).unwrap(),
        "more"
    );
    // --cleanup removed the worktree and the (now merged) branch.
    assert!(!api_wt.exists());
    assert_eq!(r.git(&["branch", "--list", "service/api"]), "");
    // The merge log.
    let logs: Vec<_> = std::fs::read_dir(r.proj().join(".cutover/logs/merges"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        logs.iter()
            .all(|n| n.starts_with("merge-") && n.ends_with(".log"))
            && !logs.is_empty(),
        "{logs:?}"
    );
}

#[test]
fn a_conflicting_merge_leaves_the_repository_as_it_was() {
    let r = Repo::new();
    let wts = r.tmp.path().join("wts");
    ok(&r.run(&["worktree", "setup", "api", "--dir", wts.to_str().unwrap()]));
    let api_wt = wts.join("api");
    write(&api_wt.join("proj/svc/api/VERSION"), "branch side");
    r.commit_all(&api_wt, "api on its branch");
    ok(&r.run_in(&api_wt.join("proj"), &["deploy", "api"]));
    r.write("proj/svc/api/VERSION", "main side");
    let main_head = r.commit_all(&r.root(), "api on main");

    let out = r.run(&["merge", "api"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("conflict"), "{text}");
    assert!(text.contains("proj/svc/api/VERSION"), "{text}");
    assert!(text.contains("git merge --no-ff service/api"), "{text}");
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    assert_eq!(r.git(&["rev-parse", "HEAD"]), main_head);
    assert_eq!(
        std::fs::read_to_string(r.proj().join("svc/api/VERSION")).unwrap(),
        "main side"
    );
    assert!(!r.root().join(".git/MERGE_HEAD").exists());

    // One conflict does not stop the others: web merges, api conflicts again, exit 1.
    ok(&r.run(&["worktree", "setup", "web", "--dir", wts.to_str().unwrap()]));
    let web_wt = wts.join("web");
    write(&web_wt.join("proj/svc/web/VERSION"), "web v2");
    let web_head = r.commit_all(&web_wt, "web v2");
    ok(&r.run_in(&web_wt.join("proj"), &["deploy", "web"]));
    let out = r.run(&["merge", "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let doc = json(&out);
    assert_eq!(service_entry(&doc, "services", "api")["result"], "conflict");
    assert_eq!(service_entry(&doc, "services", "web")["result"], "merged");
    assert_eq!(r.git(&["status", "--porcelain"]), "");
    let parents = r.git(&["log", "-1", "--format=%P"]);
    assert_eq!(parents, format!("{main_head} {web_head}"));
    assert_eq!(
        std::fs::read_to_string(r.proj().join("svc/web/VERSION")).unwrap(),
        "web v2"
    );
    assert_eq!(
        std::fs::read_to_string(r.proj().join("svc/api/VERSION")).unwrap(),
        "main side"
    );
    let main_head = r.git(&["rev-parse", "HEAD"]);

    // Merge runs only in a clean main worktree on the base branch.
    r.write("proj/svc/web/VERSION", "uncommitted");
    let out = r.run(&["merge", "api"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("uncommitted changes"),
        "{}",
        stderr(&out)
    );
    r.git(&["checkout", "-q", "--", "proj/svc/web/VERSION"]);
    r.git(&["switch", "-q", "-c", "elsewhere"]);
    let out = r.run(&["merge", "api"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("not on the base branch main"),
        "{}",
        stderr(&out)
    );

    // Without an agent, health is unknown: skipped with that reason, and no agent is started.
    r.git(&["switch", "-q", "main"]);
    ok(&r.run(&["agent", "stop"]));
    let out = r.run(&["merge", "api", "--json"]);
    ok(&out);
    let doc = json(&out);
    let api = service_entry(&doc, "services", "api");
    assert_eq!(api["result"], "skipped");
    assert!(
        api["reason"]
            .as_str()
            .unwrap()
            .contains("agent is not running"),
        "{api}"
    );
    assert!(stdout(&r.run(&["agent", "status"])).contains("no agent runs"));
    assert_eq!(r.git(&["rev-parse", "HEAD"]), main_head);
}

#[test]
fn worktree_bad_input_is_refused_with_the_fix() {
    let r = Repo::new();
    let wts = r.tmp.path().join("wts");
    let dir = wts.to_str().unwrap();

    // A dirty base.
    r.write("proj/svc/api/VERSION", "uncommitted");
    let out = r.run(&["worktree", "setup", "api", "--dir", dir]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("uncommitted changes"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("commit or stash"), "{}", stderr(&out));
    assert!(!wts.join("api").exists());
    r.git(&["checkout", "-q", "--", "proj/svc/api/VERSION"]);

    // The branch name exists (not made by cutover), pointing at a commit that is not main's
    // head nor built on it.
    r.write("other.txt", "x");
    r.commit_all(&r.root(), "main moves on");
    r.git(&["branch", "service/api", "HEAD~1"]);
    let out = r.run(&["worktree", "setup", "api", "--dir", dir]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("branch service/api already exists and points at"),
        "{}",
        stderr(&out)
    );
    r.git(&["branch", "-D", "service/api"]);

    // A worktree of another branch where the service's should go.
    r.git(&[
        "worktree",
        "add",
        "-q",
        "-b",
        "other",
        &format!("{dir}/web"),
    ]);
    let out = r.run(&["worktree", "setup", "web", "--dir", dir]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a worktree named web already exists"),
        "{}",
        stderr(&out)
    );

    // Unknown service: a usage error.
    let out = r.run(&["worktree", "setup", "nope", "--dir", dir]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("unknown service"), "{}", stderr(&out));

    // Remove refuses uncommitted changes without --force.
    ok(&r.run(&["worktree", "setup", "api", "--dir", dir]));
    // (list never starts an agent: without one, services are stopped.)
    let listing = json(&r.run(&["worktree", "list", "--json"]));
    assert_eq!(
        service_entry(&listing, "worktrees", "api")["health"],
        "stopped"
    );
    assert!(stdout(&r.run(&["agent", "status"])).contains("no agent runs"));
    let api_wt = wts.join("api");
    write(&api_wt.join("proj/svc/api/scratch.txt"), "work in progress");
    let out = r.run(&["worktree", "remove", "api"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("uncommitted changes"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(api_wt.join("proj/svc/api/scratch.txt").exists());

    // Committed but unmerged: the worktree goes, the branch is kept and that is said.
    r.commit_all(&api_wt, "scratch");
    let out = r.run(&["worktree", "remove", "api", "--delete-branch"]);
    ok(&out);
    assert!(
        stdout(&out).contains("not merged into main"),
        "{}",
        stdout(&out)
    );
    assert!(!api_wt.exists());
    assert_eq!(r.git(&["branch", "--list", "service/api"]), "service/api");

    // Setup again brings the existing branch back; --force removes uncommitted work.
    let out = r.run(&["worktree", "setup", "api", "--dir", dir]);
    ok(&out);
    assert!(stdout(&out).contains("existing branch"), "{}", stdout(&out));
    write(&api_wt.join("proj/svc/api/more.txt"), "more");
    ok(&r.run(&["worktree", "remove", "api", "--force"]));
    assert!(!api_wt.exists());
    assert!(!r.git(&["worktree", "list"]).contains("service/api"));
}

#[test]
fn worktrees_inside_the_repository_do_not_make_it_dirty() {
    let r = Repo::new();
    let inside = r.root().join("wts");
    let dir = inside.to_str().unwrap();
    // Two services one after the other: the first worktree must not make the base "dirty".
    ok(&r.run(&["worktree", "setup", "--dir", dir]));
    assert!(inside.join("web/proj/cutover.toml").is_file());
    ok(&r.run(&["worktree", "setup", "--dir", dir]));
    // Merge is not refused over them (nothing is deployed: both skipped, exit 0).
    let out = r.run(&["merge", "--json"]);
    ok(&out);
    let doc = json(&out);
    assert_eq!(service_entry(&doc, "services", "api")["result"], "skipped");
    // Cutover-made directories are not counted, but a real change still is.
    r.write("proj/svc/web/VERSION", "uncommitted");
    let out = r.run(&["merge"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("proj/svc/web/VERSION"),
        "{}",
        stderr(&out)
    );
}
