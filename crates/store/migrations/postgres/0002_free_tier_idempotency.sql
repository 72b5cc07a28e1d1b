-- Free tier and idempotency entries (see the SQLite migration for the meaning of each column).
CREATE TABLE free_tier (
    service      TEXT    NOT NULL,
    client       TEXT    NOT NULL,
    window_start BIGINT  NOT NULL,
    window_end   BIGINT  NOT NULL,
    used         BIGINT  NOT NULL,
    PRIMARY KEY (service, client)
);

CREATE INDEX free_tier_window_end ON free_tier (window_end);

CREATE TABLE idempotency (
    token_id     BYTEA   NOT NULL,
    idem_key     BYTEA   NOT NULL,
    fingerprint  BYTEA   NOT NULL,
    service      TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('in_flight', 'done')),
    charged      BOOLEAN NOT NULL,
    created_at   BIGINT  NOT NULL,
    started_at   BIGINT  NOT NULL,
    completed_at BIGINT,
    status       BIGINT,
    headers      BYTEA,
    body         BYTEA,
    PRIMARY KEY (token_id, idem_key),
    CHECK (state = 'in_flight' OR (status IS NOT NULL AND headers IS NOT NULL AND body IS NOT NULL))
);

CREATE INDEX idempotency_done_created_at ON idempotency (created_at) WHERE state = 'done';
