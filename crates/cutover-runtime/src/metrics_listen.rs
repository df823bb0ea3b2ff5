//! `GET /metrics` over TCP, where `[project] metrics_listen` asks for it, so a Prometheus
//! server can scrape the agent without access to its Unix socket.
//!
//! It answers in the format the scraper's `Accept` header asks for ([`Format::negotiate`]):
//! OpenMetrics for Prometheus, the Prometheus text format otherwise.
//!
//! Only that one endpoint is served here (the admin API stays on the socket, mode 0600): any
//! other path is 404, any other method on `/metrics` is 405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, log};
use crate::exposition::Format;

/// Binds `addr` and serves `/metrics` there until `shutdown` fires, on a task of its own.
///
/// A failure to bind (the port is in use, the address is not this host's) is logged and
/// returned; the agent goes on without the TCP endpoint (its deploys do not depend on it, and
/// `/metrics` stays on the socket).
pub async fn start(
    addr: SocketAddr,
    agent: Arc<Agent>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, std::io::Error> {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            log(&format!(
                "error: cannot serve /metrics on {addr} (`[project] metrics_listen`): {e}; \
                 the agent runs on without it and /metrics stays on its socket. Free the port \
                 or choose another metrics_listen, then restart the agent (`cutover agent stop`; \
                 the next command starts it again)"
            ));
            return Err(e);
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    log(&format!(
        "serving Prometheus metrics on http://{bound}/metrics"
    ));
    tokio::spawn(serve(listener, agent, shutdown));
    Ok(bound)
}

async fn serve(listener: TcpListener, agent: Arc<Agent>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    log(&format!("metrics listener: cannot accept a connection: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let agent = agent.clone();
                async move { Ok::<_, Infallible>(handle(&agent, &req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

async fn handle(agent: &Agent, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: this port serves only GET /metrics\n".to_string(),
            "text/plain; charset=utf-8",
        );
    }
    match *req.method() {
        Method::GET => {
            let format = Format::negotiate(
                req.headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            match agent.metrics_text(format).await {
                Ok(body) => text(StatusCode::OK, body, format.content_type()),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding the metrics: {e}\n"),
                    "text/plain; charset=utf-8",
                ),
            }
        }
        _ => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET /metrics is served here\n".to_string(),
                "text/plain; charset=utf-8",
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
            r
        }
    }
}
