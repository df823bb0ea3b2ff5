//! Per-release request metrics: counts by status code, errors and a latency histogram.
//!
//! The proxy counts every request it routes to a release into that release's
//! [`ReleaseCounters`], found once per route swap (never per request) through [`Metrics`].
//! The hot path is three relaxed atomic additions; readers take a [`ReleaseMetrics`] snapshot.
//! Canary analysis judges a release on the difference of two snapshots
//! ([`ReleaseMetrics::since`]), and `GET /metrics` renders them (`exposition.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`; `+Inf` is implied).
///
/// Fine below 100ms, where most requests land, and wide enough above for a p99 judgement
/// against limits such as `max_p99_latency = "500ms"`.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
    5.0, 10.0, 30.0, 60.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds, for the comparison on the hot path.
const BUCKET_NANOS: [u64; 20] = {
    let mut out = [0u64; 20];
    let mut i = 0;
    while i < out.len() {
        out[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// Status codes are counted in one slot each, from 100 to 999 (what `http::StatusCode` allows).
const FIRST_CODE: u16 = 100;
const CODE_SLOTS: usize = 900;

/// The metrics of every proxy of an agent, by service and release.
///
/// Lock-light: the map is locked only to find or create a release's counters (at route swaps)
/// and to take snapshots; counting itself is atomic.
#[derive(Debug, Default)]
pub struct Metrics {
    services: Mutex<HashMap<String, HashMap<String, Arc<ReleaseCounters>>>>,
}

impl Metrics {
    /// An empty set of metrics, to share between the proxies of an agent.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The counters of `release` of `service`, created at zero when they do not exist yet.
    pub(crate) fn counters(&self, service: &str, release: &str) -> Arc<ReleaseCounters> {
        let mut services = self.lock();
        let releases = match services.get_mut(service) {
            Some(releases) => releases,
            None => services.entry(service.to_owned()).or_default(),
        };
        match releases.get(release) {
            Some(counters) => Arc::clone(counters),
            None => {
                let counters = Arc::new(ReleaseCounters::new());
                releases.insert(release.to_owned(), Arc::clone(&counters));
                counters
            }
        }
    }

    /// A snapshot of `release` of `service`, or `None` when nothing was ever routed to it.
    pub fn snapshot(&self, service: &str, release: &str) -> Option<ReleaseMetrics> {
        let services = self.lock();
        services.get(service)?.get(release).map(|c| c.snapshot())
    }

    /// Snapshots of every release known, as `(service, release, metrics)`, sorted by name.
    pub fn all(&self) -> Vec<(String, String, ReleaseMetrics)> {
        let services = self.lock();
        let mut out: Vec<_> = services
            .iter()
            .flat_map(|(service, releases)| {
                releases
                    .iter()
                    .map(|(release, c)| (service.clone(), release.clone(), c.snapshot()))
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Every release of `service` added together (its proxy's totals, for live numbers).
    pub fn service_totals(&self, service: &str) -> ReleaseMetrics {
        let services = self.lock();
        let mut total = ReleaseMetrics::default();
        for c in services.get(service).into_iter().flat_map(|r| r.values()) {
            total.add(&c.snapshot());
        }
        total
    }

    /// Drops the counters of `release` of `service` (a release that was stopped for good).
    ///
    /// A proxy still routing to it keeps counting into counters nobody reads until its next
    /// route swap, which finds fresh ones.
    pub fn forget(&self, service: &str, release: &str) {
        let mut services = self.lock();
        if let Some(releases) = services.get_mut(service) {
            releases.remove(release);
            if releases.is_empty() {
                services.remove(service);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Arc<ReleaseCounters>>>> {
        // The map stays consistent whatever a panicking holder was doing: every change is one call.
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The live counters of one release; the proxy holds an `Arc` to them in its route table.
#[derive(Debug)]
pub(crate) struct ReleaseCounters {
    /// Responses by status code (`code - 100`); a connection error counts as the 502 sent.
    codes: Box<[AtomicU64]>,
    /// Upstream failures after the response head (a truncated body): errors without a code.
    body_errors: AtomicU64,
    /// Latency histogram, not cumulative: `buckets[i]` counts `(le[i-1], le[i]]`, the last `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, in nanoseconds.
    sum_nanos: AtomicU64,
    /// Connections upgraded (WebSocket and other `Upgrade`s), and how many are open now.
    upgrades: AtomicU64,
    upgraded_open: AtomicU64,
}

impl ReleaseCounters {
    /// Counters at zero, not registered anywhere (a route table not yet installed in a proxy).
    pub(crate) fn new() -> ReleaseCounters {
        ReleaseCounters {
            codes: (0..CODE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            body_errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            upgrades: AtomicU64::new(0),
            upgraded_open: AtomicU64::new(0),
        }
    }

    /// An upgraded connection (WebSocket) opened through this release.
    pub(crate) fn upgrade_opened(&self) {
        self.upgrades.fetch_add(1, Ordering::Relaxed);
        self.upgraded_open.fetch_add(1, Ordering::Relaxed);
    }

    /// An upgraded connection closed.
    pub(crate) fn upgrade_closed(&self) {
        self.upgraded_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts one response head with `status`, `latency` after the request started.
    #[inline]
    pub(crate) fn record(&self, status: u16, latency: Duration) {
        let slot = usize::from(status.saturating_sub(FIRST_CODE)).min(CODE_SLOTS - 1);
        self.codes[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.partition_point(|&le| le < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts an upstream failure after the response head was sent (the body was cut short).
    pub(crate) fn record_body_error(&self) {
        self.body_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counters. Each counter is read atomically, the set is not: under load the
    /// histogram count may differ from `requests` by the requests being counted meanwhile.
    pub(crate) fn snapshot(&self) -> ReleaseMetrics {
        let mut by_code = BTreeMap::new();
        let mut requests = 0;
        let mut errors = self.body_errors.load(Ordering::Relaxed);
        for (slot, n) in self.codes.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            // slot < CODE_SLOTS = 900, so the code fits in u16.
            let code = FIRST_CODE + u16::try_from(slot).unwrap_or(0);
            by_code.insert(code, n);
            requests += n;
            if code >= 500 {
                errors += n;
            }
        }
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (le, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            buckets.push(Bucket {
                le: *le,
                count: cumulative,
            });
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        ReleaseMetrics {
            upgrades: self.upgrades.load(Ordering::Relaxed),
            upgraded_open: self.upgraded_open.load(Ordering::Relaxed),
            requests,
            errors,
            by_code,
            latency: Histogram {
                buckets,
                count: cumulative,
                sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            },
        }
    }
}

/// A snapshot of one release's metrics since the agent started counting it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseMetrics {
    /// Requests that got a response head (from the release or a 502 from the proxy).
    pub requests: u64,
    /// 5xx responses, connection errors (sent as 502), upstream timeouts and bodies cut short.
    pub errors: u64,
    /// Requests by status code.
    pub by_code: BTreeMap<u16, u64>,
    /// Time from request start to response head.
    pub latency: Histogram,
    /// Connections upgraded (WebSocket and other `Upgrade`s).
    #[serde(default)]
    pub upgrades: u64,
    /// Upgraded connections open now (a gauge: `since` and `add` keep the later value, summed).
    #[serde(default)]
    pub upgraded_open: u64,
}

impl ReleaseMetrics {
    /// The `q`-quantile of the latency (`0.99` for p99), interpolated within its bucket;
    /// `None` when nothing was counted or `q` is not in `0..=1`.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.latency.quantile(q)
    }

    /// `errors / requests`, or `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// Adds `other`'s counts to these (buckets matched by bound).
    pub fn add(&mut self, other: &ReleaseMetrics) {
        self.upgrades += other.upgrades;
        self.upgraded_open += other.upgraded_open;
        self.requests += other.requests;
        self.errors += other.errors;
        for (code, n) in &other.by_code {
            *self.by_code.entry(*code).or_default() += n;
        }
        if self.latency.buckets.is_empty() {
            self.latency.buckets = other.latency.buckets.clone();
        } else {
            for b in &mut self.latency.buckets {
                b.count += other
                    .latency
                    .buckets
                    .iter()
                    .find(|o| o.le == b.le)
                    .map_or(0, |o| o.count);
            }
        }
        self.latency.count += other.latency.count;
        self.latency.sum += other.latency.sum;
    }

    /// What was counted after `earlier` (a snapshot of the same release): the window a canary
    /// judgement looks at. Counters that went backwards (the release was forgotten) count from 0.
    pub fn since(&self, earlier: &ReleaseMetrics) -> ReleaseMetrics {
        let by_code = self
            .by_code
            .iter()
            .filter_map(|(code, n)| {
                let d = n.saturating_sub(earlier.by_code.get(code).copied().unwrap_or(0));
                (d > 0).then_some((*code, d))
            })
            .collect();
        let buckets = self
            .latency
            .buckets
            .iter()
            .map(|b| Bucket {
                le: b.le,
                count: b.count.saturating_sub(
                    earlier
                        .latency
                        .buckets
                        .iter()
                        .find(|e| e.le == b.le)
                        .map_or(0, |e| e.count),
                ),
            })
            .collect();
        ReleaseMetrics {
            upgrades: self.upgrades.saturating_sub(earlier.upgrades),
            upgraded_open: self.upgraded_open,
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            by_code,
            latency: Histogram {
                buckets,
                count: self.latency.count.saturating_sub(earlier.latency.count),
                sum: (self.latency.sum - earlier.latency.sum).max(0.0),
            },
        }
    }
}

/// A latency histogram with fixed buckets, cumulative like Prometheus'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// One per [`LATENCY_BUCKETS`] bound, each counting the observations `<= le`.
    pub buckets: Vec<Bucket>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

/// One cumulative histogram bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound, in seconds.
    pub le: f64,
    /// Observations `<= le`.
    pub count: u64,
}

impl Histogram {
    /// The `q`-quantile, interpolated linearly within its bucket as Prometheus'
    /// `histogram_quantile` does; a quantile beyond the last bound is that bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * self.count as f64;
        let mut lower = (0.0, 0u64);
        for b in &self.buckets {
            if b.count as f64 >= rank && b.count > lower.1 {
                let within = (rank - lower.1 as f64) / (b.count - lower.1) as f64;
                let secs = lower.0 + (b.le - lower.0) * within.clamp(0.0, 1.0);
                return Some(Duration::from_secs_f64(secs));
            }
            lower = (b.le, b.count);
        }
        Some(Duration::from_secs_f64(lower.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_codes_errors_and_latency() {
        let c = ReleaseCounters::new();
        for _ in 0..98 {
            c.record(200, ms(3));
        }
        c.record(502, ms(1));
        c.record(503, ms(400));
        c.record_body_error();
        let m = c.snapshot();
        assert_eq!(m.requests, 100);
        assert_eq!(m.errors, 3);
        assert_eq!(m.by_code, BTreeMap::from([(200, 98), (502, 1), (503, 1)]));
        assert_eq!(m.latency.count, 100);
        assert!((m.latency.sum - (0.294 + 0.001 + 0.4)).abs() < 1e-9);
        assert_eq!(m.error_rate(), Some(0.03));
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let c = ReleaseCounters::new();
        // 90 in (2ms, 5ms], 10 in (200ms, 300ms].
        for _ in 0..90 {
            c.record(200, ms(4));
        }
        for _ in 0..10 {
            c.record(200, ms(250));
        }
        let m = c.snapshot();
        let p50 = m.quantile(0.5).unwrap();
        assert!(p50 > ms(2) && p50 <= ms(5), "{p50:?}");
        let p99 = m.quantile(0.99).unwrap();
        assert!(p99 > ms(200) && p99 <= ms(300), "{p99:?}");
        assert_eq!(m.quantile(1.5), None);
        assert_eq!(ReleaseMetrics::default().quantile(0.99), None);
    }

    #[test]
    fn a_quantile_past_the_last_bound_is_that_bound() {
        let c = ReleaseCounters::new();
        c.record(200, Duration::from_secs(600));
        assert_eq!(c.snapshot().quantile(0.99), Some(Duration::from_secs(60)));
    }

    #[test]
    fn odd_codes_are_kept() {
        let c = ReleaseCounters::new();
        c.record(999, ms(1));
        c.record(101, ms(1));
        assert_eq!(c.snapshot().by_code, BTreeMap::from([(101, 1), (999, 1)]));
    }

    #[test]
    fn since_gives_the_window() {
        let c = ReleaseCounters::new();
        c.record(200, ms(1));
        let before = c.snapshot();
        c.record(500, ms(100));
        c.record(200, ms(100));
        let window = c.snapshot().since(&before);
        assert_eq!(window.requests, 2);
        assert_eq!(window.errors, 1);
        assert_eq!(window.by_code, BTreeMap::from([(200, 1), (500, 1)]));
        assert_eq!(window.latency.count, 2);
        let p50 = window.quantile(0.5).unwrap();
        assert!(p50 > ms(50), "{p50:?}");
    }

    #[test]
    fn registry_snapshots_and_forgets() {
        let metrics = Metrics::new();
        assert!(metrics.snapshot("api", "r1").is_none());
        metrics.counters("api", "r1").record(200, ms(1));
        metrics.counters("web", "r9").record(404, ms(1));
        assert_eq!(metrics.snapshot("api", "r1").unwrap().requests, 1);
        let all = metrics.all();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].0.as_str(), all[0].1.as_str()), ("api", "r1"));
        metrics.forget("api", "r1");
        assert!(metrics.snapshot("api", "r1").is_none());
        assert_eq!(metrics.all().len(), 1);
    }

    #[test]
    fn snapshots_round_trip_through_json() {
        let c = ReleaseCounters::new();
        c.record(200, ms(7));
        let m = c.snapshot();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ReleaseMetrics>(&json).unwrap(), m);
    }
}
