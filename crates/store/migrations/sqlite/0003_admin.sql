-- The admin API's state, shared by replicas. Every change takes the next number of the one-row
-- `admin_sequence` (in the changing transaction), so a replica learns whether anything changed
-- with one cheap read, and which revocations are new with `seq > last seen`.
CREATE TABLE admin_sequence (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO admin_sequence (id, seq) VALUES (1, 0);

-- Services created or changed at runtime, as the JSON of a `[[services]]` table. A NULL
-- `config` is a tombstone: it hides a service of the config file of the same name.
CREATE TABLE admin_services (
    name       TEXT    PRIMARY KEY NOT NULL,
    config     TEXT,
    updated_at INTEGER NOT NULL,
    seq        INTEGER NOT NULL
) WITHOUT ROWID;

-- Revoked tokens (kept forever: a token may be presented at any time until it expires).
CREATE TABLE revocations (
    token_id   BLOB    PRIMARY KEY NOT NULL,
    revoked_at INTEGER NOT NULL,
    seq        INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX revocations_seq ON revocations (seq);

-- First and last use of tokens that count no calls (time passes), which never write
-- `token_usage`: written on a process's first sight of the token, then at most once a minute.
CREATE TABLE token_passes (
    token_id      BLOB    PRIMARY KEY NOT NULL,
    service       TEXT    NOT NULL,
    first_used_at INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Token listings page by issue time.
CREATE INDEX invoices_created_at ON invoices (created_at);
