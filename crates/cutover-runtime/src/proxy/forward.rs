//! Forwarding one request: pick a release and a backend, rewrite the head, stream both bodies.
//!
//! The request context is a [`Pass`]: the route table the request loaded, the release (lane)
//! and the backend it picked. It counts the request in flight for its release from the pick
//! until the response body is fully sent or dropped, and it is what metrics are credited to
//! (pingora's `CTX` remembering the upstream for its logging phase).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, EXPECT, HOST, HeaderMap, HeaderName, HeaderValue,
    PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{Parts, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::Shared;
use super::access_log::Entry;
use super::route::{Backend, Lane, RouteTable};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// `Proxy-*` ones meant for this proxy. hyper frames bodies itself on each side.
const HOP_BY_HOP: [HeaderName; 8] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

/// Serves one request of a client connection from `client_ip`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    client_ip: HeaderValue,
    https: bool,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let options = shared.options.load_full();
    let request_id = match req.headers().get(X_REQUEST_ID) {
        Some(id) => id.clone(),
        None => {
            let id = new_request_id();
            req.headers_mut().insert(X_REQUEST_ID, id.clone());
            id
        }
    };
    let log = options
        .access_log
        .as_ref()
        .map(|log| (log, Entry::of(&req, &client_ip, &request_id)));
    let respond = |resp: Response<ProxyBody>, release: Option<&str>| {
        if let Some((log, entry)) = &log {
            log.write(
                entry,
                &shared.service,
                release,
                resp.status(),
                started.elapsed(),
            );
        }
        with_request_id(resp, &request_id)
    };
    if !shared.pause.wait().await {
        let body = format!(
            "{} is paused (`cutover resume {}` lets requests through); retry later\n",
            shared.service, shared.service
        );
        return Ok(respond(
            text(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(body)),
            None,
        ));
    }
    let limit = options.max_body;
    if let Some(max) = limit
        && content_length(req.headers()).is_some_and(|n| n > max)
    {
        return Ok(respond(too_large(max), None));
    }
    // Both sides of an `Upgrade` (WebSocket): the client's, taken before the request moves.
    let upgrade =
        upgrade_of(req.headers()).map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
    let Some(pass) = Pass::begin(&shared, req.headers()) else {
        return Ok(respond(
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                shared.no_route_body.clone(),
            ),
            None,
        ));
    };
    // A request without a body whose method is idempotent can go to another backend when the
    // first one fails before answering (a task that moved, an instance that just died): its
    // head is kept for that, when there is another backend to try.
    let retry_head = (upgrade.is_none()
        && req.body().is_end_stream()
        && matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        )
        && pass.table.backends_total() > 1)
        .then(|| {
            (
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            )
        });
    let mut req = upstream_request(req, pass.backend(), client_ip.clone(), https, limit);
    if let Some((protocol, _)) = &upgrade {
        req.headers_mut().insert(CONNECTION, UPGRADE_TOKEN);
        req.headers_mut().insert(UPGRADE, protocol.clone());
    }
    let (pass, answered) = match retry_head {
        None => (pass, send(&shared, req, options.upstream_timeout).await),
        Some(head) => {
            let mut pass = pass;
            let mut tried = vec![pass.backend().addr];
            let mut answered = send(&shared, req, options.upstream_timeout).await;
            while let Sent::Failed(err) = &answered
                && !caused_by::<BodyTooLarge>(err)
                && tried.len() <= RETRIES
            {
                let Some(next) = Pass::begin_avoiding(&shared, &head.2, &tried) else {
                    break;
                };
                tried.push(next.backend().addr);
                pass = next;
                let mut again = Request::new(());
                *again.method_mut() = head.0.clone();
                *again.uri_mut() = head.1.clone();
                *again.headers_mut() = head.2.clone();
                let again = again.map(|()| RequestBody {
                    body: None,
                    left: None,
                });
                let again = upstream_request_of(again, pass.backend(), client_ip.clone(), https);
                answered = send(&shared, again, options.upstream_timeout).await;
            }
            (pass, answered)
        }
    };
    let answered = match answered {
        Sent::Answered(r) => Ok(r),
        Sent::Failed(e) => Err(e),
        Sent::TimedOut(limit) => {
            pass.lane()
                .counters
                .record(StatusCode::GATEWAY_TIMEOUT.as_u16(), started.elapsed());
            let message = format!(
                "upstream {} of release {} did not answer within {}\n",
                pass.backend().addr,
                pass.release(),
                humantime_ms(limit)
            );
            let release = pass.release().to_owned();
            drop(pass);
            return Ok(respond(
                text(StatusCode::GATEWAY_TIMEOUT, Bytes::from(message)),
                Some(&release),
            ));
        }
    };
    match answered {
        Ok(mut resp) => {
            pass.lane()
                .counters
                .record(resp.status().as_u16(), started.elapsed());
            let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            let protocol = resp.headers().get(UPGRADE).cloned();
            strip_hop_by_hop(resp.headers_mut());
            if pass.set_cookie {
                set_sticky_cookie(&shared, resp.headers_mut(), pass.release());
            }
            let release = pass.release().to_owned();
            if let (true, Some((_, client)), Some(protocol)) = (upgraded, upgrade, protocol) {
                resp.headers_mut().insert(CONNECTION, UPGRADE_TOKEN);
                resp.headers_mut().insert(UPGRADE, protocol);
                let upstream = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client, upstream, pass));
                let (head, _) = resp.into_parts();
                return Ok(respond(
                    Response::from_parts(head, ProxyBody::Text(None)),
                    Some(&release),
                ));
            }
            let resp = resp.map(|body| ProxyBody::Upstream {
                body,
                pass: Some(pass),
            });
            Ok(respond(resp, Some(&release)))
        }
        Err(err) if limit.is_some() && caused_by::<BodyTooLarge>(&err) => {
            pass.lane()
                .counters
                .record(StatusCode::PAYLOAD_TOO_LARGE.as_u16(), started.elapsed());
            let release = pass.release().to_owned();
            drop(pass);
            Ok(respond(
                too_large(limit.unwrap_or_default()),
                Some(&release),
            ))
        }
        Err(err) => {
            pass.lane()
                .counters
                .record(StatusCode::BAD_GATEWAY.as_u16(), started.elapsed());
            let message = if err.is_connect() {
                format!(
                    "upstream {} of release {} unreachable\n",
                    pass.backend().addr,
                    pass.release()
                )
            } else {
                format!(
                    "upstream {} of release {} failed: {}\n",
                    pass.backend().addr,
                    pass.release(),
                    error_chain(&err)
                )
            };
            let release = pass.release().to_owned();
            drop(pass);
            Ok(respond(
                text(StatusCode::BAD_GATEWAY, Bytes::from(message)),
                Some(&release),
            ))
        }
    }
}

/// How many other backends a request without a body is sent to after the first failed.
const RETRIES: usize = 2;

/// How sending a request upstream ended.
enum Sent {
    Answered(Response<Incoming>),
    Failed(hyper_util::client::legacy::Error),
    /// No answer within the service's `upstream_timeout`.
    TimedOut(std::time::Duration),
}

/// Sends `req` upstream, within `timeout` when one is set.
async fn send(
    shared: &Shared,
    req: Request<RequestBody>,
    timeout: Option<std::time::Duration>,
) -> Sent {
    let sent = shared.client.request(req);
    let answered = match timeout {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(answered) => answered,
            Err(_) => return Sent::TimedOut(limit),
        },
        None => sent.await,
    };
    match answered {
        Ok(resp) => Sent::Answered(resp),
        Err(e) => Sent::Failed(e),
    }
}

/// The protocol a request asks to switch to: an `Upgrade` header with `upgrade` among the
/// `Connection` tokens.
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let protocol = headers.get(UPGRADE)?;
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        .then(|| protocol.clone())
}

/// Copies bytes both ways between an upgraded client connection and its upstream until either
/// side closes, or a drain of its release (or instance) gives up. The pass keeps it counted in
/// flight for its release until then.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, pass: Pass) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let counters = Arc::clone(&pass.lane().counters);
    counters.upgrade_opened();
    let release_cut = pass.lane().flight.cut_signal();
    let instance_cut = pass.backend().flight.cut_signal();
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        // Either side closing (or failing) ends the tunnel; nothing to report to anyone.
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = release_cut.cancelled() => {}
        () = instance_cut.cancelled() => {}
    }
    counters.upgrade_closed();
    drop(pass);
}

/// `X-Request-Id` on the answer too, unless the upstream set its own.
fn with_request_id(mut resp: Response<ProxyBody>, id: &HeaderValue) -> Response<ProxyBody> {
    if !resp.headers().contains_key(X_REQUEST_ID) {
        resp.headers_mut().insert(X_REQUEST_ID, id.clone());
    }
    resp
}

/// A new request id: 32 hex digits, a random per-process half and a counter, unique without
/// coordination (one small allocation).
fn new_request_id() -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), std::time::SystemTime::now()))
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut digits = [0u8; 32];
    for (i, byte) in seed
        .to_be_bytes()
        .iter()
        .chain(&n.to_be_bytes())
        .enumerate()
    {
        digits[2 * i] = HEX[usize::from(byte >> 4)];
        digits[2 * i + 1] = HEX[usize::from(byte & 0xF)];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The request's `Content-Length`, when it has a valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large(max: u64) -> Response<ProxyBody> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        Bytes::from(format!(
            "request body larger than this service's max_body ({max} bytes)\n"
        )),
    )
}

/// `2s`, `1500ms`.
fn humantime_ms(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Whether `err` or one of its sources is an `E`.
fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = at {
        if e.is::<E>() {
            return true;
        }
        at = e.source();
    }
    false
}

/// The request as sent upstream: same method, path, query, `Host` and body; forwarding
/// headers added, hop-by-hop headers removed, HTTP/1.1 on the pooled upstream connection.
fn upstream_request(
    req: Request<Incoming>,
    backend: &Backend,
    client_ip: HeaderValue,
    https: bool,
    limit: Option<u64>,
) -> Request<RequestBody> {
    let req = req.map(|body| RequestBody {
        body: Some(body),
        left: limit,
    });
    upstream_request_of(req, backend, client_ip, https)
}

/// [`upstream_request`] of a request whose body is already wrapped.
fn upstream_request_of(
    req: Request<RequestBody>,
    backend: &Backend,
    client_ip: HeaderValue,
    https: bool,
) -> Request<RequestBody> {
    let (mut head, body) = req.into_parts();
    // HTTP/2 carries the host in the URI (`:authority`), not in `Host`: upstreams get HTTP/1.1.
    if !head.headers.contains_key(HOST)
        && let Some(authority) = head.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        head.headers.insert(HOST, host);
    }
    let path_and_query = head
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(backend.authority.clone());
    parts.path_and_query = Some(path_and_query);
    // Scheme, authority and path are all present and valid, so this cannot fail; keep the
    // original URI if it somehow did (the client then routes by it).
    if let Ok(uri) = Uri::from_parts(parts) {
        head.uri = uri;
    }
    head.version = Version::HTTP_11;

    let headers = &mut head.headers;
    strip_hop_by_hop(headers);
    // hyper answers `Expect: 100-continue` to the client itself when the body is read.
    headers.remove(EXPECT);
    append_forwarded_for(headers, client_ip);
    // The edge says how the client reached it: a client's own value is not passed on.
    headers.insert(X_FORWARDED_PROTO, if https { HTTPS } else { HTTP });
    if !headers.contains_key(X_FORWARDED_HOST)
        && let Some(host) = headers.get(HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    Request::from_parts(head, body)
}

/// `X-Forwarded-For: <earlier hops>, <client>`, in one header line.
fn append_forwarded_for(headers: &mut HeaderMap, client_ip: HeaderValue) {
    if !headers.contains_key(X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, client_ip);
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client_ip.as_bytes());
    match HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        Ok(value) => {
            headers.insert(X_FORWARDED_FOR, value);
        }
        // Earlier values were valid header values and so is the join; never reached.
        Err(_) => {
            headers.insert(X_FORWARDED_FOR, client_ip);
        }
    }
}

/// Removes `Connection`, the headers it names, and the other hop-by-hop headers.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Adds `Set-Cookie: cutover-SERVICE=RELEASE` so the client stays on `release`.
fn set_sticky_cookie(shared: &Shared, headers: &mut HeaderMap, release: &str) {
    let cookie = format!(
        "{}={release}; Path=/; HttpOnly; SameSite=Lax",
        shared.cookie
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(http::header::SET_COOKIE, value);
    }
}

/// The release a sticky client was sent to before, from its `Cookie` headers.
fn sticky_release<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// `err` and its sources, `: `-separated (hyper's errors put the cause in the source).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// A short plain-text response made by the proxy itself.
pub(crate) fn text(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Text(Some(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// One request's route: the table it loaded, the release and the backend it picked.
/// Counts the request in flight for that release until dropped.
pub(crate) struct Pass {
    table: Arc<RouteTable>,
    lane: usize,
    backend: usize,
    /// A sticky route sent this client to a release it had no cookie for.
    set_cookie: bool,
}

impl Pass {
    /// Picks a release and a backend from the current route, or `None` when it routes nowhere.
    /// A sticky route keeps a client with a cookie on its release while that release gets
    /// traffic.
    #[inline]
    fn begin(shared: &Shared, headers: &HeaderMap) -> Option<Pass> {
        loop {
            let table = shared.route.load_full();
            let mut set_cookie = false;
            let lane = if table.sticky() {
                match sticky_release(headers, &shared.cookie).and_then(|r| table.routable_lane(r)) {
                    Some(lane) => lane,
                    None => {
                        set_cookie = true;
                        table.pick_lane()?
                    }
                }
            } else {
                table.pick_lane()?
            };
            let backend = table.lanes[lane].pick_backend();
            table.lanes[lane].flight.enter();
            if let Some(b) = table.lanes[lane].backends.get(backend) {
                b.flight.enter();
            }
            // Count first, then confirm the table is still current. If a swap happened in
            // between, start over on the new table: a drain (of a release or of one instance)
            // that starts after the swap either sees this count or this request never routes
            // to what it drains.
            fence(Ordering::SeqCst);
            if Arc::ptr_eq(&shared.route.load(), &table) {
                return Some(Pass {
                    table,
                    lane,
                    backend,
                    set_cookie,
                });
            }
            table.lanes[lane].flight.leave();
            if let Some(b) = table.lanes[lane].backends.get(backend) {
                b.flight.leave();
            }
        }
    }

    /// Like [`Pass::begin`], on a backend other than those at `tried` (a few picks at most:
    /// `None` when none is found).
    fn begin_avoiding(
        shared: &Shared,
        headers: &HeaderMap,
        tried: &[std::net::SocketAddr],
    ) -> Option<Pass> {
        for _ in 0..8 {
            let pass = Pass::begin(shared, headers)?;
            if !tried.contains(&pass.backend().addr) {
                return Some(pass);
            }
        }
        None
    }

    fn lane(&self) -> &Lane {
        &self.table.lanes[self.lane]
    }

    fn backend(&self) -> &Backend {
        &self.lane().backends[self.backend]
    }

    fn release(&self) -> &str {
        self.table.release_name(self.lane)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.lane().flight.leave();
        self.backend().flight.leave();
    }
}

/// A response body: the backend's, streamed (and counted in flight until done), or the proxy's own.
pub(crate) enum ProxyBody {
    /// Streams the backend's body; the pass is released at its end.
    Upstream {
        /// The backend's response body.
        body: Incoming,
        /// `None` once the body ended.
        pass: Option<Pass>,
    },
    /// A short message from the proxy (502, 503).
    Text(Option<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, pass } => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => *pass = None,
                    Poll::Ready(Some(Err(_))) => {
                        if let Some(pass) = pass.take() {
                            pass.lane().counters.record_body_error();
                        }
                    }
                    _ => {}
                }
                polled
            }
            ProxyBody::Text(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Text(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Text(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A request body on its way upstream, cut off with [`BodyTooLarge`] past `max_body`.
pub(crate) struct RequestBody {
    /// `None`: no body (a request sent again to another backend after the first failed).
    body: Option<Incoming>,
    /// Bytes still allowed; `None`: no limit.
    left: Option<u64>,
}

/// A request body went past the service's `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than max_body")]
pub(crate) struct BodyTooLarge;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(left), Some(data)) = (this.left.as_mut(), frame.data_ref()) {
                    let n = data.len() as u64;
                    if n > *left {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    *left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_and_what_it_names() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let ip = HeaderValue::from_static("10.0.0.2");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, ip.clone());
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.2");
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        append_forwarded_for(&mut h, ip);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.2");
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
    }
}
