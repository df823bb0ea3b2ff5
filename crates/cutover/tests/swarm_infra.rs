//! The Swarm test infrastructure itself (`scripts/swarm-cluster`, `common::swarm::Cluster`): a
//! real two-node swarm in network namespaces runs a busybox service pulled from the cluster's
//! registry, one task on each node, each answering `/health` from this namespace at its node's
//! address and host-mode published port; when node B's link is cut the manager marks it Down and
//! moves its task to node A. Needs root and a Docker engine binary: without them this fails,
//! saying what is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::docker::{unique_name, write_busybox_service};
use common::runtime::wait_until;
use common::swarm::{Cluster, Task, http_get, wait_every};

/// How often the swarm is asked.
const POLL: Duration = Duration::from_millis(250);

/// The running tasks of `service` once there are `n`, each running with a published port.
fn wait_for_tasks(cluster: &Cluster, service: &str, n: usize, within: Duration) -> Vec<Task> {
    let mut tasks = Vec::new();
    let ok = wait_every(within, POLL, || {
        tasks = cluster.running_tasks(service);
        tasks.len() == n
            && tasks
                .iter()
                .all(|t| t.state == "running" && !t.ports.is_empty())
    });
    assert!(
        ok,
        "{service}: no {n} running tasks with published ports within {within:?}: {tasks:?}\n`docker \
         service ps`:\n{}\n{}",
        cluster.manager_docker_ok(&["service", "ps", "--no-trunc", service]),
        cluster.logs()
    );
    tasks
}

/// Waits until the task answers `GET /health` with 200 at its node's address; the body.
fn health(cluster: &Cluster, task: &Task) -> String {
    let addr = cluster.node_addr(&task.node_id).to_string();
    let port = task.ports[0];
    let mut last = Err("no answer yet".to_string());
    let ok = wait_until(Duration::from_secs(15), || {
        last = http_get(&addr, port, "/health");
        matches!(&last, Ok((200, _)))
    });
    assert!(
        ok,
        "task {} never answered GET /health with 200 at {addr}:{port} (last: {last:?})",
        task.id
    );
    last.unwrap().1
}

#[test]
fn two_node_swarm_serves_through_host_mode_ports_and_reschedules_a_lost_node() {
    let started = Instant::now();
    let cluster = Cluster::up();
    let up_took = started.elapsed();

    // Two ready nodes: A the leader, at the addresses the cluster printed.
    let nodes = cluster.manager_docker_ok(&[
        "node",
        "ls",
        "--format",
        "{{.ID}} {{.Status}} {{.ManagerStatus}}",
    ]);
    assert_eq!(nodes.lines().count(), 2, "{nodes}");
    let line_of = |id: &str| {
        nodes
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
    };
    assert!(
        line_of(&cluster.node_a_id).ends_with(" Ready Leader"),
        "{nodes}"
    );
    assert!(
        line_of(&cluster.node_b_id).trim_end().ends_with(" Ready"),
        "{nodes}"
    );
    for (id, addr) in [
        (&cluster.node_a_id, &cluster.node_a_addr),
        (&cluster.node_b_id, &cluster.node_b_addr),
    ] {
        let seen =
            cluster.manager_docker_ok(&["node", "inspect", "--format", "{{.Status.Addr}}", id]);
        assert_eq!(&seen, addr, "node {id}");
    }

    // An image built on the manager, pushed to the cluster's registry.
    let ctx = tempfile::tempdir().unwrap();
    write_busybox_service(ctx.path(), "s1");
    let image = format!("{}/cutover-test/swarm-busybox:s1", cluster.registry);
    cluster.manager_docker_ok(&["build", "-q", "-t", &image, ctx.path().to_str().unwrap()]);
    cluster.manager_docker_ok(&["push", &image]);
    let (reg_addr, reg_port) = cluster.registry.split_once(':').unwrap();
    let tags = http_get(
        reg_addr,
        reg_port.parse().unwrap(),
        "/v2/cutover-test/swarm-busybox/tags/list",
    );
    assert!(
        matches!(&tags, Ok((200, body)) if body.contains("\"s1\"")),
        "{tags:?}"
    );

    // Two replicas: one task on each node (node B pulls the image from the registry), each on
    // a host-mode port of its node, answering from here.
    let service = unique_name("cutover-swarm-infra");
    let created = Instant::now();
    cluster.manager_docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &service,
        "--no-resolve-image",
        "--replicas",
        "2",
        "--publish",
        "mode=host,target=8080",
        "--env",
        "PORT=8080",
        &image,
    ]);
    let tasks = wait_for_tasks(&cluster, &service, 2, Duration::from_secs(30));
    let on: BTreeSet<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
    let both: BTreeSet<&str> = [cluster.node_a_id.as_str(), cluster.node_b_id.as_str()].into();
    assert_eq!(on, both, "one task on each node: {tasks:?}");
    for task in &tasks {
        let body = health(&cluster, task);
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["status"], "healthy", "{body}");
        assert_eq!(health["version"], "s1", "{body}");
    }
    let running_took = created.elapsed();

    // Node B is cut off: the manager marks it Down and runs its task on A instead.
    let cut = Instant::now();
    cluster.node_down();
    let on_b = tasks
        .iter()
        .find(|t| t.node_id == cluster.node_b_id)
        .unwrap();
    assert!(
        http_get(&cluster.node_b_addr, on_b.ports[0], "/health").is_err(),
        "node B still answers after node-down"
    );
    let mut state = String::new();
    let marked = wait_every(Duration::from_secs(40), POLL, || {
        state = cluster.node_state(&cluster.node_b_id);
        state == "down"
    });
    assert!(
        marked,
        "the manager never marked node B down (state: {state})"
    );
    let marked_down = cut.elapsed();
    let mut moved = Vec::new();
    let rescheduled = wait_every(Duration::from_secs(30), POLL, || {
        moved = cluster.running_tasks(&service);
        moved.len() == 2
            && moved.iter().all(|t| {
                t.node_id == cluster.node_a_id && t.state == "running" && !t.ports.is_empty()
            })
    });
    assert!(
        rescheduled,
        "node B's task was not moved to node A: {moved:?}\n{}",
        cluster.manager_docker_ok(&["service", "ps", "--no-trunc", &service])
    );
    for task in &moved {
        health(&cluster, task);
    }
    let moved_took = cut.elapsed();

    // Node B comes back.
    cluster.node_up();
    assert_eq!(cluster.node_state(&cluster.node_b_id), "ready");

    let dropped = Instant::now();
    drop(cluster);
    eprintln!(
        "swarm: up {up_took:?}; service create to 2 tasks answering {running_took:?}; B marked \
         down {marked_down:?} and its task answering on A {moved_took:?} after node-down; down \
         {:?}; total {:?}",
        dropped.elapsed(),
        started.elapsed()
    );
}
