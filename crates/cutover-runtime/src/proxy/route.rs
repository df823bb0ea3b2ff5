//! The route of one listener: an immutable snapshot of releases, weights and backends.
//!
//! A [`RouteTable`] is built whole, then swapped into its proxy in one `ArcSwap` store: a
//! request sees the old table or the new one, never a mix (no second store that could tear).
//! Everything a request needs is resolved at build and swap time: the weights expanded into a
//! pick table, each backend's URI authority, and each release's in-flight counter and metrics.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

use super::drain::Flight;
use super::pick::{PickTable, percents};
use crate::metrics::ReleaseCounters;

/// One release in a route: its share of the traffic and the ready instances that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRelease {
    /// The release id (what metrics and drains are keyed by).
    pub release: String,
    /// Share of the traffic, in percent; normalised against the other releases of the table.
    pub weight: u8,
    /// Addresses of the release's ready instances, served round-robin.
    pub backends: Vec<SocketAddr>,
}

/// What a listener routes to, as one immutable value.
pub struct RouteTable {
    generation: u64,
    /// Keep a client on the release it was first sent to (a cookie per service).
    sticky: bool,
    releases: Vec<RouteRelease>,
    picks: PickTable,
    /// One per release, in the same order.
    pub(crate) lanes: Box<[Lane]>,
}

/// Everything a request routed to one release needs.
pub(crate) struct Lane {
    pub(crate) backends: Box<[Backend]>,
    next_backend: AtomicUsize,
    /// Requests in flight to this release, shared by every table of the proxy that routes to it.
    pub(crate) flight: Arc<Flight>,
    /// This release's metrics.
    pub(crate) counters: Arc<ReleaseCounters>,
}

/// One instance of a release.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) authority: Authority,
    /// Requests in flight to this instance, shared by every table that routes to it (a rolling
    /// update drains instances one by one).
    pub(crate) flight: Arc<Flight>,
}

impl RouteTable {
    /// A route over `releases`. Weights need not add up to 100: they are normalised. A release
    /// without backends or with weight 0 gets no traffic (but stays in the table, for `status`).
    pub fn new(generation: u64, releases: Vec<RouteRelease>) -> RouteTable {
        let lanes = releases
            .iter()
            .map(|r| Lane {
                backends: r
                    .backends
                    .iter()
                    .filter_map(|addr| {
                        // A socket address always makes a valid authority.
                        let authority = Authority::try_from(addr.to_string()).ok()?;
                        Some(Backend {
                            addr: *addr,
                            authority,
                            flight: Arc::new(Flight::new()),
                        })
                    })
                    .collect(),
                next_backend: AtomicUsize::new(0),
                // Private until the table is installed in a proxy (`attach`).
                flight: Arc::new(Flight::new()),
                counters: Arc::new(ReleaseCounters::new()),
            })
            .collect();
        let picks = PickTable::build(&effective_weights(&releases));
        RouteTable {
            generation,
            sticky: false,
            releases,
            picks,
            lanes,
        }
    }

    /// The same route, keeping each client on the release it was first sent to (by a cookie)
    /// while that release still gets traffic.
    pub fn with_sticky(mut self, sticky: bool) -> RouteTable {
        self.sticky = sticky;
        self
    }

    /// Whether clients stay on one release.
    pub fn sticky(&self) -> bool {
        self.sticky
    }

    /// The lane of `release` when it gets traffic now (a sticky client's release).
    pub(crate) fn routable_lane(&self, release: &[u8]) -> Option<usize> {
        self.releases.iter().enumerate().find_map(|(i, r)| {
            (r.release.as_bytes() == release && r.weight > 0 && !self.lanes[i].backends.is_empty())
                .then_some(i)
        })
    }

    /// How many backends the route has, in every release (weight 0 included).
    pub(crate) fn backends_total(&self) -> usize {
        self.lanes.iter().map(|l| l.backends.len()).sum()
    }

    /// A route with no release: every request gets 503.
    pub fn empty() -> RouteTable {
        RouteTable::new(0, Vec::new())
    }

    /// The generation the caller gave (to confirm which route a proxy applied).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The releases, as given.
    pub fn releases(&self) -> &[RouteRelease] {
        &self.releases
    }

    /// The effective split in percent (adding up to 100 when any release gets traffic), for
    /// `status`; a release without backends shows 0.
    pub fn weights(&self) -> Vec<(String, u8)> {
        let shares = percents(&effective_weights(&self.releases));
        self.releases
            .iter()
            .zip(shares)
            .map(|(r, p)| (r.release.clone(), p))
            .collect()
    }

    /// Connects the lanes to the proxy's shared in-flight counters and metrics, before the
    /// table is stored.
    pub(crate) fn attach(
        &mut self,
        mut shared: impl FnMut(&str) -> (Arc<Flight>, Arc<ReleaseCounters>),
        mut backend: impl FnMut(SocketAddr) -> Arc<Flight>,
    ) {
        for (lane, release) in self.lanes.iter_mut().zip(&self.releases) {
            (lane.flight, lane.counters) = shared(&release.release);
            for b in lane.backends.iter_mut() {
                b.flight = backend(b.addr);
            }
        }
    }

    /// The release (lane index) for the next request, or `None` when no release gets traffic.
    #[inline]
    pub(crate) fn pick_lane(&self) -> Option<usize> {
        self.picks.pick()
    }

    /// The release's id at `lane`.
    pub(crate) fn release_name(&self, lane: usize) -> &str {
        &self.releases[lane].release
    }
}

impl Lane {
    /// The backend for the next request to this release, round-robin.
    #[inline]
    pub(crate) fn pick_backend(&self) -> usize {
        match self.backends.len() {
            0 | 1 => 0,
            n => self.next_backend.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// Each release's weight, or 0 when it has no backend to serve it.
fn effective_weights(releases: &[RouteRelease]) -> Vec<u8> {
    releases
        .iter()
        .map(|r| if r.backends.is_empty() { 0 } else { r.weight })
        .collect()
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("generation", &self.generation)
            .field("sticky", &self.sticky)
            .field("releases", &self.releases)
            .field("weights", &self.weights())
            .finish()
    }
}

impl Default for RouteTable {
    fn default() -> RouteTable {
        RouteTable::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(name: &str, weight: u8, ports: &[u16]) -> RouteRelease {
        RouteRelease {
            release: name.to_owned(),
            weight,
            backends: ports
                .iter()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                .collect(),
        }
    }

    #[test]
    fn weights_are_normalised_and_skip_releases_without_backends() {
        let t = RouteTable::new(
            7,
            vec![
                release("a", 30, &[1]),
                release("b", 10, &[2]),
                release("c", 60, &[]),
            ],
        );
        assert_eq!(t.generation(), 7);
        assert_eq!(
            t.weights(),
            [("a".into(), 75), ("b".into(), 25), ("c".into(), 0)]
        );
        assert_eq!(RouteTable::empty().weights(), []);
        assert_eq!(RouteTable::empty().pick_lane(), None);
    }

    #[test]
    fn backends_go_round_robin() {
        let t = RouteTable::new(1, vec![release("a", 100, &[1, 2, 3])]);
        let lane = t.pick_lane().unwrap();
        let picked: Vec<_> = (0..6)
            .map(|_| {
                t.lanes[lane].backends[t.lanes[lane].pick_backend()]
                    .addr
                    .port()
            })
            .collect();
        assert_eq!(picked, [1, 2, 3, 1, 2, 3]);
        assert_eq!(t.lanes[lane].backends[0].authority.as_str(), "127.0.0.1:1");
    }

    #[test]
    fn a_release_without_backends_gets_nothing() {
        let t = RouteTable::new(1, vec![release("a", 100, &[])]);
        assert_eq!(t.pick_lane(), None);
    }
}
