//! A real two-node Docker swarm for tests (`scripts/swarm-cluster`): node A (manager) and node B
//! (worker), each a `dockerd` in a network namespace of its own on a bridge of this machine, and
//! a real image registry (Debian's `docker-registry`) on the bridge's address that both nodes pull
//! from. [`Cluster::up`] builds one in a fresh temp dir and tears it down when dropped, also when
//! the test panics.
//!
//! Tasks are reachable from the test at their node's address and their host-mode published port
//! (`--publish mode=host,target=P`): there is no IPVS here, so the routing mesh and service VIPs
//! do not work. The cluster needs root, `dockerd` (docker.io), `docker-registry`, iproute2 and
//! the static busybox for images (`scripts/test` installs them): without them the test fails,
//! saying what is missing; it never skips.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::docker::docker_at;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `scripts/swarm-cluster` of this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/swarm-cluster")
}

/// A running two-node swarm and its registry; `scripts/swarm-cluster down` on drop.
pub struct Cluster {
    /// `unix://DIR/a/docker.sock`: node A's engine, the manager.
    pub manager_host: String,
    /// `unix://DIR/b/docker.sock`: node B's engine, the worker.
    pub worker_host: String,
    /// `10.77.X.1:5000`: the registry, the prefix of image names both nodes pull (plain HTTP:
    /// both engines have it as an insecure registry).
    pub registry: String,
    /// Node A's address (`docker node inspect A --format '{{.Status.Addr}}'`), reachable from
    /// the test.
    pub node_a_addr: String,
    /// Node B's address.
    pub node_b_addr: String,
    /// Node A's swarm node ID.
    pub node_a_id: String,
    /// Node B's swarm node ID.
    pub node_b_id: String,
    // Dropped after `Drop::drop` has run `down`: the directory goes last.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Builds a cluster (about 2 s) in a fresh short temp dir below /tmp (unix socket paths are
    /// limited: the dir must stay under 56 bytes), with the swarm's default heartbeat (5 s: a
    /// cut-off node is marked Down after about 10 s).
    pub fn up() -> Cluster {
        Self::up_with(&[])
    }

    /// Like [`Cluster::up`], with a dispatcher heartbeat period (`swarm init
    /// --dispatcher-heartbeat`, e.g. `"1s"`): a node cut off is marked Down after about two.
    pub fn up_with_heartbeat(period: &str) -> Cluster {
        Self::up_with(&[("CUTOVER_SWARM_HEARTBEAT", period)])
    }

    fn up_with(env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("csw")
            .tempdir_in("/tmp")
            .expect("creating a temp dir below /tmp for the swarm");
        // The guard exists before `up` runs: a failed or half-made `up` is torn down on drop.
        let mut cluster = Cluster {
            manager_host: String::new(),
            worker_host: String::new(),
            registry: String::new(),
            node_a_addr: String::new(),
            node_b_addr: String::new(),
            node_a_id: String::new(),
            node_b_id: String::new(),
            dir,
        };
        let mut cmd = Command::new(script());
        cmd.arg("up").arg(cluster.dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script().display()));
        assert!(
            out.status.success(),
            "`scripts/swarm-cluster up {}` failed ({}): the swarm tests need root, dockerd \
             (docker.io), docker-registry, iproute2 and util-linux (scripts/test installs them).\n\
             stdout:\n{}\nstderr:\n{}",
            cluster.dir.path().display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let vars: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let var = |k: &str| {
            vars.get(k).cloned().unwrap_or_else(|| {
                panic!(
                    "scripts/swarm-cluster up printed no {k}=: {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })
        };
        cluster.manager_host = var("MANAGER_HOST");
        cluster.worker_host = var("WORKER_HOST");
        cluster.registry = var("REGISTRY");
        cluster.node_a_addr = var("NODE_A_ADDR");
        cluster.node_b_addr = var("NODE_B_ADDR");
        cluster.node_a_id = var("NODE_A_ID");
        cluster.node_b_id = var("NODE_B_ID");
        cluster
    }

    /// The cluster's directory (engines' data, logs: `a.log`, `b.log`, `registry.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the `docker` CLI against the manager (for set-up and assertions; the classic builder,
    /// as in `common::docker`).
    pub fn manager_docker(&self, args: &[&str]) -> Output {
        docker_at(&self.manager_host, args)
    }

    /// `manager_docker`, panicking with its output when it fails; its stdout, trimmed.
    pub fn manager_docker_ok(&self, args: &[&str]) -> String {
        ok(&self.manager_host, args, self.manager_docker(args))
    }

    /// Runs the `docker` CLI against the worker's engine.
    pub fn worker_docker(&self, args: &[&str]) -> Output {
        docker_at(&self.worker_host, args)
    }

    /// The address of a node given its swarm node ID.
    pub fn node_addr(&self, node_id: &str) -> &str {
        if node_id == self.node_a_id {
            &self.node_a_addr
        } else if node_id == self.node_b_id {
            &self.node_b_addr
        } else {
            panic!(
                "node {node_id} is neither A ({}) nor B ({})",
                self.node_a_id, self.node_b_id
            )
        }
    }

    /// Cuts node B's link: the test and the manager no longer reach it (the manager marks it
    /// Down after about two heartbeats, then reschedules its tasks after their restart delay).
    pub fn node_down(&self) {
        self.run_script("node-down", Some("B"));
    }

    /// Restores node B's link; returns once the manager sees it ready again.
    pub fn node_up(&self) {
        self.run_script("node-up", Some("B"));
    }

    /// The state the manager gives a node (`ready`, `down`, ...).
    pub fn node_state(&self, node_id: &str) -> String {
        self.manager_docker_ok(&["node", "inspect", "--format", "{{.Status.State}}", node_id])
    }

    /// The tasks of a service that the manager wants running, each inspected: ID, node, state
    /// and host-mode published ports.
    pub fn running_tasks(&self, service: &str) -> Vec<Task> {
        let ids = self.manager_docker_ok(&[
            "service",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            service,
        ]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["inspect", "--type", "task"];
        args.extend(&ids);
        let out = self.manager_docker(&args);
        if !out.status.success() {
            // A task can go between `ps` and `inspect`: the caller polls again.
            return Vec::new();
        }
        let tasks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        tasks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Task {
                id: t["ID"].as_str().unwrap_or_default().to_string(),
                node_id: t["NodeID"].as_str().unwrap_or_default().to_string(),
                state: t["Status"]["State"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ports: t["Status"]["PortStatus"]["Ports"]
                    .as_array()
                    .map(|ps| {
                        let mut ports: Vec<u16> = ps
                            .iter()
                            .filter_map(|p| p["PublishedPort"].as_u64())
                            .map(|p| p as u16)
                            .collect();
                        // (Each port is listed for IPv4 and IPv6.)
                        ports.dedup();
                        ports
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The last lines of the engines' and the registry's logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for name in ["a.log", "b.log", "registry.log"] {
            let text = std::fs::read_to_string(self.dir().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("--- {name}\n"));
            for l in &lines[lines.len().saturating_sub(20)..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    fn run_script(&self, cmd: &str, node: Option<&str>) -> Output {
        let mut c = Command::new(script());
        c.arg(cmd).arg(self.dir());
        if let Some(n) = node {
            c.arg(n);
        }
        let out = c
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script().display()));
        assert!(
            out.status.success() || cmd == "down",
            "`scripts/swarm-cluster {cmd} {}{}` failed ({}):\n{}{}",
            self.dir().display(),
            node.map(|n| format!(" {n}")).unwrap_or_default(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.run_script("down", None);
        if !out.status.success() {
            // Not a panic (we may be unwinding already): say it loudly.
            eprintln!(
                "warning: `scripts/swarm-cluster down {}` failed ({}):\n{}",
                self.dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// One task of a service, as the manager sees it.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub node_id: String,
    /// `running`, `starting`, `preparing`, ...
    pub state: String,
    /// Its host-mode published ports, on its node's address.
    pub ports: Vec<u16>,
}

/// Waits until `f` holds, up to `timeout`, trying every `period` (the swarm's answers take one or
/// two `docker` calls each: no need to hammer the shared cores).
pub fn wait_every(timeout: Duration, period: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(period);
    }
}

fn ok(host: &str, args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "`docker -H {host} {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One `GET path` to `addr:port` over a fresh HTTP/1.0 connection (busybox httpd closes every
/// connection; so does the registry after an HTTP/1.0 request): the status and the body.
pub fn http_get(addr: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    let sock: SocketAddr = format!("{addr}:{port}")
        .parse()
        .map_err(|e| format!("{addr}:{port}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .map_err(|e| format!("connect {sock}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}:{port}\r\n\r\n")
        .map_err(|e| format!("write to {sock}: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("read from {sock}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response from {sock}: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line from {sock}: {head:?}"))?;
    Ok((status, body.to_string()))
}
