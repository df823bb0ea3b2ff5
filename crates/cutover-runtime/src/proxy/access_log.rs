//! The optional access log of a service: one JSON line per request, written by a thread of its
//! own so that a request never waits on the disk.
//!
//! Each line: `time` (RFC 3339, UTC), `service`, `release` (null when the proxy answered
//! itself), `method`, `host`, `path` (with the query), `status`, `duration_ms` (until the
//! response head), `client`, `request_id`, `user_agent`.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request, StatusCode};

/// Where a service's access log lines go. Cheap to clone; the writer thread ends when the last
/// handle is dropped, after writing what it was sent.
#[derive(Debug, Clone)]
pub struct AccessLog {
    lines: mpsc::Sender<Vec<u8>>,
}

impl AccessLog {
    /// Appends to `path` (creating it and its directory).
    pub fn open(path: &Path) -> io::Result<AccessLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (lines, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = BufWriter::new(file);
                while let Ok(line) = rx.recv() {
                    let mut ok = out.write_all(&line).is_ok();
                    // Write what queued up meanwhile, then flush once.
                    while let Ok(line) = rx.try_recv() {
                        ok &= out.write_all(&line).is_ok();
                    }
                    if !(ok && out.flush().is_ok()) {
                        crate::agent::log("could not write an access log line");
                    }
                }
            })?;
        Ok(AccessLog { lines })
    }

    /// Queues the line for one answered request.
    pub(crate) fn write(
        &self,
        entry: &Entry,
        service: &str,
        release: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let line = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "service": service,
            "release": release,
            "method": entry.method,
            "host": entry.host,
            "path": entry.path,
            "status": status.as_u16(),
            "duration_ms": (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "client": entry.client,
            "request_id": entry.request_id,
            "user_agent": entry.user_agent,
        });
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        // The writer only stops when every handle is gone.
        let _ = self.lines.send(bytes);
    }
}

/// What a log line says about the request, taken before the request goes upstream.
pub(crate) struct Entry {
    method: String,
    host: Option<String>,
    path: String,
    client: String,
    request_id: String,
    user_agent: Option<String>,
}

impl Entry {
    pub(crate) fn of<B>(req: &Request<B>, client: &HeaderValue, request_id: &HeaderValue) -> Entry {
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        Entry {
            method: req.method().as_str().to_owned(),
            host: req
                .uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| req.headers().get(HOST).map(text)),
            path: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            client: text(client),
            request_id: text(request_id),
            user_agent: req.headers().get(USER_AGENT).map(text),
        }
    }
}
