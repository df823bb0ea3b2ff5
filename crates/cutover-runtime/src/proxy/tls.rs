//! TLS on the shared `[proxy] https` listener: certificates per host (SNI), reloaded when their
//! files change, and the one rustls `ServerConfig` every handshake uses.
//!
//! [`CertStore`] keeps each owner's (`env/service`) hosts and certificate. Whenever one
//! changes, it builds an immutable [`SniResolver`] (host → certificate, a precomputed map) and
//! a new `ServerConfig` around it, swapped in with one `ArcSwap` store: a handshake loads the
//! config once, and connections already open keep the one they started with. The session
//! cache and the ticket keys outlive the swaps, so resumption survives a reload.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::lock;

/// ALPN: HTTP/2 first, HTTP/1.1 for clients without it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// Sessions remembered for resumption (TLS 1.2 ids and TLS 1.3 stateful tickets).
const SESSION_CACHE: usize = 4096;
/// How often certificate and key files are checked for changes.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// A certificate with what the proxy reports about it.
#[derive(Debug, Clone)]
pub(crate) struct LoadedCert {
    pub(crate) key: Arc<CertifiedKey>,
    /// The leaf's serial number, hex.
    pub(crate) serial: String,
    /// When the leaf expires.
    pub(crate) not_after: SystemTime,
    /// When the leaf became valid.
    pub(crate) not_before: SystemTime,
}

/// Where an owner's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// PEM files, watched.
    Files { cert: PathBuf, key: PathBuf },
    /// ACME: the agent's issuer puts certificates here.
    Acme,
}

struct Owned {
    hosts: Vec<String>,
    source: Source,
    cert: Option<LoadedCert>,
    /// The files' modification times and sizes when last read (`Files` only).
    stamp: Option<Stamp>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

/// Every owner's certificates, and the `ServerConfig` built from them.
pub(crate) struct CertStore {
    config: ArcSwap<ServerConfig>,
    owners: Mutex<BTreeMap<String, Owned>>,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
    pub(crate) stop: CancellationToken,
}

impl CertStore {
    /// An empty store (every handshake fails: no certificate) with fresh session state.
    pub(crate) fn new() -> Result<Arc<CertStore>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let sessions: Arc<dyn StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot make TLS session ticket keys: {e}"))?;
        let config = build_config(&provider, &sessions, &ticketer, HashMap::new())?;
        Ok(Arc::new(CertStore {
            config: ArcSwap::from_pointee(config),
            owners: Mutex::new(BTreeMap::new()),
            provider,
            sessions,
            ticketer,
            stop: CancellationToken::new(),
        }))
    }

    /// The config for the next handshake.
    #[inline]
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Serves `hosts` of `owner` with the certificate from `source`: files are read now (an
    /// error names the file and what is wrong with it); an ACME owner waits for
    /// [`CertStore::set_cert`].
    pub(crate) fn claim(
        &self,
        owner: &str,
        hosts: &[String],
        source: Source,
    ) -> Result<(), String> {
        let mut owners = lock(&self.owners);
        let (cert, stamp) = match &source {
            Source::Files { cert, key } => {
                let same = owners
                    .get(owner)
                    .filter(|o| o.source == source && o.hosts == hosts && o.cert.is_some());
                match same {
                    Some(o) if o.stamp == Some(stamp_of(cert, key)) => (o.cert.clone(), o.stamp),
                    _ => {
                        let stamp = stamp_of(cert, key);
                        let loaded = load_files(cert, key, &self.provider)?;
                        check_names(&loaded, hosts, &cert.display().to_string())?;
                        (Some(loaded), Some(stamp))
                    }
                }
            }
            Source::Acme => (
                owners
                    .get(owner)
                    .filter(|o| o.source == Source::Acme && o.hosts == hosts)
                    .and_then(|o| o.cert.clone()),
                None,
            ),
        };
        owners.insert(
            owner.to_owned(),
            Owned {
                hosts: hosts.to_vec(),
                source,
                cert,
                stamp,
            },
        );
        self.rebuild(&owners)
    }

    /// Gives an ACME owner its (new) certificate.
    pub(crate) fn set_cert(&self, owner: &str, cert: LoadedCert) -> Result<(), String> {
        let mut owners = lock(&self.owners);
        if let Some(o) = owners.get_mut(owner) {
            o.cert = Some(cert);
        }
        self.rebuild(&owners)
    }

    /// The certificate `owner` serves now.
    pub(crate) fn cert_of(&self, owner: &str) -> Option<LoadedCert> {
        lock(&self.owners).get(owner).and_then(|o| o.cert.clone())
    }

    /// Takes `owner`'s certificates off the listener.
    pub(crate) fn release(&self, owner: &str) {
        let mut owners = lock(&self.owners);
        if owners.remove(owner).is_some() {
            // Building from certificates that were served already cannot fail in a new way.
            let _ = self.rebuild(&owners);
        }
    }

    /// Re-reads the files of owners whose files changed; a file that cannot be used now keeps
    /// the certificate served before, and the error is returned (once per change) to be logged.
    pub(crate) fn reload_changed(&self) -> Vec<String> {
        let mut owners = lock(&self.owners);
        let mut errors = Vec::new();
        let mut changed = false;
        for (owner, o) in owners.iter_mut() {
            let Source::Files { cert, key } = &o.source else {
                continue;
            };
            let stamp = stamp_of(cert, key);
            if o.stamp == Some(stamp) {
                continue;
            }
            o.stamp = Some(stamp);
            match load_files(cert, key, &self.provider)
                .and_then(|l| check_names(&l, &o.hosts, &cert.display().to_string()).map(|()| l))
            {
                Ok(loaded) => {
                    crate::agent::log(&format!(
                        "{owner}: reloaded the certificate {} (serial {})",
                        cert.display(),
                        loaded.serial
                    ));
                    o.cert = Some(loaded);
                    changed = true;
                }
                Err(e) => errors.push(format!(
                    "{owner}: keeping the certificate served before: {e}"
                )),
            }
        }
        if changed && let Err(e) = self.rebuild(&owners) {
            errors.push(e);
        }
        errors
    }

    fn rebuild(&self, owners: &BTreeMap<String, Owned>) -> Result<(), String> {
        let mut by_host = HashMap::new();
        for o in owners.values() {
            if let Some(cert) = &o.cert {
                for host in &o.hosts {
                    by_host.insert(host.as_str().into(), Arc::clone(&cert.key));
                }
            }
        }
        let config = build_config(&self.provider, &self.sessions, &self.ticketer, by_host)?;
        self.config.store(Arc::new(config));
        Ok(())
    }
}

/// Checks the watched files every second until `store.stop`, reloading what changed.
pub(crate) async fn watch(store: Arc<CertStore>) {
    loop {
        tokio::select! {
            () = store.stop.cancelled() => return,
            () = tokio::time::sleep(WATCH_PERIOD) => {}
        }
        let s = Arc::clone(&store);
        let Ok(errors) = tokio::task::spawn_blocking(move || s.reload_changed()).await else {
            continue;
        };
        for e in errors {
            crate::agent::log(&e);
        }
    }
}

fn build_config(
    provider: &Arc<CryptoProvider>,
    sessions: &Arc<dyn StoresServerSessions>,
    ticketer: &Arc<dyn ProducesTickets>,
    by_host: HashMap<Box<str>, Arc<CertifiedKey>>,
) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { by_host }));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::clone(sessions);
    config.ticketer = Arc::clone(ticketer);
    Ok(config)
}

/// Host name (SNI) → certificate, built once per change.
#[derive(Debug)]
struct SniResolver {
    by_host: HashMap<Box<str>, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Without SNI (a client dialing an IP address) there is no host to choose by.
        let name = hello.server_name()?;
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host
                .get(name.to_ascii_lowercase().as_str())
                .cloned()
        } else {
            self.by_host.get(name).cloned()
        }
    }
}

fn stamp_of(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).map_or((None, 0), |m| (m.modified().ok(), m.len()));
    [one(cert), one(key)]
}

/// Reads a PEM certificate chain and its private key, checking that they belong together.
/// Errors name the file and the fix, never the key's content.
pub(crate) fn load_files(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<LoadedCert, String> {
    let cert_pem = std::fs::read(cert).map_err(|e| {
        format!(
            "cannot read the certificate {}: {e}: check `tls.cert` in cutover.toml",
            cert.display()
        )
    })?;
    let key_pem = std::fs::read(key).map_err(|e| {
        format!(
            "cannot read the private key {}: {e}: check `tls.key` in cutover.toml",
            key.display()
        )
    })?;
    load_pem(
        &cert_pem,
        &key_pem,
        &cert.display().to_string(),
        &key.display().to_string(),
        provider,
    )
}

/// [`load_files`] on PEM text in memory; `cert_name` and `key_name` say where it came from.
pub(crate) fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
    provider: &CryptoProvider,
) -> Result<LoadedCert, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_name} is not a valid PEM certificate file: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "{cert_name} holds no certificate: it must be PEM (-----BEGIN CERTIFICATE-----), the server's certificate first, then its intermediates"
        ));
    }
    // The key's own error text could quote nothing secret, but say only what kind it is.
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{key_name} holds no private key: it must be PEM (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ),
        _ => format!("{key_name} is not a valid PEM private key file"),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| format!("{key_name}: this kind of private key is not supported (use RSA, ECDSA P-256/P-384 or Ed25519)"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(format!(
                "the private key {key_name} does not belong to the certificate {cert_name}: give `tls.key` the key the certificate was issued for"
            ));
        }
        // Unknown: the key could not be compared (rustls says so for some key kinds); serve it.
        Err(_) => {}
    }
    let (serial, not_before, not_after) = leaf_facts(&certified.cert[0])
        .ok_or_else(|| format!("{cert_name}: the first certificate cannot be parsed as X.509"))?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        serial,
        not_after,
        not_before,
    })
}

/// Serial (hex), not-before and not-after of a certificate.
fn leaf_facts(der: &CertificateDer<'_>) -> Option<(String, SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
        }
    };
    let validity = cert.validity();
    Some((
        cert.raw_serial_as_string().replace(':', ""),
        at(validity.not_before)?,
        at(validity.not_after)?,
    ))
}

/// The DNS names a certificate is valid for (subject alternative names, else the CN).
fn names_of(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
            .collect();
    }
    names
}

fn covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

/// Every host must be named by the certificate, or clients would refuse it.
fn check_names(cert: &LoadedCert, hosts: &[String], cert_name: &str) -> Result<(), String> {
    let names = names_of(&cert.key.cert[0]);
    let missing: Vec<&str> = hosts
        .iter()
        .filter(|h| !names.iter().any(|n| covers(n, h)))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the certificate {cert_name} is not valid for {} (it names {}): use a certificate whose subject alternative names include every host of the service",
        missing.join(", "),
        if names.is_empty() {
            "no host".to_string()
        } else {
            names.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("*.example.com", "api.example.com"));
        assert!(!covers("*.example.com", "a.b.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("api.example.com", "api.example.com"));
        assert!(!covers("api.example.com", "www.example.com"));
    }

    #[test]
    fn garbage_is_refused_with_the_file_named() {
        let provider = rustls::crypto::ring::default_provider();
        let e = load_pem(b"nothing", b"nothing", "c.pem", "k.pem", &provider).unwrap_err();
        assert!(e.contains("c.pem holds no certificate"), "{e}");
    }
}
