//! The strategies and the deploy dispatcher, driven through the agent on the fake target.
//!
//! Each test runs a real [`Agent`] (its proxy on a public port of 127.0.0.1, its probes, its
//! port leases) whose units are the in-process HTTP servers of [`FakeBackend`], and asserts
//! what a user would notice: the answers of the service's public port (`{"version": ...}`)
//! and the deploy's progress stream. Nothing sleeps to assert: every wait is for an event or
//! a condition, bounded by [`PATIENCE`].

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use super::*;
use crate::api::types::{CanarySpec, CanaryStepSpec, PauseSpec};
use crate::target::Backends;
use crate::target::fake::{FakeBackend, Readiness, Script};

/// The environment every test deploys to.
const ENV: &str = "test";
/// The service every test deploys.
const SERVICE: &str = "api";
/// The longest any one wait may take before the test fails (saying what it waited for).
const PATIENCE: Duration = Duration::from_secs(10);

/// An answer of the public port: status and `version` (or why there was none).
type Answer = Result<(u16, String), String>;

/// An agent on the fake target, with a temp state dir, and a client for its public port.
struct Harness {
    agent: Arc<Agent>,
    fake: FakeBackend,
    /// The public port, leased from the agent's own ports so no unit and no other agent
    /// gets it.
    public: crate::supervisor::PortLease,
    client: Client<HttpConnector, Empty<Bytes>>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeBackend::default();
        let agent = Agent::with_backends(
            cutover_store::StateDir::new(dir.path().join(".cutover")),
            dir.path().join("agent.sock"),
            None,
            Backends::only(Arc::new(fake.clone())),
        );
        let public = agent.ports().allocate().unwrap();
        Harness {
            agent,
            fake,
            public,
            client: Client::builder(TokioExecutor::new()).build_http(),
            dir,
        }
    }

    /// A release of the service: health probed every 20ms, old sets kept warm for a minute.
    fn spec(&self, release: &str, strategy: Strategy, instances: u32) -> ReleaseSpec {
        ReleaseSpec {
            env: ENV.into(),
            service: SERVICE.into(),
            release: release.into(),
            dir: self.dir.path().to_path_buf(),
            run: "fake".into(),
            port: Some(self.public.port()),
            edge: None,
            proxy: Default::default(),
            listen: std::net::Ipv4Addr::LOCALHOST.into(),
            instances,
            env_vars: Vec::new(),
            health: cutover_config::Health {
                period: Duration::from_millis(20),
                timeout: Duration::from_millis(500),
                failure_threshold: 2,
                ready_timeout: Duration::from_secs(5),
                ..cutover_config::Health::default()
            },
            strategy,
            scale_down_delay_ms: 60_000,
            drain_timeout_ms: 1_000,
            batch: 1,
            canary: None,
            autoscale: None,
            container: None,
        }
    }

    /// Starts deploying `spec`; the progress stream follows it.
    fn deploy(&self, spec: ReleaseSpec) -> Progress {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Arc::clone(&self.agent).deploy(spec, tx));
        Progress::new(rx)
    }

    /// Starts rolling back to `spec`.
    fn rollback(&self, spec: ReleaseSpec) -> Progress {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Arc::clone(&self.agent).rollback(spec, tx));
        Progress::new(rx)
    }

    /// Deploys `spec` to the end, which must be `Active`.
    async fn live(&self, spec: ReleaseSpec) -> Progress {
        let mut progress = self.deploy(spec);
        assert_eq!(progress.end().await, DeployProgress::Active, "{progress}");
        progress
    }

    /// `GET /` on the public port.
    async fn get(&self) -> Answer {
        get(&self.client, self.public.port()).await
    }

    /// `n` answers of the public port, each of which must be `200` from `release`.
    async fn assert_serves(&self, release: &str, n: usize) {
        for i in 0..n {
            let answer = self.get().await;
            assert_eq!(
                answer,
                Ok((200, release.to_string())),
                "request {i} of {n} should be served by {release}"
            );
        }
    }

    /// Requests on the public port, one after another, until [`Load::finish`].
    fn load(&self) -> Load {
        let stop = CancellationToken::new();
        let (client, port, until) = (self.client.clone(), self.public.port(), stop.clone());
        let task = tokio::spawn(async move {
            let mut answers = Vec::new();
            while !until.is_cancelled() {
                answers.push(get(&client, port).await);
            }
            answers
        });
        Load { stop, task }
    }

    /// Waits until `release` has `n` units in a state `is` accepts.
    async fn wait_units(&self, release: &str, n: usize, is: fn(&InstanceState) -> bool) {
        eventually(
            &format!("{n} unit(s) of {release} in the expected state"),
            || {
                self.fake
                    .units(release)
                    .iter()
                    .filter(|u| is(&u.state()))
                    .count()
                    == n
            },
        )
        .await;
    }

    /// Sends requests until one gets `want`; fails the test after [`PATIENCE`].
    async fn wait_answer(&self, want: Answer) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self.get().await;
            if answer == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {want:?}; the last answer: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the agent and every unit.
    async fn stop(&self) {
        self.agent.stop_all().await;
    }
}

/// `GET /` on 127.0.0.1:`port`: the status and the body's `version`.
async fn get(client: &Client<HttpConnector, Empty<Bytes>>, port: u16) -> Answer {
    let uri: hyper::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let response = client
        .get(uri)
        .await
        .map_err(|e| format!("request failed: {e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    let version = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("version")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    Ok((status, version))
}

/// Polls `done` every few milliseconds until it holds; fails the test after [`PATIENCE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A load running against the public port.
struct Load {
    stop: CancellationToken,
    task: JoinHandle<Vec<Answer>>,
}

impl Load {
    /// Stops it and returns every answer, in order.
    async fn finish(self) -> Vec<Answer> {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// A deploy's progress stream and what it said so far.
struct Progress {
    rx: mpsc::UnboundedReceiver<DeployProgress>,
    seen: Vec<DeployProgress>,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "progress so far: {:#?}", self.seen)
    }
}

impl Progress {
    fn new(rx: mpsc::UnboundedReceiver<DeployProgress>) -> Progress {
        Progress {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next message; fails the test when none comes within [`PATIENCE`].
    async fn next(&mut self) -> DeployProgress {
        match tokio::time::timeout(PATIENCE, self.rx.recv()).await {
            Ok(Some(p)) => {
                self.seen.push(p.clone());
                p
            }
            Ok(None) => panic!("the deploy ended without a last word; {self}"),
            Err(_) => panic!("no progress for {PATIENCE:?}; {self}"),
        }
    }

    /// Reads on until a message `wanted` accepts, and returns it.
    async fn until(
        &mut self,
        what: &str,
        wanted: impl Fn(&DeployProgress) -> bool,
    ) -> DeployProgress {
        loop {
            let p = self.next().await;
            if wanted(&p) {
                return p;
            }
            assert!(!is_end(&p), "ended before {what}: {p:?}; {self}");
        }
    }

    /// Reads on to the last message (`Active`, `Failed` or `RolledBack`).
    async fn end(&mut self) -> DeployProgress {
        loop {
            let p = self.next().await;
            if is_end(&p) {
                return p;
            }
        }
    }

    /// Whether a message `wanted` accepts has come (without waiting for more).
    fn has_seen(&mut self, wanted: impl Fn(&DeployProgress) -> bool) -> bool {
        while let Ok(p) = self.rx.try_recv() {
            self.seen.push(p);
        }
        self.seen.iter().any(wanted)
    }
}

fn is_end(p: &DeployProgress) -> bool {
    matches!(
        p,
        DeployProgress::Active | DeployProgress::Failed { .. } | DeployProgress::RolledBack { .. }
    )
}

/// The reason of a `Failed` or `RolledBack` end.
fn reason(p: &DeployProgress) -> &str {
    match p {
        DeployProgress::Failed { reason } | DeployProgress::RolledBack { reason } => reason,
        other => panic!("expected a failure or a rollback, got {other:?}"),
    }
}

fn running(s: &InstanceState) -> bool {
    s.is_running()
}

fn stopped(s: &InstanceState) -> bool {
    *s == InstanceState::Stopped
}

/// Every answer is a 200 from one of `releases`.
fn assert_all_served(answers: &[Answer], releases: &[&str]) {
    assert!(!answers.is_empty(), "the load sent nothing");
    for (i, a) in answers.iter().enumerate() {
        let ok = matches!(a, Ok((200, v)) if releases.contains(&v.as_str()));
        assert!(
            ok,
            "answer {i} of {}: {a:?} (expected 200 from {releases:?})",
            answers.len()
        );
    }
}

/// A canary judged every 50ms on at least 5 requests, over `steps` (weight, pause).
fn canary(steps: &[(u8, PauseSpec)]) -> CanarySpec {
    CanarySpec {
        steps: steps
            .iter()
            .map(|&(weight, pause)| CanaryStepSpec { weight, pause })
            .collect(),
        interval_ms: 50,
        max_error_rate: 0.05,
        max_p99_ms: 5_000.0,
        min_requests: 5,
        verdict_timeout_ms: 5_000,
        sticky: false,
        prometheus: None,
    }
}

#[tokio::test]
async fn blue_green_serves_the_new_release_only_once_every_instance_is_ready() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::BlueGreen, 1)).await;
    // Instance 0 of v2 is ready at once, instance 1 only after 600ms.
    h.fake.script(
        "v2",
        Script::healthy().with_index(1, Readiness::After(Duration::from_millis(600))),
    );
    let mut progress = h.deploy(h.spec("v2", Strategy::BlueGreen, 2));
    let passed = |index: u32| {
        h.fake
            .units("v2")
            .iter()
            .any(|u| u.index() == index && u.health_passes() > 0)
    };
    eventually("instance 0 of v2 passes a probe", || passed(0)).await;

    // While instance 1 has not passed a probe, v2 must not serve (instance 0 alone is ready).
    let mut while_half_ready = 0;
    while !passed(1) {
        let answer = h.get().await;
        if answer == Ok((200, "v2".to_string())) {
            assert!(
                passed(1),
                "v2 served while its instance 1 was not ready yet"
            );
            break;
        }
        assert_eq!(answer, Ok((200, "v1".to_string())));
        while_half_ready += 1;
    }
    assert!(
        while_half_ready > 0,
        "no request was sent while v2 was half ready"
    );

    assert_eq!(progress.end().await, DeployProgress::Active, "{progress}");
    assert!(
        matches!(
            progress.seen.as_slice(),
            [
                DeployProgress::Starting { instances: 2 },
                DeployProgress::Verifying,
                ..,
                DeployProgress::Switched { .. },
                DeployProgress::Active
            ]
        ),
        "{progress}"
    );
    h.assert_serves("v2", 20).await;
    // The old release stays warm (scale_down_delay) for a fast rollback.
    h.wait_units("v1", 1, running).await;
    h.stop().await;
}

#[tokio::test]
async fn an_instance_exiting_during_verify_fails_the_deploy_at_once_and_the_old_release_serves() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::BlueGreen, 1)).await;
    h.fake.script(
        "v2",
        Script::healthy().never_ready().exit_after(
            Duration::from_millis(150),
            3,
            "fatal: cannot reach the database",
        ),
    );
    let mut spec = h.spec("v2", Strategy::BlueGreen, 2);
    spec.health.ready_timeout = Duration::from_secs(60);
    let load = h.load();
    let began = Instant::now();
    let mut progress = h.deploy(spec);
    let end = progress.end().await;
    let took = began.elapsed();
    let answers = load.finish().await;

    let why = reason(&end);
    assert!(matches!(end, DeployProgress::Failed { .. }), "{end:?}");
    assert!(why.contains("release v2"), "{why}");
    assert!(
        why.contains("exited with code 3 before it became ready"),
        "{why}"
    );
    assert!(why.contains("fatal: cannot reach the database"), "{why}");
    assert!(
        why.contains("status 503, expected 200"),
        "the last probes: {why}"
    );
    assert!(
        took < Duration::from_secs(5),
        "an exit fails at once, not after ready_timeout (took {took:?})"
    );
    assert_all_served(&answers, &["v1"]);
    h.assert_serves("v1", 10).await;
    h.wait_units("v2", 2, stopped).await;
    h.stop().await;
}

#[tokio::test]
async fn a_release_never_ready_fails_after_ready_timeout_with_its_last_probe() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::BlueGreen, 1)).await;
    h.fake.script("v2", Script::healthy().never_ready());
    let mut spec = h.spec("v2", Strategy::BlueGreen, 1);
    spec.health.ready_timeout = Duration::from_millis(300);
    let began = Instant::now();
    let mut progress = h.deploy(spec);
    let end = progress.end().await;

    assert!(began.elapsed() >= Duration::from_millis(300));
    assert!(matches!(end, DeployProgress::Failed { .. }), "{end:?}");
    let why = reason(&end);
    assert!(
        why.contains(
            "was not ready within 300ms (ready_timeout); last probe: status 503, expected 200"
        ),
        "{why}"
    );
    h.assert_serves("v1", 10).await;
    h.wait_units("v2", 1, stopped).await;
    h.stop().await;
}

#[tokio::test]
async fn a_unit_that_refuses_to_start_fails_the_deploy_with_its_reason() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::BlueGreen, 1)).await;
    h.fake
        .script("v2", Script::healthy().refusing("image not found"));
    let mut progress = h.deploy(h.spec("v2", Strategy::BlueGreen, 1));
    let end = progress.end().await;
    let why = reason(&end);
    assert!(matches!(end, DeployProgress::Failed { .. }), "{end:?}");
    assert!(why.contains("exited before it became ready"), "{why}");
    assert!(
        why.contains("cutover: could not start: image not found"),
        "{why}"
    );
    h.assert_serves("v1", 5).await;
    h.stop().await;
}

#[tokio::test]
async fn rolling_replaces_one_instance_at_a_time_and_keeps_serving() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::Rolling, 3)).await;
    // Each new instance takes a moment: the old ones serve meanwhile.
    h.fake.script(
        "v2",
        Script::healthy().ready_after(Duration::from_millis(100)),
    );
    let load = h.load();
    let mut progress = h.deploy(h.spec("v2", Strategy::Rolling, 3));
    for replaced in 1..=3 {
        let batch = progress
            .until("the next batch", |p| {
                matches!(p, DeployProgress::Batch { .. })
            })
            .await;
        assert_eq!(
            batch,
            DeployProgress::Batch { replaced, total: 3 },
            "{progress}"
        );
        // Each step keeps serving.
        let answer = h.get().await;
        assert!(
            matches!(&answer, Ok((200, v)) if v == "v1" || v == "v2"),
            "after batch {replaced}: {answer:?}"
        );
    }
    assert_eq!(progress.end().await, DeployProgress::Active, "{progress}");
    let answers = load.finish().await;
    assert_all_served(&answers, &["v1", "v2"]);
    assert!(
        answers.iter().any(|a| matches!(a, Ok((_, v)) if v == "v2")),
        "v2 served during the roll"
    );
    h.assert_serves("v2", 30).await;
    h.wait_units("v1", 3, stopped).await;
    h.wait_units("v2", 3, running).await;
    assert_eq!(h.fake.starts(), 6, "{:?}", h.fake.journal());
    h.stop().await;
}

#[tokio::test]
async fn a_canary_answering_500_is_rolled_back_by_analysis_with_its_numbers() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::Canary, 1)).await;
    h.fake.script("v2", Script::healthy().answering(500));
    let mut spec = h.spec("v2", Strategy::Canary, 1);
    spec.canary = Some(canary(&[(50, PauseSpec::Timed { ms: 60_000 })]));
    let load = h.load();
    let mut progress = h.deploy(spec);
    let end = progress.end().await;
    let answers = load.finish().await;

    assert!(
        matches!(end, DeployProgress::RolledBack { .. }),
        "{end:?}; {progress}"
    );
    let why = reason(&end);
    assert!(why.starts_with("error rate 1 > 0.05 over "), "{why}");
    assert!(why.ends_with(" requests at 50%"), "{why}");
    assert!(progress.has_seen(|p| matches!(
        p,
        DeployProgress::Judgement { number: 1, judgement } if judgement.verdict == "fail" && judgement.requests >= 5
    )), "{progress}");
    assert!(
        answers
            .iter()
            .any(|a| matches!(a, Ok((500, v)) if v == "v2")),
        "the canary served some of the load"
    );
    let canary_requests: u64 = h.fake.units("v2").iter().map(|u| u.requests()).sum();
    let stable_requests: u64 = h.fake.units("v1").iter().map(|u| u.requests()).sum();
    assert!(
        canary_requests >= 5 && stable_requests > 0,
        "{canary_requests} {stable_requests}"
    );
    // 100% back on stable at once; the canary goes.
    h.assert_serves("v1", 20).await;
    h.wait_units("v2", 1, stopped).await;
    h.stop().await;
}

#[tokio::test]
async fn a_good_canary_advances_through_its_steps_to_100_percent() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::Canary, 1)).await;
    let mut spec = h.spec("v2", Strategy::Canary, 1);
    spec.canary = Some(canary(&[(10, PauseSpec::None), (50, PauseSpec::None)]));
    let load = h.load();
    let mut progress = h.deploy(spec);
    let end = progress.end().await;
    let answers = load.finish().await;

    assert_eq!(end, DeployProgress::Active, "{progress}");
    let steps: Vec<_> = progress
        .seen
        .iter()
        .filter_map(|p| match p {
            DeployProgress::Step { number, weight, .. } => Some((*number, *weight)),
            DeployProgress::Judgement { number, judgement } if judgement.verdict == "pass" => {
                Some((*number, 0))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [(1, 10), (1, 0), (2, 50), (2, 0)],
        "step, pass, step, pass; {progress}"
    );
    assert!(progress.has_seen(|p| matches!(p, DeployProgress::Switched { .. })));
    assert_all_served(&answers, &["v1", "v2"]);
    h.assert_serves("v2", 20).await;
    h.wait_units("v1", 1, running).await;
    h.stop().await;
}

#[tokio::test]
async fn a_canary_waits_for_promote_and_an_abort_rolls_it_back() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::Canary, 1)).await;
    let manual = canary(&[(20, PauseSpec::Manual), (60, PauseSpec::Manual)]);

    let mut spec = h.spec("v2", Strategy::Canary, 1);
    spec.canary = Some(manual.clone());
    let load = h.load();
    let mut progress = h.deploy(spec);
    progress
        .until("a passing judgement at step 1", |p| {
            matches!(p, DeployProgress::Judgement { number: 1, judgement } if judgement.verdict == "pass")
        })
        .await;
    // A pass does not end a manual pause.
    progress
        .until("a second passing judgement at step 1", |p| {
            matches!(p, DeployProgress::Judgement { number: 1, judgement } if judgement.verdict == "pass")
        })
        .await;
    h.agent
        .canary_control(ENV, SERVICE, Control::Promote)
        .await
        .unwrap();
    // `promote` ends this and every later pause.
    assert_eq!(progress.end().await, DeployProgress::Active, "{progress}");
    assert!(progress.has_seen(|p| matches!(
        p,
        DeployProgress::Step {
            number: 2,
            weight: 60,
            ..
        }
    )));
    h.assert_serves("v2", 10).await;

    let mut spec = h.spec("v3", Strategy::Canary, 1);
    spec.canary = Some(manual);
    let mut progress = h.deploy(spec);
    progress
        .until("step 1", |p| {
            matches!(p, DeployProgress::Step { number: 1, .. })
        })
        .await;
    h.agent
        .canary_control(ENV, SERVICE, Control::Abort)
        .await
        .unwrap();
    let end = progress.end().await;
    assert!(matches!(end, DeployProgress::RolledBack { .. }), "{end:?}");
    assert!(
        reason(&end).contains("aborted by `cutover abort` at step 1/2 (20%)"),
        "{end:?}"
    );
    let answers = load.finish().await;
    assert_all_served(&answers, &["v1", "v2", "v3"]);
    h.assert_serves("v2", 10).await;
    assert!(
        h.agent
            .canary_control(ENV, SERVICE, Control::Promote)
            .await
            .is_err(),
        "no canary is in progress any more"
    );
    h.stop().await;
}

#[tokio::test]
async fn rollback_to_the_warm_release_is_a_route_flip() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::BlueGreen, 2)).await;
    h.live(h.spec("v2", Strategy::BlueGreen, 2)).await;
    h.assert_serves("v2", 5).await;
    h.wait_units("v1", 2, running).await;
    let starts = h.fake.starts();

    let mut progress = h.rollback(h.spec("v1", Strategy::BlueGreen, 2));
    assert_eq!(progress.end().await, DeployProgress::Active, "{progress}");
    assert_eq!(
        h.fake.starts(),
        starts,
        "no unit started: {:?}",
        h.fake.journal()
    );
    assert!(
        !progress.has_seen(|p| matches!(p, DeployProgress::Starting { .. })),
        "{progress}"
    );
    assert!(progress.has_seen(|p| matches!(p, DeployProgress::Switched { .. })));
    h.assert_serves("v1", 20).await;
    // And v2 is the warm one now: rolling forward again is a flip too.
    let mut progress = h.rollback(h.spec("v2", Strategy::BlueGreen, 2));
    assert_eq!(progress.end().await, DeployProgress::Active, "{progress}");
    assert_eq!(h.fake.starts(), starts);
    h.assert_serves("v2", 5).await;
    h.stop().await;
}

#[tokio::test]
async fn immediate_stops_the_old_release_before_starting_the_new_one() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::Immediate, 2)).await;
    let mut progress = h.deploy(h.spec("v2", Strategy::Immediate, 2));
    assert_eq!(progress.end().await, DeployProgress::Active, "{progress}");
    let journal = h.fake.journal();
    let at = |event: &str| journal.iter().position(|e| e == event).unwrap();
    let last_stop = at("stop v1 0").max(at("stop v1 1"));
    let first_start = at("start v2 0").min(at("start v2 1"));
    assert!(last_stop < first_start, "{journal:?}");
    h.assert_serves("v2", 20).await;
    h.stop().await;
}

#[tokio::test]
async fn the_first_deploy_of_a_rolling_or_canary_service_is_blue_green() {
    let h = Harness::new();
    let mut spec = h.spec("v1", Strategy::Canary, 2);
    spec.canary = Some(canary(&[(50, PauseSpec::Manual)]));
    let progress = h.live(spec).await;
    assert!(
        !progress.seen.iter().any(|p| matches!(
            p,
            DeployProgress::Step { .. } | DeployProgress::Batch { .. }
        )),
        "{progress}"
    );
    assert!(matches!(
        progress.seen[0],
        DeployProgress::Starting { instances: 2 }
    ));
    h.assert_serves("v1", 5).await;
    h.stop().await;
}

#[tokio::test]
async fn deploying_the_live_release_again_starts_nothing() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::BlueGreen, 2)).await;
    let starts = h.fake.starts();
    let progress = h.live(h.spec("v1", Strategy::BlueGreen, 2)).await;
    assert_eq!(
        progress.seen,
        [DeployProgress::Verifying, DeployProgress::Active]
    );
    assert_eq!(h.fake.starts(), starts);
    h.assert_serves("v1", 5).await;
    h.stop().await;
}

#[tokio::test]
async fn a_live_instance_failing_liveness_leaves_the_route_is_restarted_and_comes_back() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::BlueGreen, 1)).await;
    h.fake.script("v1", Script::healthy().never_ready());
    eventually("v1 restarted after failing its liveness probe", || {
        h.fake.units("v1").iter().any(|u| u.restarts() > 0)
    })
    .await;
    let answer = h.get().await;
    assert_eq!(
        answer,
        Ok((503, format!("no ready instance of {SERVICE}"))),
        "out of the route while its probes fail"
    );
    assert_eq!(h.fake.starts(), 1, "restarted in place, not replaced");
    h.fake.script("v1", Script::healthy());
    h.wait_answer(Ok((200, "v1".to_string()))).await;
    h.stop().await;
}

#[tokio::test]
async fn a_rolling_update_whose_new_instance_never_gets_ready_restores_the_old_release() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::Rolling, 3)).await;
    h.fake
        .script("v2", Script::healthy().with_index(1, Readiness::Never));
    let mut spec = h.spec("v2", Strategy::Rolling, 3);
    spec.health.ready_timeout = Duration::from_millis(300);
    let load = h.load();
    let mut progress = h.deploy(spec);
    let end = progress.end().await;
    let answers = load.finish().await;

    assert!(
        matches!(end, DeployProgress::Failed { .. }),
        "{end:?}; {progress}"
    );
    let why = reason(&end);
    assert!(why.starts_with("instance 1 of api (release v2"), "{why}");
    assert!(why.contains("was not ready within 300ms"), "{why}");
    assert!(
        why.contains(
            "the roll stopped with 1/3 new instance(s) serving; release v1 is back on 3 instance(s)"
        ),
        "{why}"
    );
    assert_eq!(
        progress
            .seen
            .iter()
            .filter(|p| matches!(p, DeployProgress::Batch { .. }))
            .count(),
        1,
        "{progress}"
    );
    assert_all_served(&answers, &["v1", "v2"]);
    h.assert_serves("v1", 30).await;
    h.wait_units("v2", 2, stopped).await;
    h.wait_units("v1", 3, running).await;
    h.stop().await;
}

#[tokio::test]
async fn a_rollback_while_a_canary_runs_aborts_it_and_keeps_the_stable_release() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::Canary, 1)).await;
    let mut spec = h.spec("v2", Strategy::Canary, 1);
    spec.canary = Some(canary(&[(30, PauseSpec::Manual)]));
    let mut deploy = h.deploy(spec);
    deploy
        .until("step 1", |p| {
            matches!(p, DeployProgress::Step { number: 1, .. })
        })
        .await;
    let starts = h.fake.starts();
    let mut rollback = h.rollback(h.spec("v1", Strategy::Canary, 1));
    let end = deploy.end().await;
    assert!(matches!(end, DeployProgress::RolledBack { .. }), "{end:?}");
    assert_eq!(rollback.end().await, DeployProgress::Active, "{rollback}");
    assert_eq!(h.fake.starts(), starts, "v1 was live already");
    h.assert_serves("v1", 20).await;
    h.wait_units("v2", 1, stopped).await;
    h.stop().await;
}
#[tokio::test]
async fn a_warm_release_stays_warm_for_scale_down_delay_after_the_latest_switch() {
    let h = Harness::new();
    let delay = Duration::from_millis(800);
    let spec = |release: &str| {
        let mut s = h.spec(release, Strategy::BlueGreen, 1);
        s.scale_down_delay_ms = u64::try_from(delay.as_millis()).unwrap();
        s
    };
    h.live(spec("v1")).await;
    h.live(spec("v2")).await;
    // Half the delay passes: the first switch's scale-down is due before the latest one's
    // (the scenario needs the time; nothing is asserted on it).
    tokio::time::sleep(delay / 2).await;
    // Back to v1 and forward to v2 again: two route flips, v1 warm again.
    assert_eq!(h.rollback(spec("v1")).end().await, DeployProgress::Active);
    h.wait_units("v1", 1, running).await;
    // v1 becomes warm after this instant.
    let asked = Instant::now();
    let mut forward = h.rollback(spec("v2"));
    assert_eq!(forward.end().await, DeployProgress::Active, "{forward}");
    assert_eq!(h.fake.starts(), 2, "only flips: {:?}", h.fake.journal());
    h.assert_serves("v2", 5).await;

    h.wait_units("v1", 1, stopped).await;
    let warm_for = asked.elapsed();
    assert!(
        warm_for >= delay,
        "v1 was scaled down {warm_for:?} after it became warm again (scale_down_delay {delay:?})"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_rollback_asking_for_more_instances_than_the_warm_set_has_gets_them() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::BlueGreen, 1)).await;
    // `instances` went from 1 to 3 in cutover.toml; v2 was deployed with it.
    h.live(h.spec("v2", Strategy::BlueGreen, 3)).await;
    // A rollback uses the configuration of now: v1 with 3 instances.
    let mut progress = h.rollback(h.spec("v1", Strategy::BlueGreen, 3));
    assert_eq!(progress.end().await, DeployProgress::Active, "{progress}");
    h.assert_serves("v1", 10).await;
    let status = h.agent.status().await;
    let service = &status.services[0];
    assert_eq!(
        (service.ready, service.desired, service.health.as_str()),
        (3, 3, "healthy"),
        "{service:#?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_rolling_update_whose_new_instance_crashed_since_its_batch_does_not_go_live() {
    let h = Harness::new();
    h.live(h.spec("v1", Strategy::Rolling, 2)).await;
    // Instance 1 takes a while, so the roll is still on when instance 0 crashes.
    h.fake.script(
        "v2",
        Script::healthy().with_index(1, Readiness::After(Duration::from_millis(400))),
    );
    let mut spec = h.spec("v2", Strategy::Rolling, 2);
    // Probes slow to notice a crash (as with the default period of 1s).
    spec.health.period = Duration::from_millis(300);
    spec.health.failure_threshold = 3;
    let mut progress = h.deploy(spec);
    progress
        .until("batch 1", |p| {
            matches!(p, DeployProgress::Batch { replaced: 1, .. })
        })
        .await;
    let first = h
        .fake
        .units("v2")
        .into_iter()
        .find(|u| u.index() == 0)
        .unwrap();
    first.crash(1, "panic: index out of range");
    let end = progress.end().await;
    assert!(
        matches!(end, DeployProgress::Failed { .. }),
        "went live with instance 0 crashed ({:?}); {progress}",
        first.state()
    );
    let why = reason(&end);
    assert!(why.starts_with("instance 0 of api (release v2"), "{why}");
    assert!(
        why.contains("exited with code 1 after it became ready (it is restarting)"),
        "{why}"
    );
    assert!(why.contains("panic: index out of range"), "{why}");
    assert!(why.contains("release v1 is back on 2 instance(s)"), "{why}");
    h.assert_serves("v1", 10).await;
    h.stop().await;
}
