//! A container as a unit: a handle that sends controls to the task owning the container, the
//! same shape as the supervisor's process instances.
//!
//! ```text
//! Starting ──created + started──▶ Running ──exited, restart on──▶ Backoff ──delay──▶ Starting …
//!     │                              │   └──exited, restart off──▶ Exited
//!     └──create/start failed─────────┴──── same as an exit
//! any ──stop()/drop──▶ Stopped (the container is removed)
//! ```
//! A restart creates a fresh container of the same image (the exited one is removed once its
//! last log lines are read), so no container outlives its unit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Engine;
use crate::probe::OwnerCheck;
use crate::supervisor::backoff::{Backoff, RestartHistory};
use crate::supervisor::logs::LogSink;
use crate::supervisor::{InstanceSpec, InstanceState, RESTART_GRACE, RestartPolicy};
use crate::target::{BoxFuture, Unit};

/// How long an exit waits for the container's last log lines.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);
/// How long to wait before asking again when the engine did not answer a wait.
const WAIT_RETRY: Duration = Duration::from_millis(500);

/// A container of a release, supervised.
pub(crate) struct Container {
    spec: Arc<InstanceSpec>,
    controls: mpsc::UnboundedSender<Control>,
    state: watch::Receiver<InstanceState>,
    shared: Arc<Shared>,
    logs: Arc<LogSink>,
}

#[derive(Debug)]
struct Shared {
    restarts: AtomicU32,
    restart: AtomicBool,
    history: Mutex<RestartHistory>,
    last_exit: Mutex<Option<String>>,
    id: Mutex<Option<String>>,
}

impl Shared {
    fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(Instant::now());
    }

    fn set_last_exit(&self, why: String) {
        *self
            .last_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    fn set_id(&self, id: Option<String>) {
        *self.id.lock().unwrap_or_else(PoisonError::into_inner) = id;
    }
}

#[derive(Debug)]
enum Control {
    SetRestart(bool),
    Restart,
    Stop {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

impl Container {
    /// Starts supervising a container of `spec` on `engine`: creates and starts one now, or
    /// takes over `adopt` (a container id an earlier agent started).
    pub(crate) fn supervise(
        engine: Arc<Engine>,
        spec: InstanceSpec,
        policy: RestartPolicy,
        adopt: Option<String>,
    ) -> Container {
        let spec = Arc::new(spec);
        let (state_tx, state_rx) = watch::channel(InstanceState::Starting);
        let (controls, controls_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            restarts: AtomicU32::new(0),
            restart: AtomicBool::new(policy.restart),
            history: Mutex::new(RestartHistory::new(
                policy.crash_loop_restarts,
                policy.crash_loop_window,
            )),
            last_exit: Mutex::new(None),
            id: Mutex::new(None),
        });
        let logs = Arc::new(LogSink::open(
            spec.log.clone(),
            spec.index,
            spec.redact.clone(),
        ));
        let owner = Owner {
            engine,
            spec: Arc::clone(&spec),
            backoff: Backoff::new(policy.initial, policy.max),
            stable_after: policy.crash_loop_window,
            shared: Arc::clone(&shared),
            logs: Arc::clone(&logs),
            state: state_tx,
            controls: controls_rx,
            stop_waiters: Vec::new(),
            last: None,
        };
        tokio::spawn(owner.run(adopt.map_or(Next::Start, Next::Adopt)));
        Container {
            spec,
            controls,
            state: state_rx,
            shared,
            logs,
        }
    }
}

impl Unit for Container {
    fn state(&self) -> InstanceState {
        self.state.borrow().clone()
    }

    fn watch(&self) -> watch::Receiver<InstanceState> {
        self.state.clone()
    }

    fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    fn crash_looping(&self) -> bool {
        self.shared
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .crash_looping(Instant::now())
    }

    fn last_exit(&self) -> Option<String> {
        self.shared
            .last_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_restart(&self, on: bool) {
        self.shared.restart.store(on, Ordering::SeqCst);
        let _ = self.controls.send(Control::SetRestart(on));
    }

    fn restart_enabled(&self) -> bool {
        self.shared.restart.load(Ordering::SeqCst)
    }

    fn restart(&self) {
        let _ = self.controls.send(Control::Restart);
    }

    fn stop(&self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if *self.state.borrow() == InstanceState::Stopped {
                return;
            }
            let (done, wait) = oneshot::channel();
            if self.controls.send(Control::Stop { grace, done }).is_err() {
                return;
            }
            let _ = wait.await;
        })
    }

    fn last_lines(&self, n: usize) -> Vec<String> {
        self.logs.last_lines(n)
    }

    fn owner_check(&self, _port: u16, _index: u32) -> Option<OwnerCheck> {
        // The engine's proxy holds the published port for the container; the port is this
        // container's as long as the engine says it runs (the owning task watches that).
        None
    }

    fn describe(&self) -> String {
        let id = self
            .shared
            .id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match id {
            Some(id) => format!("container {}", &id[..id.len().min(12)]),
            None => format!("no container ({})", self.spec.service),
        }
    }
}

/// How one run ended.
#[derive(Debug, Clone)]
struct Exit {
    code: Option<i32>,
    at: chrono::DateTime<Utc>,
    why: String,
}

impl Exit {
    fn code(code: i64) -> Exit {
        let why = match code {
            137 => "exited with code 137 (killed)".to_string(),
            127 => "exited with code 127 (command not found)".to_string(),
            c => format!("exited with code {c}"),
        };
        Exit {
            code: i32::try_from(code).ok(),
            at: Utc::now(),
            why,
        }
    }

    fn failed(why: String) -> Exit {
        Exit {
            code: None,
            at: Utc::now(),
            why,
        }
    }

    fn state(&self) -> InstanceState {
        InstanceState::Exited {
            code: self.code,
            signal: None,
            at: self.at,
        }
    }
}

enum Next {
    Start,
    Adopt(String),
    Backoff(Duration),
    Idle,
    Stopped,
}

struct Owner {
    engine: Arc<Engine>,
    spec: Arc<InstanceSpec>,
    backoff: Backoff,
    stable_after: Duration,
    shared: Arc<Shared>,
    logs: Arc<LogSink>,
    state: watch::Sender<InstanceState>,
    controls: mpsc::UnboundedReceiver<Control>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    last: Option<Exit>,
}

/// A started (or adopted) container: its id, its pid and the task following its output.
struct Running {
    id: String,
    follower: JoinHandle<()>,
}

impl Owner {
    async fn run(mut self, first: Next) {
        let mut next = first;
        loop {
            next = match next {
                Next::Start => self.run_once(None).await,
                Next::Adopt(id) => self.run_once(Some(id)).await,
                Next::Backoff(delay) => self.backoff(delay).await,
                Next::Idle => self.idle().await,
                Next::Stopped => break,
            };
        }
        self.state.send_replace(InstanceState::Stopped);
        for done in self.stop_waiters.drain(..) {
            let _ = done.send(());
        }
    }

    fn set(&self, state: InstanceState) {
        self.state.send_replace(state);
    }

    fn pending_stop(&mut self) -> bool {
        while let Ok(control) = self.controls.try_recv() {
            if let Control::Stop { done, .. } = control {
                self.stop_waiters.push(done);
            }
        }
        !self.stop_waiters.is_empty()
    }

    /// Creates and starts a container (or takes over `adopt`) and follows it until it exits
    /// or a control ends it.
    async fn run_once(&mut self, adopt: Option<String>) -> Next {
        if self.pending_stop() {
            if let Some(id) = adopt
                && let Ok(client) = self.engine.client().await
            {
                remove(client, &id).await;
            }
            return Next::Stopped;
        }
        self.set(InstanceState::Starting);
        let client = match self.engine.client().await {
            Ok(c) => c.clone(),
            Err(why) => {
                self.logs.failure(&why);
                return self.ended(Exit::failed(why), Duration::ZERO);
            }
        };
        let adopted = adopt.is_some();
        let started = match adopt {
            Some(id) => self.take_over(&client, id).await,
            None => self.create(&client).await,
        };
        let (running, pid) = match started {
            Ok(r) => r,
            Err(why) => {
                self.logs.failure(&why);
                return self.ended(Exit::failed(why), Duration::ZERO);
            }
        };
        self.shared.set_id(Some(running.id.clone()));
        let since = Instant::now();
        self.set(InstanceState::Running {
            pid,
            since: Utc::now(),
        });
        let short = &running.id[..running.id.len().min(12)];
        self.logs.note(&format!(
            "{} container {short} ({}) on 127.0.0.1:{}",
            if adopted { "adopted" } else { "started" },
            self.spec
                .container
                .as_ref()
                .map_or("", |c| c.image.as_str()),
            self.spec.port
        ));
        let mut wait = Box::pin(wait_exit(client.clone(), running.id.clone()));
        loop {
            tokio::select! {
                exit = &mut wait => {
                    self.finish(&client, running, OUTPUT_DRAIN).await;
                    return self.ended(exit, since.elapsed());
                }
                control = self.controls.recv() => match control {
                    Some(Control::SetRestart(_)) => {}
                    Some(Control::Restart) => {
                        self.logs.note("restarting (requested)");
                        stop(&client, &running.id, RESTART_GRACE).await;
                        let exit = Exit::failed("stopped for a restart".to_string());
                        self.finish(&client, running, OUTPUT_DRAIN).await;
                        self.logs.note(&format!("{} (restart)", exit.why));
                        self.shared.set_last_exit(exit.why.clone());
                        self.last = Some(exit);
                        self.shared.record_restart();
                        return Next::Start;
                    }
                    Some(Control::Stop { grace, done }) => {
                        self.stop_waiters.push(done);
                        stop(&client, &running.id, grace).await;
                        self.finish(&client, running, OUTPUT_DRAIN).await;
                        self.logs.note("stopped (container removed)");
                        return Next::Stopped;
                    }
                    None => {
                        self.finish(&client, running, Duration::ZERO).await;
                        self.logs.note("removed (instance dropped)");
                        return Next::Stopped;
                    }
                },
            }
        }
    }

    /// Creates and starts the container; its output is followed from the start.
    async fn create(&self, client: &Docker) -> Result<(Running, u32), String> {
        let Some(run) = self.spec.container.as_ref() else {
            return Err("no container described for this instance".to_string());
        };
        let inner = format!("{}/tcp", run.container_port);
        let mut bindings = HashMap::new();
        bindings.insert(
            inner.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".to_string()),
                host_port: Some(self.spec.port.to_string()),
            }]),
        );
        let cmd = (!self.spec.command.trim().is_empty()).then(|| {
            vec![
                "sh".to_string(),
                "-c".to_string(),
                self.spec.command.clone(),
            ]
        });
        let body = ContainerCreateBody {
            image: Some(run.image.clone()),
            cmd,
            env: Some(
                self.spec
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(run.labels.clone().into_iter().collect()),
            exposed_ports: Some(vec![inner]),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = client
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| format!("cannot create a container of {}: {}", run.image, api(&e)))?;
        let id = created.id;
        if let Err(e) = client
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            remove(client, &id).await;
            return Err(format!(
                "cannot start a container of {}: {}",
                run.image,
                api(&e)
            ));
        }
        // The engine keeps the output from the start: nothing is missed by following now.
        let follower = follow(client.clone(), id.clone(), 0, Arc::clone(&self.logs));
        let pid = container_pid(client, &id).await;
        Ok((Running { id, follower }, pid))
    }

    /// Takes over container `id`; its output is followed from now.
    async fn take_over(&self, client: &Docker, id: String) -> Result<(Running, u32), String> {
        let now = i32::try_from(Utc::now().timestamp()).unwrap_or(0);
        let follower = follow(client.clone(), id.clone(), now, Arc::clone(&self.logs));
        let pid = container_pid(client, &id).await;
        if pid == 0 {
            follower.abort();
            remove(client, &id).await;
            return Err(format!(
                "container {} of the previous agent no longer runs",
                &id[..id.len().min(12)]
            ));
        }
        Ok((Running { id, follower }, pid))
    }

    /// After the container ended or was stopped: its last output, then it is removed.
    async fn finish(&self, client: &Docker, running: Running, drain: Duration) {
        let _ = tokio::time::timeout(drain, running.follower).await;
        remove(client, &running.id).await;
        self.shared.set_id(None);
    }

    fn ended(&mut self, exit: Exit, ran_for: Duration) -> Next {
        self.shared.set_last_exit(exit.why.clone());
        let next = if self.shared.restart.load(Ordering::SeqCst) {
            if ran_for >= self.stable_after {
                self.backoff.reset();
            }
            let delay = self.backoff.next_delay();
            self.logs.note(&format!(
                "{}; restarting in {}",
                exit.why,
                cutover_config::format_duration(delay)
            ));
            Next::Backoff(delay)
        } else {
            self.logs
                .note(&format!("{}; not restarting (restart is off)", exit.why));
            self.set(exit.state());
            Next::Idle
        };
        self.last = Some(exit);
        next
    }

    async fn backoff(&mut self, delay: Duration) -> Next {
        let until = Instant::now() + delay;
        let until_utc = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.set(InstanceState::Backoff {
            until: until_utc,
            restarts: self.shared.restarts.load(Ordering::SeqCst),
            last_exit: self
                .last
                .as_ref()
                .map(|e| e.why.clone())
                .unwrap_or_default(),
        });
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => {
                    self.shared.record_restart();
                    return Next::Start;
                }
                control = self.controls.recv() => match control {
                    Some(Control::SetRestart(true)) => {}
                    Some(Control::SetRestart(false)) => {
                        let exit = self.last.clone().unwrap_or_else(|| Exit::failed(String::new()));
                        self.set(exit.state());
                        return Next::Idle;
                    }
                    Some(Control::Restart) => {
                        self.shared.record_restart();
                        return Next::Start;
                    }
                    Some(Control::Stop { done, .. }) => {
                        self.stop_waiters.push(done);
                        return Next::Stopped;
                    }
                    None => return Next::Stopped,
                },
            }
        }
    }

    async fn idle(&mut self) -> Next {
        loop {
            match self.controls.recv().await {
                Some(Control::SetRestart(_)) => {}
                Some(Control::Restart) => {
                    self.shared.record_restart();
                    return Next::Start;
                }
                Some(Control::Stop { done, .. }) => {
                    self.stop_waiters.push(done);
                    return Next::Stopped;
                }
                None => return Next::Stopped,
            }
        }
    }
}

/// The engine's error, without bollard's wrapping where it has a message.
pub(super) fn api(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The container's main process on the host (0 when it does not run).
async fn container_pid(client: &Docker, id: &str) -> u32 {
    client
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .ok()
        .and_then(|c| c.state)
        .filter(|s| s.running == Some(true))
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0)
}

/// Waits until container `id` is no longer running; how it ended.
async fn wait_exit(client: Docker, id: String) -> Exit {
    loop {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut stream = client.wait_container(&id, Some(options));
        match stream.next().await {
            Some(Ok(r)) => return Exit::code(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                return Exit::code(code);
            }
            Some(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })) => return Exit::failed("its container is gone".to_string()),
            _ => {
                // The engine did not answer (restarting?): look at the container itself.
                match client
                    .inspect_container(
                        &id,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
                {
                    Ok(c) => {
                        if let Some(s) = c.state
                            && s.running != Some(true)
                        {
                            return Exit::code(s.exit_code.unwrap_or(-1));
                        }
                    }
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => return Exit::failed("its container is gone".to_string()),
                    Err(_) => {}
                }
                tokio::time::sleep(WAIT_RETRY).await;
            }
        }
    }
}

/// Follows container `id`'s output (stdout and stderr, from `since`, a Unix time; 0 for all)
/// into `logs`, line by line, until the container stops.
fn follow(client: Docker, id: String, since: i32, logs: Arc<LogSink>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .since(since)
            .build();
        let mut stream = client.logs(&id, Some(options));
        let mut partial: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            partial.extend_from_slice(&chunk.into_bytes());
            while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=nl).collect();
                logs.line(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']));
            }
        }
        if !partial.is_empty() {
            logs.line(&String::from_utf8_lossy(&partial));
        }
    })
}

/// Stops container `id`: SIGTERM, `grace`, then SIGKILL (the engine's stop).
async fn stop(client: &Docker, id: &str, grace: Duration) {
    let t = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
    let options = StopContainerOptionsBuilder::default().t(t).build();
    let _ = client.stop_container(id, Some(options)).await;
}

/// Removes container `id`, killing it if it still runs; a container already gone is fine.
pub(super) async fn remove(client: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = client.remove_container(id, Some(options)).await;
}
