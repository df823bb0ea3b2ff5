//! One cutover [`Proxy`] in front of one upstream, for `scripts/bench-proxy`.
//!
//! `cargo run --release --example bench_proxy -- LISTEN UPSTREAM` runs on a current-thread
//! runtime (one core, to compare with one nginx worker) until SIGINT or SIGTERM.

use std::error::Error;
use std::net::SocketAddr;

use cutover_runtime::metrics::Metrics;
use cutover_runtime::proxy::{Proxy, RouteRelease, RouteTable};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_proxy LISTEN UPSTREAM";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: SocketAddr = args.next().ok_or(usage)?.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(listen, upstream))
}

async fn run(listen: SocketAddr, upstream: SocketAddr) -> Result<(), Box<dyn Error>> {
    let metrics = Metrics::new();
    let proxy = Proxy::bind("bench", listen, metrics.clone()).await?;
    proxy.set_route(RouteTable::new(
        1,
        vec![RouteRelease {
            release: "r1".into(),
            weight: 100,
            backends: vec![upstream],
        }],
    ));
    println!(
        "bench_proxy listening on {} (pid {})",
        proxy.addr(),
        std::process::id()
    );
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    proxy.shutdown().await;
    if let Some(m) = metrics.snapshot("bench", "r1") {
        println!(
            "bench_proxy served {} requests, {} errors, p99 {:?}",
            m.requests,
            m.errors,
            m.quantile(0.99)
        );
    }
    Ok(())
}
