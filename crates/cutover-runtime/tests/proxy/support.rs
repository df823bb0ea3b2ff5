//! Shared pieces of the proxy tests: small real upstream servers, a client, route helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cutover_runtime::metrics::Metrics;
use cutover_runtime::proxy::{Proxy, RouteRelease, RouteTable};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

/// Any body the tests send or answer with.
pub type AnyBody = BoxBody<Bytes, Box<dyn Error + Send + Sync>>;

/// A real HTTP upstream on 127.0.0.1 standing for one instance of `release`.
///
/// - `/echo*` answers 200 with the request body streamed back.
/// - `/slow` answers 200 with `start\n` at once and `end\n` after a [`Upstream::release_slow`].
/// - anything else answers 200 `release` with what it saw in `x-seen-*` headers.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it received.
    pub hits: Arc<AtomicUsize>,
    slow_gate: Arc<Semaphore>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream for `release`.
    pub async fn start(release: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let slow_gate = Arc::new(Semaphore::new(0));
        let release: Arc<str> = Arc::from(release);
        let task = tokio::spawn({
            let hits = Arc::clone(&hits);
            let slow_gate = Arc::clone(&slow_gate);
            async move {
                // Dropped with the accept task: aborts every connection this upstream serves.
                let mut connections = JoinSet::new();
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => accepted.unwrap(),
                        Some(_) = connections.join_next() => continue,
                    };
                    let (hits, gate, release) = (
                        Arc::clone(&hits),
                        Arc::clone(&slow_gate),
                        Arc::clone(&release),
                    );
                    let service = service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        answer(req, Arc::clone(&release), Arc::clone(&gate))
                    });
                    connections.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Upstream {
            addr,
            hits,
            slow_gate,
            task,
        }
    }

    /// Lets `n` waiting (or future) `/slow` responses finish.
    pub fn release_slow(&self, n: usize) {
        self.slow_gate.add_permits(n);
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    release: Arc<str>,
    slow_gate: Arc<Semaphore>,
) -> Result<Response<AnyBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut resp = if path.starts_with("/echo") {
        Response::new(req.into_body().map_err(Into::into).boxed())
    } else if path == "/slow" {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"start\n")).await;
            if let Ok(permit) = slow_gate.acquire().await {
                permit.forget();
            }
            let _ = tx.send(Bytes::from_static(b"end\n")).await;
        });
        Response::new(ChannelBody(rx).boxed())
    } else {
        let mut resp = Response::new(text(&release));
        let seen = resp.headers_mut();
        let h = req.headers();
        seen.insert("x-seen-method", value(req.method().as_str()));
        seen.insert("x-seen-uri", value(&req.uri().to_string()));
        for (name, out) in [
            ("host", "x-seen-host"),
            ("x-forwarded-for", "x-seen-xff"),
            ("x-forwarded-proto", "x-seen-xfproto"),
            ("x-forwarded-host", "x-seen-xfhost"),
            ("x-hop", "x-seen-x-hop"),
            ("connection", "x-seen-connection"),
            ("x-kept", "x-seen-x-kept"),
        ] {
            if let Some(v) = h.get(name) {
                seen.insert(out, v.clone());
            }
        }
        resp
    };
    resp.headers_mut().insert("x-release", value(&release));
    // A hop-by-hop header the proxy must not pass back.
    resp.headers_mut()
        .insert("keep-alive", HeaderValue::from_static("timeout=5"));
    Ok(resp)
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

/// A fixed body.
pub fn text(s: &str) -> AnyBody {
    Full::new(Bytes::from(s.to_owned()))
        .map_err(|never| match never {})
        .boxed()
}

/// No body.
pub fn empty() -> AnyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body fed chunk by chunk through a channel (ends when the sender is dropped).
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// A pooled keep-alive HTTP client, as a browser or a load balancer would be.
pub fn client() -> Client<HttpConnector, AnyBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
pub struct Got {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, as text.
    pub body: String,
}

impl Got {
    /// The header `name`, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

/// Reads a response whole.
pub async fn read(resp: Response<Incoming>) -> Got {
    let (head, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Got {
        status: head.status,
        headers: head.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// `GET http://{proxy}{path}`, read whole.
pub async fn get(client: &Client<HttpConnector, AnyBody>, proxy: SocketAddr, path: &str) -> Got {
    let req = Request::get(format!("http://{proxy}{path}"))
        .body(empty())
        .unwrap();
    read(client.request(req).await.unwrap()).await
}

/// A release of `weight` percent served by `upstreams`.
pub fn release(name: &str, weight: u8, upstreams: &[&Upstream]) -> RouteRelease {
    RouteRelease {
        release: name.to_owned(),
        weight,
        backends: upstreams.iter().map(|u| u.addr).collect(),
    }
}

/// A route sending everything to `name` on `upstreams`.
pub fn only(generation: u64, name: &str, upstreams: &[&Upstream]) -> RouteTable {
    RouteTable::new(generation, vec![release(name, 100, upstreams)])
}

/// A proxy for service `api` on a free port of 127.0.0.1.
pub async fn proxy() -> (Proxy, Arc<Metrics>) {
    let metrics = Metrics::new();
    let proxy = Proxy::bind("api", "127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics))
        .await
        .unwrap();
    (proxy, metrics)
}

/// Polls `cond` every few milliseconds until it holds; panics after 10 seconds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
