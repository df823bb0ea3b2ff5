//! [`SqliteStore`]: the release store in one SQLite file (`.cutover/state.db`, WAL).
//!
//! One connection per store behind a mutex. Every write is one `BEGIN IMMEDIATE` transaction:
//! it takes SQLite's write lock before reading anything, so an id allocated or a phase checked
//! inside it cannot be raced by another process; a second writer waits (busy timeout 10s)
//! instead of failing. Readers never block in WAL mode.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::model::{
    Approval, ApprovalState, Lock, NewRelease, Release, ReleasePhase, Run, RunKind, RunStatus,
    StoredEvent,
};
use crate::{Blocker, ReleaseStore, Result, SecretEntry, StoreError, StoreWrite};

mod rows;

use rows::{RawRelease, RawRun, parse_timestamp, timestamp};

/// The schema, in order; migration `i` (0-based) moves `PRAGMA user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_secrets.sql"),
    include_str!("migrations/0003_locks.sql"),
    include_str!("migrations/0004_approvals.sql"),
];

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const RUN_COLUMNS: &str = "id, kind, env, status, started_at, finished_at, pid, reason";

const RELEASE_COLUMNS: &str = "service, id, env, run_id, sha, dirty, branch, config_hash, \
     artifact, phase, reason, created_at, updated_at, activated_at, commit_at";

/// The release store in a SQLite database file.
///
/// Several `SqliteStore`s (in one process or several) may use the same file at once.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the database at `path`, and
    /// brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                operation: "create the store's directory",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let sql = |operation| {
            move |source| StoreError::Sqlite {
                operation,
                path: path.to_path_buf(),
                source,
            }
        };
        let conn = Connection::open(path).map_err(sql("open the database"))?;
        // The busy timeout first: switching to WAL itself may wait for another opener.
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("set the busy timeout"))?;
        let mode = switch_to_wal(&conn).map_err(sql("switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unsupported(format!(
                "release store {}: SQLite cannot use WAL mode here (journal mode stays {mode:?})",
                path.display()
            )));
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("enable foreign keys"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("set synchronous mode"))?;
        let store = SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens the store a `[project] state` URL names: `sqlite://PATH`, PATH being absolute
    /// (`sqlite:///var/lib/x.db`) or relative to `project_dir` (`sqlite://.cutover/state.db`).
    ///
    /// `postgres://` and `postgresql://` are recognised but not available yet.
    pub fn open_url(state: &str, project_dir: &Path) -> Result<Self> {
        if let Some(rest) = state.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err(StoreError::InvalidUrl(
                    "\"sqlite://\" names no file; write e.g. \"sqlite://.cutover/state.db\""
                        .to_string(),
                ));
            }
            let path = Path::new(rest);
            return if path.is_absolute() {
                Self::open(path)
            } else {
                Self::open(&project_dir.join(path))
            };
        }
        // Only the scheme is echoed: a database URL may carry a password.
        let scheme = state.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some(s)
                if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") =>
            {
                Err(StoreError::Unsupported(
                    "the PostgreSQL store is not available yet; use sqlite://".to_string(),
                ))
            }
            Some(s) => Err(StoreError::InvalidUrl(format!(
                "unknown scheme \"{s}://\"; expected \"sqlite://PATH\" (e.g. \
                 \"sqlite://.cutover/state.db\") or \"postgres://...\""
            ))),
            None => Err(StoreError::InvalidUrl(
                "expected \"sqlite://PATH\" (e.g. \"sqlite://.cutover/state.db\") or \
                 \"postgres://...\""
                    .to_string(),
            )),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version (`PRAGMA user_version`): the number of migrations applied.
    pub fn schema_version(&self) -> Result<u32> {
        let version: i64 = self
            .connection()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .ctx(self, "read the schema version")?;
        u32::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {version} is out of range")))
    }

    /// Applies the migrations the database has not seen, each in its own transaction. The
    /// version is re-read under the write lock, so two processes opening a new file at once
    /// apply each migration exactly once.
    fn migrate(&self) -> Result<()> {
        for (index, sql) in MIGRATIONS.iter().enumerate() {
            let target = index + 1;
            self.write("apply a schema migration", |tx| {
                let current: i64 = tx
                    .pragma_query_value(None, "user_version", |row| row.get(0))
                    .ctx(self, "read the schema version")?;
                let known = MIGRATIONS.len();
                if usize::try_from(current).is_ok_and(|c| c > known) || current < 0 {
                    return Err(StoreError::Unsupported(format!(
                        "release store {}: schema version {current} is newer than this cutover \
                         knows ({known}); upgrade cutover",
                        self.path.display()
                    )));
                }
                if usize::try_from(current).is_ok_and(|c| c >= target) {
                    return Ok(());
                }
                tx.execute_batch(sql)
                    .ctx(self, "apply a schema migration")?;
                tx.pragma_update(None, "user_version", target as i64)
                    .ctx(self, "record the schema version")?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The connection. A panic elsewhere while it was held cannot leave a transaction open
    /// (dropping a `Transaction` rolls it back), so a poisoned lock is still usable.
    fn connection(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f` succeeds.
    fn write<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.connection();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(self, operation)?;
        let value = f(&tx)?;
        tx.commit().ctx(self, operation)?;
        Ok(value)
    }

    fn set_phase_in(
        &self,
        tx: &Transaction<'_>,
        service: &str,
        release_id: &str,
        phase: ReleasePhase,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Release> {
        let not_found = || StoreError::NotFound {
            what: format!("release {release_id} of service {service}"),
        };
        {
            let current = Self::release_in(tx, service, release_id, self)?.ok_or_else(not_found)?;
            if !current.phase.can_transition_to(phase) {
                return Err(StoreError::InvalidTransition {
                    service: service.to_string(),
                    release: release_id.to_string(),
                    from: current.phase,
                    to: phase,
                });
            }
            let at = timestamp(at);
            if phase == ReleasePhase::Active {
                tx.execute(
                    "UPDATE releases SET phase = ?1, reason = ?2, updated_at = ?3 \
                     WHERE service = ?4 AND env = ?5 AND phase = ?6 AND id <> ?7",
                    params![
                        ReleasePhase::Superseded.as_str(),
                        format!("superseded by {release_id}"),
                        at,
                        service,
                        current.env,
                        ReleasePhase::Active.as_str(),
                        release_id,
                    ],
                )
                .ctx(self, "supersede the previous ACTIVE release")?;
            }
            tx.execute(
                "UPDATE releases SET phase = ?1, \
                 reason = CASE WHEN ?4 THEN ?2 ELSE COALESCE(?2, reason) END, updated_at = ?3, \
                 activated_at = CASE WHEN ?4 THEN ?3 ELSE activated_at END \
                 WHERE service = ?5 AND id = ?6",
                params![
                    phase.as_str(),
                    reason,
                    at,
                    phase == ReleasePhase::Active,
                    service,
                    release_id
                ],
            )
            .ctx(self, "change a release's phase")?;
            Self::release_in(tx, service, release_id, self)?.ok_or_else(not_found)
        }
    }

    fn append_event_in(
        &self,
        tx: &Transaction<'_>,
        run_id: &str,
        at: DateTime<Utc>,
        service: Option<&str>,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<()> {
        let data = data.to_string();
        {
            tx.execute(
                "INSERT INTO events (run_id, at, service, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, timestamp(at), service, kind, data],
            )
            .map_err(|e| {
                if foreign_key_violation(&e) {
                    StoreError::NotFound {
                        what: format!("run {run_id}"),
                    }
                } else {
                    sqlite_error(self, "append an event", e)
                }
            })?;
            Ok(())
        }
    }

    fn create_release_in(&self, tx: &Transaction<'_>, new: &NewRelease) -> Result<Release> {
        let sha7: String = match new.sha.as_deref() {
            Some(sha) if !sha.is_empty() => sha.chars().take(7).collect(),
            _ => "0000000".to_string(),
        };
        let base = format!("{}-{sha7}", new.created_at.format("%Y%m%d-%H%M%S"));
        {
            let taken = taken_ids(
                tx,
                "SELECT id FROM releases WHERE service = ?2 \
                 AND (id = ?1 OR (id > ?1 || '-' AND id < ?1 || '.'))",
                params![base, new.service],
            )
            .ctx(self, "allocate a release id")?;
            let id = allocate(&base, &taken);
            let created_at = timestamp(new.created_at);
            tx.execute(
                "INSERT INTO releases (service, id, env, run_id, sha, dirty, branch, config_hash, \
                 phase, created_at, updated_at, commit_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
                params![
                    new.service,
                    id,
                    new.env,
                    new.run_id,
                    new.sha,
                    new.dirty,
                    new.branch,
                    new.config_hash,
                    ReleasePhase::Pending.as_str(),
                    created_at,
                    new.commit_at.map(timestamp),
                ],
            )
            .map_err(|e| {
                if foreign_key_violation(&e) {
                    StoreError::NotFound {
                        what: format!("run {}", new.run_id),
                    }
                } else {
                    sqlite_error(self, "create a release", e)
                }
            })?;
            Self::release_in(tx, &new.service, &id, self)?.ok_or_else(|| StoreError::NotFound {
                what: format!("release {id} of service {}", new.service),
            })
        }
    }

    fn release_in(
        tx: &Connection,
        service: &str,
        id: &str,
        store: &Self,
    ) -> Result<Option<Release>> {
        let sql = format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ?1 AND id = ?2");
        tx.query_row(&sql, params![service, id], RawRelease::from_row)
            .optional()
            .ctx(store, "read a release")?
            .map(RawRelease::into_release)
            .transpose()
    }

    fn query_releases(
        &self,
        operation: &'static str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Release>> {
        let conn = self.connection();
        let mut stmt = conn.prepare(sql).ctx(self, operation)?;
        let raws = stmt
            .query_map(params, RawRelease::from_row)
            .ctx(self, operation)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(self, operation)?;
        raws.into_iter().map(RawRelease::into_release).collect()
    }

    /// The runs `sql` selects on `conn` (a connection, or a transaction in progress).
    fn query_runs(
        &self,
        conn: &Connection,
        operation: &'static str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Run>> {
        let mut stmt = conn.prepare(sql).ctx(self, operation)?;
        let raws = stmt
            .query_map(params, RawRun::from_row)
            .ctx(self, operation)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(self, operation)?;
        raws.into_iter().map(RawRun::into_run).collect()
    }
}

impl SqliteStore {
    /// Inserts an in-progress run, allocating its id from `started_at`.
    fn insert_run(
        &self,
        tx: &Transaction<'_>,
        kind: RunKind,
        env: &str,
        started_at: DateTime<Utc>,
        pid: Option<u32>,
    ) -> Result<Run> {
        // A rollback, merge or test is not a pipeline run: its id says so, as its log file's
        // name does.
        let prefix = match kind {
            RunKind::Rollback => "rollback",
            RunKind::Merge => "merge",
            RunKind::Test => "test",
            RunKind::Build | RunKind::Deploy => "deploy",
        };
        let base = format!("{prefix}-{}", started_at.format("%Y%m%d-%H%M%S"));
        let taken = taken_ids(
            tx,
            "SELECT id FROM runs WHERE id = ?1 OR (id > ?1 || '-' AND id < ?1 || '.')",
            params![base],
        )
        .ctx(self, "allocate a run id")?;
        let id = allocate(&base, &taken);
        tx.execute(
            "INSERT INTO runs (id, kind, env, status, started_at, pid) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                kind.as_str(),
                env,
                RunStatus::InProgress.as_str(),
                timestamp(started_at),
                pid
            ],
        )
        .ctx(self, "create a run")?;
        run_in(tx, &id, self)?.ok_or_else(|| StoreError::NotFound {
            what: format!("run {id}"),
        })
    }
}

impl ReleaseStore for SqliteStore {
    fn create_run(
        &self,
        kind: RunKind,
        env: &str,
        started_at: DateTime<Utc>,
        pid: Option<u32>,
    ) -> Result<Run> {
        self.write("create a run", |tx| {
            self.insert_run(tx, kind, env, started_at, pid)
        })
    }

    fn claim_run(
        &self,
        kind: RunKind,
        env: &str,
        started_at: DateTime<Utc>,
        pid: u32,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<std::result::Result<Run, Blocker>> {
        self.write("start a run", |tx| {
            if let Some(lock) = lock_in(tx, env, self)? {
                return Ok(Err(Blocker::Locked(lock)));
            }
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE status = ?1 AND env = ?2 AND kind = ?3 \
                 ORDER BY started_at DESC, rowid DESC"
            );
            let running = self.query_runs(
                tx,
                "list runs in progress",
                &sql,
                params![RunStatus::InProgress.as_str(), env, kind.as_str()],
            )?;
            if let Some(other) = running.into_iter().find(|r| r.pid.is_some_and(alive)) {
                return Ok(Err(Blocker::Running(other)));
            }
            self.insert_run(tx, kind, env, started_at, Some(pid))
                .map(Ok)
        })
    }

    fn finish_run(
        &self,
        run_id: &str,
        status: RunStatus,
        finished_at: DateTime<Utc>,
        reason: Option<&str>,
    ) -> Result<()> {
        self.write("finish a run", |tx| {
            let changed = tx
                .execute(
                    "UPDATE runs SET status = ?2, finished_at = ?3, reason = COALESCE(?4, reason) \
                     WHERE id = ?1",
                    params![run_id, status.as_str(), timestamp(finished_at), reason],
                )
                .ctx(self, "finish a run")?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: format!("run {run_id}"),
                });
            }
            Ok(())
        })
    }

    fn hand_over_run(&self, run_id: &str, pid: u32) -> Result<bool> {
        self.write("hand a run over", |tx| {
            let changed = tx
                .execute(
                    "UPDATE runs SET pid = ?2 WHERE id = ?1 AND status = ?3",
                    params![run_id, pid, RunStatus::InProgress.as_str()],
                )
                .ctx(self, "hand a run over")?;
            Ok(changed > 0)
        })
    }

    fn run(&self, run_id: &str) -> Result<Option<Run>> {
        run_in(&self.connection(), run_id, self)
    }

    fn runs(&self, env: Option<&str>, limit: usize) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR env = ?1) \
             ORDER BY started_at DESC, rowid DESC LIMIT ?2"
        );
        self.query_runs(
            &self.connection(),
            "list runs",
            &sql,
            params![env, sql_limit(limit)],
        )
    }

    fn runs_in_progress(&self) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status = ?1 ORDER BY started_at DESC, rowid DESC"
        );
        self.query_runs(
            &self.connection(),
            "list runs in progress",
            &sql,
            params![RunStatus::InProgress.as_str()],
        )
    }

    fn create_release(&self, new: &NewRelease) -> Result<Release> {
        self.write("create a release", |tx| self.create_release_in(tx, new))
    }

    fn create_releases(&self, new: &[NewRelease]) -> Result<Vec<Release>> {
        self.write("create releases", |tx| {
            new.iter().map(|n| self.create_release_in(tx, n)).collect()
        })
    }

    fn set_phase(
        &self,
        service: &str,
        release_id: &str,
        phase: ReleasePhase,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Release> {
        self.write("change a release's phase", |tx| {
            self.set_phase_in(tx, service, release_id, phase, reason, at)
        })
    }

    fn set_artifact(&self, service: &str, release_id: &str, artifact: &str) -> Result<()> {
        self.write("record a release's artifact", |tx| {
            let changed = tx
                .execute(
                    "UPDATE releases SET artifact = ?3 WHERE service = ?1 AND id = ?2",
                    params![service, release_id, artifact],
                )
                .ctx(self, "record a release's artifact")?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: format!("release {release_id} of service {service}"),
                });
            }
            Ok(())
        })
    }

    fn release(&self, service: &str, release_id: &str) -> Result<Option<Release>> {
        Self::release_in(&self.connection(), service, release_id, self)
    }

    fn releases(&self, service: &str, env: &str, limit: usize) -> Result<Vec<Release>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ?1 AND env = ?2 \
             ORDER BY created_at DESC, rowid DESC LIMIT ?3"
        );
        self.query_releases(
            "list releases",
            &sql,
            params![service, env, sql_limit(limit)],
        )
    }

    fn active_release(&self, service: &str, env: &str) -> Result<Option<Release>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ?1 AND env = ?2 AND phase = ?3 \
             ORDER BY created_at DESC, rowid DESC LIMIT 1"
        );
        Ok(self
            .query_releases(
                "read the ACTIVE release",
                &sql,
                params![service, env, ReleasePhase::Active.as_str()],
            )?
            .into_iter()
            .next())
    }

    fn append_event(
        &self,
        run_id: &str,
        at: DateTime<Utc>,
        service: Option<&str>,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<()> {
        self.write("append an event", |tx| {
            self.append_event_in(tx, run_id, at, service, kind, data)
        })
    }

    fn record(&self, batch: &[StoreWrite]) -> Result<Vec<StoreError>> {
        self.write("record a batch of events", |tx| {
            let mut errors = Vec::new();
            for write in batch {
                let done = match write {
                    StoreWrite::Phase {
                        service,
                        release,
                        phase,
                        reason,
                        at,
                    } => self
                        .set_phase_in(tx, service, release, *phase, reason.as_deref(), *at)
                        .map(|_| ()),
                    StoreWrite::Event {
                        run_id,
                        at,
                        service,
                        kind,
                        data,
                    } => self.append_event_in(tx, run_id, *at, service.as_deref(), kind, data),
                };
                if let Err(e) = done {
                    errors.push(e);
                }
            }
            Ok(errors)
        })
    }

    fn events(&self, run_id: &str) -> Result<Vec<StoredEvent>> {
        let operation = "read a run's events";
        let conn = self.connection();
        let mut stmt = conn
            .prepare(
                "SELECT seq, run_id, at, service, kind, data FROM events WHERE run_id = ?1 \
                 ORDER BY seq",
            )
            .ctx(self, operation)?;
        let rows = stmt
            .query_map(params![run_id], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                ))
            })
            .ctx(self, operation)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(self, operation)?;
        rows.into_iter()
            .map(|(seq, run_id, at, service, kind, data)| {
                let what = format!("event {seq}");
                Ok(StoredEvent {
                    at: parse_timestamp(&at, &what, "at")?,
                    data: serde_json::from_str(&data).map_err(|e| {
                        StoreError::Corrupt(format!("{what}: data is not JSON: {e}"))
                    })?,
                    seq,
                    run_id,
                    service,
                    kind,
                })
            })
            .collect()
    }

    fn put_secret(
        &self,
        name: &str,
        env: Option<&str>,
        nonce: &[u8],
        ciphertext: &[u8],
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.write("store a secret", |tx| {
            tx.execute(
                "INSERT INTO secrets (name, env, nonce, ciphertext, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (name, env) DO UPDATE SET nonce = excluded.nonce, \
                 ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
                params![name, env.unwrap_or(""), nonce, ciphertext, timestamp(at)],
            )
            .ctx(self, "store a secret")?;
            Ok(())
        })
    }

    fn secret(&self, name: &str, env: Option<&str>) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.connection()
            .query_row(
                "SELECT nonce, ciphertext FROM secrets WHERE name = ?1 AND env = ?2",
                params![name, env.unwrap_or("")],
                |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .ctx(self, "read a secret")
    }

    fn secrets_list(&self) -> Result<Vec<SecretEntry>> {
        let operation = "list secrets";
        let conn = self.connection();
        let mut stmt = conn
            .prepare("SELECT name, env, updated_at FROM secrets ORDER BY name, env")
            .ctx(self, operation)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .ctx(self, operation)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx(self, operation)?;
        rows.into_iter()
            .map(|(name, env, at)| {
                let what = format!("secret {name}");
                Ok(SecretEntry {
                    updated_at: parse_timestamp(&at, &what, "updated_at")?,
                    env: (!env.is_empty()).then_some(env),
                    name,
                })
            })
            .collect()
    }

    fn lock(
        &self,
        env: &str,
        holder: &str,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<std::result::Result<(), Lock>> {
        self.write("take a lock", |tx| {
            if let Some(existing) = lock_in(tx, env, self)? {
                return Ok(Err(existing));
            }
            tx.execute(
                "INSERT INTO locks (env, holder, reason, since) VALUES (?1, ?2, ?3, ?4)",
                params![env, holder, reason, timestamp(at)],
            )
            .ctx(self, "take a lock")?;
            Ok(Ok(()))
        })
    }

    fn unlock(&self, env: &str) -> Result<Option<Lock>> {
        self.write("release a lock", |tx| {
            let existing = lock_in(tx, env, self)?;
            if existing.is_some() {
                tx.execute("DELETE FROM locks WHERE env = ?1", params![env])
                    .ctx(self, "release a lock")?;
            }
            Ok(existing)
        })
    }

    fn current_lock(&self, env: &str) -> Result<Option<Lock>> {
        lock_in(&self.connection(), env, self)
    }

    fn request_approval(
        &self,
        run_id: &str,
        env: &str,
        waiting: &str,
        at: DateTime<Utc>,
    ) -> Result<Approval> {
        self.write("request an approval", |tx| {
            tx.execute(
                "INSERT INTO approvals (run_id, env, state, requested_at, waiting) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, \
                 requested_at = excluded.requested_at, waiting = excluded.waiting, \
                 decided_by = NULL, decided_at = NULL, reason = NULL",
                params![
                    run_id,
                    env,
                    ApprovalState::Waiting.as_str(),
                    timestamp(at),
                    waiting
                ],
            )
            .map_err(|e| match foreign_key_violation(&e) {
                true => StoreError::NotFound {
                    what: format!("run {run_id}"),
                },
                false => sqlite_error(self, "request an approval", e),
            })?;
            approval_in(tx, run_id, self)?.ok_or_else(|| StoreError::NotFound {
                what: format!("approval of {run_id}"),
            })
        })
    }

    fn decide_approval(
        &self,
        run_id: &str,
        state: ApprovalState,
        by: Option<&str>,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<std::result::Result<Approval, Option<Approval>>> {
        self.write("decide an approval", |tx| {
            let current = approval_in(tx, run_id, self)?;
            match &current {
                Some(a) if a.state == ApprovalState::Waiting && state != ApprovalState::Waiting => {
                }
                _ => return Ok(Err(current)),
            }
            tx.execute(
                "UPDATE approvals SET state = ?2, decided_by = ?3, decided_at = ?4, reason = ?5 \
                 WHERE run_id = ?1 AND state = ?6",
                params![
                    run_id,
                    state.as_str(),
                    by,
                    timestamp(at),
                    reason,
                    ApprovalState::Waiting.as_str()
                ],
            )
            .ctx(self, "decide an approval")?;
            match approval_in(tx, run_id, self)? {
                Some(a) => Ok(Ok(a)),
                None => Ok(Err(None)),
            }
        })
    }

    fn approval(&self, run_id: &str) -> Result<Option<Approval>> {
        approval_in(&self.connection(), run_id, self)
    }

    fn remove_secret(&self, name: &str, env: Option<&str>) -> Result<bool> {
        self.write("remove a secret", |tx| {
            let changed = tx
                .execute(
                    "DELETE FROM secrets WHERE name = ?1 AND env = ?2",
                    params![name, env.unwrap_or("")],
                )
                .ctx(self, "remove a secret")?;
            Ok(changed > 0)
        })
    }
}

const APPROVAL_COLUMNS: &str =
    "run_id, env, state, requested_at, waiting, decided_by, decided_at, reason";

/// The approval of `run_id`, if one was ever requested.
fn approval_in(conn: &Connection, run_id: &str, store: &SqliteStore) -> Result<Option<Approval>> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = ?1");
    let row: Option<Row> = conn
        .query_row(&sql, params![run_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()
        .ctx(store, "read an approval")?;
    row.map(
        |(run_id, env, state, requested_at, waiting, decided_by, decided_at, reason)| {
            let what = format!("approval of {run_id}");
            Ok(Approval {
                state: state
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?,
                requested_at: parse_timestamp(&requested_at, &what, "requested_at")?,
                decided_at: decided_at
                    .map(|t| parse_timestamp(&t, &what, "decided_at"))
                    .transpose()?,
                run_id,
                env,
                waiting,
                decided_by,
                reason,
            })
        },
    )
    .transpose()
}

/// The lock of `env`, if any.
fn lock_in(conn: &Connection, env: &str, store: &SqliteStore) -> Result<Option<Lock>> {
    let row: Option<(String, Option<String>, String)> = conn
        .query_row(
            "SELECT holder, reason, since FROM locks WHERE env = ?1",
            params![env],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .ctx(store, "read a lock")?;
    row.map(|(holder, reason, since)| {
        Ok(Lock {
            env: env.to_string(),
            since: parse_timestamp(&since, &format!("lock of {env}"), "since")?,
            holder,
            reason,
        })
    })
    .transpose()
}

fn run_in(conn: &Connection, run_id: &str, store: &SqliteStore) -> Result<Option<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1");
    conn.query_row(&sql, params![run_id], RawRun::from_row)
        .optional()
        .ctx(store, "read a run")?
        .map(RawRun::into_run)
        .transpose()
}

/// The ids a query returns (the candidates for `base` and `base-N`).
fn taken_ids(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = tx.prepare(sql)?;
    let ids = stmt.query_map(params, |row| row.get::<_, String>(0))?;
    ids.collect()
}

/// `base` when free, else the first free `base-2`, `base-3`...
fn allocate(base: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (2u64..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !taken.contains(id))
        .unwrap_or_else(|| format!("{base}-{}", taken.len() + 1))
}

/// Sets `journal_mode=WAL` and returns the mode SQLite reports. The switch needs an exclusive
/// lock, and SQLite answers BUSY without waiting when two connections try it on a new file at
/// once (each holds a shared lock the other needs), so it is retried for up to [`BUSY_TIMEOUT`].
fn switch_to_wal(conn: &Connection) -> rusqlite::Result<String> {
    let started = Instant::now();
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn foreign_key_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

/// A SQLite error with its context; values of the wrong type in a row are [`StoreError::Corrupt`].
fn sqlite_error(
    store: &SqliteStore,
    operation: &'static str,
    source: rusqlite::Error,
) -> StoreError {
    match source {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => {
            StoreError::Corrupt(format!("while trying to {operation}: {source}"))
        }
        source => StoreError::Sqlite {
            operation,
            path: store.path.clone(),
            source,
        },
    }
}

/// Adds the store's path and the operation to a SQLite result.
trait SqlContext<T> {
    fn ctx(self, store: &SqliteStore, operation: &'static str) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, store: &SqliteStore, operation: &'static str) -> Result<T> {
        self.map_err(|e| sqlite_error(store, operation, e))
    }
}
