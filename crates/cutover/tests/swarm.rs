//! The swarm target end to end, against a real two-node swarm in network namespaces
//! (`scripts/swarm-cluster`) with a real registry: images built on the manager and pushed,
//! releases as swarm services with tasks on both nodes behind the agent's proxy, each strategy
//! under HTTP load, swarm's own rolling update followed to the end (and a bad release rolled
//! back by swarm with its reason), limits and placement, secrets kept out of labels and output,
//! adoption after `kill -9` of the agent, a node lost under load, and the failures a user meets
//! (a manager that does not answer, an engine that is no manager, a registry that is down).
//! Needs root, dockerd, docker-registry: without them this fails, saying what is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::docker::write_busybox_service;
use common::runtime::{AgentGuard, Load, free_port, get, wait_until};
use common::swarm::Cluster;
use common::{TestProject, code, json, stderr, stdout};

/// The version `/` answers through the proxy on `port`.
fn served(port: u16) -> Option<String> {
    let (status, body) = get(port, "/").ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// Writes service `name` (busybox httpd, `FROM scratch`) at `version`.
fn write_service(p: &TestProject, name: &str, version: &str) {
    write_busybox_service(&p.path().join(format!("svc/{name}")), version);
    p.write(
        &format!("svc/{name}/www/index.html"),
        &format!(r#"{{"version":"{version}","service":"{name}"}}"#),
    );
}

/// A project `sw` with `services` (name, port, extra keys) on environment `cluster`.
fn project(cluster: &Cluster, services: &[(&str, u16, &str)]) -> TestProject {
    let p = TestProject::git_repo();
    let mut toml = String::from("[project]\nname = \"sw\"\n\n");
    for (name, port, extra) in services {
        write_service(&p, name, "v1");
        toml.push_str(&format!(
            "[services.{name}]\npath = \"svc/{name}\"\nport = {port}\ninstances = 2\n\
             health = {{ period = \"100ms\", timeout = \"1s\", failure_threshold = 30 }}\n{extra}\n\n"
        ));
    }
    toml.push_str(&format!(
        "[environments.cluster]\ntarget = \"swarm\"\nregistry = \"{}\"\n\
         [environments.cluster.swarm]\nhost = \"{}\"\n",
        cluster.registry, cluster.manager_host
    ));
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    p
}

fn deploy(p: &TestProject) -> std::process::Output {
    p.run(&["--env", "cluster", "deploy", "--all"])
}

/// The swarm services of project `sw`: name → image.
fn services(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .manager_docker_ok(&[
            "service",
            "ls",
            "--filter",
            "label=cutover.project=sw",
            "--format",
            "{{.Name}} {{.Image}}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .collect()
}

/// `status --json`'s tasks of `service`: (node, ready) of the live ones.
fn live_tasks(p: &TestProject, service: &str) -> Vec<(String, bool)> {
    let out = p.run(&["--env", "cluster", "status", "--json"]);
    let doc = json(&out);
    doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["tasks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["role"] == "live")
        .map(|t| {
            (
                t["node"].as_str().unwrap_or("").to_string(),
                t["ready"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn set_secret(p: &TestProject, name: &str, value: &str) {
    let set = p
        .cutover()
        .args(["secrets", "set", name])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(value.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(code(&set), 0, "{}", stderr(&set));
}

#[test]
fn a_fleet_runs_across_two_nodes_with_each_strategy_under_load_and_a_bad_roll_is_rolled_back() {
    let cluster = Cluster::up();
    let (web, api, edge) = (free_port(), free_port(), free_port());
    let secret = "sw4rm-s3cret-value-77";
    let p = project(
        &cluster,
        &[
            (
                "web",
                web,
                "cpus = 0.5\nmemory = \"64MB\"\nenv = { API_TOKEN = { secret = \"API_TOKEN\" } }",
            ),
            (
                "api",
                api,
                "strategy = \"rolling\"\npre_deploy = [\"echo migrating $CUTOVER_RELEASE; ls /www\"]",
            ),
            (
                "edge",
                edge,
                "strategy = \"canary\"\n\
                 canary = { steps = [{ weight = 50, pause = \"1s\" }, { weight = 100 }], interval = \"500ms\", min_requests = 5 }\n\
                 constraints = [\"node.role == manager\"]",
            ),
        ],
    );
    set_secret(&p, "API_TOKEN", secret);
    let _agent = AgentGuard(&p);

    // v1: three swarm services, images pushed to the registry, tasks on both nodes.
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), cluster.logs());
    let first = services(&cluster);
    assert_eq!(
        first.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sw-cluster-api", "sw-cluster-edge", "sw-cluster-web"],
        "{first:?}"
    );
    for image in first.values() {
        assert!(image.starts_with(&cluster.registry), "{image}");
    }
    for port in [web, api, edge] {
        assert_eq!(served(port).as_deref(), Some("v1"));
    }
    let nodes: std::collections::BTreeSet<String> = live_tasks(&p, "web")
        .into_iter()
        .filter(|(_, ready)| *ready)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        nodes.into_iter().collect::<Vec<_>>(),
        ["node-a", "node-b"],
        "web's two tasks run one on each node"
    );
    let status = p.run(&["--env", "cluster", "status"]);
    assert!(
        stdout(&status).contains("web: tasks on node-a 1/1 ready, node-b 1/1 ready"),
        "{}",
        stdout(&status)
    );
    // Limits and placement reach swarm; edge stays on the manager.
    let limits = cluster.manager_docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.Resources.Limits}}",
        "sw-cluster-web",
    ]);
    assert!(
        limits.contains("\"NanoCPUs\":500000000") && limits.contains("\"MemoryBytes\":64000000"),
        "{limits}"
    );
    assert!(
        live_tasks(&p, "edge").iter().all(|(n, _)| n == "node-a"),
        "{:?}",
        live_tasks(&p, "edge")
    );
    // The secret reaches the tasks, never labels or cutover's output.
    let labels = cluster.manager_docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Labels}} {{json .Spec.TaskTemplate.ContainerSpec.Labels}}",
        "sw-cluster-web",
    ]);
    assert!(labels.contains("\"cutover.release\""), "{labels}");
    assert!(!labels.contains(secret), "{labels}");
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(secret), "secret in output");
    // The hook ran in a container of the new image (it sees /www).
    let mut logs = String::new();
    for f in std::fs::read_dir(p.path().join(".cutover/logs/deployments")).unwrap() {
        logs.push_str(&std::fs::read_to_string(f.unwrap().path()).unwrap_or_default());
    }
    assert!(logs.contains("migrating 20"), "{logs}");
    assert!(
        logs.contains("index.html"),
        "the hook ran in the image: {logs}"
    );

    // v2 under load on all three: blue-green (a second service beside the first), rolling
    // (swarm's own update of the one service), canary (two services, traffic split).
    for name in ["web", "api", "edge"] {
        write_service(&p, name, "v2");
    }
    p.commit("v2");
    let mut loads: Vec<Load> = [web, api, edge]
        .iter()
        .map(|p| Load::start(*p, 2))
        .collect();
    let out = deploy(&p);
    std::thread::sleep(Duration::from_millis(500));
    for l in &mut loads {
        l.stop();
    }
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), cluster.logs());
    for (l, name) in loads.iter().zip(["web", "api", "edge"]) {
        let failed = l.failed.load(std::sync::atomic::Ordering::Relaxed);
        let ok = l.ok.load(std::sync::atomic::Ordering::Relaxed);
        assert!(ok > 20, "{name}: only {ok} requests");
        assert_eq!(failed, 0, "{name}: {:?}", l.failures.lock().unwrap());
    }
    for port in [web, api, edge] {
        assert_eq!(served(port).as_deref(), Some("v2"));
    }
    let second = services(&cluster);
    assert!(
        second["sw-cluster-api"].ends_with(&format!(
            ":{}",
            json(&p.run(&["--env", "cluster", "status", "--json"]))["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == "api")
                .unwrap()["release"]
                .as_str()
                .unwrap()
        )),
        "rolling updated sw-cluster-api in place: {second:?}"
    );
    assert!(
        second.keys().any(|n| n.starts_with("sw-cluster-web-")),
        "blue-green runs the new release as a second service: {second:?}"
    );

    // `cutover test` checks each service through the proxy (busybox httpd passes the health
    // and latency checks; it has no docs page and answers POST with 501, which the built-in
    // checks fail).
    let out = p.run(&["--env", "cluster", "test"]);
    let table = stdout(&out);
    for name in ["web", "api", "edge"] {
        let health = table
            .lines()
            .find(|l| l.starts_with(name) && l.contains(" health "))
            .unwrap_or_else(|| panic!("no health check of {name}: {table}"));
        assert!(health.contains(" pass "), "{table}");
    }

    // Rollback of web to its warm v1 service (kept for scale_down_delay): a route flip, no new
    // service; then forward again.
    let services_before = services(&cluster);
    let started = Instant::now();
    let out = p.run(&["--env", "cluster", "rollback", "web"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(served(web).as_deref(), Some("v1"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a warm rollback is a route flip: {:?}",
        started.elapsed()
    );
    assert_eq!(
        services(&cluster).len(),
        services_before.len(),
        "no new service"
    );
    let out = p.run(&["--env", "cluster", "deploy", "web"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(served(web).as_deref(), Some("v2"));

    // A bad rolling release: its tasks exit. Swarm rolls back; cutover says so with the
    // task's last lines, exits 1, and v2 serves on.
    write_service(&p, "api", "v3");
    let toml = p.read("cutover.toml").replace(
        "strategy = \"rolling\"",
        "strategy = \"rolling\"\nrun = \"echo fatal: v3 has no database; exit 3\"",
    );
    p.write("cutover.toml", &toml);
    p.commit("v3");
    let mut load = Load::start(api, 2);
    let out = p.run(&["--env", "cluster", "deploy", "api"]);
    load.stop();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("swarm"), "{err}");
    assert!(err.contains("fatal: v3 has no database"), "{err}");
    assert_eq!(served(api).as_deref(), Some("v2"));
    assert_eq!(
        load.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{:?}",
        load.failures.lock().unwrap()
    );
    let image = cluster.manager_docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.UpdateStatus.State}}",
        "sw-cluster-api",
    ]);
    assert!(image.ends_with("rollback_completed"), "{image}");
    // The failed tasks' output is in the release's log.
    let releases = json(&p.run(&["--env", "cluster", "releases", "api", "--json"]));
    let failed = releases
        .as_array()
        .or_else(|| releases["releases"].as_array())
        .and_then(|r| r.iter().find(|r| r["phase"] == "FAILED"))
        .and_then(|r| r["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no FAILED release of api: {releases}"));
    let logs = p.run(&["--env", "cluster", "logs", "api", "--release", &failed]);
    assert!(
        stdout(&logs).contains("fatal: v3 has no database"),
        "{}{}",
        stdout(&logs),
        stderr(&logs)
    );

    // kill -9 of the agent: the next one adopts the services by label (no new one, no
    // duplicate), and they keep serving.
    let before = services(&cluster);
    let pid = json(&p.run(&["agent", "status", "--json"]))["pid"]
        .as_u64()
        .unwrap();
    // The worker agent is what `agent status` reports; the supervisor restarts it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        p.run(&["agent", "status", "--json"]).status.success()
            && json(&p.run(&["agent", "status", "--json"]))["pid"].as_u64() != Some(pid)
    }));
    assert!(
        wait_until(Duration::from_secs(30), || served(web).as_deref()
            == Some("v2")
            && served(edge).as_deref() == Some("v2")
            && served(api).as_deref() == Some("v2")
            && live_tasks(&p, "web").iter().filter(|(_, r)| *r).count() == 2),
        "served again after adoption: {:?}",
        live_tasks(&p, "web")
    );
    std::thread::sleep(Duration::from_secs(1));
    let after = services(&cluster);
    let live: Vec<&String> = after.keys().collect();
    assert!(
        live.iter().all(|n| before.contains_key(*n)),
        "no new service after adoption: {before:?} -> {after:?}"
    );

    // down removes every service of the environment.
    let out = p.run(&["--env", "cluster", "down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        wait_until(Duration::from_secs(10), || services(&cluster).is_empty()),
        "{:?}\nagent.log:\n{}",
        services(&cluster),
        std::fs::read_to_string(p.path().join(".cutover/logs/agent.log")).unwrap_or_default()
    );
}

#[test]
fn a_lost_node_is_followed_by_the_route_and_status() {
    let cluster = Cluster::up_with_heartbeat("1s");
    let port = free_port();
    let p = project(&cluster, &[("web", port, "")]);
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), cluster.logs());
    let on = |p: &TestProject| -> Vec<String> {
        let mut v: Vec<String> = live_tasks(p, "web")
            .into_iter()
            .filter(|(_, r)| *r)
            .map(|(n, _)| n)
            .collect();
        v.sort();
        v
    };
    assert_eq!(on(&p), ["node-a", "node-b"]);

    let mut load = Load::start(port, 2);
    std::thread::sleep(Duration::from_millis(500));
    let lost = Instant::now();
    cluster.node_down();
    let settled = wait_until(Duration::from_secs(60), || on(&p) == ["node-a", "node-a"]);
    let took = lost.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    load.stop();
    assert!(
        settled,
        "web's tasks did not both run on node-a: {:?}\n{}",
        live_tasks(&p, "web"),
        cluster.logs()
    );
    let failed = load.failed.load(std::sync::atomic::Ordering::Relaxed);
    let ok = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "node loss: settled on node-a after {:.1}s; {failed} of {} requests failed meanwhile",
        took.as_secs_f64(),
        failed + ok
    );
    // Once settled, every request is served.
    let mut after = Load::start(port, 2);
    std::thread::sleep(Duration::from_secs(2));
    after.stop();
    assert_eq!(
        after.failed.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{:?}",
        after.failures.lock().unwrap()
    );
    assert!(after.ok.load(std::sync::atomic::Ordering::Relaxed) > 10);
    cluster.node_up();
}

#[test]
fn a_manager_that_does_not_answer_or_a_registry_that_is_down_changes_nothing() {
    // No manager at the socket: one error naming it, before anything is recorded.
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix://{}/docker.sock", dir.path().display());
    let p = TestProject::git_repo();
    write_service(&p, "web", "v1");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"sw\"\n[services.web]\npath = \"svc/web\"\nport = {}\n\
             [environments.cluster]\ntarget = \"swarm\"\nregistry = \"127.0.0.1:5999\"\n\
             [environments.cluster.swarm]\nhost = \"{missing}\"\n",
            free_port()
        ),
    );
    p.commit("v1");
    let out = deploy(&p);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[environments.cluster.swarm]"),
        "{}",
        stderr(&out)
    );
    let releases = p.run(&["--env", "cluster", "releases", "web", "--json"]);
    assert!(!stdout(&releases).contains("20"), "{}", stdout(&releases));

    // An engine that is no swarm manager (the plain test engine).
    let engine = common::docker::engine_host();
    let toml = p.read("cutover.toml").replace(&missing, &engine);
    p.write("cutover.toml", &toml);
    let out = deploy(&p);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a swarm manager"),
        "{}",
        stderr(&out)
    );

    // A swarm without `registry` is a config error (exit 2) naming the fix.
    let toml = p
        .read("cutover.toml")
        .replace("registry = \"127.0.0.1:5999\"\n", "");
    p.write("cutover.toml", &toml);
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sets no `registry`"),
        "{}",
        stderr(&out)
    );

    // A registry that is down: the push fails, naming it, and the release that served serves
    // on.
    let cluster = Cluster::up();
    let port = free_port();
    let p = project(&cluster, &[("web", port, "")]);
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (host, _) = cluster.registry.split_once(':').unwrap();
    let down = format!("{host}:5999");
    let toml = p.read("cutover.toml").replace(
        &format!("registry = \"{}\"", cluster.registry),
        &format!("registry = \"{down}\""),
    );
    p.write("cutover.toml", &toml);
    write_service(&p, "web", "v2");
    p.commit("v2");
    let out = deploy(&p);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("pushing to the registry {down} failed")),
        "{}",
        stderr(&out)
    );
    assert_eq!(served(port).as_deref(), Some("v1"));
}

/// The replicas of swarm service `name`.
fn replicas(cluster: &Cluster, name: &str) -> u64 {
    cluster
        .manager_docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{.Spec.Mode.Replicated.Replicas}}",
            name,
        ])
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn autoscale_changes_the_replicas_of_the_swarm_service_with_the_load() {
    let cluster = Cluster::up();
    let port = free_port();
    let p = project(
        &cluster,
        &[(
            "web",
            port,
            "autoscale = { min = 1, max = 3, target_inflight = 3 }\ndrain_timeout = \"5s\"",
        )],
    );
    // A slow CGI answer (busybox httpd runs it with busybox's own sh, copied to /bin/sh).
    let dir = p.path().join("svc/web");
    std::fs::copy(dir.join("busybox"), dir.join("sh")).unwrap();
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile"))
        .unwrap()
        .replace("COPY www /www", "COPY sh /bin/sh\nCOPY www /www");
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::create_dir_all(dir.join("www/cgi-bin")).unwrap();
    let cgi = dir.join("www/cgi-bin/slow");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nsleep 0.3\necho slow\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.commit("slow cgi");
    let _agent = AgentGuard(&p);
    let out = deploy(&p);
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), cluster.logs());
    assert_eq!(replicas(&cluster, "sw-cluster-web"), 2, "instances = 2");

    // 12 clients, each with a slow request in flight: it grows to max.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let (stop, failed) = (stop.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if !matches!(get(port, "/cgi-bin/slow"), Ok((200, _))) {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let grew = wait_until(Duration::from_secs(40), || {
        replicas(&cluster, "sw-cluster-web") == 3
            && live_tasks(&p, "web").iter().filter(|(_, r)| *r).count() == 3
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    assert!(grew, "grew to 3 tasks: {:?}", live_tasks(&p, "web"));
    assert_eq!(failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    let agent_log = std::fs::read_to_string(p.path().join(".cutover/logs/agent.log")).unwrap();
    assert!(agent_log.contains("scaling from 2 to 3"), "{agent_log}");

    // The load is gone: it shrinks back to one task, and serves on.
    assert!(
        wait_until(Duration::from_secs(45), || replicas(
            &cluster,
            "sw-cluster-web"
        ) == 1
            && live_tasks(&p, "web").iter().filter(|(_, r)| *r).count() == 1),
        "shrank to 1: {:?}",
        live_tasks(&p, "web")
    );
    let status = json(&p.run(&["--env", "cluster", "status", "--json"]));
    assert_eq!(status["services"][0]["scaled"]["to"], 1, "{status}");
    assert!(wait_until(Duration::from_secs(5), || served(port)
        .as_deref()
        == Some("v1")));
}
