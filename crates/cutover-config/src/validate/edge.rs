//! The edge keys: `[proxy] http`/`https`, and a service's `hosts`, `path_prefix`, `max_body`
//! and `upstream_timeout`: each value on its own here, the claims of an environment together
//! in [`check_claims`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;

use crate::error::Diag;
use crate::model::{Acme, Project, ProxyListeners, ResolvedService, Tls};
use crate::raw::{RawAcme, RawProxy, RawSize, RawTls, Sp};

use super::Ctx;

/// `[proxy]`.
pub(crate) fn proxy(cx: &mut Ctx<'_>, raw: &RawProxy) -> ProxyListeners {
    ProxyListeners {
        http: raw.http.as_ref().and_then(|v| address(cx, v, "http", 80)),
        https: raw
            .https
            .as_ref()
            .and_then(|v| address(cx, v, "https", 443)),
        redirect_https: raw.redirect_https.as_ref().is_some_and(|b| *b.get()),
        acme: raw.acme.as_ref().and_then(|a| acme(cx, a)),
    }
}

/// `[proxy.acme]`: `directory` and `email` required; `ca` a file; `renew_before` a duration.
fn acme(cx: &mut Ctx<'_>, raw: &Sp<RawAcme>) -> Option<Acme> {
    let a = raw.get();
    let directory = match &a.directory {
        Some(d) if d.get().starts_with("https://") || d.get().starts_with("http://") => {
            Some(d.get().trim().to_string())
        }
        Some(d) => {
            cx.err(
                Diag::at(d.span(), format!("`directory` in [proxy.acme] must be an https:// URL, found {:?}", d.get()))
                    .help("the ACME server's directory URL, e.g. directory = \"https://acme-v02.api.letsencrypt.org/directory\""),
            );
            None
        }
        None => {
            cx.err(
                Diag::at(raw.span(), "[proxy.acme] has no `directory`")
                    .help("add the ACME server's directory URL, e.g. directory = \"https://acme-v02.api.letsencrypt.org/directory\""),
            );
            None
        }
    };
    let email =
        match &a.email {
            Some(e) if e.get().contains('@') && !e.get().contains(char::is_whitespace) => {
                Some(e.get().clone())
            }
            Some(e) => {
                cx.err(
                    Diag::at(
                        e.span(),
                        format!(
                            "`email` in [proxy.acme] must be an email address, found {:?}",
                            e.get()
                        ),
                    )
                    .help("the account's contact, e.g. email = \"ops@example.com\""),
                );
                None
            }
            None => {
                cx.err(Diag::at(raw.span(), "[proxy.acme] has no `email`").help(
                    "add the ACME account's contact address, e.g. email = \"ops@example.com\"",
                ));
                None
            }
        };
    let ca = a.ca.as_ref().map(|c| cx.dir.join(c.get()));
    let renew_before = cx.duration(&a.renew_before, "renew_before", false);
    Some(Acme {
        directory: directory?,
        email: email?,
        ca,
        renew_before,
    })
}

/// A service's `tls`: `"acme"`, or `{ cert, key }` (paths relative to the project directory).
pub(crate) fn tls(cx: &mut Ctx<'_>, v: &Sp<RawTls>) -> Option<Tls> {
    const HELP: &str = "tls = \"acme\" (certificates from [proxy.acme]) or tls = { cert = \"certs/api.pem\", key = \"certs/api.key\" } (PEM files)";
    match v.get() {
        RawTls::Word(w) if w == "acme" => Some(Tls::Acme),
        RawTls::Word(w) => {
            cx.err(
                Diag::at(
                    v.span(),
                    format!("`tls` must be \"acme\" or a table, found {w:?}"),
                )
                .help(HELP),
            );
            None
        }
        RawTls::Files { cert, key } => {
            let file = |cx: &mut Ctx<'_>, f: &Option<Sp<String>>, name: &str| match f {
                Some(p) if !p.get().trim().is_empty() => Some(cx.dir.join(p.get())),
                Some(p) => {
                    cx.err(Diag::at(p.span(), format!("`tls.{name}` is empty")).help(HELP));
                    None
                }
                None => {
                    cx.err(Diag::at(v.span(), format!("`tls` has no `{name}`")).help(HELP));
                    None
                }
            };
            let cert = file(cx, cert, "cert");
            let key = file(cx, key, "key");
            Some(Tls::Files {
                cert: cert?,
                key: key?,
            })
        }
    }
}

fn address(cx: &mut Ctx<'_>, v: &Sp<String>, key: &str, port: u16) -> Option<SocketAddr> {
    match v.get().trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            cx.err(
                Diag::at(
                    v.span(),
                    format!(
                        "`{key}` in [proxy] must be an IP address and a port, found {:?}",
                        v.get()
                    ),
                )
                .help(format!(
                    "e.g. {key} = \"0.0.0.0:{port}\" (every interface) or {key} = \"127.0.0.1:{}\" (this host only)",
                    if port == 80 { 8080 } else { 8443 }
                )),
            );
            None
        }
    }
}

/// `hosts`: host names without scheme, port or path; lowercased.
pub(crate) fn hosts(cx: &mut Ctx<'_>, v: &Sp<Vec<Sp<String>>>) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for h in v.get() {
        let name = h.get().trim().to_ascii_lowercase();
        match host_problem(&name) {
            Some(why) => cx.err(
                Diag::at(h.span(), format!("`hosts`: {:?} {why}", h.get()))
                    .help("a host name as clients send it in `Host`, without scheme, port or path, e.g. hosts = [\"api.example.com\"]"),
            ),
            None if !out.contains(&name) => out.push(name),
            None => {}
        }
    }
    if v.get().is_empty() {
        cx.err(
            Diag::at(v.span(), "`hosts` is empty").help(
                "name at least one host, e.g. hosts = [\"api.example.com\"], or remove `hosts`",
            ),
        );
        return None;
    }
    Some(out)
}

fn host_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.contains("://") {
        return Some("is a URL, not a host name");
    }
    if name.contains(':') {
        return Some("has a port: the port is the listener's ([proxy] http)");
    }
    if name.contains('/') {
        return Some("has a path: paths go in `path_prefix`");
    }
    if name.len() > 253
        || !name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
    {
        return Some("is not a host name (letters, digits and - in dot-separated labels)");
    }
    None
}

/// `path_prefix`: starts with `/`; a trailing `/` is dropped (`/api/` claims what `/api` does).
pub(crate) fn path_prefix(cx: &mut Ctx<'_>, v: &Sp<String>) -> Option<String> {
    let raw = v.get();
    if !raw.starts_with('/')
        || raw.contains(['?', '#'])
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        cx.err(
            Diag::at(v.span(), format!("`path_prefix` must be a path starting with /, found {raw:?}"))
                .help("e.g. path_prefix = \"/api\": requests for /api and /api/... go to this service (the longest prefix wins)"),
        );
        return None;
    }
    let trimmed = raw.trim_end_matches('/');
    Some(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

/// `max_body`: bytes, or a number with B, KB, MB, GB (1024-based; KiB, MiB, GiB too).
pub(crate) fn size(cx: &mut Ctx<'_>, v: &Sp<RawSize>, key: &str) -> Option<u64> {
    match parse_size(&v.get().0) {
        Some(n) if n > 0 => Some(n),
        _ => {
            cx.err(
                Diag::at(v.span(), format!("`{key}` must be a size above zero, found {:?}", v.get().0))
                    .help(format!("a number of bytes or a number with B, KB, MB or GB (1KB = 1024 bytes), e.g. {key} = \"10MB\"")),
            );
            None
        }
    }
}

/// `"10MB"` → 10485760.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// A claim on the shared listener: where it was set, and the environments where it clashes.
type Claim = (Option<Range<usize>>, Vec<String>);

/// What is wrong with the claims, by service index, with the environments where it is.
#[derive(Default)]
pub(crate) struct Claims {
    /// Services with `hosts` and no `[proxy]` listener.
    no_listener: BTreeMap<usize, Vec<String>>,
    /// Services with `path_prefix` and no `hosts`.
    prefix_alone: BTreeMap<usize, Vec<String>>,
    /// (first, second, host, prefix) claimed by both.
    clashes: BTreeMap<(usize, usize, String, String), Claim>,
    /// (service, what is missing) for `tls`: where it was set, and the environments.
    tls: BTreeMap<(usize, TlsNeed), Claim>,
}

/// What a service's `tls` needs and does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TlsNeed {
    /// `hosts`: TLS is per host name (SNI).
    Hosts,
    /// `[proxy] https`: the listener TLS is served on.
    Https,
    /// `[proxy.acme]`: where `tls = "acme"` certificates come from.
    Acme,
    /// `[proxy] http`: where ACME's HTTP-01 challenges are answered.
    Http,
}

/// The `tls` of each service of an environment: it needs `hosts` and `[proxy] https`; `"acme"`
/// needs `[proxy.acme]` and `[proxy] http` too.
pub(crate) fn check_tls(
    project: &Project,
    env: &str,
    services: &[ResolvedService],
    span_of: &dyn Fn(&str, &str) -> Option<Range<usize>>,
    found: &mut Claims,
) {
    for (i, svc) in services.iter().enumerate() {
        let Some(tls) = &svc.tls else { continue };
        let listeners = &project.proxy;
        let needs = [
            (svc.hosts.is_empty(), TlsNeed::Hosts),
            (listeners.https.is_none(), TlsNeed::Https),
            (*tls == Tls::Acme && listeners.acme.is_none(), TlsNeed::Acme),
            (*tls == Tls::Acme && listeners.http.is_none(), TlsNeed::Http),
        ];
        for (missing, need) in needs {
            if missing {
                found
                    .tls
                    .entry((i, need))
                    .or_insert_with(|| (span_of(&svc.name, env), Vec::new()))
                    .1
                    .push(env.to_string());
            }
        }
    }
}

/// The claims of each environment: services with `hosts` need `[proxy] http`; no two services
/// of one environment claim the same host and path prefix; `path_prefix` needs `hosts`.
pub(crate) fn check_claims(
    project: &Project,
    env: &str,
    services: &[ResolvedService],
    span_of: &dyn Fn(&str, &str) -> Option<Range<usize>>,
    found: &mut Claims,
) {
    let mut claimed: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, svc) in services.iter().enumerate() {
        if svc.hosts.is_empty() {
            if svc.path_prefix != "/" {
                found
                    .prefix_alone
                    .entry(i)
                    .or_default()
                    .push(env.to_string());
            }
            continue;
        }
        if project.proxy.http.is_none() {
            found
                .no_listener
                .entry(i)
                .or_default()
                .push(env.to_string());
        }
        for host in &svc.hosts {
            let key = (host.as_str(), svc.path_prefix.as_str());
            if let Some(&j) = claimed.get(&key) {
                found
                    .clashes
                    .entry((j, i, host.clone(), svc.path_prefix.clone()))
                    .or_insert_with(|| (span_of(&svc.name, env), Vec::new()))
                    .1
                    .push(env.to_string());
            } else {
                claimed.insert(key, i);
            }
        }
    }
}

/// Reports what [`check_claims`] collected.
pub(crate) fn report_claims(
    cx: &mut Ctx<'_>,
    project: &Project,
    service_span: &dyn Fn(&str) -> Option<Range<usize>>,
    found: Claims,
    envs_list: &dyn Fn(&[String]) -> String,
) {
    for (i, envs) in found.prefix_alone {
        let name = &project.services[i].name;
        cx.err(
            Diag::new(
                service_span(name),
                format!(
                    "service `{name}` has a `path_prefix` but no `hosts` in {}",
                    envs_list(&envs)
                ),
            )
            .help(format!("a path prefix routes on the shared [proxy] listener, under a host: add hosts = [\"{name}.example.com\"] to [services.{name}], or remove `path_prefix`")),
        );
    }
    for (i, envs) in found.no_listener {
        let name = &project.services[i].name;
        cx.err(
            Diag::new(
                service_span(name),
                format!(
                    "service `{name}` claims `hosts` in {}, but there is no shared listener",
                    envs_list(&envs)
                ),
            )
            .help("add [proxy] with http = \"0.0.0.0:80\" (or \"127.0.0.1:8080\"): services with `hosts` are served there")
            .label("no [proxy] http"),
        );
    }
    for ((i, need), (span, envs)) in found.tls {
        let name = &project.services[i].name;
        let (what, help) = match need {
            TlsNeed::Hosts => (
                "has `tls` but no `hosts`",
                format!("certificates are chosen by host name: add hosts = [\"{name}.example.com\"] to [services.{name}], or remove `tls`"),
            ),
            TlsNeed::Https => (
                "has `tls` but [proxy] has no `https` listener",
                "add https = \"0.0.0.0:443\" (or \"127.0.0.1:8443\") to [proxy]: services with `tls` are served there".to_string(),
            ),
            TlsNeed::Acme => (
                "has tls = \"acme\" but there is no [proxy.acme]",
                "add [proxy.acme] with directory = \"https://acme-v02.api.letsencrypt.org/directory\" and email = \"ops@example.com\", or give the service tls = { cert = \"...\", key = \"...\" }".to_string(),
            ),
            TlsNeed::Http => (
                "has tls = \"acme\" but [proxy] has no `http` listener",
                "ACME checks a host through its HTTP-01 challenge on port 80: add http = \"0.0.0.0:80\" to [proxy]".to_string(),
            ),
        };
        cx.err(
            Diag::new(
                span,
                format!("service `{name}` {what} in {}", envs_list(&envs)),
            )
            .help(help),
        );
    }
    for ((j, i, host, prefix), (span, envs)) in found.clashes {
        let (a, b) = (&project.services[j].name, &project.services[i].name);
        let what = if prefix == "/" {
            format!("host {host:?}")
        } else {
            format!("host {host:?} with path_prefix {prefix:?}")
        };
        cx.err(
            Diag::new(span, format!("services `{a}` and `{b}` both claim {what} in {}", envs_list(&envs)))
                .help(format!(
                    "one host and path prefix routes to one service: give `{b}` another host, or a path_prefix of its own (e.g. path_prefix = \"/{b}\"; the longest prefix wins)"
                ))
                .label("already claimed"),
        );
    }
}
