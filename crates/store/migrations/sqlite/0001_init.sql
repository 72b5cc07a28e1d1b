-- Calls consumed per paid token. A row appears on a token's first paid call; tokens never used
-- (and so never proven paid) have no row. `calls_total` is what the token's caveats grant.
CREATE TABLE token_usage (
    token_id      BLOB    PRIMARY KEY NOT NULL,
    service       TEXT    NOT NULL,
    calls_total   INTEGER NOT NULL,
    used          INTEGER NOT NULL,
    first_used_at INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Invoices issued with 402 challenges. Rows of unpaid invoices are pruned once they expire.
CREATE TABLE invoices (
    payment_hash BLOB    PRIMARY KEY NOT NULL,
    token_id     BLOB    NOT NULL,
    service      TEXT    NOT NULL,
    amount_msat  INTEGER NOT NULL,
    calls        INTEGER,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX invoices_expires_at ON invoices (expires_at);
CREATE INDEX invoices_token_id ON invoices (token_id);
