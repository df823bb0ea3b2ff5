//! Output capture: an instance's stdout and stderr, line by line, into the release's log file
//! and a small ring buffer kept in memory for failure reasons.
//!
//! Every instance of a release appends to the same file
//! (`.cutover/logs/services/<service>/<release>.log`), so each line carries a timestamp and the
//! instance index: `2026-11-23T10:15:00.123Z [1] text`. Lines are written by one task per
//! instance through an `O_APPEND` handle, one `write` per batch of whole lines, so lines from
//! different instances interleave but never tear.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{SecondsFormat, Utc};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many output lines an instance keeps in memory.
pub const RING_LINES: usize = 50;
/// Longest line kept; the rest of a longer line is dropped with a marker.
const MAX_LINE: usize = 16 * 1024;

/// Where one instance's output goes: the shared log file (through a writer task) and the ring.
#[derive(Debug)]
pub(crate) struct LogSink {
    index: u32,
    /// Secret values, longest first, masked in every line.
    redact: Vec<String>,
    ring: Arc<Mutex<VecDeque<String>>>,
    file: mpsc::UnboundedSender<String>,
}

impl LogSink {
    /// Starts the writer task for `path` (created with its directories on first use).
    ///
    /// A file that cannot be opened does not stop the instance: the reason lands in the ring
    /// (so it shows in failure reasons) and lines are kept in memory only.
    pub(crate) fn open(path: PathBuf, index: u32, mut redact: Vec<String>) -> LogSink {
        redact.retain(|v| !v.is_empty());
        redact.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let ring = Arc::new(Mutex::new(VecDeque::with_capacity(RING_LINES)));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_lines(path, rx, Arc::clone(&ring)));
        LogSink {
            index,
            redact,
            ring,
            file: tx,
        }
    }

    /// An output line of the process: kept in the ring and appended to the file.
    pub(crate) fn line(&self, text: &str) {
        let text = self.mask(text);
        self.append(&text);
        push_ring(&self.ring, text);
    }

    /// `text` with every secret value replaced by `***`.
    fn mask(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.redact {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    /// A line from the supervisor itself ("started pid 42", "exited with code 1"): file only,
    /// marked `cutover:` so it is not mistaken for the service's own output.
    pub(crate) fn note(&self, text: &str) {
        self.append(&format!("cutover: {text}"));
    }

    /// A supervisor line that also explains a failure (a spawn error): file and ring.
    pub(crate) fn failure(&self, text: &str) {
        let text = self.mask(&format!("cutover: {text}"));
        push_ring(&self.ring, text.clone());
        self.append(&text);
    }

    /// The last `n` lines kept in memory, oldest first.
    pub(crate) fn last_lines(&self, n: usize) -> Vec<String> {
        let ring = lock(&self.ring);
        let skip = ring.len().saturating_sub(n);
        ring.iter().skip(skip).cloned().collect()
    }

    fn append(&self, text: &str) {
        let text = self.mask(text);
        let at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        // The writer only goes away with the runtime; then there is nowhere to write anyway.
        let _ = self.file.send(format!("{at} [{}] {text}\n", self.index));
    }
}

/// Reads `reader` line by line into `sink` until end of file; the handle ends with the stream.
pub(crate) fn capture(
    reader: impl AsyncRead + Unpin + Send + 'static,
    sink: Arc<LogSink>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) => return,
                Err(e) => {
                    sink.note(&format!("reading output failed: {e}"));
                    return;
                }
                Ok(_) => sink.line(&decode_line(&buf)),
            }
        }
    })
}

/// One raw line as text: trailing newline dropped, invalid UTF-8 replaced, length capped.
fn decode_line(raw: &[u8]) -> String {
    let mut end = raw.len();
    while end > 0 && matches!(raw[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let mut line = String::from_utf8_lossy(&raw[..end]).into_owned();
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" [line truncated]");
    }
    line
}

fn push_ring(ring: &Mutex<VecDeque<String>>, line: String) {
    let mut ring = lock(ring);
    if ring.len() == RING_LINES {
        ring.pop_front();
    }
    ring.push_back(line);
}

fn lock(ring: &Mutex<VecDeque<String>>) -> MutexGuard<'_, VecDeque<String>> {
    // A panic while holding this lock cannot leave the deque inconsistent.
    ring.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The writer task: appends batches of lines, flushing after each so readers see them.
async fn write_lines(
    path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<String>,
    ring: Arc<Mutex<VecDeque<String>>>,
) {
    let mut file = match open_append(&path).await {
        Ok(f) => Some(f),
        Err(e) => {
            push_ring(
                &ring,
                format!("cutover: cannot open log file {}: {e}", path.display()),
            );
            None
        }
    };
    let mut batch = String::new();
    while let Some(line) = rx.recv().await {
        let Some(f) = file.as_mut() else {
            continue;
        };
        batch.clear();
        batch.push_str(&line);
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.push_str(&more),
                Err(_) => break,
            }
        }
        let written = async {
            f.write_all(batch.as_bytes()).await?;
            f.flush().await
        };
        if let Err(e) = written.await {
            push_ring(
                &ring,
                format!("cutover: writing log file {} failed: {e}", path.display()),
            );
            file = None;
        }
    }
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_newlines_and_get_capped() {
        assert_eq!(decode_line(b"hello\r\n"), "hello");
        assert_eq!(decode_line(b"\n"), "");
        let long = vec![b'x'; MAX_LINE + 10];
        let line = decode_line(&long);
        assert!(line.ends_with(" [line truncated]"));
        assert_eq!(line.len(), MAX_LINE + " [line truncated]".len());
    }

    #[tokio::test]
    async fn ring_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::open(dir.path().join("a/b.log"), 2, Vec::new());
        for i in 0..(RING_LINES + 5) {
            sink.line(&format!("line {i}"));
        }
        let all = sink.last_lines(1000);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all.first().map(String::as_str), Some("line 5"));
        assert_eq!(sink.last_lines(2), vec!["line 53", "line 54"]);
    }
}
