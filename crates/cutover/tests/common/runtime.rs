//! Helpers for tests that run the agent: a small real HTTP service, a guard that stops the
//! agent, and a keep-alive load that counts failures.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::TestProject;

/// A Python stdlib HTTP/1.1 service: `/` answers the VERSION file, `/health` answers
/// `{"status":"healthy"}` unless a file `unhealthy` exists (then 500); a file `crash` makes it
/// exit at start. A file `fail_half` makes every other `/` answer 500; a file `slow` holding
/// seconds delays every `/` answer that long.
pub const APP: &str = r#"
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
if os.path.exists("crash"):
    print("crashing on purpose", flush=True)
    sys.exit(3)
VERSION = open("VERSION").read().strip()
FAIL_HALF = os.path.exists("fail_half")
SLOW = float(open("slow").read()) if os.path.exists("slow") else 0.0
COUNT = [0]
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
            if os.path.exists("unhealthy"):
                self.send(500, {"status": "sick"})
            else:
                self.send(200, {"status": "healthy"})
        else:
            COUNT[0] += 1
            if SLOW:
                import time
                time.sleep(SLOW)
            if FAIL_HALF and COUNT[0] % 2 == 0:
                self.send(500, {"version": VERSION, "error": "failing on purpose"})
            else:
                self.send(200, {"version": VERSION})
ThreadingHTTPServer.daemon_threads = True
print("listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Writes a service dir with the app and a VERSION.
pub fn app_service(p: &TestProject, dir: &str, version: &str) {
    p.write(&format!("{dir}/app.py"), APP);
    p.write(&format!("{dir}/VERSION"), version);
}

/// A `[services.NAME]` for the app, probing fast.
pub fn app_toml(name: &str, dir: &str, port: u16, extra: &str) -> String {
    format!(
        "[services.{name}]\npath = \"{dir}\"\nrun = \"exec python3 app.py\"\nport = {port}\n\
         health = {{ period = \"100ms\", timeout = \"1s\", failure_threshold = 30 }}\n{extra}\n"
    )
}

/// A git repo with one service `api` (the app at v1, committed) on `port`.
pub fn one_service(port: u16, extra: &str) -> TestProject {
    let p = TestProject::git_repo();
    app_service(&p, "svc/api", "v1");
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"rt\"\n\n{}",
            app_toml("api", "svc/api", port, extra)
        ),
    );
    p.write(".gitignore", ".cutover/\n");
    p.commit("v1");
    p
}

/// Stops the project's agent (and so every instance) when dropped, even when a test fails.
pub struct AgentGuard<'a>(pub &'a TestProject);

impl Drop for AgentGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["agent", "stop"]);
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET through a fresh connection; the body as text.
pub fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let uri: hyper::Uri = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
}

/// `GET http://127.0.0.1:{port}{path}` with `Accept: {accept}`: (status, content type, body).
pub fn get_accepting(port: u16, path: &str, accept: &str) -> Result<(u16, String, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let request = hyper::Request::get(format!("http://127.0.0.1:{port}{path}"))
            .header(hyper::header::ACCEPT, accept)
            .body(Empty::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), client.request(request))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    })
}

/// The version a service answers with, if it answers 200.
pub fn version(port: u16) -> Option<String> {
    let (status, body) = get(port, "/").ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// Waits until `f` holds, up to `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Keep-alive clients hammering a port until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub failures: Arc<Mutex<Vec<String>>>,
    pub versions: Arc<Mutex<BTreeMap<String, u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` concurrent keep-alive clients against 127.0.0.1:`port`.
    pub fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let versions = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, o, f, fl, v) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            failures.clone(),
            versions.clone(),
        );
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for _ in 0..clients {
                    let (s, o, f, fl, v) = (s.clone(), o.clone(), f.clone(), fl.clone(), v.clone());
                    tasks.push(tokio::spawn(async move {
                        // One pooled connection per client: keep-alive is reused.
                        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                            .pool_max_idle_per_host(1)
                            .build_http();
                        let uri: hyper::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
                        while !s.load(Ordering::Relaxed) {
                            let r = tokio::time::timeout(Duration::from_secs(10), async {
                                let resp =
                                    client.get(uri.clone()).await.map_err(|e| e.to_string())?;
                                let status = resp.status();
                                let body = resp
                                    .into_body()
                                    .collect()
                                    .await
                                    .map_err(|e| e.to_string())?
                                    .to_bytes();
                                if !status.is_success() {
                                    return Err(format!(
                                        "status {status}: {}",
                                        String::from_utf8_lossy(&body)
                                    ));
                                }
                                let v: serde_json::Value =
                                    serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                                Ok(v["version"].as_str().unwrap_or("?").to_string())
                            })
                            .await
                            .unwrap_or_else(|_| Err("timeout".into()));
                            match r {
                                Ok(version) => {
                                    o.fetch_add(1, Ordering::Relaxed);
                                    *v.lock().unwrap().entry(version).or_default() += 1;
                                }
                                Err(e) => {
                                    f.fetch_add(1, Ordering::Relaxed);
                                    let mut fl = fl.lock().unwrap();
                                    if fl.len() < 20 {
                                        fl.push(e);
                                    }
                                }
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Load {
            stop,
            ok,
            failed,
            failures,
            versions,
            thread: Some(thread),
        }
    }

    /// Stops the clients and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}
