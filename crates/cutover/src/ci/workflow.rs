//! The part of the GitHub Actions workflow syntax that `cutover ci github` writes, as typed
//! values that `serde-saphyr` serializes to YAML.
//!
//! Field order is file order. Maps whose keys come from the project (jobs, env entries) are
//! [`Ordered`], so the same project gives the same bytes. The serializer quotes every string
//! that a YAML 1.1 or 1.2 reader would take for something else (`on`, `yes`, `0.1.0`, `''`);
//! scripts are literal blocks ([`LitString`]). Comments are not values: the caller puts its
//! header above the document.

use serde::Serialize;
use serde::ser::Serializer;
use serde_saphyr::LitString;

/// A mapping that keeps its entries in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<V> Ordered<V> {
    /// Adds `key: value` at the end.
    pub fn push(&mut self, key: impl Into<String>, value: V) {
        self.0.push((key.into(), value));
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A whole workflow file.
#[derive(Debug, Serialize)]
pub struct Workflow {
    /// Shown in the Actions tab.
    pub name: String,
    /// The events that run it.
    pub on: Triggers,
    /// The `GITHUB_TOKEN`'s permissions.
    pub permissions: Ordered<String>,
    /// Defaults of every `run` step.
    pub defaults: Defaults,
    /// Variables of every job.
    pub env: Ordered<String>,
    /// The jobs by id, in file order.
    pub jobs: Ordered<Job>,
}

/// `on:`.
#[derive(Debug, Serialize)]
pub struct Triggers {
    /// Pushes to some branches (none when no environment has a branch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<Filters>,
    /// Every pull request (`{}`), or those touching `paths`.
    pub pull_request: Filters,
    /// Manual runs.
    pub workflow_dispatch: Dispatch,
}

/// Branch and path filters of an event; both empty is `{}`.
#[derive(Debug, Default, Serialize)]
pub struct Filters {
    /// Branch patterns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// Path patterns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// `workflow_dispatch:`, with the environment to deploy as an input when there are some.
#[derive(Debug, Default, Serialize)]
pub struct Dispatch {
    /// The inputs a manual run asks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<DispatchInputs>,
}

/// The inputs of a manual run.
#[derive(Debug, Serialize)]
pub struct DispatchInputs {
    /// The environment to deploy to.
    pub environment: ChoiceInput,
}

/// An input chosen from a list.
#[derive(Debug, Serialize)]
pub struct ChoiceInput {
    /// Shown next to the choice.
    pub description: String,
    /// Always `choice`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether a value must be given.
    pub required: bool,
    /// The value preselected.
    pub default: String,
    /// The values to choose from.
    pub options: Vec<String>,
}

/// `defaults:`.
#[derive(Debug, Serialize)]
pub struct Defaults {
    /// Defaults of `run` steps.
    pub run: RunDefaults,
}

/// `defaults.run:`.
#[derive(Debug, Serialize)]
pub struct RunDefaults {
    /// The shell of every `run` step.
    pub shell: String,
}

/// `needs:`, one job or several.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Needs {
    /// `needs: detect`.
    One(String),
    /// `needs: [detect, build]`.
    Many(Vec<String>),
}

/// One job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Job {
    /// Shown in the run's graph and status checks.
    pub name: String,
    /// The jobs it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Needs>,
    /// When it runs (an expression).
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The runner label.
    pub runs_on: String,
    /// The GitHub environment it deploys to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Values later jobs read.
    #[serde(skip_serializing_if = "Ordered::is_empty")]
    pub outputs: Ordered<String>,
    /// A matrix of runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// One run at a time per group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// What it does.
    pub steps: Vec<Step>,
}

/// `strategy:` of a matrix job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Strategy {
    /// Whether one failed run cancels the others.
    pub fail_fast: bool,
    /// The matrix (an expression).
    pub matrix: String,
}

/// `concurrency:` of a job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Concurrency {
    /// Runs of the same group wait for each other.
    pub group: String,
    /// Whether a new run cancels the one in progress.
    pub cancel_in_progress: bool,
}

/// A value under a step's `with:`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Input {
    /// A string.
    Text(String),
    /// A number (`fetch-depth: 0`).
    Number(u32),
    /// A boolean (`clean: false`).
    Flag(bool),
}

/// One step of a job.
#[derive(Debug, Default, Serialize)]
pub struct Step {
    /// Shown in the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Lets later steps read its outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When it runs (an expression).
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The action it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// The action's inputs.
    #[serde(skip_serializing_if = "Ordered::is_empty")]
    pub with: Ordered<Input>,
    /// Variables of its script.
    #[serde(skip_serializing_if = "Ordered::is_empty")]
    pub env: Ordered<String>,
    /// Its script.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<Script>,
}

/// A `run:` script: one line as a scalar, several as a literal block (`|`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Script {
    /// A one-line command.
    Line(String),
    /// A script of several lines, kept as written.
    Block(LitString),
}

impl Script {
    /// `text` in the style its line count asks for.
    pub fn new(text: impl Into<String>) -> Script {
        let text = text.into();
        if text.contains('\n') {
            Script::Block(LitString(text))
        } else {
            Script::Line(text)
        }
    }
}

/// `workflow` as YAML.
pub fn to_yaml(workflow: &Workflow) -> Result<String, serde_saphyr::ser_error::Error> {
    let options = serde_saphyr::ser_options! {
        // Long expressions stay on one line; scripts are literal blocks through `LitString`.
        prefer_block_scalars: false,
        // `- item` indented below its key, as GitHub's own examples write it.
        compact_list_indent: false,
    };
    serde_saphyr::to_string_with_options(workflow, options)
}
