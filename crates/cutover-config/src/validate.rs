//! [`RawFile`] → [`Project`], with every check that needs more than a type: names, ranges,
//! durations, paths on disk, globs, the dependency graph, and per-environment rules (a local
//! target needs `run` and `port`; ports do not collide; container targets get valid, distinct
//! image names and Dockerfiles inside the project).

mod container;
mod edge;
mod environment;
mod graph;
mod notify;
mod settings;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::decode::expectation;
use crate::duration::DURATION_HELP;
use crate::error::Diag;
use crate::model::{
    DEVELOPMENT, EnvironmentDecl, Project, ProjectSettings, ServiceDecl, ServiceSettings,
};
use crate::raw::{RawDuration, RawFile, RawProject, Sp};

/// Collects diagnostics while checking values.
pub(crate) struct Ctx<'a> {
    pub diags: Vec<Diag>,
    pub dir: &'a Path,
}

impl Ctx<'_> {
    pub fn err(&mut self, d: Diag) {
        self.diags.push(d);
    }

    /// An integer in `lo..=hi`.
    pub fn int(
        &mut self,
        v: &Option<Sp<i64>>,
        key: &str,
        parent: &str,
        lo: i64,
        hi: i64,
    ) -> Option<i64> {
        let v = v.as_ref()?;
        let n = *v.get();
        if (lo..=hi).contains(&n) {
            return Some(n);
        }
        if n > hi && !matches!(key, "port" | "container_port" | "weight" | "expect_status") {
            self.err(
                Diag::at(v.span(), format!("`{key}` is too large: {n}, at most {hi}"))
                    .help(format!("use a value from {lo} to {hi}")),
            );
            return None;
        }
        // `autoscale.min` reads as `min` of `autoscale`.
        let leaf = key.rsplit_once('.').map_or(key, |(_, k)| k);
        let expected = expectation(leaf, parent)
            .map_or_else(|| format!("an integer from {lo} to {hi}"), str::to_string);
        let help = match key {
            "port" => "ports are 1 to 65535; use 8080 or above to avoid needing root".to_string(),
            "container_port" => {
                "the port the service listens on inside its container ($PORT), 1 to 65535; the default is 8080"
                    .to_string()
            }
            "weight" => "a step's weight is the percent of traffic the canary gets, from 1 to 100"
                .to_string(),
            "expect_status" => "an HTTP status code, e.g. 200".to_string(),
            _ if lo == 1 && n < 1 => format!("use 1 or more, e.g. {key} = 1"),
            _ => format!("use a value from {lo} to {hi}"),
        };
        self.err(Diag::at(v.span(), format!("`{key}` must be {expected}, found {n}")).help(help));
        None
    }

    /// A duration; `nonzero` rejects `0s` where it makes no sense.
    pub fn duration(
        &mut self,
        v: &Option<Sp<RawDuration>>,
        key: &str,
        nonzero: bool,
    ) -> Option<Duration> {
        let v = v.as_ref()?;
        match crate::parse_duration(&v.get().0) {
            Ok(d) if nonzero && d.is_zero() => {
                self.err(
                    Diag::at(v.span(), format!("`{key}` must be longer than zero"))
                        .help(format!("{DURATION_HELP}; e.g. {key} = \"10s\"")),
                );
                None
            }
            Ok(d) => Some(d),
            Err(_) => {
                self.err(
                    Diag::at(
                        v.span(),
                        format!("`{key}`: invalid duration {:?}", v.get().0),
                    )
                    .help(DURATION_HELP),
                );
                None
            }
        }
    }

    /// A non-empty shell command.
    pub fn command(&mut self, v: &Option<Sp<String>>, key: &str, help: &str) -> Option<String> {
        let v = v.as_ref()?;
        if v.get().trim().is_empty() {
            self.err(Diag::at(v.span(), format!("`{key}` is empty")).help(help));
            return None;
        }
        Some(v.get().clone())
    }

    /// A list of non-empty shell commands.
    pub fn commands(&mut self, v: &Option<Sp<Vec<Sp<String>>>>, key: &str) -> Option<Vec<String>> {
        let v = v.as_ref()?;
        let mut out = Vec::new();
        for (i, c) in v.get().iter().enumerate() {
            if c.get().trim().is_empty() {
                self.err(
                    Diag::at(c.span(), format!("`{key}[{i}]` is an empty command")).help(format!(
                        "remove it or write a shell command, e.g. {key} = [\"make test\"]"
                    )),
                );
            } else {
                out.push(c.get().clone());
            }
        }
        Some(out)
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: environment variable and secret names.
pub(crate) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `[a-z0-9-]{1,63}`: service and environment names (they become paths, branches, DNS labels).
pub(crate) fn is_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The candidate closest to `word`, when it is plausibly a typo of it.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= (c.chars().count().max(word.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `raw` made a valid name: lowercase, every run of other characters one `-`, no `-` at the
/// ends, at most `max` characters. None when nothing is left (e.g. "日本", "!!").
pub(crate) fn sanitize_name(raw: &str, max: usize) -> Option<String> {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    let out: String = out.chars().take(max).collect();
    let out = out.trim_end_matches('-');
    (!out.is_empty()).then(|| out.to_string())
}

fn name_check(cx: &mut Ctx<'_>, key: &Sp<String>, what: &str) -> bool {
    if is_name(key.get()) {
        return true;
    }
    let example = match sanitize_name(key.get(), 63) {
        Some(fixed) => format!("e.g. {fixed:?}"),
        None => "e.g. \"api\"".to_string(),
    };
    cx.err(
        Diag::at(
            key.span(),
            format!(
                "{what} name {:?} is not valid: use 1 to 63 of a-z, 0-9 and -",
                key.get()
            ),
        )
        .help(format!(
            "{what} names become paths, branch names and DNS labels; {example}"
        )),
    );
    false
}

/// Spans needed after the model is built, for per-environment messages.
#[derive(Default)]
pub(crate) struct Spans {
    pub service_key: HashMap<String, Range<usize>>,
    /// `port` spans by layer: ("", "") defaults, (service, "") service, ("", env) env,
    /// (service, env) env.service.
    pub port: HashMap<(String, String), Range<usize>>,
    /// `dockerfile` spans per (service, env) layer as above.
    pub dockerfile: HashMap<(String, String), Range<usize>>,
    /// `hosts` spans per (service, env) layer as above.
    pub hosts: HashMap<(String, String), Range<usize>>,
    /// `tls` spans per (service, env) layer as above.
    pub tls: HashMap<(String, String), Range<usize>>,
    /// `path_prefix` spans per (service, env) layer as above.
    pub path_prefix: HashMap<(String, String), Range<usize>>,
    /// `image` spans per (service, env) layer as above.
    pub image: HashMap<(String, String), Range<usize>>,
    /// `target` per (service, env) layer as above.
    pub target: HashMap<(String, String), crate::TargetKind>,
    /// `[project] metrics_listen`.
    pub metrics_listen: Option<Range<usize>>,
}

/// Checks everything and builds the project; problems go to `diags`.
pub(crate) fn validate(
    raw: RawFile,
    file: &Path,
    dir: &Path,
    pruned: bool,
    diags: &mut Vec<Diag>,
) -> Option<Project> {
    let mut cx = Ctx {
        diags: Vec::new(),
        dir,
    };
    let mut spans = Spans::default();
    let (name, mut project_settings) = project(&mut cx, raw.project.as_ref(), pruned);
    spans.metrics_listen = raw
        .project
        .as_ref()
        .and_then(|p| p.get().metrics_listen.as_ref())
        .map(|m| m.span());

    let defaults = match &raw.defaults {
        Some(d) => {
            let s = d.get().settings();
            record_layer(&mut spans, &s, "", "");
            settings::settings(&mut cx, &s, "[defaults]")
        }
        None => ServiceSettings::default(),
    };

    let mut services = Vec::new();
    let mut dep_spans: HashMap<(String, String), Range<usize>> = HashMap::new();
    for (key, svc) in raw
        .services
        .as_ref()
        .map(|s| &s.get().0[..])
        .unwrap_or_default()
    {
        name_check(&mut cx, key, "service");
        let name = key.get().clone();
        spans.service_key.insert(name.clone(), key.span());
        let section = format!("[services.{name}]");
        let path = match &svc.path {
            Some(p) => service_path(&mut cx, p),
            None => {
                if !pruned {
                    cx.err(Diag::at(key.span(), format!("service `{name}` has no `path`"))
                        .help(format!("add path = \"{name}\" to {section}: the service's source dir, relative to the project dir")));
                }
                None
            }
        };
        let watch = svc.watch.as_ref().map_or_else(Vec::new, |w| {
            w.get()
                .iter()
                .filter(|g| match globset::Glob::new(g.get()) {
                    Ok(_) => true,
                    Err(e) => {
                        cx.err(Diag::at(g.span(), format!("`watch`: invalid glob {:?}: {}", g.get(), e.kind()))
                            .help("globs are relative to the project dir, e.g. \"shared/**\" or \"lib/*.py\""));
                        false
                    }
                })
                .map(|g| g.get().clone())
                .collect()
        });
        let mut depends_on: Vec<String> = Vec::new();
        for d in svc
            .depends_on
            .as_ref()
            .map(|d| &d.get()[..])
            .unwrap_or_default()
        {
            if !depends_on.contains(d.get()) {
                depends_on.push(d.get().clone());
                dep_spans.insert((name.clone(), d.get().clone()), d.span());
            }
        }
        let s = svc.settings();
        record_layer(&mut spans, &s, &name, "");
        let settings = settings::settings(&mut cx, &s, &section);
        services.push(ServiceDecl {
            name,
            path: path.unwrap_or_default(),
            watch,
            depends_on,
            settings,
        });
    }
    graph::check(&mut cx, &services, &dep_spans);

    let mut environments =
        environment::environments(&mut cx, &raw, &services, &defaults, &mut spans);
    if !environments.iter().any(|e| e.name == DEVELOPMENT) {
        environments.push(EnvironmentDecl {
            name: DEVELOPMENT.to_string(),
            target: defaults.target.unwrap_or_default(),
            branch: None,
            require_approval: false,
            registry: None,
            docker_host: None,
            swarm_host: None,
            overrides: ServiceSettings::default(),
            service_overrides: Default::default(),
            declared: false,
        });
    }
    if let Some(p) = &raw.project
        && let Some(env) = &p.get().default_env
    {
        let known: Vec<&str> = environments.iter().map(|e| e.name.as_str()).collect();
        if known.contains(&env.get().as_str()) {
            project_settings.default_env = Some(env.get().clone());
        } else {
            let help = match suggest(env.get(), known.iter().copied()) {
                Some(c) => format!(
                    "did you mean `{c}`? known environments: {}",
                    known.join(", ")
                ),
                None => format!(
                    "known environments: {}; declare it as [environments.{}]",
                    known.join(", "),
                    env.get()
                ),
            };
            cx.err(
                Diag::at(
                    env.span(),
                    format!("`default_env` names unknown environment `{}`", env.get()),
                )
                .help(help),
            );
        }
    }

    let notify = raw
        .notify
        .as_ref()
        .map(|n| {
            n.get()
                .iter()
                .filter_map(|n| notify::notify(&mut cx, n))
                .collect()
        })
        .unwrap_or_default();

    let proxy = raw
        .proxy
        .as_ref()
        .map(|p| edge::proxy(&mut cx, p.get()))
        .unwrap_or_default();

    let project = Project {
        dir: dir.to_path_buf(),
        state_root: dir.to_path_buf(),
        file: file.to_path_buf(),
        name: name.unwrap_or_default(),
        settings: project_settings,
        defaults,
        services,
        environments,
        notify,
        proxy,
    };
    if !pruned && cx.diags.is_empty() {
        environment::check_resolved(&mut cx, &project, &spans);
    }
    let ok = cx.diags.is_empty();
    diags.append(&mut cx.diags);
    ok.then_some(project)
}

fn record_layer(spans: &mut Spans, s: &crate::raw::RawSettings, service: &str, env: &str) {
    let key = (service.to_string(), env.to_string());
    if let Some(p) = &s.port {
        spans.port.insert(key.clone(), p.span());
    }
    if let Some(h) = &s.hosts {
        spans.hosts.insert(key.clone(), h.span());
    }
    if let Some(t) = &s.tls {
        spans.tls.insert(key.clone(), t.span());
    }
    if let Some(p) = &s.path_prefix {
        spans.path_prefix.insert(key.clone(), p.span());
    }
    if let Some(d) = &s.dockerfile {
        spans.dockerfile.insert(key.clone(), d.span());
    }
    if let Some(i) = &s.image {
        spans.image.insert(key.clone(), i.span());
    }
    if let Some(t) = &s.target {
        spans.target.insert(key, settings::target(*t.get()));
    }
}

fn project(
    cx: &mut Ctx<'_>,
    raw: Option<&Sp<RawProject>>,
    pruned: bool,
) -> (Option<String>, ProjectSettings) {
    let mut out = ProjectSettings {
        state: "sqlite://.cutover/state.db".to_string(),
        max_parallel: 16,
        keep_releases: 5,
        branch_prefix: "service".to_string(),
        metrics_listen: None,
        default_env: None,
    };
    let Some(sp) = raw else {
        if !pruned {
            cx.err(
                Diag::at(0..0, "missing [project] table")
                    .help("start the file with:\n[project]\nname = \"myapp\""),
            );
        }
        return (None, out);
    };
    let p = sp.get();
    let name = match &p.name {
        Some(n) if n.get().trim().is_empty() => {
            cx.err(Diag::at(n.span(), "`name` is empty").help("e.g. name = \"myapp\""));
            None
        }
        // It names paths (worktrees, runtime files): `../../x` must never get that far.
        Some(n) => name_check(cx, n, "project").then(|| n.get().clone()),
        None => {
            if !pruned {
                cx.err(
                    Diag::at(sp.span(), "[project] has no `name`")
                        .help("add name = \"myapp\" under [project]"),
                );
            }
            None
        }
    };
    if let Some(s) = &p.state {
        let v = s.get();
        if ["sqlite://", "postgres://", "postgresql://"]
            .iter()
            .any(|pre| v.starts_with(pre) && v.len() > pre.len())
        {
            out.state = v.clone();
        } else {
            cx.err(Diag::at(s.span(), format!("`state` must be a sqlite:// or postgres:// URL, found {v:?}"))
                .help("the default is \"sqlite://.cutover/state.db\"; a shared team store is \"postgres://user@host/db\""));
        }
    }
    if let Some(n) = cx
        .int(&p.max_parallel, "max_parallel", "", 1, 100_000)
        .and_then(|n| usize::try_from(n).ok())
    {
        out.max_parallel = n;
    }
    if let Some(n) = cx
        .int(&p.keep_releases, "keep_releases", "", 1, 100_000)
        .and_then(|n| usize::try_from(n).ok())
    {
        out.keep_releases = n;
    }
    if let Some(b) = &p.branch_prefix {
        let v = b.get();
        let bad = v.is_empty()
            || v.starts_with(['/', '-', '.'])
            || v.ends_with(['/', '.'])
            || v.contains("..")
            || v.chars()
                .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
        if bad {
            cx.err(
                Diag::at(
                    b.span(),
                    format!("`branch_prefix` {v:?} is not a valid git branch prefix"),
                )
                .help("use letters, digits, - and /, e.g. branch_prefix = \"service\""),
            );
        } else {
            out.branch_prefix = v.clone();
        }
    }
    if let Some(m) = &p.metrics_listen {
        match m.get().parse() {
            Ok(addr) => out.metrics_listen = Some(addr),
            Err(_) => cx.err(
                Diag::at(
                    m.span(),
                    format!(
                        "`metrics_listen` must be a socket address, found {:?}",
                        m.get()
                    ),
                )
                .help("an IP address and port, e.g. metrics_listen = \"127.0.0.1:9464\""),
            ),
        }
    }
    (name, out)
}

/// A service path: relative, inside the project dir, an existing directory.
fn service_path(cx: &mut Ctx<'_>, p: &Sp<String>) -> Option<PathBuf> {
    let raw = p.get();
    let path = Path::new(raw);
    if raw.trim().is_empty() {
        cx.err(Diag::at(p.span(), "`path` is empty")
            .help("the service's source dir relative to the project dir, e.g. path = \"services/api\"; \".\" is the project dir"));
        return None;
    }
    if path.is_absolute() {
        cx.err(
            Diag::at(
                p.span(),
                format!("`path` must be relative to the project dir, found {raw:?}"),
            )
            .help(format!("write it relative to {}", cx.dir.display())),
        );
        return None;
    }
    let mut depth: i64 = 0;
    let mut normal = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                normal.pop();
            }
            Component::Normal(part) => {
                depth += 1;
                normal.push(part);
            }
            _ => {}
        }
        if depth < 0 {
            cx.err(
                Diag::at(p.span(), format!("`path` {raw:?} leaves the project dir")).help(format!(
                    "service paths must be inside {}; move cutover.toml up or the code in",
                    cx.dir.display()
                )),
            );
            return None;
        }
    }
    let full = cx.dir.join(&normal);
    if !full.is_dir() {
        let what = if full.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        cx.err(Diag::at(p.span(), format!("`path` {raw:?} {what} in {}", cx.dir.display()))
            .help("paths are relative to the directory holding cutover.toml; fix the path or create the directory"));
        return None;
    }
    if let (Ok(real), Ok(root)) = (full.canonicalize(), cx.dir.canonicalize())
        && !real.starts_with(&root)
    {
        cx.err(
            Diag::at(
                p.span(),
                format!("`path` {raw:?} leads outside the project dir (through a symlink)"),
            )
            .help(format!("service paths must be inside {}", cx.dir.display())),
        );
        return None;
    }
    Some(if normal.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        normal
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_name("pr-review"));
        assert!(is_name("a"));
        assert!(is_name(&"a".repeat(63)));
        assert!(!is_name(&"a".repeat(64)));
        assert!(!is_name(""));
        assert!(!is_name("PR"));
        assert!(!is_name("pr_review"));
        assert!(!is_name("pr.review"));
        assert_eq!(
            sanitize_name("My_Service", 63).as_deref(),
            Some("my-service")
        );
        assert_eq!(sanitize_name("api!", 63).as_deref(), Some("api"));
        assert_eq!(
            sanitize_name("  Web  App!! ", 63).as_deref(),
            Some("web-app")
        );
        assert_eq!(sanitize_name("../../../x", 63).as_deref(), Some("x"));
        assert_eq!(sanitize_name("日本", 63), None);
        let long = sanitize_name(&format!("{}-b", "a".repeat(62)), 63).unwrap();
        assert!(is_name(&long) && !long.ends_with('-'), "{long}");
        assert!(is_env_name("_X1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
    }

    #[test]
    fn suggestions_only_when_close() {
        let keys = ["health", "path", "port"];
        assert_eq!(suggest("helth", keys), Some("health"));
        assert_eq!(suggest("prot", keys), Some("port"));
        assert_eq!(suggest("zzzzzz", keys), None);
    }
}
