//! `[[notify]]` webhooks: `deploy.started`, `deploy.succeeded`, `deploy.failed`, `rollback` and
//! `approval.requested`, POSTed as JSON (or Slack's `{"text", "blocks"}`), signed with
//! HMAC-SHA256 when the webhook has a `secret`.
//!
//! # Theory of operation
//! A slow or dead receiver must never slow or fail a deploy, so nothing here runs on the run's
//! path: [`WebhookReporter`] turns (already redacted) events into [`Notification`]s and queues
//! them; one delivery thread per webhook POSTs them in order, each try bounded by
//! [`TRY_TIMEOUT`], [`TRIES`] tries with a short backoff. At the end of the command
//! [`Notifier::finish`] gives what is still queued at most a grace period (the CLI uses
//! [`FINISH_GRACE`]) and returns the deliveries that failed, to be shown as warnings. A delivery
//! still going when the grace ends is abandoned with the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use cutover_config::{EnvValue, Notify, NotifyFormat};
use cutover_store::{RunKind, RunStatus};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use sha2::Sha256;

use super::Reporter;
use crate::event::{Event, EventKind, Outcome};
use crate::redact::Redactor;
use crate::summary::{RunSummary, ServiceSummary};

/// Tries per delivery.
pub const TRIES: u32 = 3;
/// How long one try may take (connect, send, response head).
pub const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before the second try; doubled before each later one.
pub const BACKOFF: Duration = Duration::from_millis(250);
/// How long a command waits at its end for deliveries still queued or under way.
pub const FINISH_GRACE: Duration = Duration::from_secs(2);

/// One webhook, its secret resolved.
#[derive(Clone)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// Body format.
    pub format: NotifyFormat,
    /// The events it wants.
    pub on: Vec<String>,
    /// The HMAC key (a secret: never logged).
    secret: Option<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("format", &self.format)
            .field("on", &self.on)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Webhook {
    /// The webhook `n` with its `secret` taken from `secrets` (a secret reference) or the
    /// config (a plain value).
    pub fn from_config(n: &Notify, secrets: &BTreeMap<String, String>) -> Webhook {
        Webhook {
            url: n.url.clone(),
            format: n.format,
            on: n.on.clone(),
            secret: match &n.secret {
                Some(EnvValue::Plain(v)) => Some(v.clone()),
                Some(EnvValue::Secret(name)) => secrets.get(name).cloned(),
                None => None,
            },
        }
    }
}

/// A service in a webhook body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotifiedService {
    /// Service name.
    pub name: String,
    /// Its release in this run, when one was made.
    pub release: Option<String>,
    /// Its result (`succeeded`, `failed`, `rolled_back`...), `in_progress` while the run goes
    /// on, `awaiting_approval` at the gate.
    pub result: String,
}

/// The JSON body: `{"event", "run", "env", "services", "at", "reason"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// `deploy.started`, `deploy.succeeded`, `deploy.failed`, `rollback` or `approval.requested`.
    pub event: String,
    /// The run id.
    pub run: String,
    /// The environment.
    pub env: String,
    /// The services concerned.
    pub services: Vec<NotifiedService>,
    /// When it happened (RFC 3339 UTC).
    pub at: String,
    /// Why, for failures, rollbacks and approvals.
    pub reason: Option<String>,
}

impl Notification {
    /// A notification of `event` at `at`.
    pub fn new(
        event: &str,
        run: &str,
        env: &str,
        services: Vec<NotifiedService>,
        at: DateTime<Utc>,
        reason: Option<String>,
    ) -> Self {
        Notification {
            event: event.to_string(),
            run: run.to_string(),
            env: env.to_string(),
            services,
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            reason,
        }
    }

    fn redact(&mut self, r: &Redactor) {
        for s in [&mut self.run, &mut self.env, &mut self.at] {
            r.redact_in_place(s);
        }
        if let Some(reason) = &mut self.reason {
            r.redact_in_place(reason);
        }
        for s in &mut self.services {
            r.redact_in_place(&mut s.name);
            r.redact_in_place(&mut s.result);
            if let Some(rel) = &mut s.release {
                r.redact_in_place(rel);
            }
        }
    }

    /// One line for people (Slack's `text`).
    pub fn headline(&self) -> String {
        let services = self
            .services
            .iter()
            .map(|s| match &s.release {
                Some(r) => format!("{} {r} {}", s.name, s.result),
                None => format!("{} {}", s.name, s.result),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = format!("cutover {}: {} in {}", self.event, self.run, self.env);
        if !services.is_empty() {
            text.push_str(&format!(" ({services})"));
        }
        if let Some(r) = &self.reason {
            text.push_str(&format!(": {r}"));
        }
        text
    }

    /// The body in `format`.
    pub fn body(&self, format: NotifyFormat) -> serde_json::Value {
        match format {
            NotifyFormat::Json => serde_json::to_value(self).unwrap_or_default(),
            NotifyFormat::Slack => {
                let field = |name: &str, value: &str| serde_json::json!({ "type": "mrkdwn", "text": format!("*{name}*\n{value}") });
                let mut fields = vec![
                    field("event", &self.event),
                    field("run", &self.run),
                    field("env", &self.env),
                    field("at", &self.at),
                ];
                if let Some(r) = &self.reason {
                    fields.push(field("reason", r));
                }
                let services = self
                    .services
                    .iter()
                    .map(|s| {
                        format!(
                            "• *{}* `{}` {}",
                            s.name,
                            s.release.as_deref().unwrap_or("-"),
                            s.result
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let mut blocks = vec![
                    serde_json::json!({ "type": "section", "text": { "type": "mrkdwn", "text": self.headline() } }),
                    serde_json::json!({ "type": "section", "fields": fields }),
                ];
                if !services.is_empty() {
                    blocks.push(serde_json::json!({
                        "type": "section",
                        "text": { "type": "mrkdwn", "text": format!("*services*\n{services}") }
                    }));
                }
                serde_json::json!({ "text": self.headline(), "blocks": blocks })
            }
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of body with key>`, the `X-Cutover-Signature` header value.
pub fn signature(key: &str, body: &[u8]) -> String {
    let mut out = String::from("sha256=");
    // HMAC accepts keys of any length; the error branch cannot happen.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        mac.update(body);
        for b in mac.finalize().into_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// One queued delivery.
struct Delivery {
    event: String,
    body: Vec<u8>,
    signature: Option<String>,
}

/// The queues into the delivery threads.
struct Queues {
    hooks: Vec<(Webhook, mpsc::Sender<Delivery>)>,
    redactor: Redactor,
}

impl Queues {
    fn send(&self, mut n: Notification) {
        n.redact(&self.redactor);
        for (hook, tx) in &self.hooks {
            if !hook.on.contains(&n.event) {
                continue;
            }
            let text = serde_json::to_string(&n.body(hook.format)).unwrap_or_default();
            let body = self.redactor.redact(&text).into_owned().into_bytes();
            let signature = hook.secret.as_deref().map(|k| signature(k, &body));
            let _ = tx.send(Delivery {
                event: n.event.clone(),
                body,
                signature,
            });
        }
    }
}

/// The webhooks of a command and their delivery threads.
pub struct Notifier {
    queues: Option<Arc<Queues>>,
    threads: Vec<JoinHandle<()>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Notifier {
    /// Starts a delivery thread per webhook. `secret_values` (and the webhooks' own keys) are
    /// masked in every body.
    pub fn new(hooks: Vec<Webhook>, secret_values: impl IntoIterator<Item = String>) -> Notifier {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut values: Vec<String> = secret_values.into_iter().collect();
        values.extend(hooks.iter().filter_map(|h| h.secret.clone()));
        let redactor = Redactor::new(values);
        let mut queued = Vec::new();
        let mut threads = Vec::new();
        for hook in hooks {
            let (tx, rx) = mpsc::channel::<Delivery>();
            let (url, failed) = (hook.url.clone(), failures.clone());
            let thread = std::thread::Builder::new()
                .name("cutover-webhook".into())
                .spawn(move || deliver_all(&url, &rx, &failed));
            match thread {
                Ok(t) => {
                    threads.push(t);
                    queued.push((hook, tx));
                }
                Err(e) => failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("webhook {}: no delivery thread: {e}", hook.url)),
            }
        }
        Notifier {
            queues: Some(Arc::new(Queues {
                hooks: queued,
                redactor,
            })),
            threads,
            failures,
        }
    }

    /// Queues `n` for every webhook whose `on` lists its event; never blocks.
    pub fn send(&self, n: Notification) {
        if let Some(q) = &self.queues {
            q.send(n);
        }
    }

    /// A reporter that turns a deploy run's events into notifications for these webhooks.
    pub fn reporter(&self) -> WebhookReporter {
        WebhookReporter {
            queues: self.queues.clone(),
            deploy: false,
            env: String::new(),
            releases: HashMap::new(),
        }
    }

    /// Closes the queues and waits at most `grace` for the deliveries still queued or under
    /// way; returns the deliveries that failed (one sentence each). Deliveries still going
    /// after `grace` are abandoned.
    pub fn finish(mut self, grace: Duration) -> Vec<String> {
        self.queues = None;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.threads.iter().all(JoinHandle::is_finished) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(PoisonError::into_inner));
        if !self.threads.iter().all(JoinHandle::is_finished) {
            failures.push(format!(
                "webhook deliveries still under way after {} were abandoned",
                cutover_config::format_duration(grace)
            ));
        }
        failures
    }
}

/// Delivers every queued body to `url` in order, until the queue closes.
fn deliver_all(url: &str, rx: &mpsc::Receiver<Delivery>, failures: &Mutex<Vec<String>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("webhook {url}: cannot start its runtime: {e}"));
            return;
        }
    };
    runtime.block_on(async {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        while let Ok(d) = rx.recv() {
            let mut last = String::new();
            let mut delivered = false;
            for attempt in 0..TRIES {
                if attempt > 0 {
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
                }
                match tokio::time::timeout(TRY_TIMEOUT, post(&client, url, &d)).await {
                    Ok(Ok(())) => {
                        delivered = true;
                        break;
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => {
                        last = format!(
                            "no answer within {}",
                            cutover_config::format_duration(TRY_TIMEOUT)
                        );
                    }
                }
            }
            if !delivered {
                failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!(
                        "webhook {url}: {} not delivered after {TRIES} tries: {last}",
                        d.event
                    ));
            }
        }
    });
}

async fn post<C>(
    client: &hyper_util::client::legacy::Client<C, Full<Bytes>>,
    url: &str,
    d: &Delivery,
) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut req = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CONTENT_LENGTH, d.body.len())
        .header(
            hyper::header::USER_AGENT,
            concat!("cutover/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Cutover-Event", d.event.as_str());
    if let Some(sig) = &d.signature {
        req = req.header("X-Cutover-Signature", sig.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|e| format!("bad request: {e}"))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| match std::error::Error::source(&e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        })?;
    let status = resp.status();
    // Read the answer so the connection can be reused; its content does not matter.
    let _ = resp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

/// Turns a deploy run's events into notifications: `deploy.started` at the start,
/// `approval.requested` at the approval gate, `deploy.succeeded` or `deploy.failed` at the end,
/// and `rollback` for the services that ended `rolled_back`.
pub struct WebhookReporter {
    queues: Option<Arc<Queues>>,
    deploy: bool,
    env: String,
    releases: HashMap<String, String>,
}

impl WebhookReporter {
    fn send(&self, n: Notification) {
        if let Some(q) = &self.queues {
            q.send(n);
        }
    }

    fn finished(&self, event: &Event, status: RunStatus, summary: &RunSummary) {
        let services: Vec<NotifiedService> = summary
            .services
            .iter()
            .map(|s| NotifiedService {
                name: s.name.clone(),
                release: s.release.clone(),
                result: s.result.as_str().to_string(),
            })
            .collect();
        let reason = summary
            .services
            .iter()
            .filter(|s| s.result.is_bad())
            .find_map(|s| s.reason.as_ref().map(|r| format!("{}: {r}", s.name)))
            .or_else(|| (status == RunStatus::Canceled).then(|| "canceled".to_string()));
        let name = match status {
            RunStatus::Succeeded => "deploy.succeeded",
            _ => "deploy.failed",
        };
        self.send(Notification::new(
            name,
            &event.run,
            &summary.env,
            services,
            event.at,
            if status == RunStatus::Succeeded {
                None
            } else {
                reason
            },
        ));
        let rolled: Vec<&ServiceSummary> = summary
            .services
            .iter()
            .filter(|s| s.result == Outcome::RolledBack)
            .collect();
        if let Some(n) = rollback_notification(&event.run, &summary.env, &rolled, event.at) {
            self.send(n);
        }
    }
}

/// The `rollback` notification for services of run `run` that ended `rolled_back` (a canary
/// judgement, `--atomic`, a failed post_deploy hook); None when there are none.
pub fn rollback_notification(
    run: &str,
    env: &str,
    rolled: &[&ServiceSummary],
    at: DateTime<Utc>,
) -> Option<Notification> {
    if rolled.is_empty() {
        return None;
    }
    let reason = rolled
        .iter()
        .filter_map(|s| s.reason.as_ref().map(|r| format!("{}: {r}", s.name)))
        .collect::<Vec<_>>()
        .join("; ");
    Some(Notification::new(
        "rollback",
        run,
        env,
        rolled
            .iter()
            .map(|s| NotifiedService {
                name: s.name.clone(),
                release: s.release.clone(),
                result: s.result.as_str().to_string(),
            })
            .collect(),
        at,
        (!reason.is_empty()).then_some(reason),
    ))
}

impl Reporter for WebhookReporter {
    fn report(&mut self, event: &Event) -> Result<(), String> {
        match &event.kind {
            EventKind::RunStarted {
                kind,
                env,
                services,
            } => {
                self.deploy = *kind == RunKind::Deploy;
                self.env.clone_from(env);
                if self.deploy {
                    let services = services
                        .iter()
                        .filter(|s| s.affected)
                        .map(|s| NotifiedService {
                            name: s.name.clone(),
                            release: None,
                            result: "in_progress".to_string(),
                        })
                        .collect();
                    self.send(Notification::new(
                        "deploy.started",
                        &event.run,
                        env,
                        services,
                        event.at,
                        None,
                    ));
                }
            }
            EventKind::ReleaseCreated {
                service, release, ..
            } => {
                self.releases.insert(service.clone(), release.clone());
            }
            EventKind::ApprovalRequested {
                run, env, waiting, ..
            } if self.deploy => {
                let services = waiting
                    .iter()
                    .map(|w| NotifiedService {
                        name: w.service.clone(),
                        release: Some(w.release.clone()),
                        result: "awaiting_approval".to_string(),
                    })
                    .collect();
                self.send(Notification::new(
                    "approval.requested",
                    run,
                    env,
                    services,
                    event.at,
                    Some(format!(
                        "waiting for approval: `cutover approve {run}` lets it go on"
                    )),
                ));
            }
            EventKind::RunFinished { status, summary } if self.deploy => {
                self.finished(event, *status, summary);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bodies_carry_the_design_fields_and_no_secret() {
        let mut n = Notification::new(
            "deploy.failed",
            "deploy-20261123-101500",
            "production",
            vec![NotifiedService {
                name: "api".into(),
                release: Some("20261123-101500-abc1234".into()),
                result: "failed".into(),
            }],
            Utc::now(),
            Some("build: printed hunter2".into()),
        );
        n.redact(&Redactor::new(["hunter2"]));
        let json = n.body(NotifyFormat::Json);
        for key in ["event", "run", "env", "services", "at", "reason"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        assert_eq!(json["services"][0]["result"], "failed");
        let slack = n.body(NotifyFormat::Slack).to_string();
        assert!(slack.contains("\"text\"") && slack.contains("\"blocks\""));
        assert!(slack.contains("production") && slack.contains("deploy-20261123-101500"));
        assert!(!json.to_string().contains("hunter2") && !slack.contains("hunter2"));
    }
}
