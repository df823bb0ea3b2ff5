-- Secrets, encrypted by the cutover binary before they get here: the store only sees
-- ciphertext. env '' = every environment.
CREATE TABLE secrets (
    name TEXT NOT NULL,
    env TEXT NOT NULL DEFAULT '',
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, env)
);
