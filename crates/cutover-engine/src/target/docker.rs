//! The Docker target, engine side: what a release's image is called, building and pushing
//! it, hooks in one-off containers of it, and removing images past `keep_releases`. The
//! containers themselves are the agent's (`cutover_runtime::target::docker`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{ResolvedEnvironment, ResolvedService};
use cutover_runtime::api::types::ContainerSpec;
use cutover_runtime::target::docker::{self, BuildRequest, Engine};

/// Where an environment's containers run and where its images go.
#[derive(Debug)]
pub struct ContainerTarget {
    /// The project's name (labels, default image names).
    pub project: String,
    /// The environment.
    pub env: String,
    /// The engine.
    pub engine: Arc<Engine>,
    /// `registry`, when images are pushed.
    pub registry: Option<String>,
}

impl ContainerTarget {
    /// The container target of `env` when one of its services runs on Docker.
    pub fn of(project: &str, env: &ResolvedEnvironment) -> Result<Option<Arc<Self>>, String> {
        if !super::has_containers(env) {
            return Ok(None);
        }
        let host = Engine::default_host(env.docker_host.as_deref());
        Ok(Some(Arc::new(ContainerTarget {
            project: project.to_string(),
            env: env.name.clone(),
            engine: Arc::new(Engine::connect(&host)?),
            registry: env.registry.clone(),
        })))
    }

    /// Checks that the engine answers, before anything of a run changes.
    pub async fn preflight(&self) -> Result<(), String> {
        self.engine.ping().await
    }

    /// `<image>:<release>`, the reference the agent runs.
    pub fn release_image(&self, svc: &ResolvedService, release: &str) -> String {
        format!("{}:{}", svc.container.image, tag_safe(release))
    }

    /// Every tag of a release's image: `<image>:<release>`, `<image>:<env>-<sha7>` and
    /// `<image>:<env>-latest`.
    pub fn tags(&self, svc: &ResolvedService, release: &str, sha: &str) -> Vec<String> {
        let image = &svc.container.image;
        let sha7: String = sha.chars().take(7).collect();
        let env = tag_safe(&self.env);
        let mut tags = vec![self.release_image(svc, release)];
        if !sha7.is_empty() {
            tags.push(format!("{image}:{env}-{}", tag_safe(&sha7)));
        }
        tags.push(format!("{image}:{env}-latest"));
        tags
    }

    /// What the agent needs to run `release` of `svc` as containers.
    pub fn container_spec(&self, svc: &ResolvedService, release: &str) -> ContainerSpec {
        ContainerSpec {
            host: self.engine.host().to_string(),
            image: self.release_image(svc, release),
            container_port: svc.container.container_port,
            project: self.project.clone(),
        }
    }

    /// Builds the image of `release` from `context` (the release snapshot) and tags it; pushes
    /// every tag when a registry is set. Each output line goes to `on_line`.
    pub async fn build(
        &self,
        svc: &ResolvedService,
        release: &str,
        sha: &str,
        context: &Path,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), String> {
        let dockerfile = svc
            .container
            .dockerfile
            .strip_prefix(&svc.path)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from("Dockerfile"));
        let tags = self.tags(svc, release, sha);
        let labels: BTreeMap<String, String> = [
            (docker::LABEL_PROJECT, self.project.clone()),
            (docker::LABEL_SERVICE, svc.name.clone()),
            (docker::LABEL_RELEASE, release.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let request = BuildRequest {
            context: context.to_path_buf(),
            dockerfile,
            tags: tags.clone(),
            build_args: svc.container.build_args.clone(),
            labels,
        };
        docker::build_image(&self.engine, &request, on_line).await?;
        if self.registry.is_some() {
            for tag in &tags {
                on_line(&format!("pushing {tag}"));
                docker::push_image(&self.engine, tag, on_line).await?;
            }
        }
        Ok(())
    }

    /// Runs hook `command` in a one-off container of the release's image with `env`; returns
    /// the exit code (output to `on_line`).
    pub async fn hook(
        &self,
        svc: &ResolvedService,
        release: &str,
        command: &str,
        env: &[(String, String)],
        timeout: Duration,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<i64, String> {
        let labels: BTreeMap<String, String> = [
            (docker::LABEL_PROJECT, self.project.clone()),
            (docker::LABEL_ENV, self.env.clone()),
            (docker::LABEL_SERVICE, svc.name.clone()),
            (docker::LABEL_RELEASE, release.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        docker::run_once(
            &self.engine,
            &self.release_image(svc, release),
            command,
            env,
            &labels,
            timeout,
            on_line,
        )
        .await
    }

    /// Removes the images of `releases` (pruned past `keep_releases`).
    pub async fn prune(&self, svc: &ResolvedService, releases: &[String]) -> usize {
        let refs: Vec<String> = releases
            .iter()
            .map(|r| self.release_image(svc, r))
            .collect();
        docker::remove_images(&self.engine, &refs).await
    }
}

/// `text` as a tag: `[A-Za-z0-9_.-]`, other characters become `-`, at most 128 characters.
pub fn tag_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_what_docker_accepts() {
        assert_eq!(
            tag_safe("deploy-20261204-101500+dirty"),
            "deploy-20261204-101500-dirty"
        );
        assert_eq!(tag_safe(&"x".repeat(200)).len(), 128);
    }
}
