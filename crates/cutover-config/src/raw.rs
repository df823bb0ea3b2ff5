//! The serde mirror of `cutover.toml`: every table rejects unknown keys, every value keeps its
//! span so validation can point at it. These types are the single source of truth for which keys
//! exist (the decoder reads serde's "expected one of" lists) and for the JSON Schema.
//!
//! Values are deliberately loose (integers as `i64`, durations as strings): range and format
//! checks happen in `validate.rs`, where the message can name the key and what is valid.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use toml::Spanned;

/// A value with its byte span in the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sp<T>(pub Spanned<T>);

impl<T> Sp<T> {
    pub fn get(&self) -> &T {
        self.0.get_ref()
    }
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Spanned::<T>::deserialize(d).map(Sp)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        T::json_schema(g)
    }
}

/// A TOML table whose keys are names (services, environments, env vars), in file order, each
/// key with its span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Named<T>(pub Vec<(Sp<String>, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(Sp<String>, T)> = Vec::new();
                while let Some(key) = map.next_key::<Sp<String>>()? {
                    let value = map.next_value::<T>()?;
                    entries.push((key, value));
                }
                entries.sort_by_key(|(k, _)| k.span().start);
                Ok(Named(entries))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for Named<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("{}Map", T::schema_name()).into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let value = g.subschema_for::<T>();
        json_schema!({ "type": "object", "additionalProperties": value })
    }
}

/// A duration string (`500ms`, `10s`, `1m30s`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"10s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

impl JsonSchema for RawDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number with a unit (ms, s, m, h, d), e.g. \"500ms\", \"10s\", \"1m30s\".",
            "pattern": "^(0|([0-9]+(ns|us|ms|s|m|h|d))+)$"
        })
    }
}

/// A number that may be written as an integer or a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RawNumber(pub f64);

impl<'de> Deserialize<'de> for RawNumber {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawNumber(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawNumber(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawNumber(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawNumber {
    fn schema_name() -> Cow<'static, str> {
        "Number".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "number" })
    }
}

/// An `env` value or a notify secret: `"literal"` or `{ secret = "NAME" }`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawEnvValue {
    Plain(String),
    Secret(Sp<String>),
}

impl<'de> Deserialize<'de> for RawEnvValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawEnvValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or { secret = \"NAME\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawEnvValue::Plain(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut secret = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "secret" {
                        secret = Some(map.next_value::<Sp<String>>()?);
                    } else {
                        return Err(de::Error::unknown_field(&key, &["secret"]));
                    }
                }
                secret
                    .map(RawEnvValue::Secret)
                    .ok_or_else(|| de::Error::missing_field("secret"))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawEnvValue {
    fn schema_name() -> Cow<'static, str> {
        "EnvValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A literal string, or { secret = \"NAME\" } for a value set with `cutover secrets set NAME`.",
            "oneOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": { "secret": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" } },
                    "required": ["secret"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// A `build_args` value: a string. A `{ secret = "NAME" }` table is accepted here only so
/// validation can explain why secrets cannot be build args; any other value is a type error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawBuildArg {
    Plain(String),
    /// `{ secret = ... }`, with the secret's name when it is a string.
    Secret(Option<String>),
}

impl<'de> Deserialize<'de> for RawBuildArg {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBuildArg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawBuildArg::Plain(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut secret = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "secret" {
                        let name = map.next_value::<serde_json::Value>()?;
                        secret = Some(name.as_str().map(str::to_string));
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                match secret {
                    Some(name) => Ok(RawBuildArg::Secret(name)),
                    None => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawBuildArg {
    fn schema_name() -> Cow<'static, str> {
        "BuildArg".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A literal string. Secrets are not allowed: build args stay in the image's history; give secrets to the service through `env`."
        })
    }
}

/// `strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "Strategy")]
pub(crate) enum RawStrategy {
    BlueGreen,
    Rolling,
    Canary,
    Immediate,
}

/// `target`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "Target")]
pub(crate) enum RawTarget {
    Local,
    Docker,
    Swarm,
    Kubernetes,
    Exec,
}

/// `health.type`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "ProbeKind")]
pub(crate) enum RawProbeKind {
    Http,
    Tcp,
}

/// `[[notify]] format`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(rename = "NotifyFormat")]
pub(crate) enum RawNotifyFormat {
    Json,
    Slack,
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "cutover.toml", description = "The cutover project file (v1).")]
pub(crate) struct RawFile {
    /// Project-wide settings; `name` is required.
    pub project: Option<Sp<RawProject>>,
    /// Settings every service inherits (every service key but path, watch and depends_on).
    pub defaults: Option<Sp<RawSettings>>,
    /// The services, by name (`[a-z0-9-]{1,63}`).
    pub services: Option<Sp<Named<RawService>>>,
    /// Environments, by name; `development` exists unless declared.
    pub environments: Option<Sp<Named<RawEnvironment>>>,
    /// Webhooks.
    pub notify: Option<Sp<Vec<Sp<RawNotify>>>>,
    /// Listeners services share, routed by `hosts` and `path_prefix`.
    pub proxy: Option<Sp<RawProxy>>,
}

/// `[proxy]`: the shared listeners of the agent's proxy.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Proxy")]
pub(crate) struct RawProxy {
    /// A socket address for plain HTTP that services with `hosts` share, e.g. "0.0.0.0:80".
    pub http: Option<Sp<String>>,
    /// A socket address for HTTPS that services with `hosts` and `tls` share, e.g.
    /// "0.0.0.0:443".
    pub https: Option<Sp<String>>,
    /// Answer plain HTTP requests for services with `tls` with a 308 to https (default false).
    pub redirect_https: Option<Sp<bool>>,
    /// Certificates over ACME for services with `tls = "acme"`.
    pub acme: Option<Sp<RawAcme>>,
}

/// `[proxy.acme]`: the ACME server and account that `tls = "acme"` certificates come from.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Acme")]
pub(crate) struct RawAcme {
    /// The ACME directory URL (required), e.g.
    /// "https://acme-v02.api.letsencrypt.org/directory".
    #[schemars(required)]
    pub directory: Option<Sp<String>>,
    /// The account's contact email (required).
    #[schemars(required)]
    pub email: Option<Sp<String>>,
    /// A PEM file with the root certificate the directory's HTTPS is checked against, for a
    /// private or test ACME server (pebble); default: the public web roots.
    pub ca: Option<Sp<String>>,
    /// Renew a certificate when less than this is left of it (default: a third of its
    /// lifetime), e.g. "30d".
    pub renew_before: Option<Sp<RawDuration>>,
}

/// A service's `tls`: `{ cert = "path", key = "path" }` (PEM files), or `"acme"`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawTls {
    /// A string: only `"acme"` is valid (validation says so for anything else).
    Word(String),
    /// `{ cert, key }`.
    Files {
        cert: Option<Sp<String>>,
        key: Option<Sp<String>>,
    },
}

impl<'de> Deserialize<'de> for RawTls {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawTls;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"acme\" or { cert = \"path\", key = \"path\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawTls::Word(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut cert, mut key) = (None, None);
                while let Some(name) = map.next_key::<String>()? {
                    match name.as_str() {
                        "cert" => cert = Some(map.next_value::<Sp<String>>()?),
                        "key" => key = Some(map.next_value::<Sp<String>>()?),
                        _ => return Err(de::Error::unknown_field(&name, &["cert", "key"])),
                    }
                }
                Ok(RawTls::Files { cert, key })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawTls {
    fn schema_name() -> Cow<'static, str> {
        "Tls".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "HTTPS for the service's hosts on [proxy] https: \"acme\" (certificates from [proxy.acme]), or PEM files { cert = \"path\", key = \"path\" } relative to the project directory.",
            "oneOf": [
                { "type": "string", "enum": ["acme"] },
                {
                    "type": "object",
                    "properties": { "cert": { "type": "string" }, "key": { "type": "string" } },
                    "required": ["cert", "key"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// A size in bytes: an integer, or a string with a unit ("512KB", "10MB", "1GB"; 1KB = 1024).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawSize(pub String);

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"10MB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawSize(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawSize(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawSize(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawSize {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a number of bytes, or a number with a unit (B, KB, MB, GB; 1KB = 1024 bytes), e.g. \"10MB\".",
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^[0-9]+ *([KkMmGg]i?[Bb]?|[Bb])?$" }
            ]
        })
    }
}

/// `[project]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Project")]
pub(crate) struct RawProject {
    /// The project's name (required).
    #[schemars(required)]
    pub name: Option<Sp<String>>,
    /// Release store: "sqlite://.cutover/state.db" (default) or "postgres://...".
    pub state: Option<Sp<String>>,
    /// Services at once per stage (default 16).
    #[schemars(range(min = 1))]
    pub max_parallel: Option<Sp<i64>>,
    /// Local snapshots kept per service (default 5).
    #[schemars(range(min = 1))]
    pub keep_releases: Option<Sp<i64>>,
    /// Worktree branches are <branch_prefix>/<service> (default "service").
    pub branch_prefix: Option<Sp<String>>,
    /// A socket address for Prometheus metrics, e.g. "127.0.0.1:9464" (unset by default).
    pub metrics_listen: Option<Sp<String>>,
    /// The environment used when --env is not given (default "development").
    pub default_env: Option<Sp<String>>,
}

/// Declares a layer table: its own keys plus every overridable service key, defined once here.
macro_rules! layer {
    ($(#[$m:meta])* $name:ident { $( $(#[$fm:meta])* $f:ident : $t:ty ),* $(,)? }) => {
        #[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        $(#[$m])*
        pub(crate) struct $name {
            $( $(#[$fm])* pub $f: $t, )*
            /// Commands run in the service's path before building (lint, tests).
            pub checks: Option<Sp<Vec<Sp<String>>>>,
            /// Command run in the release snapshot.
            pub build: Option<Sp<String>>,
            /// Command that starts one instance; it must listen on $PORT.
            pub run: Option<Sp<String>>,
            /// Public port; the proxy listens here.
            #[schemars(range(min = 1, max = 65535))]
            pub port: Option<Sp<i64>>,
            /// Address the proxy listens on (default 127.0.0.1).
            pub listen: Option<Sp<String>>,
            /// Host names this service answers on the shared `[proxy]` listeners.
            pub hosts: Option<Sp<Vec<Sp<String>>>>,
            /// With `hosts`: only paths under this prefix (longest prefix wins), e.g. "/api".
            pub path_prefix: Option<Sp<String>>,
            /// Largest request body the proxy passes on (413 above it), e.g. "10MB".
            pub max_body: Option<Sp<RawSize>>,
            /// How long the proxy waits for a response head (504 after it).
            pub upstream_timeout: Option<Sp<RawDuration>>,
            /// Write one JSON line per request to .cutover/logs/services/<service>/access.log.
            pub access_log: Option<Sp<bool>>,
            /// With `hosts`: HTTPS on [proxy] https, "acme" or { cert = "path", key = "path" }.
            pub tls: Option<Sp<RawTls>>,
            /// Instances (default 1).
            #[schemars(range(min = 1))]
            pub instances: Option<Sp<i64>>,
            /// Rolling: instances replaced at a time (default 1).
            #[schemars(range(min = 1))]
            pub batch: Option<Sp<i64>>,
            /// How long old backends may finish in-flight requests (default 30s).
            pub drain_timeout: Option<Sp<RawDuration>>,
            /// How long old instances stay warm after a switch (default 30s).
            pub scale_down_delay: Option<Sp<RawDuration>>,
            /// Timeout per command: checks, build, hooks (default 10m).
            pub timeout: Option<Sp<RawDuration>>,
            /// Commands run before traffic changes; failure aborts.
            pub pre_deploy: Option<Sp<Vec<Sp<String>>>>,
            /// Commands run after a deploy.
            pub post_deploy: Option<Sp<Vec<Sp<String>>>>,
            /// Roll back when a post_deploy hook fails (default false).
            pub rollback_on_hook_failure: Option<Sp<bool>>,
            /// Environment variables: "value" or { secret = "NAME" }.
            pub env: Option<Sp<Named<Sp<RawEnvValue>>>>,
            /// Deploy strategy (default blue-green).
            pub strategy: Option<Sp<RawStrategy>>,
            /// Health probe (merged field by field across layers).
            pub health: Option<Sp<RawHealth>>,
            /// Canary steps and analysis (replaced as a whole by a later layer).
            pub canary: Option<Sp<RawCanary>>,
            /// Extra checks for `cutover test` (replaced as a whole by a later layer).
            pub smoke: Option<Sp<Vec<Sp<RawSmoke>>>>,
            /// Where releases run (default local).
            pub target: Option<Sp<RawTarget>>,
            /// Container targets: the Dockerfile, relative to the service's path (default
            /// "Dockerfile").
            pub dockerfile: Option<Sp<String>>,
            /// Container targets: the image name without a tag (cutover adds the tags); default
            /// "<project>-<service>", after "<registry>/" when the environment sets a registry.
            #[schemars(pattern(r"^((\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+)(:[0-9]+)?/)?[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"))]
            pub image: Option<Sp<String>>,
            /// Container targets: `--build-arg` values (merged key by key across layers). Plain
            /// strings only: secrets go in `env`, never into an image.
            pub build_args: Option<Sp<Named<Sp<RawBuildArg>>>>,
            /// Container targets: the port the service listens on inside the container, given
            /// to it as $PORT (default 8080).
            #[schemars(range(min = 1, max = 65535))]
            pub container_port: Option<Sp<i64>>,
            /// Container targets: keep between `min` and `max` instances by in-flight requests
            /// per instance (replaced as a whole by a later layer).
            pub autoscale: Option<Sp<RawAutoscale>>,
            /// Swarm: the CPU limit of each task, in CPUs (e.g. 0.5).
            #[schemars(range(min = 0.001, max = 1024.0))]
            pub cpus: Option<Sp<f64>>,
            /// Swarm: the memory limit of each task, e.g. "256MB" or "1GiB".
            pub memory: Option<Sp<String>>,
            /// Swarm: placement constraints, e.g. ["node.role == worker"].
            pub constraints: Option<Sp<Vec<Sp<String>>>>,
        }

        impl $name {
            /// The overridable keys of this layer.
            pub fn settings(&self) -> RawSettings {
                RawSettings {
                    checks: self.checks.clone(),
                    build: self.build.clone(),
                    run: self.run.clone(),
                    port: self.port.clone(),
                    listen: self.listen.clone(),
                    hosts: self.hosts.clone(),
                    path_prefix: self.path_prefix.clone(),
                    max_body: self.max_body.clone(),
                    upstream_timeout: self.upstream_timeout.clone(),
                    access_log: self.access_log.clone(),
                    tls: self.tls.clone(),
                    instances: self.instances.clone(),
                    batch: self.batch.clone(),
                    drain_timeout: self.drain_timeout.clone(),
                    scale_down_delay: self.scale_down_delay.clone(),
                    timeout: self.timeout.clone(),
                    pre_deploy: self.pre_deploy.clone(),
                    post_deploy: self.post_deploy.clone(),
                    rollback_on_hook_failure: self.rollback_on_hook_failure.clone(),
                    env: self.env.clone(),
                    strategy: self.strategy.clone(),
                    health: self.health.clone(),
                    canary: self.canary.clone(),
                    smoke: self.smoke.clone(),
                    target: self.target.clone(),
                    dockerfile: self.dockerfile.clone(),
                    image: self.image.clone(),
                    build_args: self.build_args.clone(),
                    container_port: self.container_port.clone(),
                    autoscale: self.autoscale.clone(),
                    cpus: self.cpus.clone(),
                    memory: self.memory.clone(),
                    constraints: self.constraints.clone(),
                }
            }
        }
    };
}

layer!(
    /// `[defaults]` and `[environments.E.services.S]`: only the overridable keys.
    #[schemars(rename = "Settings")]
    RawSettings {}
);

layer!(
    /// `[services.NAME]`.
    #[schemars(rename = "Service")]
    RawService {
        /// Source directory, relative to the project dir (required).
        #[schemars(required)]
        path: Option<Sp<String>>,
        /// More globs (relative to the project dir) whose changes affect this service.
        watch: Option<Sp<Vec<Sp<String>>>>,
        /// Services that must be ACTIVE before this one deploys.
        depends_on: Option<Sp<Vec<Sp<String>>>>,
    }
);

layer!(
    /// `[environments.NAME]`.
    #[schemars(rename = "Environment")]
    RawEnvironment {
        /// The branch auto-deploy follows.
        branch: Option<Sp<String>>,
        /// Stop before traffic changes until `cutover approve` (default false).
        require_approval: Option<Sp<bool>>,
        /// Per-service overrides; keys name declared services.
        services: Option<Sp<Named<RawSettings>>>,
        /// Container registry images are pushed to: host[:port][/path], no scheme, e.g.
        /// "127.0.0.1:5000" (needed by swarm and kubernetes).
        #[schemars(pattern(r"^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+)(:[0-9]+)?(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"))]
        registry: Option<Sp<String>>,
        /// The Docker Engine of the docker target (default DOCKER_HOST, else the local socket).
        docker: Option<Sp<RawEngine>>,
        /// The swarm manager's Docker Engine API, for the swarm target.
        swarm: Option<Sp<RawEngine>>,
    }
);

/// `[environments.E.docker]` and `[environments.E.swarm]`: how to reach a Docker Engine API.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Engine")]
pub(crate) struct RawEngine {
    /// "unix:///path/to/docker.sock" or "tcp://host:port".
    #[schemars(pattern(r"^(unix:///.+|tcp://.+:[0-9]+)$"))]
    pub host: Option<Sp<String>>,
}

/// `autoscale = { min, max, target_inflight }`: instances between `min` and `max`, by in-flight
/// requests per instance.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Autoscale")]
pub(crate) struct RawAutoscale {
    /// Fewest instances, at least 1 (required).
    #[schemars(required)]
    #[schemars(range(min = 1))]
    pub min: Option<Sp<i64>>,
    /// Most instances, at least `min` (required).
    #[schemars(required)]
    #[schemars(range(min = 1))]
    pub max: Option<Sp<i64>>,
    /// In-flight requests per instance to aim for, at least 1 (required).
    #[schemars(required)]
    #[schemars(range(min = 1))]
    pub target_inflight: Option<Sp<i64>>,
}

/// `health`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Health")]
pub(crate) struct RawHealth {
    /// "http" (default) or "tcp".
    #[serde(rename = "type")]
    pub kind: Option<Sp<RawProbeKind>>,
    /// Request path (default /health).
    pub path: Option<Sp<String>>,
    /// Expected status (default 200).
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<Sp<i64>>,
    /// A subset the JSON body must contain.
    pub expect_json: Option<Sp<serde_json::Value>>,
    /// Grace period: failures before it ends don't count (default 0s).
    pub initial_delay: Option<Sp<RawDuration>>,
    /// Time between probes (default 1s).
    pub period: Option<Sp<RawDuration>>,
    /// Per-probe timeout (default 1s).
    pub timeout: Option<Sp<RawDuration>>,
    /// Consecutive successes to become ready (default 1).
    #[schemars(range(min = 1))]
    pub success_threshold: Option<Sp<i64>>,
    /// Consecutive failures of a ready instance to take it out of the route and restart it
    /// (default 3).
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<Sp<i64>>,
    /// How long a starting instance may take to pass its first probe; failures before that
    /// mean "not yet" (default 60s).
    pub ready_timeout: Option<Sp<RawDuration>>,
}

/// `canary`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Canary")]
pub(crate) struct RawCanary {
    /// Steps: { weight = 1..100, pause = "30m" | "manual" }.
    pub steps: Option<Sp<Vec<Sp<RawStep>>>>,
    /// Time between judgements (default 10s).
    pub interval: Option<Sp<RawDuration>>,
    /// Highest acceptable error rate, 0 to 1 (default 0.05).
    pub max_error_rate: Option<Sp<RawNumber>>,
    /// Highest acceptable p99 latency (default 1000ms).
    pub max_p99_latency: Option<Sp<RawDuration>>,
    /// Requests needed before a verdict (default 20).
    #[schemars(range(min = 1))]
    pub min_requests: Option<Sp<i64>>,
    /// Roll back a step that gets no verdict this long (default 10m).
    pub verdict_timeout: Option<Sp<RawDuration>>,
    /// Keep a client on one version with a cookie (default false).
    pub sticky: Option<Sp<bool>>,
    /// External analysis through a Prometheus query.
    pub prometheus: Option<Sp<RawPrometheus>>,
}

/// One canary step.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CanaryStep")]
pub(crate) struct RawStep {
    /// Percent of traffic to the canary, 1 to 100 (required).
    #[schemars(required)]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<Sp<i64>>,
    /// A duration, or "manual" to wait for `cutover promote`.
    pub pause: Option<Sp<String>>,
}

/// `canary.prometheus`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Prometheus")]
pub(crate) struct RawPrometheus {
    /// Prometheus base URL.
    pub url: Option<Sp<String>>,
    /// A PromQL query returning a scalar.
    pub query: Option<Sp<String>>,
    /// Highest acceptable value.
    pub max: Option<Sp<RawNumber>>,
}

/// One `[[services.S.smoke]]` entry.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Smoke")]
pub(crate) struct RawSmoke {
    /// Request path (required, starts with /).
    pub path: Option<Sp<String>>,
    /// HTTP method (default GET).
    pub method: Option<Sp<String>>,
    /// Expected status (default 200).
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<Sp<i64>>,
    /// Latency bound.
    pub max_latency: Option<Sp<RawDuration>>,
}

/// One `[[notify]]` webhook.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Notify")]
pub(crate) struct RawNotify {
    /// Where to POST: http:// or https:// (required).
    #[schemars(required)]
    pub url: Option<Sp<String>>,
    /// "json" (default) or "slack".
    pub format: Option<Sp<RawNotifyFormat>>,
    /// Events that trigger it (default all): deploy.started, deploy.succeeded, deploy.failed,
    /// rollback, approval.requested.
    pub on: Option<Sp<Vec<Sp<String>>>>,
    /// HMAC-SHA256 key for X-Cutover-Signature: a string or { secret = "NAME" }.
    pub secret: Option<Sp<RawEnvValue>>,
}
