-- LUD-21 `verify` URLs of Lightning-address invoices (see the SQLite migration).
CREATE TABLE hub_verify (
    payment_hash BYTEA  PRIMARY KEY,
    provider     TEXT   NOT NULL,
    url          TEXT   NOT NULL,
    amount_msat  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    next_at      BIGINT NOT NULL,
    wait_secs    BIGINT NOT NULL
);
CREATE INDEX hub_verify_next ON hub_verify (next_at);
CREATE INDEX hub_verify_expires ON hub_verify (expires_at);
