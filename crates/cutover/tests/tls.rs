//! TLS on the shared listener end to end (issue #15 parts 2 and 4): certificates per host by
//! SNI, HTTP/2 by ALPN, the HTTP→HTTPS redirect, reloading certificates when their files
//! change, and certificates over ACME from a real ACME server (pebble); with the real binary,
//! real Python services, openssl-made certificates and real clients (curl, openssl s_client,
//! Python's http.client).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::runtime::{AgentGuard, free_port, wait_until};
use common::{TestProject, code, stderr, stdout};

/// A Python stdlib service: `/health`; any other GET answers its version, path and the
/// `Host` and `X-Forwarded-Proto` it got.
const APP: &str = r#"
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
VERSION = open("VERSION").read().strip()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        body = {"status": "healthy"} if self.path == "/health" else {
            "version": VERSION, "path": self.path,
            "host": self.headers.get("Host"), "proto": self.headers.get("X-Forwarded-Proto")}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA in `dir` (`ca.pem`, `ca.key`).
fn make_ca(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=cutover test CA",
        ],
    );
}

/// A leaf for `hosts` signed by the CA in `dir`: `NAME.pem` and `NAME.key`, serial `serial`
/// (hex), subject CN the first host.
fn make_leaf(dir: &Path, name: &str, hosts: &[&str], serial: &str) {
    let san: Vec<String> = hosts.iter().map(|h| format!("DNS:{h}")).collect();
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("subjectAltName={}\n", san.join(",")),
    )
    .unwrap();
    let (key, csr, pem, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let subject = format!("/CN={}", hosts[0]);
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("0x{serial}"),
            "-out",
            &pem,
            "-days",
            "30",
            "-extfile",
            &ext,
        ],
    );
}

/// A project of services on the app sharing `[proxy] http` and `https` (plus `proxy_extra`
/// in `[proxy]`), each `(name, its extra keys)`, committed.
fn project(http: u16, https: u16, proxy_extra: &str, services: &[(&str, &str)]) -> TestProject {
    let p = TestProject::git_repo();
    let mut toml = format!(
        "[project]\nname = \"tls\"\n\n[proxy]\nhttp = \"127.0.0.1:{http}\"\nhttps = \"127.0.0.1:{https}\"\n{proxy_extra}\n\n"
    );
    for (name, extra) in services {
        p.write(&format!("svc/{name}/app.py"), APP);
        p.write(&format!("svc/{name}/VERSION"), &format!("{name}-v1"));
        toml.push_str(&format!(
            "[services.{name}]\npath = \"svc/{name}\"\nrun = \"exec python3 app.py\"\n\
             health = {{ period = \"100ms\", timeout = \"1s\", failure_threshold = 30 }}\n{extra}\n\n"
        ));
    }
    p.write("cutover.toml", &toml);
    p.write(".gitignore", ".cutover/\ncerts/\n");
    p.commit("v1");
    p
}

/// A curl answer: status, body, HTTP version and headers.
struct Got {
    status: u16,
    version: String,
    body: String,
    headers: String,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `curl URL` (scheme://HOST:PORT/PATH) with HOST resolved to 127.0.0.1, trusting `ca`.
fn curl(scheme: &str, port: u16, host: &str, path: &str, ca: &Path, extra: &[&str]) -> Got {
    let headers = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-"])
        .args(["-w", "\n%{http_code} %{http_version}", "-D"])
        .arg(headers.path())
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("{scheme}://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let (status, version) = tail.split_once(' ').unwrap_or(("0", ""));
    Got {
        status: status.trim().parse().unwrap_or(0),
        version: version.trim().to_string(),
        body: format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
        headers: std::fs::read_to_string(headers.path()).unwrap_or_default(),
    }
}

/// The serial (hex, uppercase) and subject of the certificate served for `host` on `port`.
fn served_cert(port: u16, host: &str) -> String {
    let mut s_client = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", host])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    let x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-subject"])
        .stdin(s_client.stdout.take().unwrap())
        .output()
        .expect("openssl runs");
    let _ = s_client.wait();
    String::from_utf8_lossy(&x509.stdout)
        .trim()
        .replace('\n', " ")
}

fn deploy(p: &TestProject) {
    let out = p.run(&["deploy", "--all"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn tls_by_sni_with_http2_and_a_redirect_from_http() {
    let (http, https) = (free_port(), free_port());
    let p = project(
        http,
        https,
        "redirect_https = true",
        &[
            (
                "api",
                "hosts = [\"api.example.test\"]\ntls = { cert = \"certs/api.pem\", key = \"certs/api.key\" }",
            ),
            (
                "web",
                "hosts = [\"web.example.test\", \"www.example.test\"]\ntls = { cert = \"certs/web.pem\", key = \"certs/web.key\" }",
            ),
            ("plain", "hosts = [\"plain.example.test\"]"),
        ],
    );
    let certs = p.path().join("certs");
    make_ca(&certs);
    make_leaf(&certs, "api", &["api.example.test"], "A1");
    make_leaf(
        &certs,
        "web",
        &["web.example.test", "www.example.test"],
        "B1",
    );
    let ca = certs.join("ca.pem");
    let _agent = AgentGuard(&p);
    deploy(&p);

    // SNI: each host gets its own certificate on the one listener.
    assert!(
        served_cert(https, "api.example.test").contains("serial=A1"),
        "{}",
        served_cert(https, "api.example.test")
    );
    let web = served_cert(https, "www.example.test");
    assert!(
        web.contains("serial=B1") && web.contains("CN = web.example.test"),
        "{web}"
    );

    // HTTP/2 by ALPN; the upstream gets HTTP/1.1 with Host and X-Forwarded-Proto: https.
    let got = curl(
        "https",
        https,
        "api.example.test",
        "/x?y=1",
        &ca,
        &["--http2"],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.version, "2", "{}", got.headers);
    let body = got.json();
    assert_eq!(body["version"], "api-v1");
    assert_eq!(body["path"], "/x?y=1");
    assert_eq!(body["proto"], "https");
    assert_eq!(body["host"], format!("api.example.test:{https}"));
    let got = curl("https", https, "www.example.test", "/", &ca, &["--http1.1"]);
    assert_eq!(
        (got.status, got.version.as_str()),
        (200, "1.1"),
        "{}",
        got.body
    );
    assert_eq!(got.json()["version"], "web-v1");

    // Plain HTTP: a TLS service's requests are redirected (308, same host, path and query);
    // a service without TLS is served as before.
    let got = curl("http", http, "api.example.test", "/a/b?c=d", &ca, &[]);
    assert_eq!(got.status, 308, "{}", got.body);
    assert!(
        got.headers.contains(&format!(
            "location: https://api.example.test:{https}/a/b?c=d"
        )),
        "{}",
        got.headers
    );
    let got = curl("http", http, "plain.example.test", "/", &ca, &[]);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["proto"], "http");
    // Following the redirect ends on HTTPS.
    let got = curl(
        "http",
        http,
        "web.example.test",
        "/r",
        &ca,
        &[
            "-L",
            "--resolve",
            &format!("web.example.test:{https}:127.0.0.1"),
        ],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["proto"], "https");

    // A host without a certificate fails the handshake; it is not served another's.
    let got = curl("https", https, "plain.example.test", "/", &ca, &[]);
    assert_eq!(got.status, 0, "{}", got.body);
}

/// A client on one kept-alive HTTPS connection (Python's http.client): prints the serial of the
/// certificate it got and the answer's version for each `get` line on stdin.
const KEEPALIVE_CLIENT: &str = r#"
import http.client, json, ssl, sys
port, host, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
class C(http.client.HTTPSConnection):
    def connect(self):
        import socket
        sock = socket.create_connection(("127.0.0.1", port))
        self.sock = ctx.wrap_socket(sock, server_hostname=host)
c = C(host, port, context=ctx)
for line in sys.stdin:
    c.request("GET", "/")
    r = c.getresponse()
    body = json.loads(r.read())
    print(c.sock.getpeercert()["serialNumber"], body["version"], flush=True)
"#;

#[test]
fn certificates_reload_when_their_files_change() {
    let (http, https) = (free_port(), free_port());
    let p = project(
        http,
        https,
        "",
        &[(
            "api",
            "hosts = [\"api.example.test\"]\ntls = { cert = \"certs/api.pem\", key = \"certs/api.key\" }",
        )],
    );
    let certs = p.path().join("certs");
    make_ca(&certs);
    make_leaf(&certs, "api", &["api.example.test"], "C1");
    let ca = certs.join("ca.pem");
    let _agent = AgentGuard(&p);
    deploy(&p);
    assert!(served_cert(https, "api.example.test").contains("serial=C1"));

    // A connection opened before the change.
    let mut client = Command::new("python3")
        .args([
            "-c",
            KEEPALIVE_CLIENT,
            &https.to_string(),
            "api.example.test",
        ])
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut ask = |client: &mut Child| {
        let stdin = client.stdin.as_mut().unwrap();
        writeln!(stdin, "get").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.trim().to_string()
    };
    assert_eq!(ask(&mut client), "C1 api-v1");

    // New files (written aside, then renamed over the old ones, as certbot and cert-manager do).
    let staging = certs.join("next");
    std::fs::create_dir_all(&staging).unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(certs.join(f), staging.join(f)).unwrap();
    }
    make_leaf(&staging, "api", &["api.example.test"], "C2");
    std::fs::rename(staging.join("api.key"), certs.join("api.key")).unwrap();
    std::fs::rename(staging.join("api.pem"), certs.join("api.pem")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || served_cert(
            https,
            "api.example.test"
        )
        .contains("serial=C2")),
        "the new certificate is not served: {}",
        served_cert(https, "api.example.test")
    );
    let got = curl("https", https, "api.example.test", "/", &ca, &[]);
    assert_eq!(got.status, 200, "{}", got.body);
    // The connection opened before goes on, with the certificate it started with.
    assert_eq!(ask(&mut client), "C1 api-v1");

    // A broken replacement (a key that is not the certificate's) keeps the last good one,
    // and the agent's log says why.
    make_leaf(&staging, "other", &["api.example.test"], "C3");
    std::fs::copy(staging.join("other.key"), certs.join("api.key")).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(served_cert(https, "api.example.test").contains("serial=C2"));
    let log = p.read(".cutover/logs/agent.log");
    assert!(
        log.contains("does not belong to the certificate"),
        "agent log: {log}"
    );
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn tls_mistakes_are_named_with_their_fix() {
    let (http, https) = (free_port(), free_port());
    // `tls` without an https listener: a config error at the key.
    let p = TestProject::git_repo();
    p.write(
        "cutover.toml",
        &format!(
            "[project]\nname = \"tls\"\n\n[proxy]\nhttp = \"127.0.0.1:{http}\"\n\n\
             [services.api]\npath = \"svc/api\"\nrun = \"exec python3 app.py\"\n\
             hosts = [\"api.example.test\"]\ntls = {{ cert = \"a.pem\", key = \"a.key\" }}\n"
        ),
    );
    p.write("svc/api/app.py", APP);
    let out = p.run(&["validate"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("has `tls` but [proxy] has no `https` listener")
            && err.contains("cutover.toml:11:7"),
        "{err}"
    );

    // A missing certificate file: the deploy fails naming the file and the key.
    let p = project(
        http,
        https,
        "",
        &[(
            "api",
            "hosts = [\"api.example.test\"]\ntls = { cert = \"certs/none.pem\", key = \"certs/none.key\" }",
        )],
    );
    let _agent = AgentGuard(&p);
    let out = p.run(&["deploy", "--all"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("cannot read the certificate") && all.contains("certs/none.pem"),
        "{all}"
    );
    assert!(all.contains("check `tls.cert`"), "{all}");

    // A certificate for other hosts.
    let certs = p.path().join("certs");
    make_ca(&certs);
    make_leaf(&certs, "none", &["elsewhere.example.test"], "D1");
    let out = p.run(&["deploy", "--all"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("is not valid for api.example.test") && all.contains("elsewhere.example.test"),
        "{all}"
    );
    assert!(!all.contains("PRIVATE KEY"), "{all}");
}

/// Child processes killed (by their PID) and reaped when dropped, even when the test fails.
struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real ACME server on 127.0.0.1: pebble, with pebble-challtestsrv as its DNS (every name is
/// 127.0.0.1), validating HTTP-01 against `http_port` for real. Returns the directory URL, the
/// root that signs pebble's own HTTPS (`ca`), and the guard.
fn pebble(dir: &Path, http_port: u16) -> (String, Kill) {
    let (acme, mgmt, dns, dns_mgmt, tls_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    make_leaf(dir, "pebble", &["localhost"], "99");
    // pebble's HTTPS is dialed by address: give its certificate the IP too.
    std::fs::write(
        dir.join("pebble.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "pebble.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "0x99",
            "-out",
            "pebble.pem",
            "-days",
            "30",
            "-extfile",
            "pebble.ext",
        ],
    );
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": dir.join("pebble.pem"),
        "privateKey": dir.join("pebble.key"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
    let dns_server = Command::new("pebble-challtestsrv")
        .args([
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
        ])
        .args([
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{dns_mgmt}"),
        ])
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .stdout(log("challtestsrv.log"))
        .stderr(log("challtestsrv.err"))
        .spawn()
        .expect("pebble-challtestsrv runs (scripts/test installs Debian's pebble)");
    let mut guard = Kill(vec![dns_server]);
    let server = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(log("pebble.log"))
        .stderr(log("pebble.err"))
        .spawn()
        .expect("pebble runs (scripts/test installs Debian's pebble)");
    guard.0.push(server);
    let directory = format!("https://127.0.0.1:{acme}/dir");
    let ca = dir.join("ca.pem");
    assert!(
        wait_until(Duration::from_secs(20), || {
            Command::new("curl")
                .args(["-sf", "--cacert"])
                .arg(&ca)
                .arg(&directory)
                .output()
                .is_ok_and(|o| o.status.success())
        }),
        "pebble did not start: {}",
        std::fs::read_to_string(dir.join("pebble.err")).unwrap_or_default()
    );
    // The root pebble signs issued certificates with, for the clients.
    let root = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(&ca)
        .arg(format!("https://127.0.0.1:{mgmt}/roots/0"))
        .output()
        .unwrap();
    assert!(root.status.success());
    std::fs::write(dir.join("pebble-root.pem"), root.stdout).unwrap();
    (directory, guard)
}

#[test]
fn acme_certificates_from_pebble_validated_over_http01_and_renewed() {
    use std::os::unix::fs::PermissionsExt;
    let (http, https) = (free_port(), free_port());
    let scratch = tempfile::tempdir().unwrap();
    let certs = scratch.path().to_path_buf();
    make_ca(&certs);
    let (directory, _pebble) = pebble(&certs, http);
    // renew_before longer than pebble's certificates live: every certificate is due at once,
    // so the background renewal replaces it within seconds.
    let p = project(
        http,
        https,
        &format!(
            "[proxy.acme]\ndirectory = \"{directory}\"\nemail = \"ops@example.test\"\nca = \"{}\"\nrenew_before = \"100000d\"",
            certs.join("ca.pem").display()
        ),
        &[("api", "hosts = [\"api.example.test\"]\ntls = \"acme\"")],
    );
    let _agent = AgentGuard(&p);
    deploy(&p);
    let root = certs.join("pebble-root.pem");
    let got = curl("https", https, "api.example.test", "/", &root, &["--http2"]);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.version, "2");
    assert_eq!(got.json()["version"], "api-v1");
    let first = served_cert(https, "api.example.test");
    assert!(first.contains("serial="), "{first}");

    // Real HTTP-01 validation: pebble fetched the token from the http listener.
    let pebble_log = std::fs::read_to_string(certs.join("pebble.log")).unwrap_or_default()
        + &std::fs::read_to_string(certs.join("pebble.err")).unwrap_or_default();
    assert!(
        pebble_log.contains("Attempting to validate w/ HTTP: http://api.example.test:")
            && pebble_log.contains("set VALID by completed challenge"),
        "{pebble_log}"
    );

    // Renewal in the background: a new certificate is served without a deploy.
    assert!(
        wait_until(Duration::from_secs(60), || served_cert(
            https,
            "api.example.test"
        ) != first),
        "not renewed; agent log: {}",
        p.read(".cutover/logs/agent.log")
    );
    let got = curl("https", https, "api.example.test", "/", &root, &[]);
    assert_eq!(got.status, 200, "{}", got.body);

    // The account key and the certificate keys are secrets: mode 0600, never logged.
    let acme = p.path().join(".cutover/acme");
    let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&acme.join("account.json")), 0o600);
    assert_eq!(mode(&acme.join("certs/api.example.test.key")), 0o600);
    let log = p.read(".cutover/logs/agent.log");
    assert!(
        log.contains("certificate for api.example.test issued"),
        "{log}"
    );
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains("\"d\""),
        "{log}"
    );
}
