-- Free tier: calls taken by one client of one service in the current fixed window
-- [window_start, window_end). A take in a later window restarts `used` at 1; rows whose window
-- has ended are pruned (a missing row and an ended window mean the same thing: nothing taken).
CREATE TABLE free_tier (
    service      TEXT    NOT NULL,
    client       TEXT    NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    used         INTEGER NOT NULL,
    PRIMARY KEY (service, client)
) WITHOUT ROWID;

CREATE INDEX free_tier_window_end ON free_tier (window_end);

-- Idempotency entries: one per (token, Idempotency-Key). Created `in_flight` in the same
-- transaction that consumes the call (`charged` = 1 when a call was consumed), then `done` with
-- the response to replay, or deleted on abort (refunding the call in the same transaction).
-- `started_at` is when the current owner began; an in_flight entry older than the caller's
-- staleness limit may be taken over. Done entries are pruned after the retry window.
-- (A rowid table: rows carry whole response bodies.)
CREATE TABLE idempotency (
    token_id     BLOB    NOT NULL,
    idem_key     BLOB    NOT NULL,
    fingerprint  BLOB    NOT NULL,
    service      TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('in_flight', 'done')),
    charged      INTEGER NOT NULL CHECK (charged IN (0, 1)),
    created_at   INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    completed_at INTEGER,
    status       INTEGER,
    headers      BLOB,
    body         BLOB,
    PRIMARY KEY (token_id, idem_key),
    CHECK (state = 'in_flight' OR (status IS NOT NULL AND headers IS NOT NULL AND body IS NOT NULL))
);

CREATE INDEX idempotency_done_created_at ON idempotency (created_at) WHERE state = 'done';
