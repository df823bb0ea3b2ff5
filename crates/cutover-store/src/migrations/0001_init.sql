-- The first schema: runs, releases and the event log.
-- Timestamps are RFC 3339 UTC text with exactly three fractional digits
-- (2026-11-23T10:15:00.000Z), so text order is time order.

CREATE TABLE runs (
    id          TEXT PRIMARY KEY NOT NULL,   -- deploy-YYYYMMDD-HHMMSS[-N]
    kind        TEXT NOT NULL,               -- build | deploy | rollback
    env         TEXT NOT NULL,
    status      TEXT NOT NULL,               -- in_progress | succeeded | failed | canceled | rolled_back
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    pid         INTEGER,
    reason      TEXT
);
CREATE INDEX runs_by_env_started ON runs (env, started_at);
CREATE INDEX runs_by_status ON runs (status);

CREATE TABLE releases (
    service      TEXT NOT NULL,
    id           TEXT NOT NULL,              -- YYYYMMDD-HHMMSS-<sha7>[-N], unique per service
    env          TEXT NOT NULL,
    run_id       TEXT NOT NULL REFERENCES runs (id),
    sha          TEXT,
    dirty        INTEGER NOT NULL,           -- 0 | 1
    branch       TEXT,
    config_hash  TEXT NOT NULL,
    artifact     TEXT,
    phase        TEXT NOT NULL,              -- PENDING ... CANCELED
    reason       TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    activated_at TEXT,
    commit_at    TEXT,
    PRIMARY KEY (service, id)
);
CREATE INDEX releases_by_service_env_created ON releases (service, env, created_at);
-- At most one ACTIVE release per service and environment, enforced by the database itself.
CREATE UNIQUE INDEX releases_one_active ON releases (service, env) WHERE phase = 'ACTIVE';

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (id),
    at      TEXT NOT NULL,
    service TEXT,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL                    -- the event as JSON
);
CREATE INDEX events_by_run ON events (run_id, seq);
