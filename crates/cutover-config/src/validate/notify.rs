//! `[[notify]]` webhooks: URL, format, events and the signing secret.

use crate::error::Diag;
use crate::model::{Notify, NotifyFormat};
use crate::raw::{RawNotify, RawNotifyFormat, Sp};

use super::{Ctx, settings, suggest};

/// Every event a webhook can subscribe to, in the order `on` defaults to.
pub(crate) const NOTIFY_EVENTS: &[&str] = &[
    "deploy.started",
    "deploy.succeeded",
    "deploy.failed",
    "rollback",
    "approval.requested",
];

/// One webhook, or `None` when it has errors.
pub(crate) fn notify(cx: &mut Ctx<'_>, n: &Sp<RawNotify>) -> Option<Notify> {
    let raw = n.get();
    let before = cx.diags.len();
    let url = match &raw.url {
        None => {
            cx.err(
                Diag::at(n.span(), "[[notify]] has no `url`")
                    .help("add url = \"https://example.com/hook\""),
            );
            None
        }
        Some(u) => {
            let v = u.get();
            let rest = v
                .strip_prefix("https://")
                .or_else(|| v.strip_prefix("http://"));
            match rest {
                Some(host)
                    if !host.is_empty()
                        && !host.starts_with('/')
                        && !v.chars().any(char::is_whitespace) =>
                {
                    Some(v.clone())
                }
                _ => {
                    cx.err(
                        Diag::at(
                            u.span(),
                            format!("`url` must be an http:// or https:// URL, found {v:?}"),
                        )
                        .help("e.g. url = \"https://hooks.slack.com/services/...\""),
                    );
                    None
                }
            }
        }
    };
    let on = match &raw.on {
        None => NOTIFY_EVENTS.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            if list.get().is_empty() {
                cx.err(Diag::at(list.span(), "`on` is empty").help(format!(
                    "list events or remove `on` for all of them: {}",
                    NOTIFY_EVENTS.join(", ")
                )));
            }
            let mut out: Vec<String> = Vec::new();
            for e in list.get() {
                if NOTIFY_EVENTS.contains(&e.get().as_str()) {
                    if !out.contains(e.get()) {
                        out.push(e.get().clone());
                    }
                } else {
                    let help = match suggest(e.get(), NOTIFY_EVENTS.iter().copied()) {
                        Some(c) => {
                            format!("did you mean \"{c}\"? events: {}", NOTIFY_EVENTS.join(", "))
                        }
                        None => format!("events: {}", NOTIFY_EVENTS.join(", ")),
                    };
                    cx.err(
                        Diag::at(e.span(), format!("`on`: unknown event {:?}", e.get())).help(help),
                    );
                }
            }
            out
        }
    };
    let format = match raw.format.as_ref().map(|f| *f.get()) {
        Some(RawNotifyFormat::Slack) => NotifyFormat::Slack,
        _ => NotifyFormat::Json,
    };
    let secret = raw.secret.as_ref().and_then(|s| settings::env_value(cx, s));
    let url = url?;
    (cx.diags.len() == before).then_some(Notify {
        url,
        format,
        on,
        secret,
    })
}
