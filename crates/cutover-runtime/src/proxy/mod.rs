//! The HTTP/1.1 reverse proxy: a listener per service's public port and one shared listener
//! routed by host and path, weighted routing between releases, draining, and per-release metrics.
//!
//! # Layout
//! - `route.rs`: [`RouteTable`], the immutable snapshot a listener routes by.
//! - `pick.rs`: weighted choice, expanded into a table of slots when a route is built.
//! - `forward.rs`: one request: pick, rewrite the head, stream the bodies, count.
//! - `drain.rs`: per-release in-flight counters and waiting for them to reach zero.
//! - `listener.rs`: bind, accept, serve connections with hyper, shut down.
//! - `access_log.rs`: a service's optional JSON access log, written off the request path.
//! - `hosts.rs`: [`Edge`], the shared listeners (`[proxy] http` and `https`), and their host
//!   and path table.
//! - `tls.rs`: certificates per host (SNI), reloaded on change, and the rustls config.
//!
//! # Theory of operation
//! A deploy builds the new release's instances, waits until they are ready, then calls
//! [`Proxy::set_route`] with a new [`RouteTable`]: one `ArcSwap` store, seen by the very next
//! request on every connection (keep-alive ones included), since each request loads the route
//! afresh. The agent reads [`Proxy::route`] back to confirm, then [`Proxy::drain`]s the release
//! it took out, which waits for the requests already routed there, response bodies included.
//! Client connections are kept alive by hyper's server; upstream connections come from one
//! pooled keep-alive client per proxy.

mod access_log;
mod drain;
mod forward;
mod hosts;
mod listener;
mod pick;
mod route;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use access_log::AccessLog;
pub(crate) use hosts::Challenges;
pub use hosts::{Edge, EdgeCertSource, EdgeTls};
pub use route::{RouteRelease, RouteTable};

use crate::metrics::Metrics;
use drain::Flight;
use listener::{Dispatch, Listening};

/// Connecting to a backend longer than this is a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle upstream connections are closed after this long.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A client connection waits this long for a request head, idle keep-alive time included.
const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// [`Proxy::shutdown`] lets in-flight requests finish for this long.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Another socket listens on the port.
    #[error(
        "cannot listen on {addr} for {service}: port {port} is already in use{by}",
        port = addr.port(),
        by = holder.as_ref().map(|h| format!(" (by {h})")).unwrap_or_default()
    )]
    PortInUse {
        /// Who listens there: `service NAME`, or `the shared [proxy] http listener`.
        service: String,
        /// The address asked for.
        addr: SocketAddr,
        /// The process holding it, when it could be found.
        holder: Option<PortHolder>,
    },
    /// Binding failed for another reason (permissions, an address not on this host...).
    #[error("cannot listen on {addr} for {service}: {source}")]
    Bind {
        /// Who listens there: `service NAME`, or `the shared [proxy] http listener`.
        service: String,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// What the proxy enforces and records for one service.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Largest request body passed on, in bytes: 413 above it.
    pub max_body: Option<u64>,
    /// Longest wait for the response head: 504 after it.
    pub upstream_timeout: Option<Duration>,
    /// Where one JSON line per request goes.
    pub access_log: Option<AccessLog>,
}

/// Holds new requests of a paused service until it is resumed or their wait passes the
/// pause's timeout. One atomic load per request while not paused.
#[derive(Debug, Default)]
pub(crate) struct Pause {
    paused: std::sync::atomic::AtomicBool,
    /// `Some(timeout)` while paused.
    state: tokio::sync::watch::Sender<Option<Duration>>,
}

impl Pause {
    /// Waits while paused: `true` when resumed (or never paused), `false` when the wait passed
    /// the pause's timeout.
    #[inline]
    pub(crate) async fn wait(&self) -> bool {
        if !self.paused.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        let mut rx = self.state.subscribe();
        let Some(timeout) = *rx.borrow_and_update() else {
            return true;
        };
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(Option::is_none)).await,
            Ok(Ok(_))
        )
    }
}

/// A process holding a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    /// Its process id.
    pub pid: u32,
    /// Its command line, space-separated.
    pub command: String,
}

impl fmt::Display for PortHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pid == std::process::id() {
            write!(f, "this process, pid {}", self.pid)
        } else if self.command.is_empty() {
            write!(f, "pid {}", self.pid)
        } else {
            write!(f, "pid {}: {}", self.pid, self.command)
        }
    }
}

/// The reverse proxy of one service: its route, and its own listener when it has a public port
/// (it may also be served by the shared [`Edge`]).
///
/// Cheap to clone (handles share one route). The listener stops when [`Proxy::shutdown`] is
/// called or the last handle is dropped.
#[derive(Clone)]
pub struct Proxy {
    handle: Arc<Handle>,
}

/// What the request path shares: one per proxy.
pub(crate) struct Shared {
    service: String,
    route: ArcSwap<RouteTable>,
    /// Each release's in-flight counter, outliving the route tables that route to it.
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    /// Each instance's in-flight counter, likewise.
    backend_flights: Mutex<HashMap<SocketAddr, Arc<Flight>>>,
    /// The sticky-session cookie's name, `cutover-SERVICE`.
    cookie: String,
    metrics: Arc<Metrics>,
    client: Client<HttpConnector, forward::RequestBody>,
    /// Limits and the access log, set with each deploy.
    options: ArcSwap<ProxyOptions>,
    /// `cutover pause`: new requests wait here.
    pause: Pause,
    /// "no ready instance of SERVICE".
    no_route_body: Bytes,
}

struct Handle {
    shared: Arc<Shared>,
    /// The service's own public port, when it has one.
    listening: Option<Listening>,
}

impl Proxy {
    /// Binds `addr` and starts serving `service` in a background task, with an empty route
    /// (503) until [`Proxy::set_route`]. When the port is taken, the error names the process
    /// holding it when it can be found.
    pub async fn bind(
        service: &str,
        addr: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Result<Proxy, ProxyError> {
        let who = format!("service {service}");
        let listener = listener::bind(&who, addr).await?;
        let shared = Shared::new(service, metrics);
        let listening = Listening::start(
            listener,
            addr,
            &who,
            Dispatch::One(Arc::clone(&shared)),
            listener::EdgeExtras::default(),
        )?;
        Ok(Proxy {
            handle: Arc::new(Handle {
                shared,
                listening: Some(listening),
            }),
        })
    }

    /// A proxy without a listener of its own: the shared [`Edge`] serves it.
    pub fn unbound(service: &str, metrics: Arc<Metrics>) -> Proxy {
        Proxy {
            handle: Arc::new(Handle {
                shared: Shared::new(service, metrics),
                listening: None,
            }),
        }
    }

    /// The address of its own listener (with the actual port when bound to port 0), if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.handle.listening.as_ref().map(|l| l.addr)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The service this proxy serves.
    pub fn service(&self) -> &str {
        &self.handle.shared.service
    }

    /// Routes by `table` from the very next request on, on every connection: one store.
    pub fn set_route(&self, mut table: RouteTable) {
        let shared = &self.handle.shared;
        let mut flights = lock(&shared.flights);
        let mut backend_flights = lock(&shared.backend_flights);
        table.attach(
            |release| {
                let flight = Arc::clone(
                    flights
                        .entry(release.to_owned())
                        .or_insert_with(|| Arc::new(Flight::new())),
                );
                (flight, shared.metrics.counters(&shared.service, release))
            },
            |addr| {
                Arc::clone(
                    backend_flights
                        .entry(addr)
                        .or_insert_with(|| Arc::new(Flight::new())),
                )
            },
        );
        let table = Arc::new(table);
        shared.route.store(Arc::clone(&table));
        // After the store: a request that counted itself into a release before the store is
        // seen here (and kept); one that counts itself after it re-picks from the new table.
        flights.retain(|release, flight| {
            flight.current() > 0 || table.releases().iter().any(|r| &r.release == release)
        });
        backend_flights.retain(|addr, flight| {
            flight.current() > 0 || table.releases().iter().any(|r| r.backends.contains(addr))
        });
    }

    /// Applies `options` from the next request on.
    pub fn set_options(&self, options: ProxyOptions) {
        self.handle.shared.options.store(Arc::new(options));
    }

    /// Holds new requests from now on, each for at most `timeout` (then 503), until
    /// [`Proxy::resume`]. Requests already routed go on.
    pub fn pause(&self, timeout: Duration) {
        let pause = &self.handle.shared.pause;
        pause.state.send_replace(Some(timeout));
        pause
            .paused
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Lets held and new requests through.
    pub fn resume(&self) {
        let pause = &self.handle.shared.pause;
        pause
            .paused
            .store(false, std::sync::atomic::Ordering::Release);
        pause.state.send_replace(None);
    }

    /// The pause's timeout while paused.
    pub fn paused(&self) -> Option<Duration> {
        *self.handle.shared.pause.state.borrow()
    }

    /// The route applied now.
    pub fn route(&self) -> Arc<RouteTable> {
        self.handle.shared.route.load_full()
    }

    /// Requests currently being served by `release`'s backends, response bodies included.
    pub fn in_flight(&self, release: &str) -> usize {
        lock(&self.handle.shared.flights)
            .get(release)
            .map_or(0, |f| f.current())
    }

    /// Waits until no request is in flight to `release` (`true`) or `timeout` passed (`false`);
    /// then the upgraded connections (WebSocket) still open to it are closed.
    ///
    /// The caller takes the release out of the route first; requests still arriving for a
    /// routed release keep the drain waiting until the timeout.
    pub async fn drain(&self, release: &str, timeout: Duration) -> bool {
        let flight = lock(&self.handle.shared.flights).get(release).cloned();
        match flight {
            Some(flight) => {
                let idle = flight.wait_idle(timeout).await;
                if !idle {
                    flight.cut_upgraded();
                }
                idle
            }
            None => true,
        }
    }

    /// Waits until no request is in flight to the instance at `addr` (`true`) or `timeout`
    /// passed (`false`). The caller takes the instance out of the route first.
    pub async fn drain_backend(&self, addr: SocketAddr, timeout: Duration) -> bool {
        let flight = lock(&self.handle.shared.backend_flights)
            .get(&addr)
            .cloned();
        match flight {
            Some(flight) => {
                let idle = flight.wait_idle(timeout).await;
                if !idle {
                    flight.cut_upgraded();
                }
                idle
            }
            None => true,
        }
    }

    /// Stops accepting, lets in-flight requests finish for a few seconds, then closes every
    /// connection. Idle keep-alive connections close at once.
    pub async fn shutdown(&self) {
        if let Some(listening) = &self.handle.listening {
            listening.shutdown().await;
        }
    }
}

impl Shared {
    fn new(service: &str, metrics: Arc<Metrics>) -> Arc<Shared> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
            .build(connector);
        Arc::new(Shared {
            service: service.to_owned(),
            route: ArcSwap::from_pointee(RouteTable::empty()),
            flights: Mutex::new(HashMap::new()),
            backend_flights: Mutex::new(HashMap::new()),
            cookie: format!("cutover-{service}"),
            metrics,
            client,
            options: ArcSwap::from_pointee(ProxyOptions::default()),
            pause: Pause::default(),
            no_route_body: Bytes::from(format!("no ready instance of {service}\n")),
        })
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("service", &self.handle.shared.service)
            .field("addr", &self.addr())
            .field("route", &self.route())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent; a panic elsewhere must not wedge routing.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
