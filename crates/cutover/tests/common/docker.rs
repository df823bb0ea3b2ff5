//! Helpers for tests against a real Docker engine: the private engine that `scripts/test` starts
//! (`scripts/docker-engine`), a busybox HTTP service to build into an image, and a real image
//! registry (Debian's `docker-registry`) on 127.0.0.1.
//!
//! No image is ever pulled (the machines have no registry network): images are built `FROM
//! scratch` around the static `/bin/busybox` (Debian `busybox-static`). A test without the engine
//! fails with a message saying how to get one: it never skips.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::runtime::{free_port, get, wait_until};

/// The environment variable that names the private engine (`unix://.../docker.sock`).
pub const HOST_VAR: &str = "CUTOVER_TEST_DOCKER_HOST";

/// The private engine's host, from `CUTOVER_TEST_DOCKER_HOST`; panics when it is not set.
pub fn engine_host() -> String {
    match std::env::var(HOST_VAR) {
        Ok(h) if !h.trim().is_empty() => h,
        _ => panic!(
            "docker tests need the private engine that scripts/test starts: run scripts/test, or \
             `scripts/docker-engine start /tmp/cutover-dockerd` and export \
             CUTOVER_TEST_DOCKER_HOST=unix:///tmp/cutover-dockerd/docker.sock"
        ),
    }
}

/// Runs the `docker` CLI against the private engine (for test set-up and assertions only: the
/// product talks to the Engine API).
pub fn docker(args: &[&str]) -> Output {
    docker_at(&engine_host(), args)
}

/// Runs the `docker` CLI against `host` (`unix://...`). The classic builder is asked for
/// explicitly: BuildKit is not packaged here, and a newer CLI would otherwise warn, or fail when
/// `DOCKER_BUILDKIT=1`.
pub fn docker_at(host: &str, args: &[&str]) -> Output {
    Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running `docker -H {host} {}`: {e}", args.join(" ")))
}

/// Runs `docker ARGS`, panicking with its output when it fails; its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "`docker {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A name no other test (or earlier run) uses: `PREFIX-PID-NANOS`.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A container of the private engine, removed (`docker rm -f`) on drop.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run -d ARGS...`.
    pub fn run(args: &[&str]) -> Container {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(args);
        Container {
            id: docker_ok(&all),
        }
    }

    /// Its logs (stdout and stderr), for failure messages.
    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.id]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.id]);
    }
}

/// The `Dockerfile` of [`write_busybox_service`]: busybox httpd on `$PORT` (default 8080), on
/// every address of the container, serving `/www`.
pub const BUSYBOX_DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
COPY www /www
ENTRYPOINT ["/bin/busybox"]
CMD ["sh", "-c", "exec /bin/busybox httpd -f -p ${PORT:-8080} -h /www"]
"#;

/// Writes the build context of a tiny HTTP service into `dir`: a `FROM scratch` image holding a
/// copy of the static `/bin/busybox`, whose httpd listens on `$PORT` (default 8080) and serves
/// `www/`: `/health` answers `{"status":"healthy","version":"VERSION"}` (a file: busybox httpd
/// serves files only) and `/` an `index.html` naming the version. A `.dockerignore` keeps
/// `secret-notes.txt` and `target/` out of the context, as a real project's would.
pub fn write_busybox_service(dir: &Path, version: &str) {
    let busybox = static_busybox();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("Dockerfile"), BUSYBOX_DOCKERFILE).unwrap();
    std::fs::write(dir.join(".dockerignore"), "secret-notes.txt\ntarget\n").unwrap();
    std::fs::copy(&busybox, dir.join("busybox"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", busybox.display()));
    std::fs::write(
        dir.join("www/health"),
        format!(r#"{{"status":"healthy","version":"{version}"}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("www/index.html"),
        format!("<!doctype html>\n<title>busybox service</title>\n<p>version {version}</p>\n"),
    )
    .unwrap();
}

/// `/bin/busybox`, checked to be statically linked (a `FROM scratch` image has no libc).
pub fn static_busybox() -> PathBuf {
    let path = PathBuf::from("/bin/busybox");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}: the docker tests need a static busybox (apt-get install \
             busybox-static; scripts/test installs it)",
            path.display()
        )
    });
    assert!(
        !has_interpreter(&bytes),
        "{} is dynamically linked: the docker tests need the static one (apt-get install \
         busybox-static; scripts/test installs it)",
        path.display()
    );
    path
}

/// Whether an ELF64 little-endian file asks for a dynamic loader (has a PT_INTERP header).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    assert!(
        elf.len() > 0x40 && elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1,
        "not an ELF64 little-endian executable"
    );
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) == 3)
    })
}

/// A real image registry (Debian's `docker-registry`, distribution 2.8) on 127.0.0.1, storing
/// into a directory; stopped by its PID on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`: the prefix of image names pushed to it. The engine pushes to it over
    /// plain HTTP: 127.0.0.0/8 registries are insecure-allowed by default.
    pub addr: String,
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl Registry {
    /// What the registry logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Child::kill is SIGKILL to this PID; wait reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `docker-registry serve CONFIG` (the binary in `CUTOVER_TEST_REGISTRY_BIN`, else
/// `docker-registry` on PATH) on a free 127.0.0.1 port with filesystem storage in `dir/data`,
/// and returns once `GET /v2/` answers 200.
pub fn start_registry(dir: &Path) -> Registry {
    let bin =
        std::env::var("CUTOVER_TEST_REGISTRY_BIN").unwrap_or_else(|_| "docker-registry".into());
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let port = free_port();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: cutover-tests\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let log = dir.join("registry.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&bin)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting `{bin} serve`: {e}: the docker tests need Debian's docker-registry \
                 (apt-get install docker-registry; scripts/test installs it)"
            )
        });
    let mut registry = Registry {
        addr: format!("127.0.0.1:{port}"),
        port,
        child,
        log,
    };
    let ready = wait_until(Duration::from_secs(15), || {
        matches!(get(port, "/v2/"), Ok((200, _)))
    });
    if !ready {
        let status = registry.child.try_wait().ok().flatten();
        panic!(
            "docker-registry on {} did not answer GET /v2/ within 15 s (exited: {status:?}); its \
             log:\n{}",
            registry.addr,
            registry.log()
        );
    }
    registry
}

/// Builds the example fleet's Python base image on the engine at `host`, as the README says
/// (`examples/fleet/scripts/base-image`; skipped when the engine has it).
pub fn fleet_base_image(host: &str) {
    let fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet");
    let base = std::process::Command::new(fleet.join("scripts/base-image"))
        .env("DOCKER_HOST", host)
        .output()
        .unwrap();
    assert!(
        base.status.success(),
        "base-image failed:\n{}\n{}",
        String::from_utf8_lossy(&base.stdout),
        String::from_utf8_lossy(&base.stderr)
    );
}
