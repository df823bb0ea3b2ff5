//! Draining a release: wait until its in-flight requests are done, or a deadline passes.
//!
//! kamal-proxy's semantics: the release is first taken out of the route (no new request can
//! pick it), then [`Flight::wait_idle`] waits for the requests already routed to it, response
//! bodies included, until the deadline. What is still running then is the caller's to cut
//! (stopping the instances closes their connections).
//!
//! The counter is one atomic per release. A request counts itself in between loading the route
//! and forwarding, and confirms the route it loaded is still the current one (see
//! `forward::Pass::begin`), so a request can never slip into a release after its drain saw zero.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The requests in flight to one release of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    count: AtomicUsize,
    /// Drains waiting; a request that ends only signals when someone listens.
    drainers: AtomicUsize,
    idle: Notify,
    /// Cancelled when a drain gives up: the upgraded connections (WebSocket) still open close.
    cut: Mutex<CancellationToken>,
}

impl Flight {
    /// No request in flight.
    pub(crate) fn new() -> Flight {
        Flight::default()
    }

    /// A request starts. SeqCst: ordered against the route reload that follows it.
    #[inline]
    pub(crate) fn enter(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// A request (response body included) is done.
    #[inline]
    pub(crate) fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1
            && self.drainers.load(Ordering::SeqCst) > 0
        {
            self.idle.notify_waiters();
        }
    }

    /// The signal that closes an upgraded connection counted here, when a drain gives up.
    pub(crate) fn cut_signal(&self) -> CancellationToken {
        super::lock(&self.cut).clone()
    }

    /// Closes the upgraded connections counted here now; later ones get a fresh signal (the
    /// release may be routed to again, by a rollback).
    pub(crate) fn cut_upgraded(&self) {
        std::mem::take(&mut *super::lock(&self.cut)).cancel();
    }

    /// Requests in flight now.
    pub(crate) fn current(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight (`true`) or `timeout` passed with some still
    /// running (`false`).
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        self.drainers.fetch_add(1, Ordering::SeqCst);
        let _drainer = Drainer(self);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check: a request ending after it wakes us.
            notified.as_mut().enable();
            if self.current() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.current() == 0;
            }
        }
    }
}

/// Counts a waiting drain for as long as it waits (cancellation included).
struct Drainer<'a>(&'a Flight);

impl Drop for Drainer<'_> {
    fn drop(&mut self) {
        self.0.drainers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn idle_at_once_without_requests() {
        assert!(Flight::new().wait_idle(Duration::ZERO).await);
    }

    #[tokio::test]
    async fn waits_for_the_last_request() {
        let flight = Arc::new(Flight::new());
        flight.enter();
        flight.enter();
        let waiter = tokio::spawn({
            let flight = Arc::clone(&flight);
            async move { flight.wait_idle(Duration::from_secs(10)).await }
        });
        flight.leave();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        flight.leave();
        assert!(waiter.await.unwrap());
        assert_eq!(flight.drainers.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let flight = Flight::new();
        flight.enter();
        assert!(!flight.wait_idle(Duration::from_millis(20)).await);
        assert_eq!(flight.current(), 1);
    }
}
