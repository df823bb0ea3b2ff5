//! The shared listener end to end (issue #15): host and path routing, forwarding headers,
//! body and time limits, the access log, WebSocket through deploys, and pause/resume; with the
//! real binary, real Python services and real clients (curl, a raw RFC 6455 client).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::runtime::{AgentGuard, free_port, wait_until};
use common::{TestProject, code, json, stderr, stdout};

/// A Python stdlib service: `/health`; any other GET answers its version, path and the
/// request headers it got (`/sleep/S/...` first sleeps S seconds); POST answers how many body
/// bytes it read; a GET with `Upgrade: websocket` does the RFC 6455 handshake and answers each
/// text frame with `VERSION:text`.
pub const EDGE_APP: &str = r#"
import base64, hashlib, json, os, struct, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
VERSION = open("VERSION").read().strip()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/health":
            return self.send(200, {"status": "healthy"})
        if self.path.startswith("/sleep/"):
            time.sleep(float(self.path.split("/")[2]))
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.send(200, {"version": VERSION, "path": self.path, "headers": headers})
    def do_POST(self):
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                n += len(self.rfile.read(size))
                self.rfile.readline()
        else:
            n = len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send(200, {"version": VERSION, "received": n})
    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            op, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if op == 8:
                self.wfile.write(b"\x88\x00")
                self.wfile.flush()
                return
            reply = (VERSION + ":" + data.decode()).encode()
            self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A WebSocket client on raw sockets (RFC 6455): connects to 127.0.0.1:PORT with `Host:` HOST,
/// checks the `101` and its `Sec-WebSocket-Accept`, prints `open`; then for each stdin line
/// `send TEXT` sends a masked text frame and prints the text of the answer, and `wait` prints
/// `closed` once the server side closes the connection.
const WS_CLIENT: &str = r#"
import base64, hashlib, os, socket, sys
port, host = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host, key)).encode())
f = s.makefile("rb")
status = f.readline().decode()
headers = {}
while True:
    line = f.readline().decode().strip()
    if not line:
        break
    k, v = line.split(":", 1)
    headers[k.strip().lower()] = v.strip()
expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
if " 101 " not in status or headers.get("sec-websocket-accept") != expected:
    print("bad handshake", status.strip(), headers, flush=True)
    sys.exit(1)
print("open", flush=True)
def frame():
    head = f.read(2)
    if len(head) < 2:
        return None
    n = head[1] & 0x7F
    return f.read(n).decode()
for line in sys.stdin:
    cmd = line.strip()
    if cmd.startswith("send "):
        data = cmd[5:].encode()
        mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        reply = frame()
        print("closed" if reply is None else reply, flush=True)
    elif cmd == "wait":
        while frame() is not None:
            pass
        print("closed", flush=True)
"#;

/// A running [`WS_CLIENT`], killed on drop.
struct Ws {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Ws {
    fn open(port: u16, host: &str) -> Ws {
        let mut child = Command::new("python3")
            .args(["-c", WS_CLIENT, &port.to_string(), host])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut ws = Ws { child, out };
        assert_eq!(ws.line(), "open");
        ws
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn say(&mut self, command: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A project of services on the app, each `(name, its extra keys)`, sharing the listener at
/// `edge` (`[proxy] http`), committed.
fn project(edge: u16, services: &[(&str, &str)]) -> TestProject {
    let p = TestProject::git_repo();
    let mut toml =
        format!("[project]\nname = \"edge\"\n\n[proxy]\nhttp = \"127.0.0.1:{edge}\"\n\n");
    for (name, extra) in services {
        p.write(&format!("svc/{name}/app.py"), EDGE_APP);
        p.write(&format!("svc/{name}/VERSION"), &format!("{name}-v1"));
        toml.push_str(&format!(
            "[services.{name}]\npath = \"svc/{name}\"\nrun = \"exec python3 app.py\"\n\
             health = {{ period = \"100ms\", timeout = \"1s\", failure_threshold = 30 }}\n{extra}\n\n"
        ));
    }
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    p
}

/// A curl answer: status and body.
struct Got {
    status: u16,
    body: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `curl` of `http://HOST:PORT/PATH` with HOST resolved to 127.0.0.1, and `extra` arguments.
fn curl(port: u16, host: &str, path: &str, extra: &[&str]) -> Got {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Got {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

fn deploy(p: &TestProject) {
    let out = p.run(&["deploy", "--all"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn services_share_one_listener_by_host_and_longest_path_prefix() {
    let edge = free_port();
    let own = free_port();
    let p = project(
        edge,
        &[
            (
                "api",
                &format!("hosts = [\"api.example.test\"]\nport = {own}"),
            ),
            (
                "admin",
                "hosts = [\"API.example.test\"]\npath_prefix = \"/admin/\"",
            ),
            (
                "web",
                "hosts = [\"web.example.test\", \"www.example.test\"]",
            ),
        ],
    );
    let _agent = AgentGuard(&p);
    deploy(&p);

    let version = |host: &str, path: &str| {
        let got = curl(edge, host, path, &[]);
        assert_eq!(got.status, 200, "{host}{path}: {}", got.body);
        got.json()["version"].as_str().unwrap().to_string()
    };
    assert_eq!(version("api.example.test", "/"), "api-v1");
    assert_eq!(version("api.example.test", "/users/7"), "api-v1");
    assert_eq!(version("api.example.test", "/admin"), "admin-v1");
    assert_eq!(version("Api.Example.Test", "/admin/users?x=1"), "admin-v1");
    assert_eq!(version("api.example.test", "/administrators"), "api-v1");
    assert_eq!(version("web.example.test", "/"), "web-v1");
    assert_eq!(version("www.example.test", "/admin"), "web-v1");
    // The path goes upstream as it came, prefix included.
    let got = curl(edge, "api.example.test", "/admin/users?x=1", &[]);
    assert_eq!(got.json()["path"], "/admin/users?x=1");

    let unknown = curl(edge, "nobody.example.test", "/", &[]);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.body, "no service answers this host and path here\n");

    // A service with its own port keeps it.
    let got = curl(own, "127.0.0.1", "/", &[]);
    assert_eq!(got.json()["version"], "api-v1");

    // `status` shows where each is reached.
    let out = p.run(&["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let status = json(&out);
    let url = |name: &str| {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["url"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(url("web"), format!("http://web.example.test:{edge}"));
    assert_eq!(
        url("admin"),
        format!("http://api.example.test:{edge}/admin")
    );
    assert_eq!(url("api"), format!("http://127.0.0.1:{own}"));

    // `cutover test` reaches web (hosts, no port) through the shared listener by its host.
    let out = p.run(&["test", "web"]);
    let table = stdout(&out);
    let health = table
        .lines()
        .find(|l| l.starts_with("web") && l.contains(" health "))
        .unwrap_or_else(|| panic!("no health check of web: {table}{}", stderr(&out)));
    assert!(health.contains(" pass "), "{table}");
    // admin claims only /admin: its /health on the listener would reach api, so the check
    // fails, saying so, rather than passing on another service's answer.
    let out = p.run(&["test", "admin"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("/health is outside admin's path_prefix /admin"),
        "{}",
        stdout(&out)
    );

    // A new release of one service moves only its host.
    p.write("svc/web/VERSION", "web-v2");
    p.commit("web v2");
    deploy(&p);
    assert_eq!(version("web.example.test", "/"), "web-v2");
    assert_eq!(version("api.example.test", "/"), "api-v1");

    // `down` takes the hosts off the listener.
    let out = p.run(&["down"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(curl(edge, "web.example.test", "/", &[]).status, 404);
}

#[test]
fn two_services_claiming_one_host_and_prefix_is_a_config_error_naming_both() {
    let p = project(
        free_port(),
        &[
            ("api", "hosts = [\"api.example.test\"]"),
            (
                "web",
                "hosts = [\"web.example.test\", \"api.example.test\"]",
            ),
            (
                "admin",
                "hosts = [\"api.example.test\"]\npath_prefix = \"/admin\"",
            ),
            (
                "admin2",
                "hosts = [\"api.example.test\"]\npath_prefix = \"/admin/\"",
            ),
        ],
    );
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("services `api` and `web` both claim host \"api.example.test\" in environment `development`"),
        "{err}"
    );
    assert!(
        err.contains("services `admin` and `admin2` both claim host \"api.example.test\" with path_prefix \"/admin\""),
        "{err}"
    );
    // Where: web's `hosts` line, and admin2's `path_prefix` line.
    assert!(err.contains("cutover.toml:17:"), "{err}");
    assert!(err.contains("cutover.toml:31:"), "{err}");
    assert!(
        err.contains("give `web` another host, or a path_prefix"),
        "{err}"
    );
}

#[test]
fn edge_keys_are_checked_with_a_fix() {
    let p = project(
        free_port(),
        &[(
            "api",
            "hosts = [\"https://api.example.test\"]\npath_prefix = \"api\"\nmax_body = \"ten\"\nupstream_timeout = \"soon\"",
        )],
    );
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    for expected in [
        "`hosts`: \"https://api.example.test\" is a URL, not a host name",
        "`path_prefix` must be a path starting with /, found \"api\"",
        "`max_body` must be a size above zero, found \"ten\"",
        "e.g. max_body = \"10MB\"",
        "`upstream_timeout`: invalid duration \"soon\"",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }

    // `hosts` without [proxy]; an unknown key in [proxy].
    p.write(
        "cutover.toml",
        "[project]\nname = \"edge\"\n\n[services.api]\npath = \"svc/api\"\nrun = \"true\"\nhosts = [\"api.example.test\"]\n",
    );
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("service `api` claims `hosts` in environment `development`, but there is no shared listener"),
        "{err}"
    );
    assert!(
        err.contains("add [proxy] with http = \"0.0.0.0:80\""),
        "{err}"
    );
    p.write(
        "cutover.toml",
        "[project]\nname = \"edge\"\n\n[proxy]\nhtp = \"127.0.0.1:80\"\n",
    );
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("cutover.toml:5:1"), "{err}");
    assert!(err.contains("did you mean `http`"), "{err}");
}

#[test]
fn forwarding_headers_request_ids_limits_and_the_access_log() {
    let edge = free_port();
    let p = project(
        edge,
        &[(
            "api",
            "hosts = [\"api.example.test\"]\nmax_body = \"1KB\"\nupstream_timeout = \"1s\"\naccess_log = true",
        )],
    );
    let _agent = AgentGuard(&p);
    deploy(&p);
    let host = "api.example.test";

    // What the upstream sees.
    let got = curl(edge, host, "/h", &[]);
    assert_eq!(got.status, 200, "{}", got.body);
    let headers = got.json()["headers"].clone();
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], format!("{host}:{edge}"));
    let id = headers["x-request-id"].as_str().unwrap().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let again = curl(edge, host, "/h", &[]).json()["headers"]["x-request-id"].clone();
    assert_ne!(again, id, "a new id per request");
    let given = curl(
        edge,
        host,
        "/h",
        &[
            "-H",
            "X-Request-Id: trace-7",
            "-H",
            "X-Forwarded-For: 10.1.1.1",
        ],
    );
    assert_eq!(given.json()["headers"]["x-request-id"], "trace-7");
    assert_eq!(
        given.json()["headers"]["x-forwarded-for"],
        "10.1.1.1, 127.0.0.1"
    );
    // The client gets the id back.
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--resolve"])
        .arg(format!("{host}:{edge}:127.0.0.1"))
        .arg(format!("http://{host}:{edge}/h"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .to_ascii_lowercase()
            .contains("x-request-id: "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // max_body: by Content-Length at once, and while streaming a chunked body.
    let small = "x".repeat(1000);
    let big = "x".repeat(2000);
    let ok = curl(edge, host, "/upload", &["--data-binary", &small]);
    assert_eq!(
        (ok.status, ok.json()["received"].as_u64()),
        (200, Some(1000))
    );
    let refused = curl(edge, host, "/upload", &["--data-binary", &big]);
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert_eq!(
        refused.body,
        "request body larger than this service's max_body (1024 bytes)\n"
    );
    let chunked = curl(
        edge,
        host,
        "/upload",
        &["-H", "Transfer-Encoding: chunked", "--data-binary", &big],
    );
    assert_eq!(chunked.status, 413, "{}", chunked.body);

    // upstream_timeout: 504 after a second, not after the upstream's three.
    let started = std::time::Instant::now();
    let slow = curl(edge, host, "/sleep/3/x", &[]);
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert!(
        slow.body.contains("did not answer within 1s"),
        "{}",
        slow.body
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));

    // The access log has a JSON line per request.
    let log = p.path().join(".cutover/logs/services/api/access.log");
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(common::runtime::wait_until(
        std::time::Duration::from_secs(5),
        || lines().iter().any(|l| l["status"] == 504)
    ));
    let lines = lines();
    let traced = lines.iter().find(|l| l["request_id"] == "trace-7").unwrap();
    assert_eq!(traced["service"], "api");
    assert_eq!(traced["method"], "GET");
    assert_eq!(traced["path"], "/h");
    assert_eq!(traced["status"], 200);
    assert_eq!(traced["host"], format!("{host}:{edge}"));
    assert_eq!(traced["client"], "127.0.0.1");
    assert!(!traced["release"].as_str().unwrap().is_empty());
    assert!(traced["duration_ms"].as_f64().is_some() && traced["time"].is_string());
    let statuses: Vec<u64> = lines.iter().filter_map(|l| l["status"].as_u64()).collect();
    assert!(
        statuses.contains(&413) && statuses.contains(&504),
        "{statuses:?}"
    );
}

#[test]
fn a_websocket_survives_a_deploy_until_the_drain_timeout_closes_it() {
    let edge = free_port();
    let p = project(
        edge,
        &[(
            "api",
            "hosts = [\"api.example.test\"]\ndrain_timeout = \"3s\"\nscale_down_delay = \"60s\"",
        )],
    );
    let _agent = AgentGuard(&p);
    deploy(&p);
    let host = "api.example.test";
    let mut ws = Ws::open(edge, host);
    assert_eq!(ws.say("send a"), "api-v1:a");

    p.write("svc/api/VERSION", "api-v2");
    p.commit("v2");
    let deploying = {
        let dir = p.path().to_path_buf();
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = Command::new(common::bin())
                .arg("-C")
                .arg(&dir)
                .args(["deploy", "--all"])
                .output()
                .unwrap();
            (out, started.elapsed())
        })
    };
    // New requests go to v2 once it is live; the open WebSocket stays on v1 meanwhile.
    assert!(wait_until(Duration::from_secs(30), || {
        curl(edge, host, "/", &[]).body.contains("api-v2")
    }));
    let switched = Instant::now();
    assert_eq!(ws.say("send b"), "api-v1:b");
    // The old release's drain waits for it, then closes it at drain_timeout (its instance
    // stays warm for scale_down_delay: the proxy closes it, not the instance's end).
    assert_eq!(ws.say("wait"), "closed");
    let open_for = switched.elapsed();
    assert!(
        open_for >= Duration::from_millis(2000) && open_for < Duration::from_secs(10),
        "closed {open_for:?} after the switch"
    );
    // (The deploy reports the release live at the switch; the drain goes on in the agent.)
    let (out, _) = deploying.join().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));

    // A new WebSocket reaches v2, and the metrics counted the upgrades.
    let mut ws = Ws::open(edge, host);
    assert_eq!(ws.say("send c"), "api-v2:c");
    let text = socket_metrics(&p);
    let line = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    // v1 had one (closed), v2 has one (open).
    let mut upgrades = line("cutover_upgrades_total{service=\"api\"");
    upgrades.sort_unstable();
    assert_eq!(upgrades, [1, 1], "{text}");
    let mut open = line("cutover_upgraded_connections{service=\"api\"");
    open.sort_unstable();
    assert_eq!(open, [0, 1], "{text}");
}

/// `/metrics` from the agent's Unix socket (the path `agent.json` records).
fn socket_metrics(p: &TestProject) -> String {
    let info: serde_json::Value = serde_json::from_str(&p.read(".cutover/agent.json")).unwrap();
    let socket = info["socket"].as_str().unwrap().to_string();
    let client = cutover_runtime::api::client::AgentClient::new(socket);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.metrics())
        .unwrap()
}

#[test]
fn pause_holds_new_requests_until_resume_or_its_timeout() {
    let edge = free_port();
    let p = project(edge, &[("api", "hosts = [\"api.example.test\"]")]);
    let _agent = AgentGuard(&p);
    deploy(&p);
    let host = "api.example.test";

    let out = p.run(&["pause", "api", "--timeout", "20s"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("api in development: paused"),
        "{}",
        stdout(&out)
    );
    // A request made while paused waits...
    let held = std::thread::spawn(move || {
        let started = Instant::now();
        (curl(edge, host, "/held", &[]), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!held.is_finished(), "the request was not held");
    // ...and completes once resumed.
    let out = p.run(&["resume", "api"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (got, waited) = held.join().unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["path"], "/held");
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");

    // Held past the pause's timeout: 503.
    let out = p.run(&["pause", "api", "--timeout", "1s"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let started = Instant::now();
    let late = curl(edge, host, "/late", &[]);
    assert_eq!(late.status, 503, "{}", late.body);
    assert!(late.body.contains("api is paused"), "{}", late.body);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let out = p.run(&["resume", "api"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(curl(edge, host, "/", &[]).status, 200);

    // Pausing what does not run is refused.
    let out = p.run(&["pause", "nope"]);
    assert_ne!(code(&out), 0);
}
