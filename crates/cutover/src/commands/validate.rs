//! `cutover validate`: the configuration, every environment, the secrets it references and the
//! programs its commands start.

use std::path::Path;

use cutover_config::{Project, ResolvedService};
use serde::Serialize;

use crate::cli::Cli;
use crate::context;
use crate::exit::{CliError, OK, USAGE};

/// One thing a command needs that is not there.
#[derive(Debug, Serialize)]
struct Problem {
    environment: String,
    service: Option<String>,
    message: String,
}

/// Validates and prints what it found.
pub fn run(cli: &Cli) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let mut problems = Vec::new();
    let mut warnings: Vec<Problem> = Vec::new();
    let mut envs = Vec::new();
    for name in project.environment_names() {
        let env = project.resolve(name)?;
        match context::secrets(&project, &env) {
            Err(CliError::Engine(e)) => problems.push(Problem {
                environment: env.name.clone(),
                service: None,
                message: format!("{e}; {}", e.help().unwrap_or_default()),
            }),
            // A secret that cannot be decrypted, an unusable key: stop here, naming it.
            Err(other) => return Err(other),
            Ok(_) => {}
        }
        // A container target's engine should answer; one that does not (the production engine,
        // seen from a laptop) is a warning: a deploy there says so before anything changes.
        if cutover_engine::target::has_containers(&env)
            && let Err(e) =
                context::runtime()?.block_on(cutover_engine::target::preflight(&project.name, &env))
        {
            warnings.push(Problem {
                environment: env.name.clone(),
                service: None,
                message: match e {
                    cutover_engine::EngineError::TargetUnavailable { why, .. } => why,
                    other => other.to_string(),
                },
            });
        }
        for svc in &env.services {
            for message in missing_programs(&project, svc) {
                problems.push(Problem {
                    environment: env.name.clone(),
                    service: Some(svc.name.clone()),
                    message,
                });
            }
        }
        envs.push(env.name);
    }
    // The same missing program shows in every environment: say it once.
    problems.dedup_by(|a, b| a.message == b.message && a.service == b.service);
    let valid = problems.is_empty();
    if cli.json {
        let doc = serde_json::json!({
            "valid": valid,
            "file": project.file.display().to_string(),
            "services": project.services.iter().map(|s| &s.name).collect::<Vec<_>>(),
            "environments": envs,
            "problems": problems,
            "warnings": warnings,
        });
        println!("{doc}");
    } else if valid {
        for w in &warnings {
            eprintln!("warning: {}: {}", w.environment, w.message);
        }
        println!(
            "{} is valid: {} services, environments: {}",
            project.file.display(),
            project.services.len(),
            envs.join(", ")
        );
    } else {
        for w in &warnings {
            eprintln!("warning: {}: {}", w.environment, w.message);
        }
        for p in &problems {
            match &p.service {
                Some(s) => eprintln!("error: {s} ({}): {}", p.environment, p.message),
                None => eprintln!("error: {}: {}", p.environment, p.message),
            }
        }
        eprintln!(
            "{} problem{} found; the configuration itself parsed",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
    }
    Ok(if valid { OK } else { USAGE })
}

/// Programs the service's commands start that cannot be found.
fn missing_programs(project: &Project, svc: &ResolvedService) -> Vec<String> {
    let dir = project.dir.join(&svc.path);
    let mut out = Vec::new();
    // In a container, `run` and the hooks run inside the image: only checks and build run here,
    // and the image needs its Dockerfile.
    let in_container = svc.target.runs_images();
    if in_container && !project.dir.join(&svc.container.dockerfile).is_file() {
        out.push(format!(
            "no Dockerfile at {} (set `dockerfile` to its path within {})",
            svc.container.dockerfile.display(),
            svc.path.display()
        ));
    }
    let here = |key: &str| !in_container || matches!(key, "checks" | "build");
    let commands = svc
        .checks
        .iter()
        .map(|c| ("checks", c))
        .chain(svc.build.iter().map(|c| ("build", c)))
        .chain(svc.run.iter().map(|c| ("run", c)))
        .chain(svc.pre_deploy.iter().map(|c| ("pre_deploy", c)))
        .chain(svc.post_deploy.iter().map(|c| ("post_deploy", c)))
        .filter(|(key, _)| here(key));
    for (key, command) in commands {
        if let Some(program) = first_program(command)
            && !program_exists(&program, &dir)
        {
            out.push(format!(
                "`{program}` (from {key} `{command}`) is not installed or not on PATH"
            ));
        }
    }
    out
}

/// The program a simple command line starts, when it can be told without a shell: the first
/// word after any `NAME=value` assignments, unless it is a shell builtin or uses expansions.
fn first_program(command: &str) -> Option<String> {
    const BUILTINS: &[&str] = &[
        "cd", "echo", "exit", "test", "[", "true", "false", ":", "export", "set", "source", ".",
        "exec", "eval", "printf", "read", "wait", "if", "for", "while", "case", "unset", "trap",
        "umask", "ulimit", "command", "type", "!", "{", "(", "until", "do", "done", "then", "fi",
        "elif", "else", "esac", "function", "select", "time", "in", "alias", "return", "shift",
        "local", "declare", "let", "builtin", "getopts", "hash", "kill",
    ];
    let word = command
        .split_whitespace()
        .find(|w| !w.contains('=') || w.starts_with('='))?;
    if word.contains([
        '$', '`', '(', ')', '{', '}', '"', '\'', '*', '?', ';', '&', '|', '<', '>',
    ]) || BUILTINS.contains(&word)
    {
        return None;
    }
    Some(word.to_string())
}

fn program_exists(program: &str, dir: &Path) -> bool {
    if program.contains('/') {
        return dir.join(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|p| {
            let candidate = p.join(program);
            candidate.is_file() && is_executable(&candidate)
        })
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::first_program;

    #[test]
    fn finds_the_program() {
        assert_eq!(first_program("pytest -q").as_deref(), Some("pytest"));
        assert_eq!(
            first_program("A=1 B=2 ruff check .").as_deref(),
            Some("ruff")
        );
        assert_eq!(first_program("cd x && make"), None);
        assert_eq!(first_program("until [ -f x ]; do sleep 1; done"), None);
        assert_eq!(first_program("$HOME/bin/x"), None);
        assert_eq!(
            first_program("./scripts/lint.sh").as_deref(),
            Some("./scripts/lint.sh")
        );
    }
}
