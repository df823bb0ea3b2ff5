//! Ctrl-C: every process group dies, the run is recorded canceled, exit 130.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::runtime::AgentGuard;
use common::{TestProject, service};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

#[test]
fn ctrl_c_kills_every_child_and_records_canceled() {
    let p = TestProject::git_repo();
    let mut toml = String::from("[project]\nname = \"c\"\n");
    for i in 0..3 {
        p.service_dir(&format!("s{i}"));
        // A check that ignores SIGTERM and leaves a grandchild: both must still die.
        toml += &service(
            &format!("s{i}"),
            &format!("s{i}"),
            9500 + i,
            &format!(
                "checks = [\"trap '' TERM; sleep 60 & echo $! > ../pid-bg-{i}; echo $$ > ../pid-{i}; wait\"]"
            ),
        );
    }
    p.write("cutover.toml", &toml);
    p.commit("init");
    let child = p
        .cutover()
        .args(["build", "--all", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid_files: Vec<_> = (0..3)
        .flat_map(|i| [format!("pid-{i}"), format!("pid-bg-{i}")])
        .collect();
    while pid_files.iter().any(|f| !p.path().join(f).exists()) {
        assert!(Instant::now() < deadline, "checks never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pids: Vec<i32> = pid_files
        .iter()
        .map(|f| p.read(f).trim().parse().unwrap())
        .collect();
    assert!(pids.iter().all(|p| alive(*p)));

    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in &pids {
        assert!(!alive(*pid), "process {pid} outlived the canceled run");
    }
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "canceled");
    for s in summary["services"].as_array().unwrap() {
        assert_eq!(s["result"], "canceled", "{s}");
    }
    let status: serde_json::Value = serde_json::from_str(&p.read(".cutover/status.json")).unwrap();
    assert_eq!(status["status"], "canceled");
    assert_eq!(status["services"]["s0"]["deployment_status"], "CANCELED");
}

/// Kills a process group when dropped, so a failing test leaves nothing behind.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

#[test]
fn a_build_outlives_its_killed_deploy_only_until_the_next_command_settles_it() {
    let p = TestProject::git_repo();
    p.service_dir("s");
    let pid_file = p.path().join("build.pid");
    // The build's shell records its pid (its process group's id) and waits on a long sleep.
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"k\"\n\n{}",
            service(
                "s",
                "s",
                9590,
                &format!("build = \"echo $$ > {}; sleep 300\"", pid_file.display())
            )
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("init");
    // The deploy starts the agent: stop it when the test ends.
    let _agent = AgentGuard(&p);
    let mut deploy = p
        .cutover()
        .arg("deploy")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pid_file.exists() || p.read("build.pid").trim().is_empty() {
        assert!(Instant::now() < deadline, "the build never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let group: i32 = p.read("build.pid").trim().parse().unwrap();
    let _cleanup = KillGroupOnDrop(group);
    deploy.kill().unwrap(); // SIGKILL: nothing of the deploy gets to clean up
    deploy.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let members = |g: i32| -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                alive(*pid)
                    && nix::unistd::getpgid(Some(Pid::from_raw(*pid)))
                        .is_ok_and(|x| x.as_raw() == g)
            })
            .collect()
    };
    assert!(
        !members(group).is_empty(),
        "the build should still run after the deploy died (else this test proves nothing)"
    );

    let out = p.run(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !members(group).is_empty() {
        if Instant::now() > deadline {
            panic!("the dead deploy's build group {group} outlived `cutover status`");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = p.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["runs"].as_array().is_none_or(|r| r.is_empty()),
        "the dead run is still in progress: {status}"
    );
}
