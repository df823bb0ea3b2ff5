//! The shared listener (`[proxy] http`): services claim hosts and path prefixes on it.
//!
//! [`Edge`] keeps every service's claim and, on each change, builds one immutable
//! [`HostTable`] swapped in with one `ArcSwap` store, like a route table. A request costs one
//! hash lookup of its host (lowercased only when it has capitals) and a scan of that host's
//! prefixes, longest first: no regex, no allocation on the common path.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response, StatusCode};

use super::forward::{ProxyBody, text};
use super::listener::{self, Dispatch, Listening};
use super::{Proxy, ProxyError, Shared, lock};

/// What the shared listener answers for a host (and path) no service claims.
const NOT_FOUND: &[u8] = b"no service answers this host and path here\n";

/// Who listens on the shared listener, in errors.
const WHO: &str = "the shared [proxy] http listener";

/// The shared listener's routing: host → its claims, longest path prefix first.
#[derive(Default)]
pub(crate) struct HostTable {
    hosts: HashMap<Box<str>, Box<[Claim]>>,
}

struct Claim {
    /// `/` (everything), or a prefix without a trailing `/`.
    prefix: Box<str>,
    shared: Arc<Shared>,
}

impl HostTable {
    /// The service for `req` by its host and path; `None`: answer [`not_found`].
    #[inline]
    pub(crate) fn route<B>(&self, req: &Request<B>) -> Option<Arc<Shared>> {
        let host = req
            .uri()
            .host()
            .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
            .map(host_name)
            .unwrap_or_default();
        let claims = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get(host.to_ascii_lowercase().as_str())
        } else {
            self.hosts.get(host)
        };
        let path = req.uri().path();
        claims
            .and_then(|claims| claims.iter().find(|c| under(path, &c.prefix)))
            .map(|c| Arc::clone(&c.shared))
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
}

impl Edge {
    /// Binds `addr` and serves it with no claims (every request 404) until [`Edge::claim`].
    pub async fn bind(addr: SocketAddr) -> Result<Edge, ProxyError> {
        let socket = listener::bind(WHO, addr).await?;
        let table = Arc::new(ArcSwap::from_pointee(HostTable::default()));
        let listening = Listening::start(socket, addr, WHO, Dispatch::Hosts(Arc::clone(&table)))?;
        Ok(Edge {
            inner: Arc::new(EdgeInner {
                table,
                claims: Mutex::new(BTreeMap::new()),
                listening,
            }),
        })
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
        claims.insert(
            owner.to_owned(),
            Owned {
                service: proxy.service().to_owned(),
                hosts: hosts.to_vec(),
                prefix: prefix.to_owned(),
                shared: Arc::clone(proxy.shared()),
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
    }

    /// The services claiming something, as `(owner, service)`.
    pub fn owners(&self) -> Vec<(String, String)> {
        lock(&self.inner.claims)
            .iter()
            .map(|(owner, o)| (owner.clone(), o.service.clone()))
            .collect()
    }

    fn rebuild(&self, claims: &BTreeMap<String, Owned>) {
        let mut hosts: HashMap<Box<str>, Vec<Claim>> = HashMap::new();
        for o in claims.values() {
            for host in &o.hosts {
                hosts.entry(host.as_str().into()).or_default().push(Claim {
                    prefix: o.prefix.as_str().into(),
                    shared: Arc::clone(&o.shared),
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
        self.inner.listening.shutdown().await;
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
