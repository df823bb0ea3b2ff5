//! Instance ports and readiness end to end: every instance gets a port no one else has, a
//! probe only counts answers from its own instance, slow starters are given time, and a fleet
//! deployed at once answers each on its own port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::runtime::{
    AgentGuard, app_service, app_toml, free_port, one_service, version, wait_until,
};
use common::{TestProject, code, json, stderr, stdout};

/// Kills a process outside the instances (written to a pid file by the test app) at the end.
struct KillPidFile(std::path::PathBuf);

impl Drop for KillPidFile {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn internal_ports(p: &TestProject) -> Vec<u16> {
    let out = p.run(&["agent", "status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status = json(&out);
    let mut ports = Vec::new();
    for s in status["services"].as_array().into_iter().flatten() {
        for set in s["sets"].as_array().into_iter().flatten() {
            for i in set["instances"].as_array().into_iter().flatten() {
                ports.push(u16::try_from(i["port"].as_u64().unwrap()).unwrap());
            }
        }
    }
    ports
}

/// Whether some process holds the lock of internal `port` (the agent's reservation), tried as
/// another agent of this user would.
fn port_reserved(port: u16) -> bool {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => std::path::PathBuf::from(d).join("cutover/ports"),
        None => std::path::PathBuf::from(format!(
            "/tmp/cutover-{}/ports",
            nix::unistd::geteuid().as_raw()
        )),
    };
    let Ok(file) = std::fs::File::open(dir.join(format!("{port}.lock"))) else {
        return false;
    };
    file.try_lock().is_err()
}

fn agent_pid(p: &TestProject) -> i32 {
    let out = p.run(&["agent", "status", "--json"]);
    i32::try_from(json(&out)["pid"].as_i64().unwrap()).unwrap()
}

#[test]
fn instance_ports_stay_reserved_through_an_agent_crash_and_are_released_when_stopped() {
    let port = free_port();
    let p = one_service(port, "instances = 2");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ports = internal_ports(&p);
    assert_eq!(ports.len(), 2);
    assert!(
        ports.iter().all(|p| (20000..=29999).contains(p)),
        "{ports:?}"
    );
    assert!(ports.iter().all(|p| port_reserved(*p)), "{ports:?}");

    // kill -9: the agent's locks die with it; the agent that comes back adopts the instances
    // and reserves their ports again.
    let old = agent_pid(&p);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || {
            let out = p.run(&["agent", "status", "--json"]);
            code(&out) == 0
                && json(&out)["pid"].as_i64() != Some(i64::from(old))
                && internal_ports(&p) == ports
                && ports.iter().all(|p| port_reserved(*p))
        }),
        "the adopted instances' ports are not reserved by the new agent"
    );
    assert_eq!(version(port).as_deref(), Some("v1"));

    // Once the instances are gone, their ports are free for anyone.
    let out = p.run(&["down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        wait_until(Duration::from_secs(10), || ports
            .iter()
            .all(|p| !port_reserved(*p))),
        "ports still reserved after down"
    );
}

#[test]
fn a_slow_starter_deploys_with_the_default_health_settings() {
    let port = free_port();
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    // Three seconds before it listens; no health settings at all (period 1s, failure 3).
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"slow\"\n\n[services.api]\npath = \"svc/api\"\n\
             run = \"sleep 3; exec python3 app.py\"\nport = {port}\n"
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(version(port).as_deref(), Some("v1"));
    // While it started, the terminal said who was still starting, for how long and why.
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("still starting: instance 0 starting for "))
        .unwrap_or_else(|| panic!("no line says who is still starting: {err}"));
    assert!(
        line.ends_with("s (of 60s ready_timeout, last probe: connection refused)"),
        "{line}"
    );
}

#[test]
fn an_instance_whose_port_another_process_answers_on_fails_and_the_deploy_says_so() {
    let port = free_port();
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    let pidfile = p.path().join("impostor.pid");
    let _impostor = KillPidFile(pidfile.clone());
    // The instance leaves its port to a process of another session (not its group), which
    // answers every probe as healthy, and then only sleeps.
    p.write(
        "svc/api/impostor.py",
        "import os, subprocess, sys\n\
         p = subprocess.Popen([sys.executable, 'app.py'], start_new_session=True)\n\
         open(os.environ['PIDFILE'], 'w').write(str(p.pid))\n",
    );
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"owner\"\n\n[services.api]\npath = \"svc/api\"\n\
             run = \"python3 impostor.py; exec sleep 600\"\nport = {port}\n\
             env = {{ PIDFILE = \"{}\" }}\n\
             health = {{ period = \"100ms\", ready_timeout = \"3s\" }}\n",
            pidfile.display()
        ),
    );
    p.write(".gitignore", ".cutover/\nimpostor.pid\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    let reason = summary["services"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("was not ready within 3s"), "{reason}");
    let impostor = std::fs::read_to_string(&pidfile).unwrap();
    assert!(
        reason.contains(&format!("is held by pid {} (", impostor.trim()))
            && reason.contains("not by instance 0"),
        "{reason}"
    );
    // status agrees: nothing of it is live.
    let out = p.run(&["status", "--json"]);
    let status = json(&out);
    let svc = &status["services"][0];
    assert_ne!(svc["phase"], "ACTIVE", "{status}");
    assert_ne!(svc["health"], "healthy", "{status}");
}

#[test]
fn an_instance_whose_port_was_taken_before_it_bound_moves_to_another_port() {
    let port = free_port();
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    let marker = p.path().join("taken");
    let _squatter = KillPidFile(p.path().join("taken.pid"));
    // The first start finds its port taken by another program (which only listens), exits
    // with "Address already in use"; a later start runs the app.
    p.write(
        "svc/api/grab.py",
        r#"import os, socket, subprocess, sys, time
port = int(os.environ["PORT"])
marker = os.environ["MARKER"]
if not os.path.exists(marker):
    open(marker, "w").write(str(port))
    code = "import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\ntime.sleep(120)"
    q = subprocess.Popen([sys.executable, "-c", code, str(port)], start_new_session=True)
    open(marker + ".pid", "w").write(str(q.pid))
    for _ in range(250):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
os.execvp(sys.executable, [sys.executable, "app.py"])
"#,
    );
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"taken\"\n\n{}",
            app_toml("api", "svc/api", port, "").replace(
                "run = \"exec python3 app.py\"",
                &format!(
                    "run = \"exec python3 grab.py\"\nenv = {{ MARKER = \"{}\" }}",
                    marker.display()
                )
            )
        ),
    );
    p.write(".gitignore", ".cutover/\ntaken*\n");
    p.commit("v1");
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(version(port).as_deref(), Some("v1"));
    let taken: u16 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let now = internal_ports(&p);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], taken, "still on the port someone else holds");
    let agent_log = std::fs::read_to_string(p.path().join(".cutover/logs/agent.log")).unwrap();
    assert!(
        agent_log.contains(&format!(
            "instance 0 could not bind port {taken}; moving it to another port"
        )),
        "{agent_log}"
    );
}

#[test]
fn fifty_services_deployed_at_once_each_answer_as_themselves() {
    const N: usize = 50;
    let p = TestProject::git_repo();
    let mut toml = String::from("[project]\nname = \"fleet\"\nmax_parallel = 50\n\n");
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    while ports.len() < N {
        let port = free_port();
        if seen.insert(port) {
            ports.push(port);
        }
    }
    for (i, port) in ports.iter().enumerate() {
        app_service(&p, &format!("svc/s{i}"), &format!("s{i}-v1"));
        toml += &app_toml(&format!("s{i}"), &format!("svc/s{i}"), *port, "")
            .replace("failure_threshold = 30 }", "ready_timeout = \"50s\" }");
    }
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\n");
    p.commit("fleet");
    let _agent = AgentGuard(&p);
    let started = Instant::now();
    let out = p.run(&["deploy", "--all", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let summary = json(&out);
    let services = summary["services"].as_array().unwrap();
    assert_eq!(services.len(), N);
    eprintln!("{N} services deployed in {:?}", started.elapsed());

    // Every public port answers as its own service.
    for (i, port) in ports.iter().enumerate() {
        let want = format!("s{i}-v1");
        assert!(
            wait_until(Duration::from_secs(5), || version(*port).as_deref()
                == Some(want.as_str())),
            "port {port} answers {:?}, not {want}",
            version(*port)
        );
    }
    // And no two instances share an internal port.
    let internal = internal_ports(&p);
    let distinct: BTreeSet<u16> = internal.iter().copied().collect();
    assert_eq!(internal.len(), N);
    assert_eq!(distinct.len(), N, "{internal:?}");
}
