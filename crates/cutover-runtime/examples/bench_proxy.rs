//! One cutover [`Proxy`] in front of one upstream, for `scripts/bench-proxy`.
//!
//! `cargo run --release --example bench_proxy -- LISTEN UPSTREAM [single|weighted|sticky|hosts]`
//! runs on a current-thread runtime (one core, to compare with one nginx worker) until SIGINT or
//! SIGTERM. `weighted` splits the traffic 10/90 between two releases (both served by UPSTREAM),
//! as during a canary step; `sticky` does the same with the sticky-session cookie on; `hosts`
//! serves LISTEN as the shared listener, where the service claims `bench.example` (and a
//! second service `other.example` and `bench.example/admin`), with `max_body` and
//! `upstream_timeout` set: the routing and limits of the edge on the plain path; `tls HTTPS
//! CERT KEY` serves the same on the TLS listener HTTPS for the host `localhost` with the
//! certificate CERT and key KEY (PEM files), HTTP/2 by ALPN.

use std::error::Error;
use std::net::SocketAddr;

use cutover_runtime::metrics::Metrics;
use cutover_runtime::proxy::{
    Edge, EdgeCertSource, EdgeTls, Proxy, ProxyOptions, RouteRelease, RouteTable,
};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_proxy LISTEN UPSTREAM [single|weighted|sticky|hosts|hosts-bare|tls HTTPS CERT KEY]";
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let upstream: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let mode = args.next().unwrap_or_else(|| "single".into());
    if !matches!(
        mode.as_str(),
        "single" | "weighted" | "sticky" | "hosts" | "hosts-bare" | "tls"
    ) {
        return Err(usage.into());
    }
    let tls = if mode == "tls" {
        let https: SocketAddr = args.next().ok_or(usage)?.parse()?;
        let cert = args.next().ok_or(usage)?;
        let key = args.next().ok_or(usage)?;
        Some(EdgeTls {
            https,
            source: EdgeCertSource::Files {
                cert: cert.into(),
                key: key.into(),
            },
            redirect: false,
        })
    } else {
        None
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(listen, upstream, &mode, tls))
}

async fn run(
    listen: SocketAddr,
    upstream: SocketAddr,
    mode: &str,
    tls: Option<EdgeTls>,
) -> Result<(), Box<dyn Error>> {
    let metrics = Metrics::new();
    let edge = if matches!(mode, "hosts" | "hosts-bare" | "tls") {
        Some(Edge::bind(listen).await?)
    } else {
        None
    };
    let proxy = match &edge {
        Some(_) => Proxy::unbound("bench", metrics.clone()),
        None => Proxy::bind("bench", listen, metrics.clone()).await?,
    };
    let other = Proxy::unbound("other", metrics.clone());
    if let Some(edge) = &edge {
        if mode != "hosts-bare" {
            proxy.set_options(ProxyOptions {
                max_body: Some(10 * 1024 * 1024),
                upstream_timeout: Some(std::time::Duration::from_secs(30)),
                ..ProxyOptions::default()
            });
        }
        let host = if tls.is_some() {
            "localhost"
        } else {
            "bench.example"
        };
        if let Some(tls) = &tls {
            edge.serve_https(tls.https).await?;
        }
        edge.claim(
            "bench/bench",
            &proxy,
            &[host.to_string()],
            "/",
            tls.as_ref(),
        )?;
        edge.claim(
            "bench/other",
            &other,
            &["other.example".to_string(), host.to_string()],
            "/admin",
            tls.as_ref(),
        )?;
    }
    let release = |name: &str, weight| RouteRelease {
        release: name.into(),
        weight,
        backends: vec![upstream],
    };
    let table = match mode {
        "single" => RouteTable::new(1, vec![release("r1", 100)]),
        _ => RouteTable::new(1, vec![release("r1", 90), release("r2", 10)])
            .with_sticky(mode == "sticky"),
    };
    proxy.set_route(table);
    println!(
        "bench_proxy listening on {} (pid {})",
        edge.as_ref()
            .map(Edge::addr)
            .or(proxy.addr())
            .map_or_else(|| "nothing".to_string(), |a| a.to_string()),
        std::process::id()
    );
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    proxy.shutdown().await;
    if let Some(edge) = edge {
        edge.shutdown().await;
    }
    for (_, release, m) in metrics.all() {
        println!(
            "bench_proxy {release} served {} requests, {} errors, p99 {:?}",
            m.requests,
            m.errors,
            m.quantile(0.99)
        );
    }
    Ok(())
}
