-- Approval gates: a deploy of an environment with require_approval waits in state 'waiting'
-- until `cutover approve RUN` (approved), `approve --reject` (rejected), its
-- --approval-timeout (timed_out), or its end without a decision (canceled).
CREATE TABLE approvals (
    run_id       TEXT PRIMARY KEY NOT NULL REFERENCES runs (id),
    env          TEXT NOT NULL,
    state        TEXT NOT NULL,              -- waiting | approved | rejected | timed_out | canceled
    requested_at TEXT NOT NULL,
    waiting      TEXT NOT NULL,              -- what waits, a sentence (services and releases)
    decided_by   TEXT,                       -- user@host for approved | rejected
    decided_at   TEXT,
    reason       TEXT
);
