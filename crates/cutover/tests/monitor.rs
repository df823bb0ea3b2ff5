//! `cutover monitor` driven in a real terminal (tmux): the table, resizing, keys, quitting;
//! and `--once` in plain text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::runtime::{AgentGuard, app_service, app_toml, free_port, get, wait_until};
use common::{TestProject, bin, code, stderr, stdout};

/// Two services, `api` deployed (its agent running), `web` never deployed.
fn project() -> (TestProject, String) {
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    app_service(&p, "svc/web", "v1");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"mon\"\n\n{}{}",
            app_toml("api", "svc/api", free_port(), ""),
            app_toml("web", "svc/web", free_port(), "")
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    let out = p.run(&["deploy", "api"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = p.run(&["releases", "api", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let release = doc["releases"][0]["id"].as_str().unwrap().to_string();
    (p, release)
}

/// A tmux server of its own, killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Tmux {
        let t = Tmux {
            socket: format!("cutover-monitor-test-{}", std::process::id()),
        };
        let out = Command::new("tmux")
            .args(["-L", &t.socket, "-f", "/dev/null", "new-session", "-d"])
            .args([
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                "-s",
                "m",
            ])
            .arg("env PS1='test-prompt$ ' sh")
            .output()
            .expect("tmux is installed (scripts/test installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "m"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "m"])
    }

    fn resize(&self, width: u16, height: u16) {
        self.tmux(&[
            "resize-window",
            "-t",
            "m",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
    }

    /// Waits until the screen satisfies `f`; panics with the screen when it does not.
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = wait_until(Duration::from_secs(10), || {
            last = self.screen();
            f(&last)
        });
        assert!(ok, "waited for {what}; the screen:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn dashboard_in_a_real_terminal() {
    let (p, release) = project();
    let _agent = AgentGuard(&p);
    let t = Tmux::start(100, 30);
    t.wait_for("the shell prompt", |s| s.contains("test-prompt$"));
    let cmd = format!(
        "{} -C {} monitor --interval 1s",
        bin().display(),
        p.path().display()
    );
    t.keys(&[&cmd, "Enter"]);
    // The table: both services, api's release healthy, web stopped.
    // (A capture may catch a frame half written: wait for all of it.)
    t.wait_for("the table", |s| {
        let line = |name: &str| s.lines().find(|l| l.starts_with(name)).unwrap_or("");
        let api = line("api");
        s.contains("SERVICE")
            && api.contains(&release)
            && api.contains("ACTIVE")
            && api.contains("✓")
            && line("web").contains("stopped")
            && s.contains("2 services: 1 healthy, 0 unhealthy, 1 stopped")
    });

    // 80x24: still every service, no line wider than the terminal, the release shortened.
    t.resize(80, 24);
    let short = release.split_once('-').unwrap().1.to_string();
    let screen = t.wait_for("the 80x24 table", |s| {
        s.lines()
            .any(|l| l.starts_with("api") && l.contains(&short) && !l.contains(&release))
            && s.lines().any(|l| l.starts_with("web"))
    });
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");

    // Too small: a message, no panic; back to a good size: the table again.
    t.resize(40, 8);
    t.wait_for("the too-small message", |s| {
        s.contains("terminal too small (need 60x10")
    });
    t.resize(100, 30);
    t.wait_for("the table after resizing back", |s| s.contains("SERVICE"));

    // Enter shows the selected service's events and log; Esc goes back; j selects web.
    t.keys(&["Enter"]);
    // (A capture may catch a frame half written: wait for all of it.)
    t.wait_for("api's events and log", |s| {
        s.contains("api: recent events")
            && s.contains("phase.changed ACTIVE")
            && s.contains(&format!("log of {release}"))
            && s.contains("listening on")
    });
    t.keys(&["Escape"]);
    t.wait_for("the table after Esc", |s| s.contains("SERVICE"));
    t.keys(&["j", "Enter"]);
    t.wait_for("web's detail", |s| s.contains("web: recent events"));
    t.keys(&["Escape"]);
    t.wait_for("the table after Esc", |s| s.contains("SERVICE"));

    // q quits, restores the screen and the shell prompt returns.
    t.keys(&["q"]);
    let screen = t.wait_for("the prompt after q", |s| {
        !s.contains("SERVICE") && s.trim_end().ends_with("test-prompt$")
    });
    assert!(!screen.contains("recent events"), "{screen}");

    // Ctrl-C quits as well (raw mode turns it into a key the dashboard handles).
    t.keys(&[&cmd, "Enter"]);
    t.wait_for("the table again", |s| s.contains("SERVICE"));
    t.keys(&["C-c"]);
    t.wait_for("the prompt after Ctrl-C", |s| {
        !s.contains("SERVICE") && s.trim_end().ends_with("test-prompt$")
    });
}

#[test]
fn once_prints_one_plain_frame() {
    let (p, release) = project();
    let agent = AgentGuard(&p);
    let out = p.run(&["monitor", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "escape codes in {text:?}");
    let header = text.lines().nth(1).unwrap();
    for col in [
        "SERVICE", "RELEASE", "PHASE", "HEALTH", "INST", "TRAFFIC", "URL", "REQ/S", "ERR%", "P99",
        "AGE",
    ] {
        assert!(header.contains(col), "{col} missing in {text}");
    }
    let api = text.lines().find(|l| l.starts_with("api")).unwrap();
    assert!(
        api.contains(&release) && api.contains("✓ healthy") && api.contains("1/1"),
        "{text}"
    );
    assert!(api.contains("100%"), "{text}");
    assert!(text.contains("2 services: 1 healthy"), "{text}");

    // Live numbers from the agent's proxy: requests/s, error rate and p99 once traffic flows.
    let port: u16 = api
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let cell = |text: &str, col: &str| -> String {
        let header = text.lines().nth(1).unwrap();
        let at = header[..header.find(col).unwrap()].chars().count();
        let line = text.lines().find(|l| l.starts_with("api")).unwrap();
        line.chars().skip(at).take_while(|c| *c != ' ').collect()
    };
    let mut last = String::new();
    let flowing = wait_until(Duration::from_secs(20), || {
        for _ in 0..20 {
            let _ = get(port, "/");
        }
        last = stdout(&p.run(&["monitor", "--once"]));
        cell(&last, "REQ/S").parse::<f64>().is_ok_and(|r| r > 0.0)
    });
    assert!(flowing, "no requests/s shown:\n{last}");
    assert_eq!(cell(&last, "ERR%"), "0.0", "{last}");
    assert!(cell(&last, "P99").ends_with("ms"), "{last}");

    // No agent: services are stopped, not a failure, and monitor does not start one.
    drop(agent);
    let out = p.run(&["monitor", "--once"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let api = text.lines().find(|l| l.starts_with("api")).unwrap();
    assert!(api.contains(&release) && api.contains("stopped"), "{text}");
    assert!(text.contains("no agent"), "{text}");
    let status = p.run(&["agent", "status"]);
    assert!(
        stdout(&status).contains("no agent runs"),
        "{}",
        stdout(&status)
    );
}

#[test]
fn monitor_without_a_terminal_points_at_once() {
    let p = TestProject::git_repo();
    p.service_dir("a");
    p.write(
        "cutover.toml",
        "[project]\nname = \"m\"\n\n[services.a]\npath = \"a\"\nrun = \"true\"\nport = 18999\n",
    );
    let out = p.run(&["monitor"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--once"), "{}", stderr(&out));
}
