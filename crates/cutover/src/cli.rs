//! Command-line arguments: global options and one subcommand per verb.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// cutover deploys several services at once, safely: it finds what changed, runs checks and
/// builds in parallel in dependency order, and keeps a release history.
#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Deploy several services at once, safely",
    long_about = "cutover reads cutover.toml, finds which services changed since their last \
                  release, runs their checks and builds in parallel and in dependency order, \
                  and deploys them blue-green through its own proxy, proving health and rolling \
                  back on its own, with a live view, log files under .cutover/logs/ and a \
                  release history.",
    after_help = "Exit codes: 0 done, 1 failed, 2 usage or configuration error, 3 blocked, 130 interrupted.\n\
                  Start with `cutover init`, then `cutover plan`, `cutover deploy` and `cutover status`."
)]
pub struct Cli {
    /// Run as if started in DIR (the project directory holding cutover.toml); like git, several
    /// -C options are each relative to the one before.
    #[arg(short = 'C', value_name = "DIR", global = true, action = clap::ArgAction::Append)]
    pub dir: Vec<PathBuf>,

    /// The environment to work on (default: [project] default_env, else development).
    #[arg(long, value_name = "ENV", global = true)]
    pub env: Option<String>,

    /// Print the answer as one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented cutover.toml for the service directories found here.
    Init,
    /// Check cutover.toml, the secrets it references and the tools its commands need.
    Validate,
    /// Print the JSON Schema of cutover.toml (for editors).
    Schema,
    /// Show which services a run would touch, why, and in what order.
    Plan(PlanArgs),
    /// Detect changes, then run checks and build of the affected services.
    Build(BuildArgs),
    /// The whole pipeline: detect, checks, build, deploy, verify (rolls back on its own).
    Deploy(DeployArgs),
    /// Every service: release, phase, health, instances, traffic split, URL.
    Status,
    /// A service's release history, newest first.
    Releases(ReleasesArgs),
    /// Back to the previous ACTIVE release (or the one named), without checks or build.
    Rollback(RollbackArgs),
    /// A service's instance output.
    Logs(LogsArgs),
    /// Canary: end the current and every later pause (`--full`: 100% now, no more judgement).
    Promote(PromoteArgs),
    /// Canary: roll back now; all traffic goes back to the stable release.
    Abort(AbortArgs),
    /// Hold the service's new requests in the proxy (e.g. for a migration), each up to
    /// --timeout (then 503), until `cutover resume`.
    Pause(PauseArgs),
    /// Let a paused service's held and new requests through.
    Resume(ResumeArgs),
    /// Stop the environment's instances.
    Down,
    /// The local runtime: `cutover agent` runs it in the foreground.
    Agent(AgentArgs),
    /// Write a CI workflow that plans, builds and deploys with cutover.
    Ci(CiArgs),
    /// The encrypted secret store: `set NAME` (value on stdin), `list`, `rm NAME`.
    Secrets(SecretsArgs),
    /// Lock the environment: its deploys and rollbacks are refused (exit 3) until `unlock`.
    Lock(LockArgs),
    /// Remove the environment's lock.
    Unlock,
    /// Let a deploy waiting for approval go on (`--reject --reason R` ends it instead).
    Approve(ApproveArgs),
    /// Smoke-test the running services: health, response time, metadata, error handling,
    /// docs, then each `[[services.S.smoke]]` entry.
    Test(TestArgs),
    /// DORA metrics from the release history: deployment frequency, lead time, change
    /// failure rate, time to restore.
    Metrics(MetricsArgs),
    /// A git branch and worktree per service: `setup`, `list`, `remove`.
    Worktree(WorktreeArgs),
    /// Merge service branches into their base, only where the deployed release is the
    /// branch's head and healthy.
    Merge(MergeArgs),
    /// A live terminal dashboard of every service of the environment.
    Monitor(MonitorArgs),
}

/// `cutover test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Services to test (default: every service with a port); `a,b` works too.
    #[arg(value_name = "SERVICES")]
    pub services: Vec<String>,

    /// Also write the results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// `cutover metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The window, counted back from now (e.g. 7d, 30d, 12h).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub since: String,
}

/// `cutover worktree`.
#[derive(Debug, Args)]
pub struct WorktreeArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: WorktreeAction,
}

/// `cutover worktree setup|list|remove`.
#[derive(Debug, Subcommand)]
pub enum WorktreeAction {
    /// Create the branch `<branch_prefix>/<service>` from the base and a worktree for it
    /// (again: reports "exists").
    Setup {
        /// Services (default: every service).
        #[arg(value_name = "SERVICES")]
        services: Vec<String>,
        /// Put the worktrees at DIR/<service> (default: ../<project>-worktrees/<service>
        /// beside the repository root).
        #[arg(long = "dir", id = "worktree_dir", value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The branch to start from (default: the main worktree's current branch).
        #[arg(long, value_name = "BRANCH")]
        base: Option<String>,
    },
    /// Each service's branch, worktree, ahead/behind its base, dirty flag, release and health.
    List,
    /// Remove worktrees (refused when they have uncommitted changes, unless --force).
    Remove {
        /// Services (default: every service with a worktree).
        #[arg(value_name = "SERVICES")]
        services: Vec<String>,
        /// Remove even with uncommitted changes (they are lost).
        #[arg(long)]
        force: bool,
        /// Also delete the branches that are merged into their base.
        #[arg(long)]
        delete_branch: bool,
    },
}

/// `cutover merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Services (default: every service with a branch).
    #[arg(value_name = "SERVICES")]
    pub services: Vec<String>,
    /// Remove the worktree and delete the branch of each service merged.
    #[arg(long)]
    pub cleanup: bool,
}

/// `cutover monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// How often to ask the agent and the store (e.g. 2s, 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = cutover_config::parse_duration)]
    pub interval: std::time::Duration,
    /// Print one plain-text frame to stdout and exit (for scripts).
    #[arg(long)]
    pub once: bool,
}

/// `cutover lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Why it is locked (shown to whoever is refused).
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
}

/// `cutover deploy`: the build arguments, and how long to wait for a lock.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// What to take, as `cutover build` does.
    #[command(flatten)]
    pub build: BuildArgs,

    /// Wait up to this long (e.g. 10m) for the environment's lock and any running deploy of it
    /// to go, instead of exiting 3 at once.
    #[arg(long, value_name = "DURATION", value_parser = cutover_config::parse_duration)]
    pub lock_wait: Option<std::time::Duration>,

    /// If any service of the run fails, every service of the run goes back to its previous
    /// release (in reverse dependency order).
    #[arg(long)]
    pub atomic: bool,

    /// Run the smoke tests (`cutover test`) against each deployed service once it is ACTIVE,
    /// as part of verify: a failure fails the service and rolls it back to its previous release.
    #[arg(long)]
    pub smoke: bool,

    /// In an environment with `require_approval = true`: how long the run waits for
    /// `cutover approve RUN` before it ends (exit 3).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = cutover_config::parse_duration)]
    pub approval_timeout: std::time::Duration,
}

/// `cutover approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The waiting run's id (`cutover status` shows it), e.g. deploy-20261123-101500.
    pub run: String,

    /// Refuse it instead: the waiting deploy ends (exit 3) and nothing is deployed.
    #[arg(long)]
    pub reject: bool,

    /// Why (recorded with the decision and shown to the waiting deploy).
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
}

/// `cutover secrets`.
#[derive(Debug, Args)]
pub struct SecretsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SecretsAction,
}

/// `cutover secrets set|list|rm`; with `--env`, the value of that environment only (it
/// overrides there the one set without `--env`, which serves every environment).
#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Store a secret, encrypted; its value is read from stdin (never from the command line):
    /// `printf %s VALUE | cutover secrets set NAME`.
    Set {
        /// The secret's name, as `{ secret = "NAME" }` references it.
        name: String,
    },
    /// The stored secrets' names, environments and update times (never their values).
    List,
    /// Remove a stored secret.
    Rm {
        /// The secret's name.
        name: String,
    },
}

/// `cutover ci`.
#[derive(Debug, Args)]
pub struct CiArgs {
    /// The CI service to write for.
    #[command(subcommand)]
    pub provider: CiProvider,
}

/// The CI services `cutover ci` writes for.
#[derive(Debug, Subcommand)]
pub enum CiProvider {
    /// A GitHub Actions workflow: detect changes, checks and build per service, a deploy job
    /// per environment, one summary check.
    Github(CiGithubArgs),
}

/// `cutover ci github`.
#[derive(Debug, Args)]
pub struct CiGithubArgs {
    /// Where to write the workflow (default: .github/workflows/cutover.yml at the git
    /// repository root); `-` prints it.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Overwrite the file when it exists.
    #[arg(long)]
    pub force: bool,
}

/// `cutover promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The service whose canary is in progress.
    pub service: String,
    /// Go to 100% now, without further judgement.
    #[arg(long)]
    pub full: bool,
}

/// `cutover pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The service to pause.
    pub service: String,
    /// How long a held request waits before it gets 503.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

/// `cutover resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The paused service.
    pub service: String,
}

/// `cutover abort`.
#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The service whose canary is in progress.
    pub service: String,
}

/// `cutover releases`.
#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// The service.
    pub service: String,
}

/// `cutover rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Services to roll back (default: every service with a previous ACTIVE release).
    #[arg(value_name = "SERVICES")]
    pub services: Vec<String>,

    /// Roll back to this release instead of the previous ACTIVE one (one service only).
    #[arg(long, value_name = "RELEASE")]
    pub to: Option<String>,
}

/// `cutover logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service.
    pub service: String,

    /// Keep printing new output.
    #[arg(short, long)]
    pub follow: bool,

    /// A release other than the one serving.
    #[arg(long, value_name = "RELEASE")]
    pub release: Option<String>,
}

/// `cutover agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// What to do (default: run the agent in the foreground, restarted at once if it crashes).
    #[command(subcommand)]
    pub action: Option<AgentAction>,

    /// Run the agent itself, without the supervisor that restarts it (used by `cutover agent`).
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// `cutover agent start|stop|status`.
#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Start the agent in the background (it brings back the services it ran).
    Start,
    /// Stop the agent and every instance it runs; it stays stopped until `agent start` or the
    /// next deploy (`status` does not start it).
    Stop,
    /// The agent's pid, socket, uptime and services.
    Status,
}

/// `cutover plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Take every service, changed or not (works outside git).
    #[arg(long)]
    pub all: bool,

    /// Compare with this revision instead of each service's ACTIVE release.
    #[arg(long, value_name = "REV")]
    pub since: Option<String>,

    /// Output format (`--json` is the same as `--format json`).
    #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
    pub format: PlanFormat,
}

/// Plan output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A table for people.
    Table,
    /// The plan as JSON.
    Json,
    /// `{"include": [{"service": NAME}, ...]}` of the affected services, for a GitHub Actions matrix.
    GithubMatrix,
}

/// `cutover build` and `cutover deploy`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Services to take, changed or not (default: the affected ones).
    #[arg(value_name = "SERVICES")]
    pub services: Vec<String>,

    /// Take every service, changed or not (works outside git).
    #[arg(long, conflicts_with = "services")]
    pub all: bool,

    /// Compare with this revision instead of each service's ACTIVE release.
    #[arg(long, value_name = "REV", conflicts_with_all = ["services", "all"])]
    pub since: Option<String>,

    /// Services at once per stage (default: [project] max_parallel, 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_parallel: Option<u32>,
}
