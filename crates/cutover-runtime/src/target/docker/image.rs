//! Images: built from a service's Dockerfile through the engine's API, tagged, pushed to a
//! registry, pruned; and one-off containers of an image (hooks such as migrations).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, LogsOptionsBuilder, PushImageOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::Engine;
use super::container::{api, create_and_start, remove};

/// How many lines of build output a failed build quotes.
const TAIL_LINES: usize = 20;

/// One image build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build context (the release snapshot of the service's `path`).
    pub context: PathBuf,
    /// The Dockerfile, relative to the context.
    pub dockerfile: PathBuf,
    /// Full references (`name:tag`), the first one built, the others tagged after.
    pub tags: Vec<String>,
    /// `--build-arg`s (never secrets: the config refuses those).
    pub build_args: BTreeMap<String, String>,
    /// Image labels.
    pub labels: BTreeMap<String, String>,
}

/// Builds `req` on `engine`, each line of build output given to `on_line`; returns the
/// image id. A failed build's error quotes the last lines of its output.
pub async fn build_image(
    engine: &Engine,
    req: &BuildRequest,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<String, String> {
    let Some(first) = req.tags.first() else {
        return Err("an image build needs a tag".to_string());
    };
    let dockerfile_path = req.context.join(&req.dockerfile);
    if !dockerfile_path.is_file() {
        return Err(format!(
            "no Dockerfile at {}: add one, or set `dockerfile` to its path within the service's \
             directory",
            dockerfile_path.display()
        ));
    }
    let context = req.context.clone();
    let dockerfile = req.dockerfile.clone();
    let tarball = tokio::task::spawn_blocking(move || context_tar(&context, &dockerfile))
        .await
        .map_err(|e| format!("packing the build context failed: {e}"))??;
    let client = engine.client().await?;
    let args: HashMap<String, String> = req.build_args.clone().into_iter().collect();
    let labels: HashMap<String, String> = req.labels.clone().into_iter().collect();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(&req.dockerfile.to_string_lossy().replace('\\', "/"))
        .t(first)
        .buildargs(&args)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = client.build_image(options, None, Some(bollard::body_full(tarball.into())));
    let mut tail: Vec<String> = Vec::new();
    let mut keep = |line: &str, on_line: &mut (dyn FnMut(&str) + Send)| {
        on_line(line);
        tail.push(line.to_string());
        if tail.len() > TAIL_LINES {
            tail.remove(0);
        }
    };
    let mut id = None;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref() {
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        keep(line, on_line);
                    }
                }
                if let Some(msg) = info.error_detail.and_then(|d| d.message) {
                    keep(&msg, on_line);
                    failure = Some(msg);
                }
                if let Some(aux) = info.aux.and_then(|a| a.id) {
                    id = Some(aux);
                }
            }
            Err(e) => {
                let msg = api(&e);
                keep(&msg, on_line);
                failure = Some(msg);
                break;
            }
        }
    }
    if let Some(why) = failure {
        return Err(format!(
            "the image build failed: {why}\nlast build output:\n  {}",
            tail.join("\n  ")
        ));
    }
    for more in &req.tags[1..] {
        tag(engine, first, more).await?;
    }
    match id {
        Some(id) => Ok(id),
        None => client
            .inspect_image(first)
            .await
            .ok()
            .and_then(|i| i.id)
            .ok_or_else(|| format!("the build of {first} ended without an image")),
    }
}

/// `name:tag` split at the tag's colon (a registry's `host:port/` is part of the name).
pub fn split_reference(reference: &str) -> (&str, &str) {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, "latest"),
    }
}

/// Tags image `source` as `target` too.
pub async fn tag(engine: &Engine, source: &str, target: &str) -> Result<(), String> {
    let client = engine.client().await?;
    let (repo, tag) = split_reference(target);
    let options = TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    client
        .tag_image(source, Some(options))
        .await
        .map_err(|e| format!("cannot tag {source} as {target}: {}", api(&e)))
}

/// Pushes `reference` to its registry, progress to `on_line`.
pub async fn push_image(
    engine: &Engine,
    reference: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), String> {
    let client = engine.client().await?;
    let (repo, tag) = split_reference(reference);
    let options = PushImageOptionsBuilder::default().tag(tag).build();
    let mut stream = client.push_image(repo, Some(options), None);
    let mut last = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(msg) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!("pushing {reference} failed: {msg}"));
                }
                if let Some(status) = info.status
                    && last.as_ref() != Some(&status)
                    && info.progress_detail.is_none()
                {
                    on_line(&status);
                    last = Some(status);
                }
            }
            Err(e) => return Err(format!("pushing {reference} failed: {}", api(&e))),
        }
    }
    Ok(())
}

/// Removes the images `references` (those in use by a container, or already gone, are left
/// alone); returns how many were removed.
pub async fn remove_images(engine: &Engine, references: &[String]) -> usize {
    let Ok(client) = engine.client().await else {
        return 0;
    };
    let mut removed = 0;
    for r in references {
        let options = RemoveImageOptionsBuilder::default().build();
        if client.remove_image(r, Some(options), None).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Runs `command` (through `sh -c`) once in a new container of `image` with `env` and
/// `labels`, its output to `on_line`; the container is removed after. Returns the exit code,
/// or why it could not run (also when it outlives `timeout`: it is killed).
pub async fn run_once(
    engine: &Engine,
    image: &str,
    command: &str,
    env: &[(String, String)],
    labels: &BTreeMap<String, String>,
    timeout: Duration,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<i64, String> {
    let client = engine.client().await?;
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sh".into(), "-c".into(), command.to_string()]),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels.clone().into_iter().collect()),
        ..Default::default()
    };
    let id = create_and_start(client, image, body).await?;
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = client.logs(&id, Some(options));
    let wait = async {
        let mut partial: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = logs.next().await {
            partial.extend_from_slice(&chunk.into_bytes());
            while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=nl).collect();
                on_line(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']));
            }
        }
        if !partial.is_empty() {
            on_line(&String::from_utf8_lossy(&partial));
        }
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match client.wait_container(&id, Some(options)).next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(format!("waiting for the container failed: {}", api(&e))),
            None => Err("the engine stopped answering".to_string()),
        }
    };
    let result = match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timed out after {}",
            cutover_config::format_duration(timeout)
        )),
    };
    remove(client, &id).await;
    result
}

/// The build context as a tar archive: every file under `context` that `.dockerignore` does
/// not exclude (its patterns are anchored at the context, as Docker reads them), plus the
/// Dockerfile and `.dockerignore` themselves, which the engine always needs.
fn context_tar(context: &Path, dockerfile: &Path) -> Result<Vec<u8>, String> {
    let ignore = dockerignore(context)?;
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let always: Vec<PathBuf> = vec![dockerfile.to_path_buf(), PathBuf::from(".dockerignore")];
    let walker = ignore::WalkBuilder::new(context)
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .sort_by_file_path(std::cmp::Ord::cmp)
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| format!("reading the build context failed: {e}"))?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(context) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        let excluded = ignore.matched_path_or_any_parents(rel, is_dir).is_ignore();
        if excluded && !always.iter().any(|a| a == rel) {
            continue;
        }
        let added = if is_dir {
            tar.append_dir(rel, path)
        } else {
            tar.append_path_with_name(path, rel)
        };
        added.map_err(|e| format!("packing {} failed: {e}", path.display()))?;
    }
    tar.into_inner()
        .map_err(|e| format!("packing the build context failed: {e}"))
}

/// `.dockerignore` of `context` as a matcher (empty when there is none).
fn dockerignore(context: &Path) -> Result<Gitignore, String> {
    let mut builder = GitignoreBuilder::new(context);
    if let Ok(text) = std::fs::read_to_string(context.join(".dockerignore")) {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
            let anchored = format!("{}/{pattern}", if negated { "!" } else { "" });
            builder
                .add_line(None, &anchored)
                .map_err(|e| format!(".dockerignore: `{line}` is not a valid pattern: {e}"))?;
        }
    }
    builder
        .build()
        .map_err(|e| format!(".dockerignore cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag() {
        assert_eq!(split_reference("api:v1"), ("api", "v1"));
        assert_eq!(
            split_reference("127.0.0.1:5000/fleet-api:r1"),
            ("127.0.0.1:5000/fleet-api", "r1")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/fleet-api"),
            ("127.0.0.1:5000/fleet-api", "latest")
        );
    }

    #[test]
    fn dockerignore_is_anchored_and_keeps_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            root.join(".dockerignore"),
            "*.log\nsecret\nDockerfile\n!keep.log\n",
        )
        .unwrap();
        std::fs::write(root.join("a.log"), "x").unwrap();
        std::fs::write(root.join("keep.log"), "x").unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/b.log"), "x").unwrap();
        std::fs::create_dir_all(root.join("secret")).unwrap();
        std::fs::write(root.join("secret/key"), "x").unwrap();
        std::fs::write(root.join("app.py"), "x").unwrap();
        let bytes = context_tar(root, Path::new("Dockerfile")).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"Dockerfile".to_string()), "{names:?}");
        assert!(names.contains(&"app.py".to_string()), "{names:?}");
        assert!(names.contains(&"keep.log".to_string()), "{names:?}");
        // Anchored: `*.log` excludes only the context's own, as Docker reads it.
        assert!(names.contains(&"sub/b.log".to_string()), "{names:?}");
        assert!(!names.contains(&"a.log".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("secret")), "{names:?}");
    }
}
