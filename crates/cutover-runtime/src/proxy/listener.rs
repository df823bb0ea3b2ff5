//! The listening socket: bind (with a clear error when the port is taken), accept, serve each
//! client connection with hyper's HTTP/1.1 server (HTTP/2 over TLS when the client's ALPN
//! asks for it), and shut down gracefully.
//!
//! Accepting a stream ([`accept_loop`]) and serving a connection ([`serve_http`], generic over
//! the stream) are separate steps; on the `[proxy] https` listener a TLS handshake (rustls,
//! with the config of the [`CertStore`]) wraps the accepted stream in between. What a request
//! is routed to is the listener's [`Dispatch`]: one service (its own port) or the host table
//! of the shared listener.

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hosts::{Challenges, HostTable};
use super::tls::CertStore;
use super::{CLIENT_HEADER_TIMEOUT, PortHolder, ProxyError, SHUTDOWN_GRACE, Shared, forward, lock};

/// A TLS handshake taking longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the shared listener adds to plain routing.
#[derive(Default, Clone)]
pub(crate) struct EdgeExtras {
    /// TLS: the `[proxy] https` listener.
    pub(crate) tls: Option<Arc<CertStore>>,
    /// ACME HTTP-01 answers (the `[proxy] http` listener).
    pub(crate) challenges: Option<Arc<Challenges>>,
}

/// What a listener routes its requests to.
pub(crate) enum Dispatch {
    /// Every request to one service (its own public port).
    One(Arc<Shared>),
    /// By host and path (the shared listener).
    Hosts(Arc<ArcSwap<HostTable>>),
}

/// A running listener: its address, its connections, and how to stop it.
pub(crate) struct Listening {
    pub(crate) addr: SocketAddr,
    connections: Arc<Connections>,
    stop: Stop,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Listening {
    /// Starts accepting on `listener` (bound to `asked` for `service`, named in errors).
    pub(crate) fn start(
        listener: TcpListener,
        asked: SocketAddr,
        service: &str,
        dispatch: Dispatch,
        extras: EdgeExtras,
    ) -> Result<Listening, ProxyError> {
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            service: service.to_owned(),
            addr: asked,
            source,
        })?;
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(CLIENT_HEADER_TIMEOUT)
            .keep_alive(true);
        let http2 = extras.tls.as_ref().map(|_| {
            let mut http2 = http2::Builder::new(TokioExecutor::new());
            http2.timer(TokioTimer::new());
            http2
        });
        let connections = Arc::new(Connections::default());
        let stop = Stop::default();
        let accept_task = tokio::spawn(accept_loop(
            listener,
            Arc::new(Serving {
                dispatch,
                http1,
                http2,
                extras,
            }),
            Arc::clone(&connections),
            stop.clone(),
        ));
        Ok(Listening {
            addr,
            connections,
            stop,
            accept_task: Mutex::new(Some(accept_task)),
        })
    }

    /// Stops accepting, lets in-flight requests finish for a few seconds, then closes every
    /// connection. Idle keep-alive connections close at once.
    pub(crate) async fn shutdown(&self) {
        self.stop.accept.cancel();
        let task = lock(&self.accept_task).take();
        if let Some(task) = task {
            // The task only ends by cancellation; a panic in it has nothing left to clean up.
            let _ = task.await;
        }
        self.stop.graceful.cancel();
        if !self.connections.wait_closed(SHUTDOWN_GRACE).await {
            self.stop.hard.cancel();
            self.connections
                .wait_closed(Duration::from_millis(500))
                .await;
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.accept.cancel();
        self.stop.graceful.cancel();
        self.stop.hard.cancel();
    }
}

/// What every connection of a listener shares.
pub(crate) struct Serving {
    dispatch: Dispatch,
    http1: http1::Builder,
    /// Set on the TLS listener: HTTP/2 for clients that chose `h2` by ALPN.
    http2: Option<http2::Builder<TokioExecutor>>,
    extras: EdgeExtras,
}

/// Pending connections the kernel keeps for us while the accept loop catches up.
const BACKLOG: u32 = 4096;

/// Binds `addr` for `service`, naming who holds the port when it is taken.
pub(crate) async fn bind(service: &str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    let result = (|| {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // Rebinding right after a restart must not wait for TIME_WAIT connections to expire.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    })();
    match result {
        Ok(listener) => Ok(listener),
        Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
            let port = addr.port();
            let holder = tokio::task::spawn_blocking(move || port_holder(port))
                .await
                .ok()
                .flatten();
            Err(ProxyError::PortInUse {
                service: service.to_owned(),
                addr,
                holder,
            })
        }
        Err(source) => Err(ProxyError::Bind {
            service: service.to_owned(),
            addr,
            source,
        }),
    }
}

/// Live client connections, and a signal when the last one closes.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    live: AtomicUsize,
    none_left: Notify,
}

impl Connections {
    fn open(self: &Arc<Self>) -> OpenConnection {
        self.live.fetch_add(1, Ordering::SeqCst);
        OpenConnection(Arc::clone(self))
    }

    /// Waits until every connection closed (`true`) or `timeout` passed (`false`).
    pub(crate) async fn wait_closed(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.none_left.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.live.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

struct OpenConnection(Arc<Connections>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// How a listener is stopped: `accept` stops accepting, `graceful` asks connections to finish
/// their current request and close, `hard` closes them now.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    pub(crate) accept: CancellationToken,
    pub(crate) graceful: CancellationToken,
    pub(crate) hard: CancellationToken,
}

/// Accepts connections until `stop.accept`, serving each in its own task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    serving: Arc<Serving>,
    connections: Arc<Connections>,
    stop: Stop,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.accept.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let open = connections.open();
                tokio::spawn(serve_connection(
                    stream,
                    peer,
                    Arc::clone(&serving),
                    open,
                    stop.clone(),
                ));
            }
            // Out of file descriptors or memory: give the connections time to close.
            Err(err) if is_resource_error(&err) => {
                tokio::select! {
                    () = stop.accept.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            // A connection that failed before we took it (reset, aborted): not ours to report.
            Err(_) => {}
        }
    }
}

fn is_resource_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE
            || code == nix::libc::ENFILE
            || code == nix::libc::ENOBUFS
            || code == nix::libc::ENOMEM
    )
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    serving: Arc<Serving>,
    _open: OpenConnection,
    stop: Stop,
) {
    // Build hyper's connection (and its read and write buffers, 8 KiB each) only once the
    // client sends something: until then a pre-connected idle client costs this small task.
    // A peek, not `readable()`: tokio reports a fresh socket readable before any data came.
    // A client silent for the header timeout is dropped, as hyper would once it serves it.
    let mut first = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(CLIENT_HEADER_TIMEOUT, stream.peek(&mut first)) => {
            if !matches!(peeked, Ok(Ok(_))) {
                return;
            }
        }
        () = stop.graceful.cancelled() => return,
    }
    // Responses are written whole by hyper; do not let Nagle hold back their last segment.
    let _ = stream.set_nodelay(true);
    if serving.extras.tls.is_none() {
        Box::pin(serve_http(TokioIo::new(stream), peer, serving, false, stop)).await;
        return;
    }
    // Boxed: the handshake's state (a rustls connection) is not part of every plain
    // connection's task.
    Box::pin(serve_tls(stream, peer, serving, stop)).await;
}

/// The TLS handshake, then the connection over it (HTTP/2 when ALPN chose `h2`).
async fn serve_tls(stream: TcpStream, peer: SocketAddr, serving: Arc<Serving>, stop: Stop) {
    let Some(tls) = serving.extras.tls.clone() else {
        return;
    };
    // The config is loaded once per handshake: a reload swaps it for the next one.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    let stream = tokio::select! {
        accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => {
            // A failed handshake (no certificate for the name, a client that gave up) is the
            // client's to see; there is nobody else to tell.
            let Ok(Ok(stream)) = accepted else { return };
            stream
        }
        () = stop.graceful.cancelled() => return,
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    Box::pin(serve_http(TokioIo::new(stream), peer, serving, h2, stop)).await;
}

/// Drives a hyper connection until it ends, or shuts it down gracefully (then hard) on `stop`.
macro_rules! drive {
    ($conn:expr, $stop:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        // Connection errors (a client that went away, a malformed request hyper answered
        // with 400) end this connection only; there is nobody to report them to.
        tokio::select! {
            _ = conn.as_mut() => {}
            () = $stop.graceful.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = $stop.hard.cancelled() => {}
                }
            }
        }
    }};
}

/// Serves one client connection, whatever the stream under it: HTTP/2 when `h2` (chosen by
/// ALPN on the TLS listener), else HTTP/1.1 with upgrades.
pub(crate) async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    serving: Arc<Serving>,
    h2: bool,
    stop: Stop,
) where
    I: Read + Write + Unpin + Send + 'static,
{
    let client_ip = client_ip_header(peer.ip());
    let https = serving.extras.tls.is_some();
    let service = {
        let serving = Arc::clone(&serving);
        service_fn(move |req| {
            let client_ip = client_ip.clone();
            let serving = Arc::clone(&serving);
            async move {
                match &serving.dispatch {
                    Dispatch::One(shared) => {
                        forward::serve(Arc::clone(shared), client_ip, false, req).await
                    }
                    Dispatch::Hosts(table) => {
                        if let Some(challenges) = &serving.extras.challenges
                            && let Some(answer) = challenges.answer(&req)
                        {
                            return Ok(answer);
                        }
                        let routed = table.load().route(&req);
                        match routed {
                            Some((_, Some(https_port))) if !https => {
                                Ok(super::hosts::redirect(&req, https_port))
                            }
                            Some((shared, _)) => {
                                forward::serve(shared, client_ip, https, req).await
                            }
                            None => Ok(super::hosts::not_found()),
                        }
                    }
                }
            }
        })
    };
    // Each protocol's connection in its own allocation: an HTTP/1.1 connection does not carry
    // the (larger) HTTP/2 state in its task, nor the other way round.
    match (&serving.http2, h2) {
        (Some(http2), true) => {
            let conn = http2.serve_connection(io, service);
            Box::pin(async move { drive!(conn, stop) }).await;
        }
        _ => {
            let conn = serving.http1.serve_connection(io, service).with_upgrades();
            Box::pin(async move { drive!(conn, stop) }).await;
        }
    }
}

/// The client's address as an `X-Forwarded-For` element (an IPv4-mapped IPv6 address as IPv4).
fn client_ip_header(ip: IpAddr) -> HeaderValue {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    // An IP address always makes a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The process listening on TCP `port`, found through `/proc/net/tcp*` (the socket inode) and
/// `/proc/*/fd` (who holds it). `None` when it cannot be seen (another user's process).
pub(crate) fn port_holder(port: u16) -> Option<PortHolder> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for (pid, dir) in crate::procfs::processes() {
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|link| link.to_str().map(|l| targets.iter().any(|t| t == l)))
                .unwrap_or(false)
        });
        if holds {
            let command = crate::procfs::command_line(&dir);
            return Some(PortHolder { pid, command });
        }
    }
    None
}

/// Inodes of the sockets listening on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (local_port == port && fields.get(3) == Some(&LISTEN))
                .then(|| fields.get(9).map(|inode| (*inode).to_owned()))
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n   \
            1: 0100007F:1F90 0100007F:C000 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0 20 4 30 10 -1\n";
        assert_eq!(listening_inodes(table, 8080), ["4242"]);
        assert!(listening_inodes(table, 8081).is_empty());
    }

    #[test]
    fn mapped_addresses_read_as_ipv4() {
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_ip_header(ip), "10.1.2.3");
        let ip: IpAddr = "::1".parse().unwrap();
        assert_eq!(client_ip_header(ip), "::1");
    }
}
