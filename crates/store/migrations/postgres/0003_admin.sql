-- The admin API's state (see the SQLite migration for the meaning of each table and column).
CREATE TABLE admin_sequence (
    id  BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO admin_sequence (id, seq) VALUES (1, 0);

CREATE TABLE admin_services (
    name       TEXT   PRIMARY KEY,
    config     TEXT,
    updated_at BIGINT NOT NULL,
    seq        BIGINT NOT NULL
);

CREATE TABLE revocations (
    token_id   BYTEA  PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    seq        BIGINT NOT NULL
);
CREATE INDEX revocations_seq ON revocations (seq);

CREATE TABLE token_passes (
    token_id      BYTEA  PRIMARY KEY,
    service       TEXT   NOT NULL,
    first_used_at BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL
);

CREATE INDEX invoices_created_at ON invoices (created_at);
