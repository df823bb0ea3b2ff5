//! A fake target for unit tests: a unit is an HTTP server inside the test's own process.
//!
//! The strategies only see units through [`Unit`], so a test can drive blue-green, rolling,
//! canary, immediate and warm rollback end to end through the agent's real proxy and probes
//! without a process or a container. Each unit listens on its `InstanceSpec.port` on
//! 127.0.0.1, answers `GET /health` (200 when ready, 503 before) and anything else with
//! `{"version": "<release>"}`.
//!
//! How a release's units behave is a [`Script`], set through the shared [`FakeBackend`]
//! handle: ready at once or after a delay or never, exit after a delay with a code and a log
//! line, answer `/` with an error status, refuse to start. A script is read when a unit
//! (re)starts for its timings and on every request for its answers, so a test can change how
//! a live release answers.
//!
//! The unit's states follow the supervisor's: `Starting` → `Running` (a made-up pid) →
//! `Exited` or `Backoff` → … → `Stopped`, published on a watch channel. One task owns each
//! unit's listener and connections; stopping (or dropping the handle) ends that task, which
//! closes the listener and every open connection, like a process that is gone.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Backend, Found, Supervised, Unit};
use crate::probe::OwnerCheck;
use crate::supervisor::lifecycle::{self, Control, Exit, Handle, Lifecycle, Next, Runner};
use crate::supervisor::logs::LogSink;
use crate::supervisor::{InstanceSpec, InstanceState, RestartPolicy};

/// The first made-up pid; every run gets the next one.
const FIRST_PID: u32 = 4_000_000;

/// When a unit's `/health` starts answering 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Readiness {
    /// From the start.
    #[default]
    AtOnce,
    /// This long after its run began.
    After(Duration),
    /// Never (503 for good).
    Never,
}

/// A planned exit: after `after`, the unit prints `line` and exits with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedExit {
    /// How long after its run began.
    pub(crate) after: Duration,
    /// The exit code.
    pub(crate) code: i32,
    /// The last line it prints.
    pub(crate) line: String,
}

/// How the units of one release behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Script {
    /// When `/health` answers 200 (every instance unless [`Script::by_index`] says otherwise).
    pub(crate) readiness: Readiness,
    /// Per instance index, a readiness that replaces [`Script::readiness`].
    pub(crate) by_index: BTreeMap<u32, Readiness>,
    /// An exit every run ends with.
    pub(crate) exit: Option<PlannedExit>,
    /// The status of every answer but `/health`.
    pub(crate) status: u16,
    /// Why every start fails at once (the unit never listens).
    pub(crate) refuse: Option<String>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            readiness: Readiness::AtOnce,
            by_index: BTreeMap::new(),
            exit: None,
            status: 200,
            refuse: None,
        }
    }
}

impl Script {
    /// Ready at once, answers 200.
    pub(crate) fn healthy() -> Script {
        Script::default()
    }

    /// `/health` answers 503 for good.
    pub(crate) fn never_ready(mut self) -> Script {
        self.readiness = Readiness::Never;
        self
    }

    /// `/health` answers 200 once `d` has passed since the run began.
    pub(crate) fn ready_after(mut self, d: Duration) -> Script {
        self.readiness = Readiness::After(d);
        self
    }

    /// Instance `index` becomes ready as `readiness` says (the others as the script says).
    pub(crate) fn with_index(mut self, index: u32, readiness: Readiness) -> Script {
        self.by_index.insert(index, readiness);
        self
    }

    /// Every run prints `line` and exits with `code` after `d`.
    pub(crate) fn exit_after(mut self, d: Duration, code: i32, line: &str) -> Script {
        self.exit = Some(PlannedExit {
            after: d,
            code,
            line: line.to_string(),
        });
        self
    }

    /// Every answer but `/health` has `status` (500: what canary analysis must catch).
    pub(crate) fn answering(mut self, status: u16) -> Script {
        self.status = status;
        self
    }

    /// Every start fails at once with `why`.
    pub(crate) fn refusing(mut self, why: &str) -> Script {
        self.refuse = Some(why.to_string());
        self
    }

    fn readiness_of(&self, index: u32) -> Readiness {
        self.by_index.get(&index).copied().unwrap_or(self.readiness)
    }
}

/// What the backend and its units share.
#[derive(Default)]
struct Shared {
    scripts: Mutex<BTreeMap<String, Script>>,
    starts: AtomicU32,
    next_pid: AtomicU32,
    units: Mutex<Vec<Arc<Core>>>,
    /// What happened, in order (`start v2 0`, `exit v2 1 exited with code 3`, `stop v1 0`).
    journal: Mutex<Vec<String>>,
}

/// `m`'s guard; every change under these locks is one insert or push, consistent whatever a
/// panic interrupted.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn script(&self, release: &str) -> Script {
        lock(&self.scripts)
            .get(release)
            .cloned()
            .unwrap_or_default()
    }

    fn note(&self, event: String) {
        lock(&self.journal).push(event);
    }
}

/// A [`Backend`] whose units are in-process HTTP servers; clones share scripts and counts.
#[derive(Clone, Default)]
pub(crate) struct FakeBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FakeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBackend").finish_non_exhaustive()
    }
}

impl FakeBackend {
    /// Units of `release` behave as `script` from their next start (answers: at once).
    pub(crate) fn script(&self, release: &str, script: Script) {
        lock(&self.shared.scripts).insert(release.to_string(), script);
    }

    /// Units started so far (not counting adoptions).
    pub(crate) fn starts(&self) -> u32 {
        self.shared.starts.load(Ordering::SeqCst)
    }

    /// What happened, in order.
    pub(crate) fn journal(&self) -> Vec<String> {
        lock(&self.shared.journal).clone()
    }

    /// Every unit of `release` ever started, in start order.
    pub(crate) fn units(&self, release: &str) -> Vec<FakeUnitView> {
        lock(&self.shared.units)
            .iter()
            .filter(|c| c.release == release)
            .map(|c| FakeUnitView(Arc::clone(c)))
            .collect()
    }

    fn launch(&self, spec: InstanceSpec, policy: RestartPolicy) -> Arc<dyn Unit> {
        let logs = Arc::new(LogSink::open(spec.log.clone(), spec.index, Vec::new()));
        let (handle, lifecycle) = lifecycle::pair(&policy, logs);
        let core = Arc::new(Core {
            release: spec.release.clone(),
            index: spec.index,
            port: spec.port,
            state: handle.watch(),
            runs: AtomicU32::new(0),
            health_passes: AtomicU64::new(0),
            crash: Mutex::new(None),
            crash_now: Notify::new(),
            requests: AtomicU64::new(0),
        });
        lock(&self.shared.units).push(Arc::clone(&core));
        let runner = FakeRunner {
            core: Arc::clone(&core),
            shared: Arc::clone(&self.shared),
        };
        tokio::spawn(lifecycle.run(runner, Next::Start));
        Arc::new(FakeUnit {
            core,
            handle,
            shared: Arc::clone(&self.shared),
        })
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn start(&self, spec: InstanceSpec, policy: RestartPolicy) -> Arc<dyn Unit> {
        self.shared.starts.fetch_add(1, Ordering::SeqCst);
        self.shared
            .note(format!("start {} {}", spec.release, spec.index));
        self.launch(spec, policy)
    }

    /// Nothing outlives a test's agent: "adopting" starts a fresh unit on the same port.
    fn adopt(&self, spec: InstanceSpec, policy: RestartPolicy, _found: &Found) -> Arc<dyn Unit> {
        self.shared
            .note(format!("adopt {} {}", spec.release, spec.index));
        self.launch(spec, policy)
    }
}

/// What a unit's handle, its owning task and the backend share.
struct Core {
    release: String,
    index: u32,
    port: u16,
    /// The unit's state, as its lifecycle publishes it.
    state: watch::Receiver<InstanceState>,
    /// Runs started so far (restarts are the runs after the first).
    runs: AtomicU32,
    /// `/health` answers 200 so far.
    health_passes: AtomicU64,
    /// Answers other than `/health` so far.
    requests: AtomicU64,
    /// The code and last line of a crash a test asked for.
    crash: Mutex<Option<(i32, String)>>,
    /// Wakes the owning task for that crash.
    crash_now: Notify,
}

/// A look at one fake unit, for assertions.
pub(crate) struct FakeUnitView(Arc<Core>);

impl FakeUnitView {
    /// Its index in its release.
    pub(crate) fn index(&self) -> u32 {
        self.0.index
    }

    /// Its state now.
    pub(crate) fn state(&self) -> InstanceState {
        self.0.state.borrow().clone()
    }

    /// Ends its current run (or its next one, if none runs) now: it prints `line` and exits
    /// with `code`, as a crash the script did not plan.
    pub(crate) fn crash(&self, code: i32, line: &str) {
        *lock(&self.0.crash) = Some((code, line.to_string()));
        self.0.crash_now.notify_one();
    }

    /// Its restarts so far.
    pub(crate) fn restarts(&self) -> u32 {
        self.0.runs.load(Ordering::SeqCst).saturating_sub(1)
    }

    /// How many `/health` probes it answered 200.
    pub(crate) fn health_passes(&self) -> u64 {
        self.0.health_passes.load(Ordering::SeqCst)
    }

    /// How many requests other than `/health` it answered.
    pub(crate) fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::SeqCst)
    }
}

/// The handle the agent holds; dropping it stops the unit.
struct FakeUnit {
    core: Arc<Core>,
    handle: Handle,
    shared: Arc<Shared>,
}

impl Supervised for FakeUnit {
    fn handle(&self) -> &Handle {
        &self.handle
    }

    fn stopped(&self) {
        self.shared
            .note(format!("stop {} {}", self.core.release, self.core.index));
    }

    fn owner_check(&self, _port: u16, _index: u32) -> Option<OwnerCheck> {
        // Only this process listens on the leased port.
        None
    }

    fn describe(&self) -> String {
        match self.handle.state() {
            InstanceState::Running { pid, .. } => format!("fake pid {pid}"),
            _ => "fake, not running".to_string(),
        }
    }
}

/// One run of a fake unit: listen, serve until the script's exit, a crash a test asks for, or
/// a control ends it. The listener and every connection close when the run ends.
struct FakeRunner {
    core: Arc<Core>,
    shared: Arc<Shared>,
}

impl FakeRunner {
    /// A run that ended on its own, in the journal and the lifecycle.
    fn ended(&self, lc: &mut Lifecycle, code: Option<i32>, why: String, ran: Duration) -> Next<()> {
        self.shared.note(format!(
            "exit {} {} {why}",
            self.core.release, self.core.index
        ));
        lc.ended(
            Exit {
                code,
                signal: None,
                at: Utc::now(),
                why,
            },
            ran,
        )
    }
}

impl Runner for FakeRunner {
    type Adopt = ();

    async fn run_once(&mut self, lc: &mut Lifecycle) -> Next<()> {
        if lc.pending_stop() {
            return Next::Stopped;
        }
        let core = Arc::clone(&self.core);
        core.runs.fetch_add(1, Ordering::SeqCst);
        lc.set(InstanceState::Starting);
        let script = self.shared.script(&core.release);
        if let Some(why) = &script.refuse {
            let why = format!("could not start: {why}");
            lc.logs.failure(&why);
            return self.ended(lc, None, why, Duration::ZERO);
        }
        let listener = match TcpListener::bind(("127.0.0.1", core.port)).await {
            Ok(l) => l,
            Err(e) => {
                lc.logs
                    .line(&format!("cannot listen on 127.0.0.1:{}: {e}", core.port));
                return self.ended(lc, Some(1), "exited with code 1".into(), Duration::ZERO);
            }
        };
        let pid = FIRST_PID + self.shared.next_pid.fetch_add(1, Ordering::SeqCst);
        let began = Instant::now();
        lc.set(InstanceState::Running {
            pid,
            since: Utc::now(),
        });
        lc.logs.line(&format!(
            "{} listening on 127.0.0.1:{}",
            core.release, core.port
        ));
        let serving = serve(listener, Arc::clone(&core), Arc::clone(&self.shared), began);
        tokio::pin!(serving);
        let planned = script.exit.clone();
        let exit = async {
            match &planned {
                Some(e) => tokio::time::sleep_until(began + e.after).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(exit);
        loop {
            tokio::select! {
                () = &mut serving => {
                    return self.ended(lc, Some(1), "exited with code 1".into(), began.elapsed());
                }
                () = core.crash_now.notified() => {
                    let (code, line) = lock(&core.crash).take().unwrap_or((1, String::new()));
                    lc.logs.line(&line);
                    return self.ended(lc, Some(code), format!("exited with code {code}"), began.elapsed());
                }
                () = &mut exit => {
                    let (code, line) = planned
                        .as_ref()
                        .map_or((0, String::new()), |e| (e.code, e.line.clone()));
                    if !line.is_empty() {
                        lc.logs.line(&line);
                    }
                    return self.ended(lc, Some(code), format!("exited with code {code}"), began.elapsed());
                }
                control = lc.controls.recv() => match control {
                    Some(Control::SetRestart(_)) => {}
                    Some(Control::Restart) => {
                        lc.logs.note("restarting (requested)");
                        return lc.restarted(Exit::failed("restarted".to_string()));
                    }
                    Some(Control::Stop { done, .. }) => {
                        lc.stop_waiters.push(done);
                        return Next::Stopped;
                    }
                    None => return Next::Stopped,
                },
            }
        }
    }

    /// Nothing outlives a test's agent: there is nothing to adopt.
    async fn run_adopted(&mut self, lc: &mut Lifecycle, (): ()) -> Next<()> {
        self.run_once(lc).await
    }
}

/// Accepts and serves connections until dropped; dropping it closes the listener and aborts
/// every connection.
async fn serve(listener: TcpListener, core: Arc<Core>, shared: Arc<Shared>, began: Instant) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors and the like: try again shortly, as a server would.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let (core, shared) = (Arc::clone(&core), Arc::clone(&shared));
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let answer = answer(&req, &core, &shared, began);
                async move { Ok::<_, Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `/health`: 200 once ready, else 503; anything else: the script's status with the release.
fn answer<B>(
    req: &Request<B>,
    core: &Core,
    shared: &Shared,
    began: Instant,
) -> Response<Full<Bytes>> {
    let script = shared.script(&core.release);
    let (status, body) = if req.uri().path() == "/health" {
        let ready = match script.readiness_of(core.index) {
            Readiness::AtOnce => true,
            Readiness::After(d) => began.elapsed() >= d,
            Readiness::Never => false,
        };
        if ready {
            core.health_passes.fetch_add(1, Ordering::SeqCst);
            (StatusCode::OK, "ok\n".to_string())
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string())
        }
    } else {
        core.requests.fetch_add(1, Ordering::SeqCst);
        let status =
            StatusCode::from_u16(script.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            serde_json::json!({ "version": core.release }).to_string(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::free_port;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    const PATIENCE: Duration = Duration::from_secs(5);

    fn spec(release: &str, port: u16) -> InstanceSpec {
        InstanceSpec {
            service: "api".into(),
            release: release.into(),
            index: 0,
            command: "fake".into(),
            dir: std::env::temp_dir(),
            env: Vec::new(),
            port,
            log: std::env::temp_dir().join("unused.log"),
            redact: Vec::new(),
            container: None,
        }
    }

    fn restart_off() -> RestartPolicy {
        RestartPolicy {
            restart: false,
            ..RestartPolicy::default()
        }
    }

    /// Status and body of `GET path` on 127.0.0.1:`port`.
    async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: hyper::Uri = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
        let response = client.get(uri).await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn wait_state(unit: &dyn Unit, what: &str, f: impl Fn(&InstanceState) -> bool) {
        let mut rx = unit.watch();
        let waited = tokio::time::timeout(PATIENCE, rx.wait_for(|s| f(s))).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "waited for {what}; state {:?}",
            unit.state()
        );
    }

    #[tokio::test]
    async fn a_unit_serves_its_release_and_stop_closes_its_port() {
        let fake = FakeBackend::default();
        let port = free_port().unwrap();
        let unit = fake.start(spec("v1", port), restart_off());
        wait_state(&*unit, "running", InstanceState::is_running).await;
        assert!(
            unit.describe().starts_with("fake pid "),
            "{}",
            unit.describe()
        );
        assert!(unit.owner_check(port, 0).is_none());
        assert_eq!(get(port, "/health").await, Ok((200, "ok\n".into())));
        assert_eq!(
            get(port, "/").await,
            Ok((200, r#"{"version":"v1"}"#.into()))
        );
        let view = &fake.units("v1")[0];
        assert_eq!((view.health_passes(), view.requests()), (1, 1));

        unit.stop(Duration::from_secs(1)).await;
        assert_eq!(unit.state(), InstanceState::Stopped);
        assert!(get(port, "/").await.is_err(), "the port is closed");
        assert_eq!(fake.journal(), ["start v1 0", "stop v1 0"]);
        assert_eq!(fake.starts(), 1);
    }

    #[tokio::test]
    async fn readiness_and_answers_follow_the_script() {
        let fake = FakeBackend::default();
        fake.script(
            "v1",
            Script::healthy()
                .ready_after(Duration::from_millis(200))
                .answering(500),
        );
        let port = free_port().unwrap();
        let unit = fake.start(spec("v1", port), restart_off());
        wait_state(&*unit, "running", InstanceState::is_running).await;
        assert_eq!(get(port, "/health").await.map(|a| a.0), Ok(503));
        assert_eq!(
            get(port, "/").await,
            Ok((500, r#"{"version":"v1"}"#.into()))
        );
        let deadline = Instant::now() + PATIENCE;
        while get(port, "/health").await.map(|a| a.0) != Ok(200) {
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A script change applies to the answers at once.
        fake.script("v1", Script::healthy().never_ready());
        assert_eq!(get(port, "/health").await.map(|a| a.0), Ok(503));
        assert_eq!(get(port, "/").await.map(|a| a.0), Ok(200));
        unit.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn a_scripted_exit_ends_the_run_with_its_line_and_restart_starts_again() {
        let fake = FakeBackend::default();
        fake.script(
            "v1",
            Script::healthy().exit_after(Duration::from_millis(50), 3, "fatal: no database"),
        );
        let port = free_port().unwrap();
        let unit = fake.start(spec("v1", port), restart_off());
        wait_state(&*unit, "exited", |s| {
            matches!(s, InstanceState::Exited { code: Some(3), .. })
        })
        .await;
        assert_eq!(unit.last_exit().as_deref(), Some("exited with code 3"));
        assert_eq!(unit.last_lines(1), ["fatal: no database"]);
        assert!(
            get(port, "/").await.is_err(),
            "an exited unit listens no more"
        );

        fake.script("v1", Script::healthy());
        unit.restart();
        wait_state(&*unit, "running again", InstanceState::is_running).await;
        assert_eq!(unit.restarts(), 1);
        assert_eq!(get(port, "/").await.map(|a| a.0), Ok(200));
        unit.stop(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn with_restart_on_an_exit_backs_off_then_runs_again() {
        let fake = FakeBackend::default();
        fake.script(
            "v1",
            Script::healthy().exit_after(Duration::from_millis(30), 1, "crash"),
        );
        let port = free_port().unwrap();
        let policy = RestartPolicy {
            initial: Duration::from_millis(20),
            ..RestartPolicy::default()
        };
        let unit = fake.start(spec("v1", port), policy);
        wait_state(&*unit, "backing off", |s| {
            matches!(s, InstanceState::Backoff { .. })
        })
        .await;
        wait_state(&*unit, "restarted", |_| unit.restarts() >= 1).await;
        // Restart off during a backoff: it stays exited.
        unit.set_restart(false);
        assert!(!unit.restart_enabled());
        wait_state(&*unit, "exited", |s| {
            matches!(s, InstanceState::Exited { .. })
        })
        .await;
        unit.stop(Duration::from_secs(1)).await;
        assert_eq!(unit.state(), InstanceState::Stopped);
    }

    #[tokio::test]
    async fn a_refused_start_is_an_exit_with_a_cutover_line() {
        let fake = FakeBackend::default();
        fake.script("v1", Script::healthy().refusing("no such image"));
        let unit = fake.start(spec("v1", free_port().unwrap()), restart_off());
        wait_state(&*unit, "exited", |s| {
            matches!(s, InstanceState::Exited { code: None, .. })
        })
        .await;
        assert_eq!(
            unit.last_lines(5),
            ["cutover: could not start: no such image"]
        );
        assert!(!unit.crash_looping());
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_unit() {
        let fake = FakeBackend::default();
        let port = free_port().unwrap();
        let unit = fake.start(spec("v1", port), restart_off());
        wait_state(&*unit, "running", InstanceState::is_running).await;
        drop(unit);
        let deadline = Instant::now() + PATIENCE;
        while fake.units("v1")[0].state() != InstanceState::Stopped {
            assert!(Instant::now() < deadline, "still not stopped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(get(port, "/").await.is_err());
    }

    #[tokio::test]
    async fn readiness_can_differ_by_instance() {
        let fake = FakeBackend::default();
        fake.script("v1", Script::healthy().with_index(1, Readiness::Never));
        let mut units = Vec::new();
        for index in 0..2 {
            let port = free_port().unwrap();
            let unit = fake.start(
                InstanceSpec {
                    index,
                    ..spec("v1", port)
                },
                restart_off(),
            );
            wait_state(&*unit, "running", InstanceState::is_running).await;
            units.push((port, unit));
        }
        assert_eq!(get(units[0].0, "/health").await.map(|a| a.0), Ok(200));
        assert_eq!(get(units[1].0, "/health").await.map(|a| a.0), Ok(503));
        for (_, unit) in &units {
            unit.stop(Duration::from_secs(1)).await;
        }
    }
}
