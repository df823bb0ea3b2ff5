//! Ctrl-C: every process group dies, the run is recorded canceled, exit 130.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

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
