//! Health probes: one task per instance asks it, every `period`, whether it is healthy, and
//! turns the answers into two flags: `ready` (may receive traffic) and `live` (needs no
//! restart).
//!
//! # Theory of operation
//! Like kamal-proxy's `TargetStateAdding` and pingora's `observe_health`, an instance starts
//! not ready and only consecutive results against the thresholds move it:
//! `success_threshold` successes in a row make it ready (and live). Until then it is
//! *starting*: failures are recorded but mean "not yet" (the caller gives up after
//! `ready_timeout`, see `agent/set.rs`). Once it was ready, after `initial_delay`,
//! `failure_threshold` failures in a row make it neither ready nor live. Failures during
//! `initial_delay` are recorded but not counted: it is a grace period for a slow start, not a
//! delay before the first probe (probing starts at once, so a fast instance is ready at once).
//!
//! While a starting instance refuses connections (nothing listens yet), or its connection closes
//! before any answer (a container's published port, held by the engine's proxy before the
//! container listens), it is probed again every [`LISTEN_POLL`] instead of every `period`: a refused connect costs microseconds, and
//! the probe that finds the port listening is the full probe, so an instance is ready as soon
//! as it answers, not on the next period tick.
//!
//! A probe given an owner check ([`Probe::spawn_checked`]) runs it before a success may make
//! the instance ready: a success from another process answering on the port is a failure with
//! the check's reason (see `owner.rs`).
//!
//! Each probe opens a fresh connection (no pooled state can hide a dead instance) and is
//! bounded by `timeout`; a hanging instance costs one timeout, never more. Probes run one at a
//! time: with `timeout` longer than `period`, the next probe starts when the slow one gives up.
//!
//! An instance that exits is the supervisor's news, not the probe's: the agent watches the
//! instance's state for that and does not wait for probes to time out.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cutover_config::{Health, ProbeKind, format_duration};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How many recent results a [`ProbeStatus`] keeps.
pub const HISTORY: usize = 10;
/// The largest response body a [`fetch`] reads.
pub const MAX_BODY: usize = 1024 * 1024;
/// The shortest period between probes (a zero period would spin).
const MIN_PERIOD: Duration = Duration::from_millis(10);
/// How soon a starting instance that refused the connection is probed again.
pub const LISTEN_POLL: Duration = Duration::from_millis(10);
/// The detail of a probe whose connection was refused.
const REFUSED: &str = "connection refused";

/// Checks, before a success makes an instance ready, that the answer came from that instance;
/// `Err` is the reason it did not. Runs on a blocking thread.
pub type OwnerCheck = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// When the probe started.
    pub at: DateTime<Utc>,
    /// Whether the instance answered as expected.
    pub ok: bool,
    /// What happened, in words: "200 in 3ms", "connection refused", "status 500, expected
    /// 200", "body does not contain {\"status\":\"healthy\"}", "timed out after 1s".
    pub detail: String,
}

/// An instance's health as the probes see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeStatus {
    /// May receive traffic: `success_threshold` consecutive successes, and not since undone by
    /// `failure_threshold` consecutive failures. False until the first success.
    pub ready: bool,
    /// Needs no restart: false once `failure_threshold` consecutive failures were counted
    /// (failures during `initial_delay` are not), whether or not it was ready before; true
    /// again when it becomes ready.
    pub live: bool,
    /// The last [`HISTORY`] results, oldest first.
    pub history: Vec<ProbeResult>,
    /// Successes in a row, up to the latest result.
    pub consecutive_ok: u32,
    /// Counted failures in a row, up to the latest result.
    pub consecutive_failures: u32,
    /// Has been ready at least once. Before that the instance is *starting*: its failures are
    /// not counted against `failure_threshold`.
    #[serde(default)]
    pub was_ready: bool,
}

impl Default for ProbeStatus {
    fn default() -> Self {
        ProbeStatus {
            ready: false,
            live: true,
            history: Vec::new(),
            consecutive_ok: 0,
            consecutive_failures: 0,
            was_ready: false,
        }
    }
}

impl ProbeStatus {
    /// The most recent result.
    pub fn last(&self) -> Option<&ProbeResult> {
        self.history.last()
    }

    /// Applies one result against the thresholds; `counts` is false during `initial_delay`
    /// (a failure then does not count), and a failure never counts while the instance is
    /// starting (before it was ready once). Returns whether `ready` or `live` flipped.
    pub fn observe(
        &mut self,
        result: ProbeResult,
        counts: bool,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> bool {
        let before = (self.ready, self.live);
        if result.ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_failures = 0;
            if self.consecutive_ok >= success_threshold.max(1) {
                self.ready = true;
                self.live = true;
                self.was_ready = true;
            }
        } else {
            self.consecutive_ok = 0;
            if counts && self.was_ready {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            }
            if self.consecutive_failures >= failure_threshold.max(1) {
                self.ready = false;
                self.live = false;
            }
        }
        if self.history.len() == HISTORY {
            self.history.remove(0);
        }
        self.history.push(result);
        before != (self.ready, self.live)
    }
}

/// A running probe of one instance; dropping it stops probing.
#[derive(Debug)]
pub struct Probe {
    status: watch::Receiver<ProbeStatus>,
    cancel: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl Probe {
    /// Starts probing `addr` (the instance's `127.0.0.1:PORT`) as `health` says, now.
    ///
    /// After the instance restarts, spawn a new probe: `initial_delay` counts from here.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn spawn(health: Health, addr: SocketAddr) -> Probe {
        Probe::spawn_checked(health, addr, None)
    }

    /// Like [`Probe::spawn`]; with `owner`, a success counts towards readiness only when
    /// `owner` says the answer came from the instance (checked each time the instance is not
    /// ready and a probe passes).
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn spawn_checked(health: Health, addr: SocketAddr, owner: Option<OwnerCheck>) -> Probe {
        Probe::spawn_gated(health, addr, owner, None)
    }

    /// Like [`Probe::spawn_checked`]; with `running`, the first probe waits until the
    /// instance runs (a container's published port accepts before the container has a
    /// network, and a probe sent then hangs until its timeout).
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn spawn_gated(
        health: Health,
        addr: SocketAddr,
        owner: Option<OwnerCheck>,
        running: Option<watch::Receiver<crate::supervisor::InstanceState>>,
    ) -> Probe {
        let (tx, rx) = watch::channel(ProbeStatus::default());
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        tokio::spawn(async move {
            if let Some(mut state) = running {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = state.wait_for(|s| s.is_running() || s.is_ended()) => {}
                }
            }
            run(health, Address::Fixed(addr), owner, tx, token).await;
        });
        Probe {
            status: rx,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
        }
    }

    /// Like [`Probe::spawn_gated`] for an instance whose address moves (a swarm task that is
    /// rescheduled on another node): each probe goes to `addr`'s current value, `None` failing
    /// ("no task runs"), and a new address starts over as a starting instance (not ready
    /// until it passes `success_threshold` probes of its own).
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn spawn_following(
        health: Health,
        addr: watch::Receiver<Option<SocketAddr>>,
        running: watch::Receiver<crate::supervisor::InstanceState>,
    ) -> Probe {
        let (tx, rx) = watch::channel(ProbeStatus::default());
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let mut state = running;
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => return,
                _ = state.wait_for(|s| s.is_running() || s.is_ended()) => {}
            }
            run(health, Address::Follow(addr, None), None, tx, token).await;
        });
        Probe {
            status: rx,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
        }
    }

    /// The current status, including the latest result.
    pub fn status(&self) -> ProbeStatus {
        self.status.borrow().clone()
    }

    /// Whether the instance may receive traffic now (no copy of the history).
    pub fn ready(&self) -> bool {
        self.status.borrow().ready
    }

    /// Whether the instance needs no restart now (no copy of the history).
    pub fn live(&self) -> bool {
        self.status.borrow().live
    }

    /// A receiver of the status. Its value is always current (every result updates it), but
    /// `changed()` wakes only when `ready` or `live` flips, so a waiter is woken by decisions,
    /// not by every probe. Wait with `wait_for(|s| s.ready || !s.live)`.
    pub fn watch(&self) -> watch::Receiver<ProbeStatus> {
        self.status.clone()
    }

    /// Stops probing; the status keeps its last value. Idempotent.
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

/// Where a probe goes: one address, or wherever the instance is now (the last address
/// probed alongside).
enum Address {
    Fixed(SocketAddr),
    Follow(watch::Receiver<Option<SocketAddr>>, Option<SocketAddr>),
}

impl Address {
    /// The address to probe now, and whether it differs from the one probed before.
    fn current(&mut self) -> (Option<SocketAddr>, bool) {
        match self {
            Address::Fixed(a) => (Some(*a), false),
            Address::Follow(rx, last) => {
                let now = *rx.borrow();
                let moved = now.is_some() && last.is_some() && now != *last;
                if now.is_some() {
                    *last = now;
                }
                (now, moved)
            }
        }
    }
}

async fn run(
    health: Health,
    mut address: Address,
    owner: Option<OwnerCheck>,
    status: watch::Sender<ProbeStatus>,
    cancel: CancellationToken,
) {
    let grace_ends = Instant::now() + health.initial_delay;
    let mut ticks = tokio::time::interval(health.period.max(MIN_PERIOD));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut soon = false;
    loop {
        if soon {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(LISTEN_POLL) => {}
            }
            ticks.reset();
        } else {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
        }
        let counts = Instant::now() >= grace_ends;
        let (addr, moved) = address.current();
        if moved {
            // Another task now: it proves itself ready afresh.
            status.send_modify(|s| {
                let history = std::mem::take(&mut s.history);
                *s = ProbeStatus {
                    history,
                    ..ProbeStatus::default()
                };
            });
        }
        let mut result = match addr {
            Some(addr) => tokio::select! {
                () = cancel.cancelled() => return,
                result = check(&health, addr) => result,
            },
            None => ProbeResult {
                at: Utc::now(),
                ok: false,
                detail: REFUSED.to_string(),
            },
        };
        let (ready, was_ready) = {
            let s = status.borrow();
            (s.ready, s.was_ready)
        };
        if result.ok
            && !ready
            && let Some(owner) = &owner
        {
            let owner = std::sync::Arc::clone(owner);
            let verdict = tokio::select! {
                () = cancel.cancelled() => return,
                v = tokio::task::spawn_blocking(move || owner()) => v,
            };
            match verdict {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    result.ok = false;
                    result.detail = why;
                }
                Err(e) => {
                    result.ok = false;
                    result.detail = format!("checking who answers failed: {e}");
                }
            }
        }
        soon = !result.ok && !was_ready && no_answer(&result.detail);
        status.send_if_modified(|s| {
            s.observe(
                result,
                counts,
                health.success_threshold,
                health.failure_threshold,
            )
        });
    }
}

/// Whether a failed probe got no answer at all: refused, or a connection that closed before
/// any response (a published container port whose proxy accepts before the container
/// listens). A starting instance is probed again soon after such a failure.
fn no_answer(detail: &str) -> bool {
    detail == REFUSED
        || detail == "connection reset"
        || detail.starts_with("request failed: ")
        || detail.starts_with("HTTP handshake failed: ")
}

/// Runs one probe of `addr`, bounded by `health.timeout`.
pub async fn check(health: &Health, addr: SocketAddr) -> ProbeResult {
    let at = Utc::now();
    let began = Instant::now();
    let attempt = async {
        match health.kind {
            ProbeKind::Http => http_check(health, addr).await,
            ProbeKind::Tcp => connect(addr).await.map(|_| "connected".to_string()),
        }
    };
    let (ok, detail) = match tokio::time::timeout(health.timeout, attempt).await {
        Ok(Ok(what)) => (true, format!("{what} in {}ms", began.elapsed().as_millis())),
        Ok(Err(why)) => (false, why),
        Err(_) => (
            false,
            format!("timed out after {}", format_duration(health.timeout)),
        ),
    };
    ProbeResult { at, ok, detail }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(addr)
        .await
        .map_err(|e| connect_detail(addr, &e))
}

/// The detail of a probe whose connection could not be opened.
fn connect_detail(addr: SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => REFUSED.to_string(),
        std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        _ => format!("connect to {addr} failed: {e}"),
    }
}

/// Aborts a spawned task when dropped (a request that timed out leaves no connection behind).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// GET `path` on a fresh connection and judge the answer; `Ok` carries the status for the
/// detail ("200").
async fn http_check(health: &Health, addr: SocketAddr) -> Result<String, String> {
    let request = fetch(
        addr,
        None,
        &Method::GET,
        &health.path,
        "cutover-probe",
        health.timeout,
    );
    let (status, body) = match request.await {
        Ok(response) => (response.status, Ok(response.body)),
        Err(Failure::Body { status, error }) => (status, Err(error)),
        Err(Failure::Connect(e)) => return Err(connect_detail(addr, &e)),
        Err(Failure::Handshake(e)) => return Err(format!("HTTP handshake failed: {e}")),
        Err(Failure::InvalidRequest(e)) => {
            return Err(format!("invalid probe path {:?}: {e}", health.path));
        }
        Err(Failure::Request(e)) => return Err(format!("request failed: {e}")),
        Err(Failure::TimedOut(t)) => return Err(format!("timed out after {}", format_duration(t))),
    };
    let body = body.as_deref().map_err(String::as_str);
    match judge(
        health.expect_status,
        health.expect_json.as_ref(),
        status,
        body,
    ) {
        Ok(()) => Ok(status.to_string()),
        Err(Mismatch::Status) => Err(format!(
            "status {status}, expected {}",
            health.expect_status
        )),
        Err(Mismatch::Unread(e)) => Err(format!("reading the body failed: {e}")),
        Err(Mismatch::NotJson(expected)) => Err(format!(
            "body is not JSON (expected it to contain {expected})"
        )),
        Err(Mismatch::Missing(expected)) => Err(format!("body does not contain {expected}")),
    }
}

/// An answer to a [`fetch`].
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, up to [`MAX_BODY`] bytes.
    pub body: Bytes,
    /// From the connect to the end of the body.
    pub elapsed: Duration,
}

/// Why a [`fetch`] got no (whole) answer; each caller puts it in its own words.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be opened (refused, reset, unreachable).
    Connect(std::io::Error),
    /// The HTTP/1 handshake failed.
    Handshake(hyper::Error),
    /// The method or path do not make a request.
    InvalidRequest(hyper::http::Error),
    /// Sending the request or reading the answer's head failed (closed before an answer).
    Request(hyper::Error),
    /// The head arrived but the body could not be read (or is over [`MAX_BODY`] bytes).
    Body {
        /// The answer's status.
        status: u16,
        /// What went wrong.
        error: String,
    },
    /// No whole answer within the timeout.
    TimedOut(Duration),
}

/// One request on a fresh connection (no pooled state can hide a dead instance), bounded by
/// `timeout`: the one-shot request of both the health probe and the smoke tests. `host` is the
/// `Host` to ask for (a shared listener routes by it); `None`: `addr`.
pub async fn fetch(
    addr: SocketAddr,
    host: Option<&str>,
    method: &Method,
    path: &str,
    user_agent: &str,
    timeout: Duration,
) -> Result<Response, Failure> {
    let began = Instant::now();
    match tokio::time::timeout(timeout, exchange(addr, host, method, path, user_agent)).await {
        Ok(Ok((status, body))) => Ok(Response {
            status,
            body,
            elapsed: began.elapsed(),
        }),
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err(Failure::TimedOut(timeout)),
    }
}

async fn exchange(
    addr: SocketAddr,
    host: Option<&str>,
    method: &Method,
    path: &str,
    user_agent: &str,
) -> Result<(u16, Bytes), Failure> {
    let stream = TcpStream::connect(addr).await.map_err(Failure::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Failure::Handshake)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        // Its errors surface through `send_request` below.
        let _ = conn.await;
    }));
    let mut request = hyper::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(
            hyper::header::HOST,
            host.map_or_else(|| addr.to_string(), str::to_string),
        )
        .header(hyper::header::USER_AGENT, user_agent)
        .header(hyper::header::CONNECTION, "close");
    if !matches!(*method, Method::GET | Method::HEAD) {
        request = request.header(hyper::header::CONTENT_LENGTH, "0");
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(Failure::InvalidRequest)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(Failure::Request)?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Failure::Body {
            status,
            error: e.to_string(),
        })?
        .to_bytes();
    Ok((status, body))
}

/// How an answer fails a health check, in order of checking.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// Not the expected status.
    Status,
    /// The body, needed for `expect_json`, could not be read: why.
    Unread(String),
    /// The body is not JSON; carries the expected subset.
    NotJson(Value),
    /// The body is JSON without the expected subset (see [`json_contains`]).
    Missing(Value),
}

/// Judges a health answer: `expect_status`, then (when given) the `expect_json` subset of the
/// body; the health probe and the smoke test's health stage judge alike.
pub fn judge(
    expect_status: u16,
    expect_json: Option<&Value>,
    status: u16,
    body: Result<&[u8], &str>,
) -> Result<(), Mismatch> {
    if status != expect_status {
        return Err(Mismatch::Status);
    }
    let Some(expected) = expect_json else {
        return Ok(());
    };
    let body = body.map_err(|e| Mismatch::Unread(e.to_string()))?;
    let actual: Value =
        serde_json::from_slice(body).map_err(|_| Mismatch::NotJson(expected.clone()))?;
    if !json_contains(&actual, expected) {
        return Err(Mismatch::Missing(expected.clone()));
    }
    Ok(())
}

/// Whether `actual` contains `expected` as a subset: objects need every expected key with a
/// value that matches in turn (extra keys are fine); arrays and scalars must be equal (numbers
/// by value, so `1` matches `1.0`).
pub fn json_contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected.iter().all(|(key, want)| {
            actual
                .get(key)
                .is_some_and(|have| json_contains(have, want))
        }),
        (Value::Number(have), Value::Number(want)) => {
            have == want || matches!((have.as_f64(), want.as_f64()), (Some(a), Some(b)) if a == b)
        }
        _ => actual == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(ok: bool) -> ProbeResult {
        ProbeResult {
            at: Utc::now(),
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn subset_matching() {
        let body = json!({"status": "healthy", "version": 3, "checks": {"db": "ok", "cache": "ok"}, "tags": [1, 2]});
        assert!(json_contains(&body, &json!({"status": "healthy"})));
        assert!(json_contains(&body, &json!({"checks": {"db": "ok"}})));
        assert!(json_contains(&body, &json!({"version": 3.0})));
        assert!(json_contains(&body, &json!({})));
        assert!(!json_contains(&body, &json!({"status": "ok"})));
        assert!(!json_contains(&body, &json!({"missing": null})));
        assert!(!json_contains(&body, &json!({"tags": [1]})));
        assert!(json_contains(&body, &json!({"tags": [1, 2]})));
        assert!(!json_contains(&json!([1, 2]), &json!({"a": 1})));
    }

    #[test]
    fn starts_not_ready_and_needs_the_success_threshold() {
        let mut s = ProbeStatus::default();
        assert!(!s.ready && s.live);
        assert!(!s.observe(result(true), true, 2, 3));
        assert!(!s.ready);
        assert!(s.observe(result(true), true, 2, 3));
        assert!(s.ready);
        assert!(!s.observe(result(true), true, 2, 3), "no flip, no change");
    }

    #[test]
    fn failures_in_grace_do_not_count() {
        let mut s = ProbeStatus::default();
        s.observe(result(true), false, 1, 2);
        for _ in 0..5 {
            assert!(!s.observe(result(false), false, 1, 2));
        }
        assert!(s.live && s.ready);
        assert_eq!(s.consecutive_failures, 0);
        assert!(!s.observe(result(false), true, 1, 2));
        assert!(s.observe(result(false), true, 1, 2));
        assert!(!s.live && !s.ready);
        assert_eq!(s.history.len(), 8);
    }

    #[test]
    fn a_starting_instance_is_never_failed_by_its_probes() {
        let mut s = ProbeStatus::default();
        for _ in 0..100 {
            assert!(!s.observe(result(false), true, 1, 3));
        }
        assert!(s.live && !s.ready && !s.was_ready, "starting, not failing");
        assert_eq!(s.consecutive_failures, 0);
        assert!(s.observe(result(true), true, 1, 3));
        assert!(s.was_ready);
        for _ in 0..2 {
            assert!(!s.observe(result(false), true, 1, 3));
        }
        assert!(
            s.observe(result(false), true, 1, 3),
            "after it was ready, they count"
        );
        assert!(!s.live && !s.ready && s.was_ready);
    }

    #[test]
    fn failure_threshold_undoes_ready_and_a_success_interrupts_the_run() {
        let mut s = ProbeStatus::default();
        s.observe(result(true), true, 1, 3);
        assert!(s.ready);
        s.observe(result(false), true, 1, 3);
        s.observe(result(false), true, 1, 3);
        assert!(s.ready, "two failures are below the threshold");
        s.observe(result(true), true, 1, 3);
        s.observe(result(false), true, 1, 3);
        s.observe(result(false), true, 1, 3);
        assert!(s.ready);
        assert!(s.observe(result(false), true, 1, 3));
        assert!(!s.ready && !s.live);
        assert!(s.observe(result(true), true, 1, 3), "recovers");
        assert!(s.ready && s.live);
    }

    #[test]
    fn history_keeps_the_last_ten() {
        let mut s = ProbeStatus::default();
        for i in 0..25 {
            let mut r = result(true);
            r.detail = i.to_string();
            s.observe(r, true, 1, 3);
        }
        assert_eq!(s.history.len(), HISTORY);
        assert_eq!(s.history[0].detail, "15");
        assert_eq!(s.last().map(|r| r.detail.as_str()), Some("24"));
    }
}
