//! Probes against real sockets: a small Python HTTP server whose answer a test changes by
//! rewriting a file, and plain TCP listeners.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cutover_config::{Health, ProbeKind};
use cutover_runtime::probe::{Probe, ProbeStatus};
use cutover_runtime::supervisor::free_port;
use serde_json::json;
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(20);

/// Answers every GET with what `STATE_FILE` says: `<status> <delay seconds> <body>`
/// (default `200 0 {"status":"healthy","version":"1"}`).
const SERVER: &str = r#"
import http.server, os, time
state = os.environ["STATE_FILE"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, delay, body = 200, 0.0, '{"status":"healthy","version":"1"}'
        if os.path.exists(state):
            parts = open(state).read().split(" ", 2)
            status, delay, body = int(parts[0]), float(parts[1]), parts[2]
        time.sleep(delay)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A health server that dies with the test.
struct Server {
    child: Child,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(port: u16, answer: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("answer");
        if let Some(answer) = answer {
            std::fs::write(&state, answer).unwrap();
        }
        let child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .env("PORT", port.to_string())
            .env("STATE_FILE", &state)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        Server {
            child,
            state,
            _dir: dir,
        }
    }

    fn answer(&self, answer: &str) {
        write_atomically(&self.state, answer);
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn health(period_ms: u64) -> Health {
    Health {
        period: Duration::from_millis(period_ms),
        ..Health::default()
    }
}

async fn wait_status(
    rx: &mut watch::Receiver<ProbeStatus>,
    what: &str,
    pred: impl FnMut(&ProbeStatus) -> bool,
) -> ProbeStatus {
    let outcome = tokio::time::timeout(PATIENCE, rx.wait_for(pred))
        .await
        .map(|r| r.map(|s| s.clone()));
    match outcome {
        Ok(Ok(status)) => status,
        Ok(Err(_)) => panic!("probe channel closed while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}: {:#?}", *rx.borrow()),
    }
}

/// Polls the probe's status (values change without notification between flips).
async fn poll_until(probe: &Probe, what: &str, mut pred: impl FnMut(&ProbeStatus) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = probe.status();
        if pred(&status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn last_detail(status: &ProbeStatus) -> String {
    status.last().map(|r| r.detail.clone()).unwrap_or_default()
}

fn is_timing(detail: &str, prefix: &str) -> bool {
    detail
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix("ms"))
        .and_then(|ms| ms.parse::<u64>().ok())
        .is_some()
}

#[tokio::test]
async fn not_ready_before_the_first_success_then_ready() {
    let port = free_port().unwrap();
    let probe = Probe::spawn(
        Health {
            failure_threshold: 1000,
            ..health(100)
        },
        addr(port),
    );
    let initial = probe.status();
    assert!(!initial.ready && initial.live && initial.history.is_empty());
    poll_until(&probe, "two refused probes", |s| s.history.len() >= 2).await;
    let status = probe.status();
    assert!(!status.ready);
    assert!(status.live, "below the failure threshold");
    assert_eq!(last_detail(&status), "connection refused");
    assert!(status.history.iter().all(|r| !r.ok));

    let _server = Server::start(port, None);
    let mut rx = probe.watch();
    let ready = wait_status(&mut rx, "ready", |s| s.ready).await;
    assert!(ready.live);
    assert_eq!(ready.consecutive_ok, 1, "the first success makes it ready");
    assert_eq!(ready.consecutive_failures, 0);
    assert!(
        is_timing(&last_detail(&ready), "200 in "),
        "{}",
        last_detail(&ready)
    );
    assert!(ready.history.len() <= 10);
}

#[tokio::test]
async fn success_threshold_needs_consecutive_successes_and_flips_notify_once() {
    let port = free_port().unwrap();
    let _server = Server::start(port, None);
    let probe = Probe::spawn(
        Health {
            success_threshold: 3,
            failure_threshold: 1000,
            ..health(100)
        },
        addr(port),
    );
    let mut rx = probe.watch();
    rx.borrow_and_update();
    tokio::time::timeout(PATIENCE, rx.changed())
        .await
        .expect("a flip")
        .expect("open");
    let status = rx.borrow_and_update().clone();
    assert!(status.ready);
    assert_eq!(status.consecutive_ok, 3);
    assert_eq!(
        status.history.iter().rev().take(3).filter(|r| r.ok).count(),
        3
    );
    assert!(!status.history.iter().rev().nth(3).is_some_and(|r| r.ok));

    // More results arrive, but no flip: no notification.
    let more = tokio::time::timeout(Duration::from_millis(600), rx.changed()).await;
    assert!(more.is_err(), "woken without a flip");
    assert!(probe.status().consecutive_ok > 3);
}

#[tokio::test]
async fn status_mismatch_then_failure_threshold_makes_it_not_live() {
    let port = free_port().unwrap();
    let server = Server::start(port, None);
    let probe = Probe::spawn(
        Health {
            failure_threshold: 3,
            ..health(100)
        },
        addr(port),
    );
    let mut rx = probe.watch();
    wait_status(&mut rx, "ready", |s| s.ready).await;

    server.answer("500 0 {}");
    let down = wait_status(&mut rx, "not live", |s| !s.live).await;
    assert!(!down.ready, "not live is not ready either");
    assert_eq!(down.consecutive_failures, 3);
    assert_eq!(last_detail(&down), "status 500, expected 200");
    let failures: Vec<_> = down.history.iter().rev().take(3).collect();
    assert!(failures.iter().all(|r| !r.ok));

    server.answer("200 0 {\"status\":\"healthy\"}");
    let back = wait_status(&mut rx, "ready again", |s| s.ready && s.live).await;
    assert_eq!(back.consecutive_failures, 0);
}

#[tokio::test]
async fn expect_json_is_a_subset_match() {
    let port = free_port().unwrap();
    let server = Server::start(
        port,
        Some("200 0 {\"status\":\"starting\",\"version\":\"1\"}"),
    );
    let probe = Probe::spawn(
        Health {
            expect_json: Some(json!({"status": "healthy"})),
            failure_threshold: 1000,
            ..health(100)
        },
        addr(port),
    );
    poll_until(&probe, "a JSON mismatch", |s| {
        last_detail(s) == r#"body does not contain {"status":"healthy"}"#
    })
    .await;
    assert!(!probe.status().ready);

    server.answer("200 0 not json at all");
    poll_until(&probe, "a body that is not JSON", |s| {
        last_detail(s).starts_with("body is not JSON")
    })
    .await;
    assert!(!probe.status().ready);

    // Extra keys are fine.
    server.answer("200 0 {\"status\":\"healthy\",\"version\":\"2\",\"db\":{\"ok\":true}}");
    let mut rx = probe.watch();
    let ready = wait_status(&mut rx, "ready", |s| s.ready).await;
    assert!(is_timing(&last_detail(&ready), "200 in "));
}

#[tokio::test]
async fn failures_during_initial_delay_do_not_count() {
    let port = free_port().unwrap();
    let server = Server::start(port, None);
    let began = std::time::Instant::now();
    let probe = Probe::spawn(
        Health {
            initial_delay: Duration::from_millis(1500),
            failure_threshold: 2,
            ..health(100)
        },
        addr(port),
    );
    let mut rx = probe.watch();
    wait_status(&mut rx, "ready", |s| s.ready).await;
    server.answer("500 0 {}");
    poll_until(&probe, "failures in the grace period", |s| {
        s.history.iter().rev().take(3).all(|r| !r.ok)
    })
    .await;
    let status = probe.status();
    if began.elapsed() < Duration::from_millis(1400) {
        assert!(
            status.live,
            "failures in the grace period counted: {status:#?}"
        );
        assert_eq!(status.consecutive_failures, 0);
    }
    wait_status(&mut rx, "not live after the grace period", |s| !s.live).await;
    assert!(
        began.elapsed() >= Duration::from_millis(1500),
        "not live before the grace period ended"
    );
}

#[tokio::test]
async fn a_starting_instance_stays_live_and_is_probed_soon_while_refusing() {
    let port = free_port().unwrap();
    let probe = Probe::spawn(
        Health {
            failure_threshold: 1,
            ..health(1000)
        },
        addr(port),
    );
    // A one-second period, but refusals are retried every few milliseconds.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = probe.status();
    assert!(
        status.history.len() >= 5,
        "refused probes of a starting instance waited for the period: {status:#?}"
    );
    assert!(status.live && !status.ready, "starting, not failed");
    assert_eq!(status.consecutive_failures, 0);

    // It answers: ready well before the next period tick would have come.
    let _server = Server::start(port, None);
    let mut rx = probe.watch();
    wait_status(&mut rx, "ready", |s| s.ready).await;
}

#[tokio::test]
async fn an_owner_check_that_fails_keeps_the_instance_not_ready_with_its_reason() {
    let port = free_port().unwrap();
    let _server = Server::start(port, None);
    let probe = Probe::spawn_checked(
        health(50),
        addr(port),
        Some(std::sync::Arc::new(|| {
            Err("port P is held by pid X (y), not by instance 0".into())
        })),
    );
    poll_until(&probe, "the owner's reason", |s| {
        last_detail(s) == "port P is held by pid X (y), not by instance 0"
    })
    .await;
    assert!(!probe.status().ready);
}

#[tokio::test]
async fn a_hanging_instance_times_out_without_delaying_the_next_probe() {
    let port = free_port().unwrap();
    let _server = Server::start(port, Some("200 5 {}"));
    let probe = Probe::spawn(
        Health {
            timeout: Duration::from_millis(200),
            failure_threshold: 1000,
            ..health(100)
        },
        addr(port),
    );
    // Wait for the server to take connections (refusals first, then timeouts).
    poll_until(&probe, "a timeout", |s| {
        last_detail(s) == "timed out after 200ms"
    })
    .await;
    let before = probe.status().history.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = probe.status();
    let after = status.history.len();
    // Each probe takes ~200ms: at least 4 more in 1.5s even on a busy machine.
    assert!(
        after >= (before + 4).min(10),
        "{before} → {after}: a hanging probe delayed the next"
    );
    assert!(!status.ready);
}

#[tokio::test]
async fn tcp_probe_checks_that_a_connection_opens() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = Probe::spawn(
        Health {
            kind: ProbeKind::Tcp,
            failure_threshold: 2,
            ..health(100)
        },
        addr(port),
    );
    let mut rx = probe.watch();
    let ready = wait_status(&mut rx, "ready", |s| s.ready).await;
    assert!(
        is_timing(&last_detail(&ready), "connected in "),
        "{}",
        last_detail(&ready)
    );

    drop(listener);
    let down = wait_status(&mut rx, "not live", |s| !s.live).await;
    assert_eq!(last_detail(&down), "connection refused");
}

#[tokio::test]
async fn stop_and_drop_end_probing() {
    let port = free_port().unwrap();
    let probe = Probe::spawn(health(50), addr(port));
    poll_until(&probe, "a result", |s| !s.history.is_empty()).await;
    probe.stop();
    probe.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let frozen = probe.status().history.len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(probe.status().history.len(), frozen);

    let probe = Probe::spawn(health(50), addr(port));
    let rx = probe.watch();
    drop(probe);
    // The task ends and drops its sender.
    let mut rx = rx;
    let closed =
        tokio::time::timeout(PATIENCE, async { while rx.changed().await.is_ok() {} }).await;
    assert!(closed.is_ok(), "probing went on after drop");
}
