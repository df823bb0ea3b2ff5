//! The supervisor against real processes: spawn, output capture, crash restarts with backoff,
//! crash loops, restart off, stop and drop killing whole process groups.
//!
//! Every instance is owned by its test; dropping an `Instance` SIGKILLs its process group, so
//! a failing assertion still leaves nothing running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cutover_runtime::supervisor::{
    Instance, InstanceSpec, InstanceState, RestartPolicy, free_port,
};
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(20);

fn spec(dir: &Path, index: u32, command: &str, port: u16) -> InstanceSpec {
    InstanceSpec {
        service: "web".to_string(),
        release: "20261123-101500-abc1234".to_string(),
        index,
        command: command.to_string(),
        dir: dir.to_path_buf(),
        env: vec![
            ("PORT".to_string(), port.to_string()),
            ("CUTOVER_SERVICE".to_string(), "web".to_string()),
            ("GREETING".to_string(), "hello from env".to_string()),
        ],
        port,
        log: dir.join("logs/services/web/20261123-101500-abc1234.log"),
        redact: vec!["s3cr3t-value".to_string()],
        container: None,
    }
}

fn no_restart() -> RestartPolicy {
    RestartPolicy {
        restart: false,
        ..RestartPolicy::default()
    }
}

async fn wait_state(
    rx: &mut watch::Receiver<InstanceState>,
    what: &str,
    pred: impl FnMut(&InstanceState) -> bool,
) -> InstanceState {
    let outcome = tokio::time::timeout(PATIENCE, rx.wait_for(pred))
        .await
        .map(|r| r.map(|s| s.clone()));
    match outcome {
        Ok(Ok(state)) => state,
        Ok(Err(_)) => panic!("state channel closed while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}; state is {:?}", *rx.borrow()),
    }
}

/// Polls `cond` every 50ms until it holds or `PATIENCE` runs out.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `pid` still runs; a zombie awaiting its reaper counts as dead.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

async fn dies(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn read_pid(file: &Path) -> i32 {
    let mut text = String::new();
    eventually("the pid file", || {
        text = std::fs::read_to_string(file).unwrap_or_default();
        text.ends_with('\n')
    })
    .await;
    text.trim().parse().expect("a pid")
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn spawn_runs_with_port_env_and_logs_prefixed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let command = "echo \"greeting: $GREETING on $PORT\"; echo \"to stderr\" >&2; \
                   exec python3 -m http.server \"$PORT\" --bind 127.0.0.1";
    let instance = Instance::spawn(spec(dir.path(), 3, command, port), RestartPolicy::default());
    assert_eq!(instance.spec().index, 3);
    let mut rx = instance.watch();
    let running = wait_state(&mut rx, "Running", InstanceState::is_running).await;
    let InstanceState::Running { pid, since } = running else {
        unreachable!()
    };
    assert_eq!(instance.pid(), Some(pid));
    assert!(since <= Utc::now());

    // PORT is honoured: the server answers there.
    let addr = format!("127.0.0.1:{port}");
    let mut connected = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected, "nothing listens on PORT {port}");

    let log = instance.spec().log.clone();
    let expected = format!("[3] greeting: hello from env on {port}");
    eventually("stdout and stderr in the log file", || {
        let text = read(&log);
        text.contains(&expected) && text.contains("[3] to stderr")
    })
    .await;
    for line in read(&log).lines() {
        let (stamp, rest) = line.split_once(' ').expect("a timestamp");
        assert_eq!(stamp.len(), "2026-11-23T10:15:00.123Z".len(), "{line}");
        assert!(stamp.ends_with('Z'), "{line}");
        DateTime::parse_from_rfc3339(stamp).expect("an RFC 3339 timestamp");
        assert!(rest.starts_with("[3] "), "{line}");
    }
    let lines = instance.last_lines(10);
    assert!(lines.contains(&format!("greeting: hello from env on {port}")));
    assert!(lines.contains(&"to stderr".to_string()));

    instance.stop(Duration::from_secs(5)).await;
    assert_eq!(instance.state(), InstanceState::Stopped);
    assert_eq!(instance.pid(), None);
    assert!(dies(pid as i32).await);
    assert_eq!(instance.restarts(), 0);
}

#[tokio::test]
async fn instances_of_a_release_share_one_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = Instance::spawn(
        spec(dir.path(), 0, "echo zero; exec sleep 30", 1),
        no_restart(),
    );
    let b = Instance::spawn(
        spec(dir.path(), 1, "echo one; exec sleep 30", 2),
        no_restart(),
    );
    let log = a.spec().log.clone();
    eventually("both instances in the log", || {
        let text = read(&log);
        text.contains("[0] zero") && text.contains("[1] one")
    })
    .await;
    // Supervisor notes are marked as such.
    assert!(read(&log).contains("[0] cutover: started pid"));
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn crash_backs_off_with_growing_delays_and_flags_a_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RestartPolicy {
        restart: true,
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        crash_loop_restarts: 3,
        crash_loop_window: Duration::from_secs(60),
    };
    let instance = Instance::spawn(spec(dir.path(), 0, "echo crashing; exit 3", 1), policy);
    let mut rx = instance.watch();
    assert!(!instance.crash_looping());

    let mut untils = Vec::new();
    for k in 0..5u32 {
        let state = wait_state(
            &mut rx,
            "the next Backoff",
            |s| matches!(s, InstanceState::Backoff { restarts, .. } if *restarts == k),
        )
        .await;
        let InstanceState::Backoff {
            until,
            restarts,
            last_exit,
        } = state
        else {
            unreachable!()
        };
        assert_eq!(restarts, k);
        assert_eq!(last_exit, "exited with code 3");
        if k == 0 {
            let left = until - Utc::now();
            assert!(left <= chrono::Duration::milliseconds(100), "{left}");
        }
        untils.push(until);
    }
    // Each restart waits out the previous delay, so consecutive `until`s are at least the new
    // delay apart: 200ms, 400ms, then capped at 400ms.
    let gaps: Vec<i64> = untils
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    for (gap, min) in gaps.iter().zip([200, 400, 400, 400]) {
        assert!(*gap >= min, "gaps {gaps:?}");
    }
    assert!(instance.restarts() >= 4);
    assert!(instance.crash_looping(), "4 restarts within a minute");
    assert_eq!(instance.last_exit().as_deref(), Some("exited with code 3"));
    assert!(instance.last_lines(50).iter().all(|l| l == "crashing"));
    let log = instance.spec().log.clone();
    eventually("the first crash in the log", || {
        read(&log).contains("cutover: exited with code 3; restarting in 100ms")
    })
    .await;

    instance.stop(Duration::from_secs(1)).await;
    assert_eq!(instance.state(), InstanceState::Stopped);
    let restarts = instance.restarts();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(instance.restarts(), restarts, "no restart after stop");
}

#[tokio::test]
async fn restart_off_exits_and_stays_exited_with_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let instance = Instance::spawn(
        spec(
            dir.path(),
            0,
            "echo starting; echo 'Traceback: boom' >&2; exit 7",
            1,
        ),
        no_restart(),
    );
    let mut rx = instance.watch();
    let state = wait_state(&mut rx, "Exited", |s| {
        matches!(s, InstanceState::Exited { .. })
    })
    .await;
    let InstanceState::Exited { code, signal, at } = state else {
        unreachable!()
    };
    assert_eq!((code, signal), (Some(7), None));
    assert!(at <= Utc::now());
    // The last lines are complete by the time the exit is reported.
    let lines = instance.last_lines(5);
    assert!(lines.contains(&"Traceback: boom".to_string()), "{lines:?}");
    assert!(lines.contains(&"starting".to_string()), "{lines:?}");
    assert_eq!(instance.last_lines(1).len(), 1);
    assert_eq!(instance.last_exit().as_deref(), Some("exited with code 7"));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(matches!(
        instance.state(),
        InstanceState::Exited { code: Some(7), .. }
    ));
    assert_eq!(instance.restarts(), 0);

    // Turning restart on later does not revive it; restart() does.
    instance.set_restart(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(instance.state().is_ended());
    instance.restart();
    wait_state(&mut rx, "Backoff after the revived run crashes", |s| {
        matches!(s, InstanceState::Backoff { .. })
    })
    .await;
    assert_eq!(instance.restarts(), 1);
    instance.stop(Duration::from_secs(1)).await;
    instance.stop(Duration::from_secs(1)).await; // idempotent
    assert_eq!(instance.state(), InstanceState::Stopped);
}

#[tokio::test]
async fn turning_restart_off_during_backoff_cancels_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policy = RestartPolicy {
        initial: Duration::from_secs(30),
        ..RestartPolicy::default()
    };
    let instance = Instance::spawn(spec(dir.path(), 0, "exit 2", 1), policy);
    let mut rx = instance.watch();
    wait_state(&mut rx, "Backoff", |s| {
        matches!(s, InstanceState::Backoff { .. })
    })
    .await;
    instance.set_restart(false);
    wait_state(&mut rx, "Exited", |s| {
        matches!(s, InstanceState::Exited { code: Some(2), .. })
    })
    .await;
    assert_eq!(instance.restarts(), 0);
}

#[tokio::test]
async fn a_spawn_failure_is_reported_like_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(dir.path(), 0, "true", 1);
    s.dir = dir.path().join("no-such-release");
    let instance = Instance::spawn(s.clone(), no_restart());
    let mut rx = instance.watch();
    wait_state(&mut rx, "Exited", |s| {
        matches!(
            s,
            InstanceState::Exited {
                code: None,
                signal: None,
                ..
            }
        )
    })
    .await;
    let why = instance.last_exit().unwrap_or_default();
    assert!(
        why.contains("no-such-release") && why.contains("does not exist"),
        "{why}"
    );
    assert!(
        instance
            .last_lines(5)
            .iter()
            .any(|l| l.contains("does not exist"))
    );

    let restarting = Instance::spawn(s, RestartPolicy::default());
    let mut rx = restarting.watch();
    let state = wait_state(&mut rx, "Backoff", |s| {
        matches!(s, InstanceState::Backoff { .. })
    })
    .await;
    let InstanceState::Backoff { last_exit, .. } = state else {
        unreachable!()
    };
    assert!(last_exit.contains("does not exist"), "{last_exit}");
}

#[tokio::test]
async fn stop_kills_the_group_including_a_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let command = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let instance = Instance::spawn(spec(dir.path(), 0, &command, 1), RestartPolicy::default());
    let grandchild = read_pid(&pidfile).await;
    let leader = instance.pid().expect("running") as i32;
    assert!(alive(grandchild) && alive(leader));

    let began = std::time::Instant::now();
    instance.stop(Duration::from_secs(5)).await;
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "SIGTERM was enough"
    );
    assert_eq!(instance.state(), InstanceState::Stopped);
    assert!(dies(leader).await, "leader survived");
    assert!(dies(grandchild).await, "grandchild survived");
    assert_eq!(instance.restarts(), 0);
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    // The shell and (by inheritance) its background child ignore SIGTERM.
    let command = format!(
        "trap '' TERM; sleep 1000 & echo $! > {}; while :; do sleep 0.1; done",
        pidfile.display()
    );
    let instance = Instance::spawn(spec(dir.path(), 0, &command, 1), RestartPolicy::default());
    let grandchild = read_pid(&pidfile).await;
    let leader = instance.pid().expect("running") as i32;

    let began = std::time::Instant::now();
    instance.stop(Duration::from_millis(400)).await;
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(dies(leader).await, "leader survived");
    assert!(dies(grandchild).await, "grandchild survived");
    let log = instance.spec().log.clone();
    eventually("the stop in the log", || {
        read(&log).contains("cutover: stopped (killed by signal 9 (SIGKILL))")
    })
    .await;
}

#[tokio::test]
async fn dropping_the_handle_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let command = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let instance = Instance::spawn(spec(dir.path(), 0, &command, 1), RestartPolicy::default());
    let grandchild = read_pid(&pidfile).await;
    let leader = instance.pid().expect("running") as i32;
    drop(instance);
    assert!(dies(leader).await, "leader survived the drop");
    assert!(dies(grandchild).await, "grandchild survived the drop");
}

#[tokio::test]
async fn a_leader_that_exits_takes_its_leftovers_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let command = format!(
        "sleep 1000 >/dev/null 2>&1 & echo $! > {}; sleep 0.3; exit 1",
        pidfile.display()
    );
    let instance = Instance::spawn(spec(dir.path(), 0, &command, 1), no_restart());
    let grandchild = read_pid(&pidfile).await;
    let mut rx = instance.watch();
    wait_state(&mut rx, "Exited", |s| {
        matches!(s, InstanceState::Exited { code: Some(1), .. })
    })
    .await;
    assert!(
        dies(grandchild).await,
        "a crashed instance left a process behind"
    );
}

#[tokio::test]
async fn restart_replaces_the_process_now() {
    let dir = tempfile::tempdir().unwrap();
    let instance = Instance::spawn(
        spec(dir.path(), 0, "echo up; exec sleep 1000", 1),
        RestartPolicy::default(),
    );
    let mut rx = instance.watch();
    wait_state(&mut rx, "Running", InstanceState::is_running).await;
    let first = instance.pid().expect("running");
    let began = std::time::Instant::now();
    instance.restart();
    let state = wait_state(
        &mut rx,
        "a new process",
        |s| matches!(s, InstanceState::Running { pid, .. } if *pid != first),
    )
    .await;
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "no backoff on restart()"
    );
    assert!(state.is_running());
    assert_eq!(instance.restarts(), 1);
    assert!(!instance.crash_looping());
    assert!(dies(first as i32).await);
    instance.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn free_port_gives_bindable_ports() {
    for _ in 0..5 {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(listener.local_addr().unwrap().port(), port);
    }
}

#[tokio::test]
async fn secret_values_are_masked_in_the_log_and_the_kept_lines() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let command = "echo \"token=s3cr3t-value here\"; echo \"s3cr3t-value\" >&2; sleep 30";
    let instance = Instance::spawn(spec(dir.path(), 0, command, port), RestartPolicy::default());
    let log = instance.spec().log.clone();
    eventually("both lines in the log", || {
        read(&log).matches("***").count() >= 2
    })
    .await;
    let text = read(&log);
    assert!(!text.contains("s3cr3t-value"), "{text}");
    assert!(text.contains("[0] token=*** here"), "{text}");
    let lines = instance.last_lines(10);
    assert!(lines.contains(&"token=*** here".to_string()), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("s3cr3t-value")));
    instance.stop(Duration::from_secs(5)).await;
}
