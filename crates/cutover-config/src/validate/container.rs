//! The container-target keys: a layer's `dockerfile`, `image`, `build_args` and `autoscale`, and
//! an environment's `registry` and Docker Engine `host`s. Each is checked on every layer and
//! environment that sets it, whatever the target (a local service keeps them unused).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::Diag;
use crate::model::Autoscale;
use crate::raw::{Named, RawAutoscale, RawBuildArg, Sp};

use super::{Ctx, is_env_name};

/// Docker's limit on a whole image name (`distribution/reference`'s `NameTotalLengthMax`).
const IMAGE_NAME_MAX: usize = 255;

/// What cutover tags an image with, for messages that turn a tag away.
const TAGS_HELP: &str = "cutover tags every image itself (<image>:<release-id>, <image>:<env>-<sha7>, <image>:<env>-latest)";

const IMAGE_EXAMPLE: &str = "lowercase letters, digits and . _ - between /-separated parts, after an optional registry host[:port]/; e.g. image = \"acme/api\"";

/// `dockerfile`: a relative path naming a file; it is read from the service's path.
pub(crate) fn dockerfile(cx: &mut Ctx<'_>, v: &Sp<String>) -> Option<PathBuf> {
    let raw = v.get();
    let path = Path::new(raw);
    let problem = if raw.trim().is_empty() {
        Some(("`dockerfile` is empty".to_string(), "the Dockerfile's path relative to the service's path, e.g. dockerfile = \"Dockerfile\" (the default)".to_string()))
    } else if path.is_absolute() {
        Some((
            format!("`dockerfile` must be relative to the service's path, found {raw:?}"),
            "it is read from the service's path, e.g. dockerfile = \"docker/Dockerfile.prod\""
                .to_string(),
        ))
    } else if raw.ends_with('/')
        || !matches!(path.components().next_back(), Some(Component::Normal(_)))
    {
        Some((
            format!("`dockerfile` must name a file, found {raw:?}"),
            "e.g. dockerfile = \"docker/Dockerfile\"".to_string(),
        ))
    } else {
        None
    };
    reported(cx, v.span(), problem, PathBuf::from(raw))
}

/// `image`: a Docker image name without tag or digest.
pub(crate) fn image(cx: &mut Ctx<'_>, v: &Sp<String>) -> Option<String> {
    match image_problem(v.get()) {
        None => Some(v.get().clone()),
        Some((problem, help)) => {
            cx.err(Diag::at(v.span(), format!("`image` {:?} {problem}", v.get())).help(help));
            None
        }
    }
}

/// Why `name` is not a valid image name without a tag (a clause such as "must be lowercase",
/// and a help line), or `None` when it is valid.
pub(crate) fn image_problem(name: &str) -> Option<(String, String)> {
    if let Some((before, _)) = name.split_once('@') {
        let untagged = without_tag(before).map_or(before, |(n, _)| n);
        return Some((
            "must not have a digest: tags are cutover's".to_string(),
            format!("{TAGS_HELP}; write image = {untagged:?}"),
        ));
    }
    if let Some((untagged, tag)) = without_tag(name) {
        let help = if !name.contains('/') && tag.chars().all(|c| c.is_ascii_digit()) {
            format!(
                "if {name} is a registry, set registry = {name:?} on the environment, or write image = \"{name}/NAME\"; {TAGS_HELP}"
            )
        } else {
            format!("{TAGS_HELP}; write image = {untagged:?}")
        };
        return Some(("must not have a tag: tags are cutover's".to_string(), help));
    }
    if name.is_empty() {
        return Some(("is empty".to_string(), IMAGE_EXAMPLE.to_string()));
    }
    if name.len() > IMAGE_NAME_MAX {
        return Some((
            format!(
                "is too long: {} characters, at most {IMAGE_NAME_MAX}",
                name.len()
            ),
            "use a shorter name, e.g. image = \"acme/api\"".to_string(),
        ));
    }
    let (domain, path) = split_domain(name);
    if let Some(domain) = domain
        && host_port_problem(domain).is_some()
    {
        return Some((
            format!("has an invalid registry host ({domain})"),
            "a registry is a host name or IP address with an optional :port, e.g. image = \"registry.example.com:5000/acme/api\"".to_string(),
        ));
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Some((
            "must be lowercase".to_string(),
            format!(
                "Docker image names are lowercase; write image = \"{}\"",
                match domain {
                    Some(d) => format!("{d}/{}", path.to_ascii_lowercase()),
                    None => path.to_ascii_lowercase(),
                }
            ),
        ));
    }
    if !path.split('/').all(is_path_component) {
        return Some((
            "is not a valid image name".to_string(),
            IMAGE_EXAMPLE.to_string(),
        ));
    }
    None
}

/// `name` split at the `:` of a tag (one in its last /-separated part), when it has one.
fn without_tag(name: &str) -> Option<(&str, &str)> {
    let last_start = name.rfind('/').map_or(0, |i| i + 1);
    let colon = name.get(last_start..)?.find(':')? + last_start;
    Some((name.get(..colon)?, name.get(colon + 1..)?))
}

/// Splits off a leading registry host the way Docker does: the first part when it has a `.`
/// or `:`, is `localhost` or is an IPv6 address in brackets.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: one part of an image's path.
fn is_path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let (Some(first), Some(last)) = (part.chars().next(), part.chars().next_back()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    part.split(alnum)
        .filter(|sep| !sep.is_empty())
        .all(|sep| sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-'))
}

/// What is wrong with `host[:port]` (a host name, IPv4 or bracketed IPv6 address), if anything.
fn host_port_problem(s: &str) -> Option<&'static str> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Some("an IPv6 address needs its closing ]");
        };
        if ip.is_empty() || !ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Some("not an IPv6 address");
        }
        match after {
            "" => (ip, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (ip, Some(port)),
                None => return Some("only :port may follow an IPv6 address"),
            },
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if !s.starts_with('[') {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Some("not a host name or IP address");
        }
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p >= 1)
    {
        return Some("the port must be a number from 1 to 65535");
    }
    None
}

/// `registry`: `host[:port][/path]`, no scheme, no spaces.
pub(crate) fn registry(cx: &mut Ctx<'_>, v: &Sp<String>) -> Option<String> {
    let raw = v.get();
    let example =
        "e.g. registry = \"127.0.0.1:5000\", \"registry.example.com/team\" or \"docker.io/acme\"";
    let problem = if let Some((scheme, rest)) = raw.split_once("://") {
        Some((
            format!("`registry` is host[:port][/path], not a URL: found {raw:?}"),
            format!(
                "drop the {scheme}:// (Docker picks the protocol): registry = {:?}",
                rest.trim_end_matches('/')
            ),
        ))
    } else if raw.is_empty() || raw.chars().any(char::is_whitespace) {
        Some((
            format!("`registry` must be host[:port][/path] without spaces, found {raw:?}"),
            example.to_string(),
        ))
    } else if raw.ends_with('/') {
        Some((
            format!("`registry` must not end with /, found {raw:?}"),
            format!(
                "cutover adds the / before the image name: registry = {:?}",
                raw.trim_end_matches('/')
            ),
        ))
    } else {
        let (host, path) = raw
            .split_once('/')
            .map_or((raw.as_str(), None), |(h, p)| (h, Some(p)));
        if let Some(why) = host_port_problem(host) {
            Some((
                format!("`registry` {raw:?} has an invalid host {host:?}: {why}"),
                example.to_string(),
            ))
        } else if !(host.contains(['.', ':']) || host == "localhost" || host.starts_with('[')) {
            Some((
                format!(
                    "`registry` {raw:?} has no registry host: Docker would read {host:?} as a Docker Hub namespace"
                ),
                format!(
                    "give the host a port or a domain (\"{host}:5000\"), or for Docker Hub write \"docker.io/{raw}\""
                ),
            ))
        } else if let Some(path) = path
            && !path.split('/').all(is_path_component)
        {
            Some((
                format!("`registry` {raw:?} has an invalid path {path:?}"),
                "the path after the host is lowercase letters, digits and . _ - between /s, e.g. registry = \"ghcr.io/acme\"".to_string(),
            ))
        } else {
            None
        }
    };
    reported(cx, v.span(), problem, raw.clone())
}

/// `host` of `[environments.E.docker]` or `[environments.E.swarm]`: `unix:///path` or
/// `tcp://host:port`. `section` names the table in messages.
pub(crate) fn engine_host(cx: &mut Ctx<'_>, v: &Sp<String>, section: &str) -> Option<String> {
    let raw = v.get();
    let valid = if raw.chars().any(char::is_whitespace) {
        false
    } else if let Some(path) = raw.strip_prefix("unix://") {
        path.starts_with('/') && path.len() > 1
    } else if let Some(addr) = raw.strip_prefix("tcp://") {
        addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(['/', '@'])
                && port.parse::<u16>().is_ok_and(|p| p >= 1)
        })
    } else {
        false
    };
    if valid {
        return Some(raw.clone());
    }
    let forms = "unix:///path/to/docker.sock or tcp://host:port";
    let hint = if let Some(rest) = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"))
    {
        format!(
            "the Docker API address uses tcp://, not http(s)://: host = \"tcp://{}\"",
            rest.trim_end_matches('/')
        )
    } else if raw.starts_with('/') {
        format!("a socket path needs the unix:// scheme: host = \"unix://{raw}\"")
    } else if let Some(path) = raw.strip_prefix("unix://") {
        format!(
            "the socket path is absolute: host = \"unix:///{}\"",
            path.trim_start_matches('/')
        )
    } else if raw.starts_with("tcp://") {
        "tcp:// needs a host and a port from 1 to 65535, e.g. host = \"tcp://127.0.0.1:2375\""
            .to_string()
    } else if section.ends_with(".swarm]") {
        "a swarm manager's Docker API, e.g. host = \"tcp://10.0.0.1:2375\" or host = \"unix:///var/run/docker.sock\"".to_string()
    } else {
        "e.g. host = \"unix:///var/run/docker.sock\" or host = \"tcp://127.0.0.1:2375\"; leave `host` out to use DOCKER_HOST, else the local socket".to_string()
    };
    cx.err(
        Diag::at(
            v.span(),
            format!("`host` in {section} must be {forms}, found {raw:?}"),
        )
        .help(hint),
    );
    None
}

/// `build_args`: names as for environment variables, values plain strings.
pub(crate) fn build_args(
    cx: &mut Ctx<'_>,
    args: &Named<Sp<RawBuildArg>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in &args.0 {
        if !is_env_name(name.get()) {
            cx.err(
                Diag::at(
                    name.span(),
                    format!("`{}` is not a valid build arg name", name.get()),
                )
                .help("build args are ARGs of the Dockerfile: letters, digits and _, not starting with a digit, e.g. PY_VERSION"),
            );
            continue;
        }
        match value.get() {
            RawBuildArg::Plain(v) => {
                out.insert(name.get().clone(), v.clone());
            }
            RawBuildArg::Secret(secret) => {
                let secret = secret.as_deref().unwrap_or("NAME");
                cx.err(
                    Diag::at(
                        value.span(),
                        format!(
                            "`build_args.{}` is a secret, and secrets never go into images",
                            name.get()
                        ),
                    )
                    .help(format!(
                        "a build arg stays in the image's history for anyone who can pull it; give the secret to the running service instead: env = {{ {} = {{ secret = \"{secret}\" }} }}",
                        name.get()
                    ))
                    .label("secret in an image"),
                );
            }
        }
    }
    out
}

/// `autoscale = { min, max, target_inflight }`: all three, each at least 1, `min <= max`.
pub(crate) fn autoscale(cx: &mut Ctx<'_>, a: &Sp<RawAutoscale>) -> Option<Autoscale> {
    let raw = a.get();
    let before = cx.diags.len();
    let min = cx.int(&raw.min, "autoscale.min", "autoscale", 1, 10_000);
    let max = cx.int(&raw.max, "autoscale.max", "autoscale", 1, 10_000);
    let target_inflight = cx.int(
        &raw.target_inflight,
        "autoscale.target_inflight",
        "autoscale",
        1,
        1_000_000,
    );
    let example = "e.g. autoscale = { min = 2, max = 6, target_inflight = 10 }";
    let missing: Vec<&str> = [
        ("min", raw.min.is_none()),
        ("max", raw.max.is_none()),
        ("target_inflight", raw.target_inflight.is_none()),
    ]
    .iter()
    .filter(|(_, absent)| *absent)
    .map(|(k, _)| *k)
    .collect();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
        cx.err(
            Diag::at(
                a.span(),
                format!(
                    "`autoscale` needs `min`, `max` and `target_inflight`; missing {}",
                    list.join(", ")
                ),
            )
            .help(example),
        );
    }
    if let (Some(lo), Some(hi), Some(at)) = (min, max, raw.min.as_ref())
        && lo > hi
    {
        cx.err(
            Diag::at(
                at.span(),
                format!("`autoscale.min` is {lo}, more than `autoscale.max` {hi}"),
            )
            .help(format!(
                "instances stay between min and max, so min must be at most max; {example}"
            )),
        );
    }
    if cx.diags.len() != before {
        return None;
    }
    Some(Autoscale {
        min: u32::try_from(min?).ok()?,
        max: u32::try_from(max?).ok()?,
        target_inflight: u32::try_from(target_inflight?).ok()?,
    })
}

/// `Some(value)` when `problem` is `None`; else reports the problem (message and help) at `span`.
/// `cpus`: a CPU limit per task, as swarm's billionths of a CPU.
pub(crate) fn cpus(cx: &mut Ctx<'_>, v: &Sp<f64>) -> Option<i64> {
    let cpus = *v.get();
    let problem = (!cpus.is_finite() || !(0.001..=1024.0).contains(&cpus)).then(|| {
        (
            format!("`cpus` must be a number of CPUs from 0.001 to 1024, found {cpus}"),
            "the CPU limit of each task, e.g. cpus = 0.5 (half a CPU) or cpus = 2".to_string(),
        )
    });
    // In range, the product fits an i64 (at most 1.024e12).
    #[allow(clippy::cast_possible_truncation)]
    let nano = (cpus * 1e9).round() as i64;
    reported(cx, v.span(), problem, nano)
}

/// `memory`: a size with a unit (B, KB, MB, GB, KiB, MiB, GiB; K, M, G as Docker spells them,
/// meaning KiB, MiB, GiB), in bytes; at least 6 MiB, the engine's own minimum.
pub(crate) fn memory(cx: &mut Ctx<'_>, v: &Sp<String>) -> Option<i64> {
    let help = "the memory limit of each task: a number and a unit, e.g. memory = \"256MB\" or \"1GiB\" (units B, KB, MB, GB, KiB, MiB, GiB)";
    let parsed = parse_size(v.get());
    let problem = match parsed {
        None => Some((
            format!(
                "`memory` must be a size such as \"256MB\", found {:?}",
                v.get()
            ),
            help.to_string(),
        )),
        Some(bytes) if bytes < 6 * 1024 * 1024 => Some((
            format!(
                "`memory` is {:?}, less than the 6MiB a container needs at least",
                v.get()
            ),
            help.to_string(),
        )),
        Some(_) => None,
    };
    reported(cx, v.span(), problem, parsed.unwrap_or(0))
}

/// `text` as a number of bytes: digits (a decimal point allowed) and a unit.
pub(crate) fn parse_size(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * scale;
    // A finite value under 2^62 converts exactly enough.
    #[allow(clippy::cast_possible_truncation)]
    (bytes.is_finite() && bytes < 4.6e18).then(|| bytes.round() as i64)
}

/// `constraints`: swarm placement expressions, `<attribute> == <value>` or `!=`.
pub(crate) fn constraints(cx: &mut Ctx<'_>, list: &[Sp<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for c in list {
        let text = c.get().trim();
        let ok = ["==", "!="].iter().any(|op| {
            text.split_once(op)
                .is_some_and(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty())
        });
        if ok {
            out.push(text.to_string());
        } else {
            cx.err(
                Diag::at(
                    c.span(),
                    format!("`constraints` entry {:?} is not a placement constraint", c.get()),
                )
                .help("each is `<attribute> == <value>` or `!=`, e.g. constraints = [\"node.role == worker\", \"node.labels.zone == a\"]"),
            );
        }
    }
    out
}

fn reported<T>(
    cx: &mut Ctx<'_>,
    span: std::ops::Range<usize>,
    problem: Option<(String, String)>,
    value: T,
) -> Option<T> {
    match problem {
        Some((message, help)) => {
            cx.err(Diag::at(span, message).help(help));
            None
        }
        None => Some(value),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        for ok in [
            "api",
            "acme/api",
            "acme/my-api",
            "acme/my__api.v2",
            "a---b",
            "localhost/api",
            "localhost:5000/api",
            "127.0.0.1:5000/acme/api",
            "Registry.Example.com/acme/api",
            "[::1]:5000/api",
        ] {
            assert_eq!(image_problem(ok), None, "{ok}");
        }
        for (bad, says) in [
            ("acme/api:1.0", "tag"),
            ("localhost:5000/api:latest", "tag"),
            ("api:5000", "tag"),
            ("acme/api@sha256:abc", "digest"),
            ("Acme/api", "lowercase"),
            ("registry.example.com/Acme", "lowercase"),
            ("acme//api", "not a valid"),
            ("acme/-api", "not a valid"),
            ("acme/api_", "not a valid"),
            ("acme/a___b", "not a valid"),
            ("acme/a b", "not a valid"),
            ("bad_host.com/api", "registry host"),
            ("host.com:0/api", "registry host"),
            ("", "empty"),
        ] {
            let (message, _) = image_problem(bad).unwrap_or_default();
            assert!(message.contains(says), "{bad}: {message}");
        }
        assert!(image_problem(&"a".repeat(256)).is_some());
    }
}
