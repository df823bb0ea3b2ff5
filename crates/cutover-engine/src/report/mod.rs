//! Reporters consume events; they never drive the engine.
//!
//! [`Fanout`] runs every reporter on one thread of its own (so file and database writes never
//! block the async runtime), redacts each event once before any reporter sees it, and calls
//! [`Reporter::flush`] whenever the queue runs dry, so sinks batch their writes under load.

pub mod log_file;
pub mod status_file;
pub mod store;
pub mod text;
pub mod webhook;

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::event::Event;
use crate::redact::Redactor;

/// A consumer of events.
pub trait Reporter: Send {
    /// Takes one (already redacted) event.
    fn report(&mut self, event: &Event) -> Result<(), String>;

    /// Called when no more events are queued right now: write out what is buffered.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The reporter thread and the channel into it.
pub struct Fanout {
    tx: Option<mpsc::Sender<Event>>,
    handle: Option<JoinHandle<Vec<String>>>,
}

impl Fanout {
    /// Starts the reporter thread.
    pub fn spawn(mut reporters: Vec<Box<dyn Reporter>>, redactor: Redactor) -> Fanout {
        let (tx, rx) = mpsc::channel::<Event>();
        let handle = std::thread::Builder::new()
            .name("cutover-reporters".into())
            .spawn(move || {
                let mut errors: Vec<String> = Vec::new();
                let note = |e: String, errors: &mut Vec<String>| {
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                };
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    while let Some(mut event) = next.take() {
                        if !redactor.is_empty() {
                            event.kind.map_text(&mut |s| redactor.redact_in_place(s));
                        }
                        for r in reporters.iter_mut() {
                            if let Err(e) = r.report(&event) {
                                note(e, &mut errors);
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    for r in reporters.iter_mut() {
                        if let Err(e) = r.flush() {
                            note(e, &mut errors);
                        }
                    }
                }
                errors
            });
        match handle {
            Ok(h) => Fanout {
                tx: Some(tx),
                handle: Some(h),
            },
            Err(e) => {
                // Without a thread there is nowhere to report; say so at the end.
                let (tx, _) = mpsc::channel();
                let msg = format!("could not start the reporter thread: {e}");
                Fanout {
                    tx: Some(tx),
                    handle: Some(std::thread::spawn(move || vec![msg])),
                }
            }
        }
    }

    /// Queues an event for every reporter.
    pub fn send(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// Waits until every queued event is reported; returns the reporters' problems.
    pub fn finish(mut self) -> Vec<String> {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(errors)) => errors,
            Some(Err(_)) => vec!["a reporter panicked".to_string()],
            None => Vec::new(),
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
