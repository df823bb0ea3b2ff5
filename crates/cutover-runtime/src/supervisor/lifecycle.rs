//! What every kind of instance shares between its runs: the handle's controls and counters,
//! and the owning task's state machine (restart with backoff, stay exited, stop), so a process
//! and a container differ only in how one run starts, ends and is stopped ([`Runner`]).
//!
//! ```text
//! Starting ──started──▶ Running ──ended, restart on──▶ Backoff ──delay──▶ Starting …
//!     │                    │   └──ended, restart off──▶ Exited (stays; restart() revives)
//!     └──could not start───┴──────────── same as an end
//! any ──stop()/drop──▶ Stopped (final)
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backoff::{Backoff, RestartHistory};
use super::logs::LogSink;
use super::{InstanceState, RestartPolicy};

/// A request from the handle to the owning task.
#[derive(Debug)]
pub(crate) enum Control {
    SetRestart(bool),
    Restart,
    Stop {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// What the handle and the owning task share besides the state channel.
#[derive(Debug)]
struct Shared {
    /// Restarts so far (crash restarts and requested ones).
    restarts: AtomicU32,
    /// Whether an end is followed by a restart.
    restart: AtomicBool,
    /// When restarts happened, for crash-loop detection.
    history: Mutex<RestartHistory>,
    /// How the last run ended, in words.
    last_exit: Mutex<Option<String>>,
}

impl Shared {
    fn history(&self) -> MutexGuard<'_, RestartHistory> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_last_exit(&self, why: String) {
        *self
            .last_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::SeqCst);
        self.history().record(Instant::now());
    }
}

/// The handle half: cheap to query, safe to share.
#[derive(Debug)]
pub(crate) struct Handle {
    controls: mpsc::UnboundedSender<Control>,
    state: watch::Receiver<InstanceState>,
    shared: Arc<Shared>,
    logs: Arc<LogSink>,
}

impl Handle {
    pub(crate) fn state(&self) -> InstanceState {
        self.state.borrow().clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<InstanceState> {
        self.state.clone()
    }

    pub(crate) fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    pub(crate) fn crash_looping(&self) -> bool {
        self.shared.history().crash_looping(Instant::now())
    }

    pub(crate) fn last_exit(&self) -> Option<String> {
        self.shared
            .last_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_restart(&self, on: bool) {
        self.shared.restart.store(on, Ordering::SeqCst);
        let _ = self.controls.send(Control::SetRestart(on));
    }

    pub(crate) fn restart_enabled(&self) -> bool {
        self.shared.restart.load(Ordering::SeqCst)
    }

    pub(crate) fn restart(&self) {
        // A closed channel means the instance is stopped: nothing to restart.
        let _ = self.controls.send(Control::Restart);
    }

    /// Stops for good and returns once the owning task has carried it out.
    pub(crate) async fn stop(&self, grace: Duration) {
        if *self.state.borrow() == InstanceState::Stopped {
            return;
        }
        let (done, wait) = oneshot::channel();
        if self.controls.send(Control::Stop { grace, done }).is_err() {
            return;
        }
        // An error means the task ended without answering: it has stopped already.
        let _ = wait.await;
    }

    pub(crate) fn last_lines(&self, n: usize) -> Vec<String> {
        self.logs.last_lines(n)
    }
}

/// How one run ended.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) at: DateTime<Utc>,
    pub(crate) why: String,
}

impl Exit {
    /// An end with no exit status ("could not start: ...", "ended after SIGTERM").
    pub(crate) fn failed(why: String) -> Exit {
        Exit {
            code: None,
            signal: None,
            at: Utc::now(),
            why,
        }
    }

    fn state(&self) -> InstanceState {
        InstanceState::Exited {
            code: self.code,
            signal: self.signal,
            at: self.at,
        }
    }
}

/// What the owning task does next.
pub(crate) enum Next<A> {
    Start,
    Adopt(A),
    Backoff(Duration),
    Idle,
    Stopped,
}

/// How one run of an instance starts, is followed and ends; the owning task calls it.
pub(crate) trait Runner: Send + 'static {
    /// What an adopted run is found by (a pid, a container id).
    type Adopt: Send + 'static;
    /// Starts a run and follows it until it ends or a control ends it.
    fn run_once(&mut self, lc: &mut Lifecycle) -> impl Future<Output = Next<Self::Adopt>> + Send;
    /// Takes over a run an earlier agent started and follows it the same way.
    fn run_adopted(
        &mut self,
        lc: &mut Lifecycle,
        found: Self::Adopt,
    ) -> impl Future<Output = Next<Self::Adopt>> + Send;
}

/// The owning task's half: the only writer of the state.
pub(crate) struct Lifecycle {
    backoff: Backoff,
    /// A run at least this long resets the backoff.
    stable_after: Duration,
    shared: Arc<Shared>,
    /// The instance's output sink.
    pub(crate) logs: Arc<LogSink>,
    state: watch::Sender<InstanceState>,
    /// Controls from the handle.
    pub(crate) controls: mpsc::UnboundedReceiver<Control>,
    /// Who waits for a stop to be carried out.
    pub(crate) stop_waiters: Vec<oneshot::Sender<()>>,
    last: Option<Exit>,
}

/// A handle and its owner half, for an instance logging to `logs`.
pub(crate) fn pair(policy: &RestartPolicy, logs: Arc<LogSink>) -> (Handle, Lifecycle) {
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
    });
    let handle = Handle {
        controls,
        state: state_rx,
        shared: Arc::clone(&shared),
        logs: Arc::clone(&logs),
    };
    let lifecycle = Lifecycle {
        backoff: Backoff::new(policy.initial, policy.max),
        stable_after: policy.crash_loop_window,
        shared,
        logs,
        state: state_tx,
        controls: controls_rx,
        stop_waiters: Vec::new(),
        last: None,
    };
    (handle, lifecycle)
}

impl Lifecycle {
    /// Runs `runner` from `first` until the instance is stopped.
    pub(crate) async fn run<R: Runner>(mut self, mut runner: R, first: Next<R::Adopt>) {
        let mut next = first;
        loop {
            next = match next {
                Next::Start => runner.run_once(&mut self).await,
                Next::Adopt(found) => runner.run_adopted(&mut self, found).await,
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

    /// Publishes `state`.
    pub(crate) fn set(&self, state: InstanceState) {
        self.state.send_replace(state);
    }

    /// Handles controls that arrived while the previous run was being torn down, so a stop
    /// requested during a restart does not start a run only to end it.
    pub(crate) fn pending_stop(&mut self) -> bool {
        while let Ok(control) = self.controls.try_recv() {
            if let Control::Stop { done, .. } = control {
                self.stop_waiters.push(done);
            }
        }
        !self.stop_waiters.is_empty()
    }

    /// A run ended by a requested restart: recorded, then started again at once.
    pub(crate) fn restarted<A>(&mut self, exit: Exit) -> Next<A> {
        self.logs.note(&format!("{} (restart)", exit.why));
        self.shared.set_last_exit(exit.why.clone());
        self.last = Some(exit);
        self.shared.record_restart();
        Next::Start
    }

    /// A run ended on its own (or never started): back off and restart, or stay exited.
    pub(crate) fn ended<A>(&mut self, exit: Exit, ran_for: Duration) -> Next<A> {
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

    /// Waits out a restart delay, unless a control changes the plan.
    async fn backoff<A>(&mut self, delay: Duration) -> Next<A> {
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
                        self.logs.note("restart turned off; not restarting");
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
                        self.logs.note("stopped");
                        return Next::Stopped;
                    }
                    None => return Next::Stopped,
                },
            }
        }
    }

    /// Ended with restart off: wait for a restart or a stop.
    async fn idle<A>(&mut self) -> Next<A> {
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
