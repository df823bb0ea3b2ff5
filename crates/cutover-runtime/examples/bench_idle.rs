//! Opens many idle keep-alive connections to a proxy, for the memory part of `scripts/bench-proxy`.
//!
//! `cargo run --release --example bench_idle -- ADDR COUNT MODE HOLD_SECS`: opens COUNT
//! connections to ADDR; with MODE `request` each sends one `GET /` and reads its response
//! (a kept-alive connection between requests), with MODE `connect` none does (a pre-connected
//! client). Prints `ready N` once all are open, then holds them for HOLD_SECS.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_idle ADDR COUNT request|connect HOLD_SECS";
    let addr: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let count: usize = args.next().ok_or(usage)?.parse()?;
    let request = match args.next().ok_or(usage)?.as_str() {
        "request" => true,
        "connect" => false,
        _ => return Err(usage.into()),
    };
    let hold: u64 = args.next().ok_or(usage)?.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(addr, count, request, hold))
}

async fn run(
    addr: SocketAddr,
    count: usize,
    request: bool,
    hold: u64,
) -> Result<(), Box<dyn Error>> {
    let mut open = Vec::with_capacity(count);
    let mut buf = vec![0u8; 4096];
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await?;
        if request {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                .await?;
            // The whole response (`ok` with a few headers) arrives in one segment.
            let n = stream.read(&mut buf).await?;
            if !buf[..n].starts_with(b"HTTP/1.1 200") {
                return Err(format!(
                    "unexpected response: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                )
                .into());
            }
        }
        open.push(stream);
    }
    println!("ready {}", open.len());
    tokio::time::sleep(Duration::from_secs(hold)).await;
    Ok(())
}
