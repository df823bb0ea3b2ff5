//! The shared listeners (`[proxy] http` and `https`): services claim hosts and path prefixes
//! on them.
//!
//! [`Edge`] keeps every service's claim and, on each change, builds one immutable
//! [`HostTable`] swapped in with one `ArcSwap` store, like a route table. A request costs one
//! hash lookup of its host (lowercased only when it has capitals) and a scan of that host's
//! prefixes, longest first: no regex, no allocation on the common path. Both listeners route
//! by the same table; the TLS one picks certificates by SNI from the [`CertStore`], and the
//! plain one answers ACME HTTP-01 challenges and, with `redirect_https`, sends a TLS service's
//! requests to https with a 308.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};

use super::forward::{ProxyBody, text};
use super::listener::{self, Dispatch, EdgeExtras, Listening};
use super::tls::{self, CertStore, LoadedCert, Source};
use super::{Proxy, ProxyError, Shared, lock};

/// What the shared listener answers for a host (and path) no service claims.
const NOT_FOUND: &[u8] = b"no service answers this host and path here\n";

/// Who listens on the shared listener, in errors.
const WHO: &str = "the shared [proxy] http listener";
/// Who listens on the TLS listener, in errors.
const WHO_TLS: &str = "the shared [proxy] https listener";
/// Where ACME's HTTP-01 validation asks for a token's answer.
const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The shared listener's routing: host → its claims, longest path prefix first.
#[derive(Default)]
pub(crate) struct HostTable {
    hosts: HashMap<Box<str>, Box<[Claim]>>,
}

struct Claim {
    /// `/` (everything), or a prefix without a trailing `/`.
    prefix: Box<str>,
    shared: Arc<Shared>,
    /// `redirect_https` on a TLS service: plain HTTP requests get a 308 to this https port.
    redirect: Option<u16>,
}

impl HostTable {
    /// The service for `req` by its host and path, and the https port to redirect plain HTTP
    /// requests to; `None`: answer [`not_found`].
    #[inline]
    pub(crate) fn route<B>(&self, req: &Request<B>) -> Option<(Arc<Shared>, Option<u16>)> {
        let host = request_host(req);
        let claims = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get(host.to_ascii_lowercase().as_str())
        } else {
            self.hosts.get(host)
        };
        let path = req.uri().path();
        claims
            .and_then(|claims| claims.iter().find(|c| under(path, &c.prefix)))
            .map(|c| (Arc::clone(&c.shared), c.redirect))
    }
}

/// The host a request asks for: its URI's (HTTP/2, absolute form), else its `Host` header,
/// without the port; empty when it names none.
#[inline]
fn request_host<B>(req: &Request<B>) -> &str {
    req.uri()
        .host()
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .map(host_name)
        .unwrap_or_default()
}

/// A 308 to the same host and path on https (port `port`, left out when 443).
pub(crate) fn redirect<B>(req: &Request<B>, port: u16) -> Response<ProxyBody> {
    let host = request_host(req);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut resp = text(
        StatusCode::PERMANENT_REDIRECT,
        Bytes::from(format!("moved to {location}\n")),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, value);
    }
    resp
}

/// ACME HTTP-01 answers: token → key authorization, served on the plain listener for any
/// host while an order waits for validation.
#[derive(Debug, Default)]
pub(crate) struct Challenges {
    /// Whether any token is set: other requests to the challenge path skip the lock.
    any: AtomicBool,
    tokens: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The answer to `req` when it asks for a token being validated now.
    #[inline]
    pub(crate) fn answer<B>(&self, req: &Request<B>) -> Option<Response<ProxyBody>> {
        let token = req.uri().path().strip_prefix(CHALLENGE_PATH)?;
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let answer = lock(&self.tokens).get(token).cloned()?;
        Some(text(StatusCode::OK, Bytes::from(answer)))
    }

    /// Answers `token` with `key_authorization` until [`Challenges::remove`].
    pub(crate) fn insert(&self, token: &str, key_authorization: &str) {
        let mut tokens = lock(&self.tokens);
        tokens.insert(token.to_owned(), key_authorization.to_owned());
        self.any.store(true, Ordering::Release);
    }

    /// Stops answering `token`.
    pub(crate) fn remove(&self, token: &str) {
        let mut tokens = lock(&self.tokens);
        tokens.remove(token);
        self.any.store(!tokens.is_empty(), Ordering::Release);
    }
}

/// The answer for a host (and path) no service claims.
pub(crate) fn not_found() -> Response<ProxyBody> {
    text(StatusCode::NOT_FOUND, Bytes::from_static(NOT_FOUND))
}

/// `host[:port]` → `host` (an IPv6 literal keeps its brackets), without a trailing dot.
fn host_name(authority: &str) -> &str {
    let host = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Whether `path` is `prefix` or below it (`/api` claims `/api` and `/api/x`, not `/apis`).
#[inline]
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// One service's claim, as the agent gave it.
struct Owned {
    service: String,
    hosts: Vec<String>,
    prefix: String,
    shared: Arc<Shared>,
    /// The service has TLS and `redirect_https`.
    redirect: bool,
}

/// A service's TLS on the shared listeners.
#[derive(Debug, Clone)]
pub struct EdgeTls {
    /// `[proxy] https`.
    pub https: SocketAddr,
    /// Where the certificate comes from.
    pub source: EdgeCertSource,
    /// `[proxy] redirect_https`.
    pub redirect: bool,
}

/// Where a service's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeCertSource {
    /// PEM files, watched and reloaded on change.
    Files {
        /// The certificate chain.
        cert: std::path::PathBuf,
        /// The private key.
        key: std::path::PathBuf,
    },
    /// ACME: the agent's issuer sets it with [`Edge::set_acme_cert`].
    Acme,
}

/// The TLS listener and its certificates.
struct Https {
    listening: Listening,
    certs: Arc<CertStore>,
}

/// The shared listener: one socket, routed by host and path to the services that claim them.
///
/// Cheap to clone. It listens until [`Edge::shutdown`] or the last handle is dropped.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<EdgeInner>,
}

struct EdgeInner {
    table: Arc<ArcSwap<HostTable>>,
    /// Claims by owner (`env/service`), in a stable order.
    claims: Mutex<BTreeMap<String, Owned>>,
    listening: Listening,
    challenges: Arc<Challenges>,
    https: Mutex<Option<Https>>,
}

impl Edge {
    /// Binds `addr` and serves it with no claims (every request 404) until [`Edge::claim`].
    pub async fn bind(addr: SocketAddr) -> Result<Edge, ProxyError> {
        let socket = listener::bind(WHO, addr).await?;
        let table = Arc::new(ArcSwap::from_pointee(HostTable::default()));
        let challenges = Arc::new(Challenges::default());
        let listening = Listening::start(
            socket,
            addr,
            WHO,
            Dispatch::Hosts(Arc::clone(&table)),
            EdgeExtras {
                tls: None,
                challenges: Some(Arc::clone(&challenges)),
            },
        )?;
        Ok(Edge {
            inner: Arc::new(EdgeInner {
                table,
                claims: Mutex::new(BTreeMap::new()),
                listening,
                challenges,
                https: Mutex::new(None),
            }),
        })
    }

    /// Starts the TLS listener on `addr` (routed by the same host table) unless it runs
    /// already; refused when it runs on another address.
    pub async fn serve_https(&self, addr: SocketAddr) -> Result<SocketAddr, String> {
        if let Some(running) = self.https_addr() {
            if running == addr || (addr.port() == 0 && running.ip() == addr.ip()) {
                return Ok(running);
            }
            return Err(format!(
                "the shared TLS listener runs on {running}, but [proxy] https is now {addr}: run `cutover agent stop`, then deploy again"
            ));
        }
        let socket = listener::bind(WHO_TLS, addr)
            .await
            .map_err(|e| e.to_string())?;
        let certs = CertStore::new()?;
        let listening = Listening::start(
            socket,
            addr,
            WHO_TLS,
            Dispatch::Hosts(Arc::clone(&self.inner.table)),
            EdgeExtras {
                tls: Some(Arc::clone(&certs)),
                challenges: None,
            },
        )
        .map_err(|e| e.to_string())?;
        let bound = listening.addr;
        tokio::spawn(tls::watch(Arc::clone(&certs)));
        let mut https = lock(&self.inner.https);
        if let Some(raced) = https.as_ref() {
            // Another deploy started it meanwhile: keep that one.
            certs.stop.cancel();
            return Ok(raced.listening.addr);
        }
        *https = Some(Https { listening, certs });
        drop(https);
        // Redirects name the https port: rebuild now that it is known.
        self.rebuild(&lock(&self.inner.claims));
        Ok(bound)
    }

    /// The TLS listener's address, when it runs.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        lock(&self.inner.https).as_ref().map(|h| h.listening.addr)
    }

    fn certs(&self) -> Option<Arc<CertStore>> {
        lock(&self.inner.https)
            .as_ref()
            .map(|h| Arc::clone(&h.certs))
    }

    pub(crate) fn challenges(&self) -> &Arc<Challenges> {
        &self.inner.challenges
    }

    /// Gives `owner` (with `tls = "acme"`) the certificate in `cert_pem`/`key_pem`; `Err` when
    /// it cannot be used (the text names `what`, never the key).
    pub fn set_acme_cert(
        &self,
        owner: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
        what: &str,
    ) -> Result<(), String> {
        let certs = self
            .certs()
            .ok_or_else(|| "the TLS listener is not running".to_string())?;
        let provider = rustls::crypto::ring::default_provider();
        let loaded = tls::load_pem(cert_pem, key_pem, what, what, &provider)?;
        certs.set_cert(owner, loaded)
    }

    /// When `owner`'s certificate was issued and when it expires, and its serial.
    pub fn cert_validity(
        &self,
        owner: &str,
    ) -> Option<(std::time::SystemTime, std::time::SystemTime, String)> {
        self.certs().and_then(|c| c.cert_of(owner)).map(
            |LoadedCert {
                 not_before,
                 not_after,
                 serial,
                 ..
             }| (not_before, not_after, serial),
        )
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.listening.addr
    }

    /// Routes `hosts` (lowercase) under `prefix` to `proxy` for `owner` (`env/service`),
    /// replacing what `owner` claimed before. Refused, naming both, when another owner claims
    /// one of the same hosts with the same prefix.
    pub fn claim(
        &self,
        owner: &str,
        proxy: &Proxy,
        hosts: &[String],
        prefix: &str,
        tls: Option<&EdgeTls>,
    ) -> Result<(), String> {
        let mut claims = lock(&self.inner.claims);
        for (other, o) in claims.iter() {
            if other == owner || o.prefix != prefix {
                continue;
            }
            if let Some(host) = hosts.iter().find(|h| o.hosts.contains(h)) {
                let what = if prefix == "/" {
                    format!("host {host}")
                } else {
                    format!("host {host} with path_prefix {prefix}")
                };
                return Err(format!(
                    "{what} is already claimed by {other} on the shared listener {}: give {} another host or path_prefix, or `cutover down` the environment of {other}",
                    self.addr(),
                    proxy.service()
                ));
            }
        }
        match (tls, self.certs()) {
            (Some(tls), Some(certs)) => {
                let source = match &tls.source {
                    EdgeCertSource::Files { cert, key } => Source::Files {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    EdgeCertSource::Acme => Source::Acme,
                };
                certs
                    .claim(owner, hosts, source)
                    .map_err(|e| format!("{}: {e}", proxy.service()))?;
            }
            (Some(tls), None) => {
                return Err(format!(
                    "{} has tls, but the TLS listener on {} is not running",
                    proxy.service(),
                    tls.https
                ));
            }
            (None, Some(certs)) => certs.release(owner),
            (None, None) => {}
        }
        claims.insert(
            owner.to_owned(),
            Owned {
                service: proxy.service().to_owned(),
                hosts: hosts.to_vec(),
                prefix: prefix.to_owned(),
                shared: Arc::clone(proxy.shared()),
                redirect: tls.is_some_and(|t| t.redirect),
            },
        );
        self.rebuild(&claims);
        Ok(())
    }

    /// Takes `owner`'s claims off the listener.
    pub fn release(&self, owner: &str) {
        let mut claims = lock(&self.inner.claims);
        if claims.remove(owner).is_some() {
            self.rebuild(&claims);
        }
        if let Some(certs) = self.certs() {
            certs.release(owner);
        }
    }

    /// The services claiming something, as `(owner, service)`.
    pub fn owners(&self) -> Vec<(String, String)> {
        lock(&self.inner.claims)
            .iter()
            .map(|(owner, o)| (owner.clone(), o.service.clone()))
            .collect()
    }

    fn rebuild(&self, claims: &BTreeMap<String, Owned>) {
        let https_port = self.https_addr().map(|a| a.port());
        let mut hosts: HashMap<Box<str>, Vec<Claim>> = HashMap::new();
        for o in claims.values() {
            for host in &o.hosts {
                hosts.entry(host.as_str().into()).or_default().push(Claim {
                    prefix: o.prefix.as_str().into(),
                    shared: Arc::clone(&o.shared),
                    redirect: https_port.filter(|_| o.redirect),
                });
            }
        }
        let table = HostTable {
            hosts: hosts
                .into_iter()
                .map(|(host, mut claims)| {
                    // Longest prefix first: the first match is the most specific.
                    claims.sort_by_key(|c| std::cmp::Reverse(c.prefix.len()));
                    (host, claims.into_boxed_slice())
                })
                .collect(),
        };
        self.inner.table.store(Arc::new(table));
    }

    /// Stops accepting, lets in-flight requests finish for a few seconds, then closes every
    /// connection.
    pub async fn shutdown(&self) {
        let https = lock(&self.inner.https).take();
        if let Some(https) = https {
            https.certs.stop.cancel();
            tokio::join!(self.inner.listening.shutdown(), https.listening.shutdown());
        } else {
            self.inner.listening.shutdown().await;
        }
    }
}

impl Drop for EdgeInner {
    fn drop(&mut self) {
        if let Some(https) = lock(&self.https).as_ref() {
            https.certs.stop.cancel();
        }
    }
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("addr", &self.addr())
            .field("owners", &self.owners())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_and_trailing_dot() {
        assert_eq!(host_name("api.example.com:8080"), "api.example.com");
        assert_eq!(host_name("api.example.com."), "api.example.com");
        assert_eq!(host_name("api.example.com"), "api.example.com");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under("/anything", "/"));
        assert!(under("/api", "/api"));
        assert!(under("/api/v1", "/api"));
        assert!(!under("/apis", "/api"));
        assert!(!under("/", "/api"));
    }
}
