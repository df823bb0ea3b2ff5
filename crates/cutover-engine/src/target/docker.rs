//! The Docker target, engine side: what a release's image is called, building and pushing
//! it, hooks in one-off containers of it, and removing images past `keep_releases`. The
//! containers themselves are the agent's (`cutover_runtime::target::docker`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cutover_config::{ResolvedEnvironment, ResolvedService};
use cutover_runtime::api::types::{ContainerSpec, SwarmSpec};
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
    /// The swarm manager's engine, when services of the environment run on swarm (their
    /// images are built there and pushed to the registry, from which every node pulls).
    pub swarm: Option<Arc<Engine>>,
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
        let swarm_services: Vec<&str> = env
            .services
            .iter()
            .filter(|s| s.target == cutover_config::TargetKind::Swarm)
            .map(|s| s.name.as_str())
            .collect();
        let swarm = if swarm_services.is_empty() {
            None
        } else {
            if env.registry.is_none() {
                return Err(format!(
                    "{} run(s) on swarm in environment `{}`, which sets no `registry`: every node pulls the images from one; set registry = \"host:port\" in [environments.{}]",
                    swarm_services.join(", "),
                    env.name,
                    env.name
                ));
            }
            let manager = Engine::default_host(env.swarm_host.as_deref());
            Some(Arc::new(Engine::connect(&manager).map_err(|e| {
                e.replace("[environments.<env>.docker]", "[environments.<env>.swarm]")
            })?))
        };
        let on_docker = env
            .services
            .iter()
            .any(|s| s.target == cutover_config::TargetKind::Docker);
        // An environment only on swarm needs no other engine.
        let engine = match (&swarm, on_docker) {
            (Some(manager), false) => Arc::clone(manager),
            _ => Arc::new(Engine::connect(&host)?),
        };
        Ok(Some(Arc::new(ContainerTarget {
            project: project.to_string(),
            env: env.name.clone(),
            engine,
            swarm,
            registry: env.registry.clone(),
        })))
    }

    /// The engine `svc` runs on: the swarm manager's for a swarm service.
    pub fn engine_for(&self, svc: &ResolvedService) -> &Arc<Engine> {
        match (&self.swarm, svc.target) {
            (Some(manager), cutover_config::TargetKind::Swarm) => manager,
            _ => &self.engine,
        }
    }

    /// Checks that the engines answer (a swarm manager: that it manages a swarm), before
    /// anything of a run changes.
    pub async fn preflight(&self, env: &ResolvedEnvironment) -> Result<(), String> {
        let on = |t: cutover_config::TargetKind| env.services.iter().any(|s| s.target == t);
        if on(cutover_config::TargetKind::Docker) {
            self.engine.ping().await?;
        }
        if let Some(manager) = &self.swarm {
            manager.ping().await.map_err(|e| {
                e.replace("[environments.<env>.docker]", "[environments.<env>.swarm]")
            })?;
            docker::swarm_manager(manager).await?;
        }
        Ok(())
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
        let swarm = (svc.target == cutover_config::TargetKind::Swarm).then(|| SwarmSpec {
            nano_cpus: svc.container.nano_cpus,
            memory: svc.container.memory,
            constraints: svc.container.constraints.clone(),
        });
        ContainerSpec {
            host: self.engine_for(svc).host().to_string(),
            image: self.release_image(svc, release),
            container_port: svc.container.container_port,
            project: self.project.clone(),
            swarm,
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
        docker::build_image(self.engine_for(svc), &request, on_line).await?;
        if self.registry.is_some() {
            for tag in &tags {
                on_line(&format!("pushing {tag}"));
                docker::push_image(self.engine_for(svc), tag, on_line)
                    .await
                    .map_err(|e| match &self.registry {
                        Some(r) => format!("pushing to the registry {r} failed: {e}"),
                        None => e,
                    })?;
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
            self.engine_for(svc),
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
        docker::remove_images(self.engine_for(svc), &refs).await
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
