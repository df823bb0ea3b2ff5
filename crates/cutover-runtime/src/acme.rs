//! Certificates over ACME for services with `tls = "acme"`: the account, HTTP-01 orders
//! answered on the shared `[proxy] http` listener, and renewal in the background.
//!
//! State lives in `.cutover/acme/`: `account.json` (the account's key and URL, mode 0600: a
//! secret, never logged) and `certs/<first host>.pem` / `.key` (the key mode 0600). A deploy
//! waits for its first certificate, so a failed order fails the deploy with the ACME server's
//! words; renewals happen in a task per service, which logs a failure and tries again.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::agent::log;
use crate::api::types::AcmeSpec;
use crate::proxy::Edge;

/// The longest an order may take, validation included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// After a failed renewal, the next try comes this much later.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// A renewal check sleeps at most this long at a time (the clock may jump).
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Never renew again sooner than this after an issuance.
const MIN_SPACING: Duration = Duration::from_secs(2);

/// `account.json`: which directory the account belongs to, and its credentials.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Issues and renews the agent's ACME certificates.
#[derive(Default)]
pub(crate) struct Issuer {
    /// The renewal task of each owner (`env/service`).
    renewals: Mutex<HashMap<String, CancellationToken>>,
    /// One order at a time: accounts are created once, orders do not race.
    ordering: tokio::sync::Mutex<()>,
}

impl Issuer {
    /// Makes sure `owner` serves a certificate for `hosts` from `spec`'s ACME server: the one
    /// stored under `dir` when it still covers them and is not due, else a new one now. Then
    /// keeps it renewed.
    pub(crate) async fn ensure(
        self: &Arc<Self>,
        dir: &Path,
        edge: &Edge,
        owner: &str,
        hosts: &[String],
        spec: &AcmeSpec,
    ) -> Result<(), String> {
        let (cert_path, key_path) = cert_paths(dir, hosts);
        let stored = match (std::fs::read(&cert_path), std::fs::read(&key_path)) {
            (Ok(cert), Ok(key)) => edge
                .set_acme_cert(owner, &cert, &key, &cert_path.display().to_string())
                .is_ok(),
            _ => false,
        };
        let usable = stored
            && stored_hosts(&cert_path).as_deref() == Some(hosts)
            && due_in(edge, owner, spec).is_some_and(|d| !d.is_zero());
        if !usable {
            self.issue(dir, edge, owner, hosts, spec).await?;
        }
        let stop = CancellationToken::new();
        let previous = self
            .renewals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(owner.to_owned(), stop.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        tokio::spawn(renew(
            Arc::clone(self),
            dir.to_path_buf(),
            edge.clone(),
            owner.to_owned(),
            hosts.to_vec(),
            spec.clone(),
            stop,
        ));
        Ok(())
    }

    /// Orders a certificate for `hosts`, stores it and gives it to the edge.
    async fn issue(
        &self,
        dir: &Path,
        edge: &Edge,
        owner: &str,
        hosts: &[String],
        spec: &AcmeSpec,
    ) -> Result<(), String> {
        let _one = self.ordering.lock().await;
        log(&format!(
            "{owner}: asking {} for a certificate for {}",
            spec.directory,
            hosts.join(", ")
        ));
        let (cert_pem, key_pem) = match tokio::time::timeout(
            ORDER_TIMEOUT,
            order(dir, edge, hosts, spec),
        )
        .await
        {
            Ok(result) => result?,
            Err(_) => {
                return Err(format!(
                    "the ACME order for {} at {} took longer than {}s: check that the ACME server reaches this host's [proxy] http listener on port 80 for each host",
                    hosts.join(", "),
                    spec.directory,
                    ORDER_TIMEOUT.as_secs()
                ));
            }
        };
        let (cert_path, key_path) = cert_paths(dir, hosts);
        write_private(&key_path, key_pem.as_bytes())?;
        write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
        write_file(
            &cert_path.with_extension("hosts"),
            hosts.join("\n").as_bytes(),
            0o644,
        )?;
        edge.set_acme_cert(
            owner,
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            &cert_path.display().to_string(),
        )?;
        let serial = edge
            .cert_validity(owner)
            .map(|(_, _, serial)| serial)
            .unwrap_or_default();
        log(&format!(
            "{owner}: certificate for {} issued (serial {serial}), stored in {}",
            hosts.join(", "),
            cert_path.display()
        ));
        Ok(())
    }
}

/// How long until `owner`'s certificate is due for renewal (zero: now); `None` when it has none.
fn due_in(edge: &Edge, owner: &str, spec: &AcmeSpec) -> Option<Duration> {
    let (not_before, not_after, _) = edge.cert_validity(owner)?;
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let before = spec
        .renew_before_ms
        .map_or(lifetime / 3, Duration::from_millis);
    let renew_at = not_after.checked_sub(before).unwrap_or(not_before);
    Some(
        renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Renews `owner`'s certificate whenever it is due, until `stop`.
async fn renew(
    issuer: Arc<Issuer>,
    dir: PathBuf,
    edge: Edge,
    owner: String,
    hosts: Vec<String>,
    spec: AcmeSpec,
    stop: CancellationToken,
) {
    let mut wait = due_in(&edge, &owner, &spec)
        .unwrap_or_default()
        .max(MIN_SPACING);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
        }
        if due_in(&edge, &owner, &spec).is_some_and(|d| !d.is_zero()) {
            wait = due_in(&edge, &owner, &spec).unwrap_or(RETRY_AFTER);
            continue;
        }
        wait = match issuer.issue(&dir, &edge, &owner, &hosts, &spec).await {
            Ok(()) => due_in(&edge, &owner, &spec)
                .unwrap_or(RETRY_AFTER)
                .max(MIN_SPACING),
            Err(e) => {
                log(&format!(
                    "{owner}: renewing the certificate failed (the current one stays, retry in {}s): {e}",
                    RETRY_AFTER.as_secs()
                ));
                RETRY_AFTER
            }
        };
    }
}

/// One ACME order: account, HTTP-01 challenges answered by the edge, CSR, certificate.
/// Returns the certificate chain and the new private key, both PEM.
async fn order(
    dir: &Path,
    edge: &Edge,
    hosts: &[String],
    spec: &AcmeSpec,
) -> Result<(String, String), String> {
    let account = account(dir, spec).await?;
    let identifiers: Vec<Identifier> = hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("the ACME server {} refused the order: {e}", spec.directory))?;
    let challenges = Arc::clone(edge.challenges());
    let mut tokens = Tokens {
        challenges: &challenges,
        tokens: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result.map_err(|e| format!("ACME authorization: {e}"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => {
                return Err(format!(
                    "ACME authorization for {} is {other:?}",
                    authz.identifier()
                ));
            }
        }
        let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
            format!(
                "the ACME server {} offers no HTTP-01 challenge, the only kind cutover answers",
                spec.directory
            )
        })?;
        let key_authorization = challenge.key_authorization();
        challenges.insert(&challenge.token, key_authorization.as_str());
        tokens.tokens.push(challenge.token.clone());
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("ACME challenge: {e}"))?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT);
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(|e| format!("waiting for the ACME order: {e}"))?;
    drop(tokens);
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_else(|| format!("the order is {status:?}"));
        return Err(format!(
            "the ACME server {} did not validate {}: {why}: it must reach http://HOST/.well-known/acme-challenge/ on [proxy] http (port 80) for each host",
            spec.directory,
            hosts.join(", ")
        ));
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("finalizing the ACME order: {e}"))?;
    let cert_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(|e| format!("fetching the ACME certificate: {e}"))?;
    Ok((cert_pem, key_pem))
}

/// Challenge tokens answered while an order is validated, removed when it is over.
struct Tokens<'a> {
    challenges: &'a crate::proxy::Challenges,
    tokens: Vec<String>,
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.challenges.remove(t);
        }
    }
}

/// The stored account for `spec.directory`, or a new one (stored, mode 0600).
async fn account(dir: &Path, spec: &AcmeSpec) -> Result<Account, String> {
    let builder = || match &spec.ca {
        Some(ca) => Account::builder_with_root(ca).map_err(|e| {
            format!(
                "cannot use [proxy.acme] ca = {:?}: {e}: it must be a PEM certificate file",
                ca.display()
            )
        }),
        None => Account::builder().map_err(|e| format!("cannot set up the ACME client: {e}")),
    };
    let path = dir.join("account.json");
    if let Ok(text) = std::fs::read(&path)
        && let Ok(stored) = serde_json::from_slice::<StoredAccount>(&text)
        && stored.directory == spec.directory
    {
        return builder()?
            .from_credentials(stored.credentials)
            .await
            .map_err(|e| {
                format!(
                    "the ACME server {} refused the stored account: {e}",
                    spec.directory
                )
            });
    }
    let contact = format!("mailto:{}", spec.email);
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &[&contact],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            spec.directory.clone(),
            None,
        )
        .await
        .map_err(|e| {
            format!(
                "cannot create an ACME account at {}: {e}: check [proxy.acme] directory (and `ca` for a private ACME server)",
                spec.directory
            )
        })?;
    let stored = StoredAccount {
        directory: spec.directory.clone(),
        credentials,
    };
    let text = serde_json::to_vec(&stored).map_err(|e| format!("ACME account: {e}"))?;
    write_private(&path, &text)?;
    log(&format!("ACME account created at {}", spec.directory));
    Ok(account)
}

/// `certs/<first host>.pem` and `.key`.
fn cert_paths(dir: &Path, hosts: &[String]) -> (PathBuf, PathBuf) {
    let name = hosts.first().map_or("certificate", String::as_str);
    let certs = dir.join("certs");
    (
        certs.join(format!("{name}.pem")),
        certs.join(format!("{name}.key")),
    )
}

/// The hosts a stored certificate was ordered for.
fn stored_hosts(cert: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(cert.with_extension("hosts")).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_file(path, bytes, 0o600)
}

/// Writes `path` whole (temp file with `mode`, then rename).
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| format!("cannot write {}: {e}", path.display()))
}
