//! Rows as stored and their decoding into model values: every bad value becomes
//! [`StoreError::Corrupt`] naming the row and column, never a panic.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::Row;

use crate::model::{Release, Run};
use crate::{Result, StoreError};

/// A run row as stored, before its strings are checked.
pub(super) struct RawRun {
    id: String,
    kind: String,
    env: String,
    status: String,
    started_at: String,
    finished_at: Option<String>,
    pid: Option<i64>,
    reason: Option<String>,
}

impl RawRun {
    pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawRun {
            id: row.get(0)?,
            kind: row.get(1)?,
            env: row.get(2)?,
            status: row.get(3)?,
            started_at: row.get(4)?,
            finished_at: row.get(5)?,
            pid: row.get(6)?,
            reason: row.get(7)?,
        })
    }

    pub(super) fn into_run(self) -> Result<Run> {
        let what = format!("run {}", self.id);
        let corrupt = |message: String| StoreError::Corrupt(format!("{what}: {message}"));
        Ok(Run {
            kind: self.kind.parse().map_err(corrupt)?,
            status: self.status.parse().map_err(corrupt)?,
            started_at: parse_timestamp(&self.started_at, &what, "started_at")?,
            finished_at: self
                .finished_at
                .map(|t| parse_timestamp(&t, &what, "finished_at"))
                .transpose()?,
            pid: self
                .pid
                .map(|pid| {
                    u32::try_from(pid).map_err(|_| corrupt(format!("pid {pid} is out of range")))
                })
                .transpose()?,
            id: self.id,
            env: self.env,
            reason: self.reason,
        })
    }
}

/// A release row as stored, before its strings are checked.
pub(super) struct RawRelease {
    service: String,
    id: String,
    env: String,
    run_id: String,
    sha: Option<String>,
    dirty: i64,
    branch: Option<String>,
    config_hash: String,
    artifact: Option<String>,
    phase: String,
    reason: Option<String>,
    created_at: String,
    updated_at: String,
    activated_at: Option<String>,
    commit_at: Option<String>,
}

impl RawRelease {
    pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawRelease {
            service: row.get(0)?,
            id: row.get(1)?,
            env: row.get(2)?,
            run_id: row.get(3)?,
            sha: row.get(4)?,
            dirty: row.get(5)?,
            branch: row.get(6)?,
            config_hash: row.get(7)?,
            artifact: row.get(8)?,
            phase: row.get(9)?,
            reason: row.get(10)?,
            created_at: row.get(11)?,
            updated_at: row.get(12)?,
            activated_at: row.get(13)?,
            commit_at: row.get(14)?,
        })
    }

    pub(super) fn into_release(self) -> Result<Release> {
        let what = format!("release {} of service {}", self.id, self.service);
        let corrupt = |message: String| StoreError::Corrupt(format!("{what}: {message}"));
        let optional = |value: Option<String>, column| {
            value
                .map(|t| parse_timestamp(&t, &what, column))
                .transpose()
        };
        Ok(Release {
            phase: self.phase.parse().map_err(corrupt)?,
            dirty: match self.dirty {
                0 => false,
                1 => true,
                other => return Err(corrupt(format!("dirty is {other}, not 0 or 1"))),
            },
            created_at: parse_timestamp(&self.created_at, &what, "created_at")?,
            updated_at: parse_timestamp(&self.updated_at, &what, "updated_at")?,
            activated_at: optional(self.activated_at, "activated_at")?,
            commit_at: optional(self.commit_at, "commit_at")?,
            id: self.id,
            service: self.service,
            env: self.env,
            run_id: self.run_id,
            sha: self.sha,
            branch: self.branch,
            config_hash: self.config_hash,
            artifact: self.artifact,
            reason: self.reason,
        })
    }
}

/// How timestamps are stored: RFC 3339 UTC with exactly three fractional digits, so text
/// order is time order. Sub-millisecond precision is dropped.
pub(super) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(super) fn parse_timestamp(text: &str, what: &str, column: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            StoreError::Corrupt(format!("{what}: {column} {text:?} is not a timestamp: {e}"))
        })
}
