//! A container as a unit: the supervisor's lifecycle (`supervisor/lifecycle.rs`: restarts with
//! backoff, stay exited, stop) around a [`Runner`] whose run is a container: created and
//! started (or adopted), followed until it exits, removed. A restart creates a fresh container of the same image (the exited one is removed once its
//! last log lines are read), so no container outlives its unit.

use std::collections::HashMap;
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
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Engine;
use crate::probe::OwnerCheck;
use crate::supervisor::lifecycle::{self, Control, Exit, Handle, Lifecycle, Next, Runner};
use crate::supervisor::logs::LogSink;
use crate::supervisor::{InstanceSpec, InstanceState, RESTART_GRACE, RestartPolicy};
use crate::target::Supervised;

/// How long an exit waits for the container's last log lines.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);
/// How long to wait before asking again when the engine did not answer a wait.
const WAIT_RETRY: Duration = Duration::from_millis(500);

/// A container of a release, supervised.
pub(crate) struct Container {
    spec: Arc<InstanceSpec>,
    handle: Handle,
    /// The container now, if one runs.
    id: Arc<Mutex<Option<String>>>,
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
        let logs = Arc::new(LogSink::open(
            spec.log.clone(),
            spec.index,
            spec.redact.clone(),
        ));
        let (handle, lifecycle) = lifecycle::pair(&policy, logs);
        let id = Arc::new(Mutex::new(None));
        let runner = ContainerRunner {
            engine,
            spec: Arc::clone(&spec),
            id: Arc::clone(&id),
        };
        tokio::spawn(lifecycle.run(runner, adopt.map_or(Next::Start, Next::Adopt)));
        Container { spec, handle, id }
    }
}

impl Supervised for Container {
    fn handle(&self) -> &Handle {
        &self.handle
    }

    fn owner_check(&self, _port: u16, _index: u32) -> Option<OwnerCheck> {
        // The engine's proxy holds the published port for the container; the port is this
        // container's as long as the engine says it runs (the owning task watches that).
        None
    }

    fn describe(&self) -> String {
        let id = self
            .id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match id {
            Some(id) => format!("container {}", short_id(&id)),
            None => format!("no container ({})", self.spec.service),
        }
    }
}

/// The end of a container run with exit code `code`.
fn exit_code(code: i64) -> Exit {
    let why = match i32::try_from(code) {
        Ok(c) => crate::supervisor::describe_exit(Some(c), None),
        Err(_) => None,
    }
    .unwrap_or_else(|| format!("exited with code {code}"));
    Exit {
        code: i32::try_from(code).ok(),
        signal: None,
        at: Utc::now(),
        why,
    }
}

/// How one run of a container goes: created and started (or adopted), its output followed,
/// removed when it ends.
struct ContainerRunner {
    engine: Arc<Engine>,
    spec: Arc<InstanceSpec>,
    id: Arc<Mutex<Option<String>>>,
}

/// A started (or adopted) container: its id and the task following its output.
struct Running {
    id: String,
    follower: JoinHandle<()>,
}

impl Runner for ContainerRunner {
    type Adopt = String;

    async fn run_once(&mut self, lc: &mut Lifecycle) -> Next<String> {
        self.run(lc, None).await
    }

    async fn run_adopted(&mut self, lc: &mut Lifecycle, id: String) -> Next<String> {
        self.run(lc, Some(id)).await
    }
}

impl ContainerRunner {
    /// Creates and starts a container (or takes over `adopt`) and follows it until it exits
    /// or a control ends it.
    async fn run(&mut self, lc: &mut Lifecycle, adopt: Option<String>) -> Next<String> {
        if lc.pending_stop() {
            if let Some(id) = adopt
                && let Ok(client) = self.engine.client().await
            {
                remove(client, &id).await;
            }
            return Next::Stopped;
        }
        lc.set(InstanceState::Starting);
        let client = match self.engine.client().await {
            Ok(c) => c.clone(),
            Err(why) => {
                lc.logs.failure(&why);
                return lc.ended(Exit::failed(why), Duration::ZERO);
            }
        };
        let adopted = adopt.is_some();
        let started = match adopt {
            Some(id) => self.take_over(&client, id, lc).await,
            None => self.create(&client, lc).await,
        };
        let (running, pid) = match started {
            Ok(r) => r,
            Err(why) => {
                lc.logs.failure(&why);
                return lc.ended(Exit::failed(why), Duration::ZERO);
            }
        };
        *self.id.lock().unwrap_or_else(PoisonError::into_inner) = Some(running.id.clone());
        let since = Instant::now();
        lc.set(InstanceState::Running {
            pid,
            since: Utc::now(),
        });
        let short = short_id(&running.id);
        lc.logs.note(&format!(
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
                    return lc.ended(exit, since.elapsed());
                }
                control = lc.controls.recv() => match control {
                    Some(Control::SetRestart(_)) => {}
                    Some(Control::Restart) => {
                        lc.logs.note("restarting (requested)");
                        stop(&client, &running.id, RESTART_GRACE).await;
                        self.finish(&client, running, OUTPUT_DRAIN).await;
                        return lc.restarted(Exit::failed("stopped for a restart".to_string()));
                    }
                    Some(Control::Stop { grace, done }) => {
                        lc.stop_waiters.push(done);
                        stop(&client, &running.id, grace).await;
                        self.finish(&client, running, OUTPUT_DRAIN).await;
                        lc.logs.note("stopped (container removed)");
                        return Next::Stopped;
                    }
                    None => {
                        self.finish(&client, running, Duration::ZERO).await;
                        lc.logs.note("removed (instance dropped)");
                        return Next::Stopped;
                    }
                },
            }
        }
    }

    /// Creates and starts the container; its output is followed from the start.
    async fn create(&self, client: &Docker, lc: &Lifecycle) -> Result<(Running, u32), String> {
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
        let id = create_and_start(client, &run.image, body).await?;
        // The engine keeps the output from the start: nothing is missed by following now.
        let follower = follow(client.clone(), id.clone(), 0, Arc::clone(&lc.logs));
        let pid = container_pid(client, &id).await;
        Ok((Running { id, follower }, pid))
    }

    /// Takes over container `id`; its output is followed from now.
    async fn take_over(
        &self,
        client: &Docker,
        id: String,
        lc: &Lifecycle,
    ) -> Result<(Running, u32), String> {
        let now = i32::try_from(Utc::now().timestamp()).unwrap_or(0);
        let follower = follow(client.clone(), id.clone(), now, Arc::clone(&lc.logs));
        let pid = container_pid(client, &id).await;
        if pid == 0 {
            follower.abort();
            remove(client, &id).await;
            return Err(format!(
                "container {} of the previous agent no longer runs",
                short_id(&id)
            ));
        }
        Ok((Running { id, follower }, pid))
    }

    /// After the container ended or was stopped: its last output, then it is removed.
    async fn finish(&self, client: &Docker, running: Running, drain: Duration) {
        let _ = tokio::time::timeout(drain, running.follower).await;
        remove(client, &running.id).await;
        *self.id.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Creates a container of `image` from `body` and starts it; a container that cannot start is
/// removed. Returns its id.
pub(super) async fn create_and_start(
    client: &Docker,
    image: &str,
    body: ContainerCreateBody,
) -> Result<String, String> {
    let created = client
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(|e| format!("cannot create a container of {image}: {}", api(&e)))?;
    let id = created.id;
    if let Err(e) = client
        .start_container(
            &id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
    {
        remove(client, &id).await;
        return Err(format!("cannot start a container of {image}: {}", api(&e)));
    }
    Ok(id)
}

/// A container id as `docker ps` shows it (its first 12 characters).
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
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
            Some(Ok(r)) => return exit_code(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                return exit_code(code);
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
                            return exit_code(s.exit_code.unwrap_or(-1));
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
        pipe_lines(client.logs(&id, Some(options)), &logs).await;
    })
}

/// Writes the engine's log `stream` (a container's or a swarm task's) into `logs` line by
/// line, until it ends.
pub(crate) async fn pipe_lines(
    stream: impl futures_util::Stream<
        Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
    >,
    logs: &LogSink,
) {
    let mut stream = std::pin::pin!(stream);
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
