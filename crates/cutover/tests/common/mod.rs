//! Shared helpers for the end-to-end tests: make a project in a temp dir, run git and the real
//! `cutover` binary in it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod docker;
pub mod receiver;
pub mod runtime;
pub mod swarm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A project in a temp dir (removed on drop).
pub struct TestProject {
    pub dir: tempfile::TempDir,
}

impl TestProject {
    /// An empty project dir.
    pub fn new() -> Self {
        TestProject {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A git repo with user config set.
    pub fn git_repo() -> Self {
        let p = Self::new();
        p.git(&["init", "-q", "-b", "main"]);
        p.git(&["config", "user.email", "test@example.invalid"]);
        p.git(&["config", "user.name", "Test"]);
        p.git(&["config", "commit.gpgsign", "false"]);
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (creating parent dirs).
    pub fn write(&self, rel: &str, body: &str) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
        self
    }

    /// Creates a service directory with a file in it.
    pub fn service_dir(&self, rel: &str) -> &Self {
        self.write(&format!("{rel}/app.txt"), rel)
    }

    /// Runs git, panicking on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `git add -A && git commit`.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// The cutover binary, run with `-C <project>`.
    pub fn cutover(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("-C").arg(self.path());
        c.env_remove("NO_COLOR");
        c
    }

    /// Runs cutover with `args` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cutover().args(args).output().expect("cutover runs")
    }

    /// Reads a file of the project.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel))
            .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }
}

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cutover"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses stdout as JSON, with the output in the panic message when it is not.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            stdout(o),
            stderr(o)
        )
    })
}

/// The exit code.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A `[services.NAME]` table with the given extra lines.
pub fn service(name: &str, path: &str, port: u16, extra: &str) -> String {
    format!("[services.{name}]\npath = \"{path}\"\nrun = \"true\"\nport = {port}\n{extra}\n")
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Copies a directory tree (without `.cutover/` and `__pycache__/`).
pub fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".cutover" || name == "__pycache__" {
            continue;
        }
        let to = dest.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// The events of kinds starting with `prefix` in the project's release store at `db`, one line
/// each: `kind service data-json` (read with Python's sqlite3, as another tool would).
pub fn store_events(db: &Path, prefix: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             for (k, s, d) in c.execute('select kind, service, data from events where kind like ? order by seq', (sys.argv[2] + '%',)):\n\
             \x20   print(k, s, d)",
        ])
        .arg(db)
        .arg(prefix)
        .output()
        .expect("python3 reads the store");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
