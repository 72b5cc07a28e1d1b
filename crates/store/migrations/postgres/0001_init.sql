-- Calls consumed per paid token (see the SQLite migration for the meaning of each column).
CREATE TABLE token_usage (
    token_id      BYTEA   PRIMARY KEY,
    service       TEXT    NOT NULL,
    calls_total   BIGINT  NOT NULL,
    used          BIGINT  NOT NULL,
    first_used_at BIGINT  NOT NULL,
    last_used_at  BIGINT  NOT NULL
);

-- Invoices issued with 402 challenges. Rows of unpaid invoices are pruned once they expire.
CREATE TABLE invoices (
    payment_hash BYTEA   PRIMARY KEY,
    token_id     BYTEA   NOT NULL,
    service      TEXT    NOT NULL,
    amount_msat  BIGINT  NOT NULL,
    calls        BIGINT,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);

CREATE INDEX invoices_expires_at ON invoices (expires_at);
CREATE INDEX invoices_token_id ON invoices (token_id);
