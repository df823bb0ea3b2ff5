-- Deploy locks: at most one per environment (`cutover lock` / `unlock`).
CREATE TABLE locks (
    env TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    reason TEXT,
    since TEXT NOT NULL
);
