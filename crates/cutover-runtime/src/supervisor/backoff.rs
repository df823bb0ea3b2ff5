//! Restart timing: exponential backoff between restarts and crash-loop detection.
//!
//! Pure logic over instants handed in by the caller, so it is tested without sleeping.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Delays `initial · 2^k`, capped at `max`, where `k` counts the restarts since the last reset.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff whose first delay is `initial` and whose delays never exceed `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next restart; each call doubles the following one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt).unwrap_or(u32::MAX);
        let delay = self
            .initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max);
        // Past 2^20 the delay is long since capped; stop counting so the shift stays small.
        self.attempt = (self.attempt + 1).min(20);
        delay
    }

    /// Starts over at `initial` (after a run that stayed up long enough to count as healthy).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// When restarts happened, to tell a crash loop (many restarts in a short window) from an
/// occasional crash.
#[derive(Debug, Clone)]
pub(crate) struct RestartHistory {
    window: Duration,
    threshold: u32,
    times: VecDeque<Instant>,
}

impl RestartHistory {
    /// Flags a crash loop at `threshold` restarts within `window`.
    pub(crate) fn new(threshold: u32, window: Duration) -> Self {
        RestartHistory {
            window,
            threshold,
            times: VecDeque::new(),
        }
    }

    /// Records a restart at `now`.
    pub(crate) fn record(&mut self, now: Instant) {
        self.times.push_back(now);
        self.forget_before(now);
    }

    /// Restarts within the window ending at `now`.
    pub(crate) fn recent(&mut self, now: Instant) -> u32 {
        self.forget_before(now);
        u32::try_from(self.times.len()).unwrap_or(u32::MAX)
    }

    /// Whether the restarts within the window ending at `now` reach the threshold.
    pub(crate) fn crash_looping(&mut self, now: Instant) -> bool {
        self.threshold > 0 && self.recent(now) >= self.threshold
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some(first) = self.times.front() {
            if now.saturating_duration_since(*first) > self.window {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
        assert_eq!(b.next_delay(), Duration::from_secs(30));
    }

    #[test]
    fn crash_loop_needs_enough_restarts_inside_the_window() {
        let start = Instant::now();
        let mut h = RestartHistory::new(3, Duration::from_secs(60));
        h.record(start);
        h.record(start + Duration::from_secs(10));
        assert!(!h.crash_looping(start + Duration::from_secs(10)));
        h.record(start + Duration::from_secs(20));
        assert!(h.crash_looping(start + Duration::from_secs(20)));
        // The first restart leaves the window: two left.
        assert!(!h.crash_looping(start + Duration::from_secs(61)));
        assert_eq!(h.recent(start + Duration::from_secs(61)), 2);
        assert_eq!(h.recent(start + Duration::from_secs(200)), 0);
    }
}
