//! The Docker test infrastructure itself, against the private engine that `scripts/test` starts:
//! a busybox service image builds with the classic builder, runs with a published 127.0.0.1
//! port and answers `/health`, and the engine pushes it to a real registry on 127.0.0.1. Without
//! the engine (`CUTOVER_TEST_DOCKER_HOST` unset) this fails, saying how to start one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::docker::{
    Container, docker, docker_ok, engine_host, start_registry, unique_name, write_busybox_service,
};
use common::runtime::{free_port, get, wait_until};

#[test]
fn busybox_image_builds_runs_answers_health_and_pushes_to_a_registry() {
    let host = engine_host();
    let info = docker_ok(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(!info.is_empty(), "the engine at {host} has no version");

    let ctx = tempfile::tempdir().unwrap();
    write_busybox_service(ctx.path(), "v7");
    let image = format!("cutover-test/{}:v7", unique_name("busybox"));
    docker_ok(&["build", "-q", "-t", &image, ctx.path().to_str().unwrap()]);

    // The image runs busybox httpd by default.
    let inspect = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Cmd}}",
        &image,
    ]);
    assert!(inspect.contains("httpd"), "unexpected CMD: {inspect}");

    // PORT moves the listener: the container listens on 9000, published on a free 127.0.0.1 port.
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:9000");
    let name = unique_name("cutover-test-busybox");
    let container = Container::run(&["--name", &name, "-e", "PORT=9000", "-p", &publish, &image]);
    let mut last = Err("no answer yet".to_string());
    let healthy = wait_until(Duration::from_secs(15), || {
        last = get(port, "/health");
        matches!(&last, Ok((200, _)))
    });
    assert!(
        healthy,
        "GET /health on 127.0.0.1:{port} never answered 200 (last: {last:?}); container logs:\n{}",
        container.logs()
    );
    let (_, body) = last.unwrap();
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["version"], "v7");
    let (status, index) = get(port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(index.contains("version v7"), "{index}");

    // A real registry on 127.0.0.1 takes the image from the engine.
    let store = tempfile::tempdir().unwrap();
    let registry = start_registry(store.path());
    let remote = format!("{}/cutover-test/busybox:v7", registry.addr);
    docker_ok(&["tag", &image, &remote]);
    let push = docker(&["push", &remote]);
    assert!(
        push.status.success(),
        "docker push {remote} failed:\n{}{}\nregistry log:\n{}",
        String::from_utf8_lossy(&push.stdout),
        String::from_utf8_lossy(&push.stderr),
        registry.log()
    );
    let (status, tags) = get(registry.port, "/v2/cutover-test/busybox/tags/list").unwrap();
    assert_eq!(status, 200, "{tags}");
    assert!(tags.contains("\"v7\""), "{tags}");

    // Removing the container frees its port.
    let id = container.id.clone();
    drop(container);
    let gone = docker(&["inspect", &id]);
    assert!(!gone.status.success(), "container {id} is still there");
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        }),
        "127.0.0.1:{port} still accepts connections after the container was removed"
    );
    let _ = docker(&["rmi", &image, &remote]);
}
