//! The full example from DESIGN.md's "cutover.toml (v1)" section parses and resolves as documented.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use cutover_config::{EnvValue, Pause, StrategyKind, TargetKind, parse};

const EXAMPLE: &str = include_str!("data/design-example.toml");

fn project() -> (tempfile::TempDir, cutover_config::Project) {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(tmp.path().join("skills/pr-review")).expect("mkdir");
    let file = tmp.path().join("cutover.toml");
    let project = match parse(EXAMPLE, &file, tmp.path()) {
        Ok(p) => p,
        Err(e) => panic!("the DESIGN.md example must parse:\n{}", e.report()),
    };
    (tmp, project)
}

#[test]
fn parses_with_every_key_read() {
    let (_tmp, p) = project();
    assert_eq!(p.name, "odoobo");
    assert_eq!(
        p.environment_names(),
        ["staging", "preprod", "production", "development"]
    );
    assert_eq!(p.default_env(), "development");
    assert_eq!(p.secret_names(), ["HOOK_KEY", "OPENAI_API_KEY"]);
    let svc = p.service("pr-review").expect("pr-review");
    assert_eq!(svc.path, Path::new("skills/pr-review"));
    assert_eq!(svc.watch, ["shared/**"]);
    assert_eq!(p.notify.len(), 1);
    assert_eq!(
        p.notify[0].on,
        ["deploy.succeeded", "deploy.failed", "rollback"]
    );
    assert_eq!(
        p.notify[0].secret,
        Some(EnvValue::Secret("HOOK_KEY".into()))
    );
}

#[test]
fn development_resolves_the_service_keys_over_defaults() {
    let (_tmp, p) = project();
    let dev = p.resolve("development").expect("development");
    assert_eq!(dev.target, TargetKind::Local);
    let s = dev.service("pr-review").expect("pr-review");
    assert_eq!(s.port, Some(8080));
    assert_eq!(s.instances, 1);
    assert_eq!(s.strategy, StrategyKind::Canary);
    assert_eq!(s.checks, ["ruff check .", "pytest -q"]);
    assert_eq!(s.health.period, Duration::from_secs(10));
    assert_eq!(s.health.initial_delay, Duration::from_secs(30));
    assert_eq!(
        s.health.expect_json,
        Some(serde_json::json!({ "status": "healthy" }))
    );
    assert_eq!(
        s.env.get("LOG_LEVEL"),
        Some(&EnvValue::Plain("info".into()))
    );
    assert_eq!(
        s.env.get("OPENAI_API_KEY"),
        Some(&EnvValue::Secret("OPENAI_API_KEY".into()))
    );
    let canary = s.canary.as_ref().expect("canary");
    let weights: Vec<u8> = canary.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [5, 25, 50, 100]);
    assert_eq!(
        canary.steps[0].pause,
        Pause::Timed(Duration::from_secs(1800))
    );
    assert_eq!(canary.steps[3].pause, Pause::None);
    assert_eq!(canary.max_p99_latency, Duration::from_millis(1000));
    assert_eq!(canary.verdict_timeout, Duration::from_secs(600));
    assert_eq!(s.smoke.len(), 1);
    assert_eq!(s.smoke[0].max_latency, Some(Duration::from_millis(500)));
}

#[test]
fn production_overrides_instances_and_port() {
    let (tmp, _) = project();
    // Add a second service so "others inherit instances = 2" is observable.
    std::fs::create_dir_all(tmp.path().join("api")).expect("mkdir");
    let src = format!(
        "{EXAMPLE}\n[services.api]\npath = \"api\"\nrun = \"python3 app.py\"\nport = 8081\n"
    );
    let p = match parse(&src, &tmp.path().join("cutover.toml"), tmp.path()) {
        Ok(p) => p,
        Err(e) => panic!("{}", e.report()),
    };
    let prod = p.resolve("production").expect("production");
    assert!(prod.require_approval);
    let pr = prod.service("pr-review").expect("pr-review");
    assert_eq!((pr.instances, pr.port), (3, Some(9080)));
    let api = prod.service("api").expect("api");
    assert_eq!((api.instances, api.port), (2, Some(8081)));
    let staging = p.resolve("staging").expect("staging");
    assert_eq!(staging.branch.as_deref(), Some("staging"));
    assert_eq!(staging.service("pr-review").map(|s| s.instances), Some(1));
}

#[test]
fn preprod_builds_images_for_its_registry() {
    let (_tmp, p) = project();
    let preprod = p.resolve("preprod").expect("preprod");
    assert_eq!(preprod.target, TargetKind::Docker);
    assert_eq!(preprod.registry.as_deref(), Some("127.0.0.1:5000"));
    assert_eq!(
        preprod.docker_host, None,
        "the commented table keeps the default"
    );
    let s = preprod.service("pr-review").expect("pr-review");
    assert_eq!(s.target, TargetKind::Docker);
    assert_eq!(s.container.image, "127.0.0.1:5000/odoobo-pr-review");
    assert_eq!(
        s.container.dockerfile,
        Path::new("skills/pr-review/Dockerfile")
    );
    assert_eq!(s.container.container_port, 8080);
    assert!(s.container.build_args.is_empty());
    assert_eq!(s.container.autoscale, None);
    let staging = p.resolve("staging").expect("staging");
    assert_eq!(staging.registry, None);
    let s = staging.service("pr-review").expect("pr-review");
    assert_eq!(s.container.image, "odoobo-pr-review");
}

#[test]
fn unknown_environment_lists_the_known_ones() {
    let (_tmp, p) = project();
    let err = p.resolve("prod").expect_err("an error");
    assert_eq!(
        err.to_string(),
        "unknown environment `prod`; known: staging, preprod, production, development"
    );
}
