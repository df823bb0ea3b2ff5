//! The agent's side of the admin API.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::types::{
    ApiError, CanaryControlRequest, DeployProgress, DeployRequest, DownRequest, HandOverRequest,
};
use crate::agent::{Agent, Control};
use crate::exposition::Format;

type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (a deploy request is a few KB).
const MAX_BODY: usize = 1 << 20;

fn full(status: StatusCode, body: Vec<u8>, content_type: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => full(status, body, "application/json"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}")),
    }
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    json(status, &ApiError { error: message })
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, String> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| format!("reading the request: {e}"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("bad request body: {e}"))
}

async fn handle(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/status") => json(StatusCode::OK, &agent.status().await),
        (Method::GET, "/metrics") => {
            let format = Format::negotiate(
                req.headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            match agent.metrics_text(format).await {
                Ok(text) => full(StatusCode::OK, text.into_bytes(), format.content_type()),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding the metrics: {e}"),
                ),
            }
        }
        (Method::POST, "/v1/promote" | "/v1/abort") => {
            let request: CanaryControlRequest = match read_json(req).await {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let control = match (path.as_str(), request.full) {
                ("/v1/abort", _) => Control::Abort,
                (_, true) => Control::PromoteFull,
                _ => Control::Promote,
            };
            match agent
                .canary_control(&request.env, &request.service, control)
                .await
            {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ok": true })),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (Method::POST, "/v1/deploy" | "/v1/rollback") => {
            let request: DeployRequest = match read_json(req).await {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let (tx, rx) = mpsc::unbounded_channel::<DeployProgress>();
            // The deploy runs on its own task: it finishes (or undoes its switch) even when
            // the client goes away mid-way.
            let a = agent.clone();
            if path == "/v1/rollback" {
                tokio::spawn(async move { a.rollback(request.spec, tx).await });
            } else {
                tokio::spawn(async move { a.deploy(request.spec, tx).await });
            }
            let mut r = Response::new(ProgressBody { rx }.boxed());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/x-ndjson"),
            );
            r
        }
        (Method::POST, "/v1/pause" | "/v1/resume") => {
            let request: crate::api::types::PauseRequest = match read_json(req).await {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let timeout =
                (path == "/v1/pause").then(|| std::time::Duration::from_millis(request.timeout_ms));
            match agent.pause(&request.env, &request.service, timeout).await {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ok": true })),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (Method::POST, "/v1/hand-over") => match read_json::<HandOverRequest>(req).await {
            Ok(h) => match agent.hand_over(h).await {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ok": true })),
                Err(e) => error(StatusCode::CONFLICT, e),
            },
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::POST, "/v1/down") => match read_json::<DownRequest>(req).await {
            Ok(d) => {
                let stopped = agent.down(&d.env).await;
                json(StatusCode::OK, &serde_json::json!({ "stopped": stopped }))
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (Method::POST, "/v1/stop") => {
            agent.shutdown.cancel();
            json(StatusCode::OK, &serde_json::json!({ "stopping": true }))
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {} {path}", req.method()),
        ),
    }
}

/// The streamed answer to a deploy: one JSON line per progress step, ending when the deploy
/// task drops its sender.
struct ProgressBody {
    rx: mpsc::UnboundedReceiver<DeployProgress>,
}

impl hyper::body::Body for ProgressBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(step)) => {
                let mut line = serde_json::to_vec(&step).unwrap_or_default();
                line.push(b'\n');
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Serves the API on `listener` until `shutdown` fires.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            () = shutdown.cancelled() => return,
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let agent = agent.clone();
                async move { Ok::<_, Infallible>(handle(agent, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
