//! The local runtime: the `cutover agent` process that keeps a project's services running.
//!
//! # Layout
//! - `proxy/`: the HTTP/1.1 reverse proxy, one listener per service's public port, weighted
//!   routing between releases through one immutable route table per listener, draining.
//! - `metrics.rs`: per-release request counts, errors and latency histograms.
//! - `supervisor/`: instances (one process group each), restarts with backoff, log capture.
//! - `probe.rs`: health probes with thresholds; an instance starts not ready.
//! - `owner.rs`: which process holds the socket answering on a port (a probe judges only its
//!   own instance).
//! - `agent.rs`: release sets per service, the deploy order, recovery after a crash.
//! - `daemon.rs`: the agent as a process: socket, stale-socket replacement, signals.
//! - `api/`: the admin API over the Unix socket (types shared by server and client).
//! - `exposition.rs`: the proxies' numbers and the agent's state as Prometheus text or
//!   OpenMetrics (`prometheus-client`), as the scraper asks.
//! - `metrics_listen.rs`: `GET /metrics` over TCP where `[project] metrics_listen` is set.
//! - `promql.rs`: a PromQL client for external canary analysis.
//!
//! # Theory of operation
//! The agent owns every instance and every listener of a project. A deploy asks it to start a
//! release's instances, wait until the probes call each one ready, swap the route in one step,
//! then drain and stop the old instances. Routes are immutable snapshots behind an `ArcSwap`, so
//! a request sees either the old table or the new one, never a mix.

mod acme;
pub mod agent;
pub mod analysis;
pub mod api;
pub mod daemon;
pub mod exposition;
pub mod metrics;
pub mod metrics_listen;
pub mod owner;
pub mod probe;
pub mod procfs;
pub mod promql;
pub mod proxy;
pub mod supervisor;
pub mod target;
