//! The Docker target end to end, against the private engine `scripts/test` starts: images built
//! from the service's Dockerfile, containers labelled and published on 127.0.0.1 behind the
//! agent's proxy, the strategies, warm rollback, hooks in containers, logs, `down`, adoption
//! after `kill -9` of the agent, image pruning, pushes to a real registry, and the failures a
//! user meets (a container that exits, a build that fails, an engine that does not answer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::docker::{docker, docker_ok, engine_host, start_registry, write_busybox_service};
use common::runtime::{AgentGuard, Load, free_port, get, wait_until};
use common::{TestProject, code, json, stderr, stdout};

/// A git repo with service `web` (busybox httpd in a `FROM scratch` image) at `version`, on the
/// Docker target of environment `box` (the private engine), on public `port`.
fn project(port: u16, version: &str, extra_service: &str, extra_env: &str) -> TestProject {
    let p = TestProject::git_repo();
    write_service(&p, version);
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"dk\"\n\n\
             [services.web]\npath = \"svc/web\"\nport = {port}\n\
             health = {{ period = \"100ms\", timeout = \"1s\", failure_threshold = 30 }}\n\
             {extra_service}\n\
             [environments.box]\ntarget = \"docker\"\n{extra_env}\n\
             [environments.box.docker]\nhost = \"{}\"\n",
            engine_host()
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit(version);
    p
}

/// Moves `web` to `version` and commits.
fn bump(p: &TestProject, version: &str) {
    write_service(p, version);
    p.commit(version);
}

/// The busybox service at `version`; `/` answers JSON too (the load reads the version there).
fn write_service(p: &TestProject, version: &str) {
    write_busybox_service(&p.path().join("svc/web"), version);
    p.write(
        "svc/web/www/index.html",
        &format!(r#"{{"version":"{version}"}}"#),
    );
}

/// The version `/health` answers with through the proxy on `port`.
fn served(port: u16) -> Option<String> {
    let (status, body) = get(port, "/health").ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// Ids of the running containers of this project's agent, by the `cutover.service` label.
fn containers(p: &TestProject, service: &str) -> Vec<String> {
    let socket = agent_socket(p);
    let out = docker_ok(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=cutover.service={service}"),
        "--filter",
        &format!("label=cutover.agent={socket}"),
    ]);
    out.lines().map(str::to_string).collect()
}

fn agent_socket(p: &TestProject) -> String {
    let out = p.run(&["agent", "status", "--json"]);
    json(&out)["socket"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn deploy(p: &TestProject) -> std::process::Output {
    p.run(&["deploy", "--env", "box"])
}

#[test]
fn containers_deploy_switch_under_load_roll_back_warm_log_and_go_down() {
    let port = free_port();
    let p = project(port, "v1", "instances = 2", "");
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(served(port).as_deref(), Some("v1"));

    // Two containers, labelled as DESIGN.md says, published on 127.0.0.1 only.
    let ids = containers(&p, "web");
    assert_eq!(ids.len(), 2, "{ids:?}");
    let inspect = docker_ok(&[
        "inspect",
        "--format",
        "{{json .Config.Labels}} {{json .HostConfig.PortBindings}}",
        &ids[0],
    ]);
    for label in [
        "cutover.project",
        "cutover.env",
        "cutover.service",
        "cutover.release",
    ] {
        assert!(inspect.contains(label), "{inspect}");
    }
    assert!(
        inspect.contains("\"dk\"") && inspect.contains("\"box\""),
        "{inspect}"
    );
    assert!(
        inspect.contains("127.0.0.1"),
        "published on 127.0.0.1: {inspect}"
    );

    // The image carries the tags DESIGN.md names.
    let images = docker_ok(&["images", "dk-web", "--format", "{{.Tag}}"]);
    assert!(images.lines().any(|t| t == "box-latest"), "{images}");
    let sha7 = &p.git(&["rev-parse", "HEAD"])[..7];
    assert!(
        images.lines().any(|t| t == format!("box-{sha7}")),
        "{images}"
    );

    // status: healthy, 2/2.
    let status = json(&p.run(&["status", "--env", "box", "--json"]));
    let web = &status["services"][0];
    assert_eq!(web["health"], "healthy", "{status}");
    assert_eq!(web["instances"]["ready"], 2, "{status}");

    // v2 under load: no failed request.
    bump(&p, "v2");
    let mut load = Load::start(port, 4);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(served(port).as_deref(), Some("v2"));
    std::thread::sleep(Duration::from_millis(300));
    load.stop();
    let failed = load.failed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "requests failed during the switch: {:?}",
        load.failures.lock().unwrap()
    );
    assert!(load.ok.load(std::sync::atomic::Ordering::Relaxed) > 0);

    // Rollback to the warm v1 containers (scale_down_delay keeps them).
    let out = p.run(&["rollback", "web", "--env", "box"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(served(port).as_deref(), Some("v1"));

    // Logs: busybox httpd writes nothing per request, the agent's notes say which container.
    let logs = p.run(&["logs", "web", "--env", "box"]);
    assert_eq!(code(&logs), 0, "{}", stderr(&logs));
    assert!(stdout(&logs).contains("container"), "{}", stdout(&logs));

    // down: no container of this agent is left.
    let socket = agent_socket(&p);
    let out = p.run(&["down", "--env", "box"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let left = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=cutover.agent={socket}"),
    ]);
    assert!(left.is_empty(), "containers left after down: {left}");
}

#[test]
fn a_container_that_exits_fails_the_deploy_at_once_with_its_last_log_lines() {
    let port = free_port();
    let p = project(
        port,
        "v1",
        "run = \"echo the-config-file-is-missing >&2; exit 3\"",
        "",
    );
    let _agent = AgentGuard(&p);
    let started = std::time::Instant::now();
    let out = deploy(&p);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("exited with code 3"), "{err}");
    assert!(err.contains("the-config-file-is-missing"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "failed at once, not after ready_timeout"
    );
    assert!(
        containers(&p, "web").is_empty(),
        "the failed container is removed"
    );
}

#[test]
fn a_failed_build_fails_the_service_with_the_build_output() {
    let port = free_port();
    let p = project(port, "v1", "", "");
    p.write(
        "svc/web/Dockerfile",
        "FROM scratch\nCOPY no-such-file-here /x\n",
    );
    p.commit("broken dockerfile");
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no-such-file-here"), "{err}");
    let releases = json(&p.run(&["releases", "web", "--env", "box", "--json"]));
    assert_eq!(releases["releases"][0]["phase"], "FAILED", "{releases}");
}

#[test]
fn an_engine_that_does_not_answer_is_one_clear_error_before_anything_changes() {
    let port = free_port();
    let p = project(port, "v1", "", "");
    let dead = p.path().join("no-engine.sock");
    let toml = p
        .read("cutover.toml")
        .replace(&engine_host(), &format!("unix://{}", dead.display()));
    p.write("cutover.toml", &toml);
    p.commit("dead engine");
    let out = deploy(&p);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&dead.display().to_string()),
        "names the socket: {err}"
    );
    assert!(err.contains("Docker Engine"), "{err}");
    assert_eq!(
        err.matches("cannot reach the Docker Engine").count(),
        1,
        "one error: {err}"
    );
    // validate warns about the engine (it may be a remote one) and still passes; a missing
    // Dockerfile is an error.
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: box: cannot reach the Docker Engine"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(p.path().join("svc/web/Dockerfile")).unwrap();
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no Dockerfile at svc/web/Dockerfile"),
        "{}",
        stderr(&out)
    );
    // Nothing changed: no release recorded, no agent started.
    let releases = json(&p.run(&["releases", "web", "--env", "box", "--json"]));
    assert_eq!(
        releases["releases"].as_array().map(Vec::len),
        Some(0),
        "{releases}"
    );
    assert!(!p.path().join(".cutover/agent.sock").exists());
}

#[test]
fn after_kill_9_of_the_agent_its_containers_are_adopted_by_label_not_duplicated() {
    let port = free_port();
    let p = project(port, "v1", "instances = 2", "");
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = {
        let mut ids = containers(&p, "web");
        ids.sort();
        ids
    };
    assert_eq!(before.len(), 2);
    let status = json(&p.run(&["agent", "status", "--json"]));
    let pid = status["pid"].as_u64().unwrap();
    // The worker agent is what `agent status` reports; the supervisor restarts it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            p.run(&["agent", "status", "--json"]).status.success()
                && json(&p.run(&["agent", "status", "--json"]))["pid"].as_u64() != Some(pid)
        }),
        "the agent came back"
    );
    assert!(
        wait_until(Duration::from_secs(20), || served(port).as_deref()
            == Some("v1")),
        "serves v1 again"
    );
    let mut after = containers(&p, "web");
    after.sort();
    assert_eq!(
        after, before,
        "the same containers, adopted: no orphan, no duplicate"
    );
    let status = json(&p.run(&["status", "--env", "box", "--json"]));
    assert_eq!(status["services"][0]["health"], "healthy", "{status}");
}

#[test]
fn hooks_run_in_a_container_of_the_new_image_and_secrets_stay_out_of_images_and_output() {
    let port = free_port();
    let secret = "s3cr3t-hook-value-42";
    let p = project(
        port,
        "v1",
        "pre_deploy = [\"echo migrating $CUTOVER_RELEASE with ${#DB_PASSWORD} chars; ls /www\"]\n\
         env = { DB_PASSWORD = { secret = \"DB_PASSWORD\" } }\n\
         build_args = { FLAVOUR = \"plain\" }",
        "",
    );
    let set = p
        .cutover()
        .args(["secrets", "set", "DB_PASSWORD"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(secret.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(code(&set), 0, "{}", stderr(&set));
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(secret), "secret in output: {all}");
    // The hook ran inside the image (it sees /www) with the service's env.
    let mut logs = String::new();
    for f in std::fs::read_dir(p.path().join(".cutover/logs/deployments")).unwrap() {
        logs.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap_or_default());
    }
    assert!(logs.contains("migrating"), "{logs}");
    assert!(
        logs.contains(&format!("with {} chars", secret.len())),
        "{logs}"
    );
    assert!(logs.contains("health"), "the hook ran in the image: {logs}");
    assert!(!logs.contains(secret), "secret in logs");
    // Not in the image's layers, history or labels.
    let history = docker_ok(&["history", "--no-trunc", "dk-web:box-latest"]);
    let inspect = docker_ok(&["image", "inspect", "dk-web:box-latest"]);
    assert!(!history.contains(secret) && !inspect.contains(secret));
    let id = &containers(&p, "web")[0];
    let labels = docker_ok(&["inspect", "--format", "{{json .Config.Labels}}", id]);
    assert!(!labels.contains(secret), "{labels}");
}

#[test]
fn images_past_keep_releases_are_removed_and_a_registry_gets_every_tag() {
    let registry_dir = tempfile::tempdir().unwrap();
    let registry = start_registry(registry_dir.path());
    let port = free_port();
    let p = project(port, "v1", "", &format!("registry = \"{}\"", registry.addr));
    let toml = p.read("cutover.toml").replace(
        "[project]\nname = \"dk\"\n",
        "[project]\nname = \"dk\"\nkeep_releases = 2\n",
    );
    p.write("cutover.toml", &toml);
    p.commit("keep 2");
    let _agent = AgentGuard(&p);
    for v in ["v1", "v2", "v3", "v4"] {
        if v != "v1" {
            bump(&p, v);
        }
        let out = deploy(&p);
        assert_eq!(code(&out), 0, "{v}: {}", stderr(&out));
        assert_eq!(served(port).as_deref(), Some(v));
    }
    let image = format!("{}/dk-web", registry.addr);
    let tags = docker_ok(&["images", &image, "--format", "{{.Tag}}"]);
    let release_tags: Vec<&str> = tags.lines().filter(|t| t.starts_with("20")).collect();
    assert!(
        release_tags.len() <= 3,
        "older release images are pruned (keep_releases = 2, plus the one rollback needs): {tags}"
    );
    // The registry has the repository with the env tags.
    let (status, body) = get(registry.port, "/v2/dk-web/tags/list").unwrap();
    assert_eq!(status, 200, "{body}\n{}", registry.log());
    assert!(body.contains("box-latest"), "{body}");
    let _ = docker(&["rmi", "-f", &format!("{image}:box-latest")]);
}

/// A tiny HTTP server for busybox `nc -ll`: `/health` answers 200, everything else 500.
const BROKEN_SERVER: &str = r#"read -r method path proto
cr=$(printf '\r')
while read -r line; do
  case "$line" in ""|"$cr") break ;; esac
done
case "$path" in
  /health*) body='{"status":"healthy","version":"broken"}'; status="200 OK" ;;
  *) body='broken'; status="500 Internal Server Error" ;;
esac
printf 'HTTP/1.0 %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "$status" "${#body}" "$body"
"#;

#[test]
fn rolling_replaces_containers_one_at_a_time_without_a_failed_request() {
    let port = free_port();
    let p = project(
        port,
        "v1",
        "instances = 3\nstrategy = \"rolling\"\nscale_down_delay = \"0s\"",
        "",
    );
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = containers(&p, "web");
    assert_eq!(before.len(), 3);
    bump(&p, "v2");
    let mut load = Load::start(port, 4);
    let out = deploy(&p);
    std::thread::sleep(Duration::from_millis(300));
    load.stop();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let failed = load.failed.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failed, 0, "{:?}", load.failures.lock().unwrap());
    assert!(
        stderr(&out).contains("batch") || stderr(&out).contains("replac"),
        "{}",
        stderr(&out)
    );
    // All three containers are new, of v2; none of v1 is left.
    assert!(wait_until(Duration::from_secs(10), || {
        let now = containers(&p, "web");
        now.len() == 3 && now.iter().all(|id| !before.contains(id))
    }));
    for _ in 0..6 {
        assert_eq!(served(port).as_deref(), Some("v2"));
    }
}

#[test]
fn a_canary_container_with_errors_is_rolled_back_by_analysis_and_a_good_one_is_promoted() {
    let port = free_port();
    let canary = "strategy = \"canary\"\n\
                  [services.web.canary]\n\
                  steps = [{ weight = 50 }, { weight = 100 }]\n\
                  interval = \"300ms\"\nmin_requests = 5\nmax_error_rate = 0.1\n\
                  max_p99_latency = \"2s\"\n";
    let p = project(port, "v1", canary, "");
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // A good canary goes through its steps to 100%.
    bump(&p, "v2");
    let mut load = Load::start(port, 2);
    let out = deploy(&p);
    load.stop();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(served(port).as_deref(), Some("v2"));

    // A canary answering 500 is judged and rolled back, with the numbers.
    write_service(&p, "v3");
    p.write("svc/web/respond.sh", BROKEN_SERVER);
    p.write(
        "svc/web/Dockerfile",
        &format!(
            "{}COPY respond.sh /respond.sh\n",
            common::docker::BUSYBOX_DOCKERFILE
        ),
    );
    let toml = p.read("cutover.toml").replace(
        "strategy = \"canary\"",
        "strategy = \"canary\"\nrun = \"exec /bin/busybox nc -ll -p $PORT -e /bin/busybox sh /respond.sh\"",
    );
    p.write("cutover.toml", &toml);
    p.commit("v3 broken");
    let mut load = Load::start(port, 4);
    let out = deploy(&p);
    load.stop();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("error rate"), "{err}");
    assert_eq!(served(port).as_deref(), Some("v2"));
    let releases = json(&p.run(&["releases", "web", "--env", "box", "--json"]));
    assert_eq!(
        releases["releases"][0]["phase"], "ROLLED_BACK",
        "{releases}"
    );
    // The canary's container is gone; the stable one serves.
    assert!(wait_until(Duration::from_secs(10), || containers(
        &p, "web"
    )
    .len()
        == 1));
}

#[test]
fn atomic_returns_every_container_service_and_immediate_replaces_in_place() {
    let (web_port, api_port) = (free_port(), free_port());
    let p = TestProject::git_repo();
    for name in ["web", "api"] {
        write_busybox_service(&p.path().join(format!("svc/{name}")), "v1");
    }
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"dka\"\n\n\
             [services.web]\npath = \"svc/web\"\nport = {web_port}\n\
             health = {{ period = \"100ms\", timeout = \"1s\" }}\n\
             [services.api]\npath = \"svc/api\"\nport = {api_port}\nstrategy = \"immediate\"\n\
             health = {{ period = \"100ms\", timeout = \"1s\" }}\n\
             [environments.box]\ntarget = \"docker\"\n\
             [environments.box.docker]\nhost = \"{}\"\n",
            engine_host()
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // immediate: api's container is replaced (old stopped, new started).
    let api_before = containers(&p, "api");
    write_busybox_service(&p.path().join("svc/api"), "v2");
    p.commit("api v2");
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(served(api_port).as_deref(), Some("v2"));
    let api_after = containers(&p, "api");
    assert_eq!(api_after.len(), 1);
    assert_ne!(api_after, api_before);

    // --atomic: web v2 is fine, api v3 exits at start; both go back.
    write_busybox_service(&p.path().join("svc/web"), "v2");
    write_busybox_service(&p.path().join("svc/api"), "v3");
    let toml = p.read("cutover.toml").replace(
        "strategy = \"immediate\"",
        "strategy = \"immediate\"\nrun = \"echo api-v3-cannot-start; exit 7\"",
    );
    p.write("cutover.toml", &toml);
    p.commit("v2 web, broken api");
    let out = p.run(&["deploy", "--env", "box", "--atomic", "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let doc = json(&out);
    let result = |name: &str| {
        doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["result"].as_str().unwrap_or("").to_string())
            .unwrap()
    };
    assert_eq!(result("api"), "failed", "{doc}");
    assert_eq!(result("web"), "rolled_back", "{doc}");
    assert!(
        stderr(&out).contains("api-v3-cannot-start"),
        "{}",
        stderr(&out)
    );
    assert_eq!(served(web_port).as_deref(), Some("v1"));
}
