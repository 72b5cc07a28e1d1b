-- The hub: providers and the fee ledger (see the SQLite migration for the meaning of each
-- table and column).
CREATE TABLE hub_providers (
    slug          TEXT   PRIMARY KEY,
    name          TEXT   NOT NULL,
    contact       TEXT   NOT NULL,
    payout        TEXT   NOT NULL,
    token_hash    BYTEA  NOT NULL UNIQUE,
    status        TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    trial_ends_at BIGINT NOT NULL,
    seq           BIGINT NOT NULL
);

CREATE TABLE hub_fees (
    token_id   BYTEA  PRIMARY KEY,
    provider   TEXT   NOT NULL,
    service    TEXT   NOT NULL,
    price_msat BIGINT NOT NULL,
    fee_msat   BIGINT NOT NULL,
    issued_at  BIGINT NOT NULL,
    paid_at    BIGINT,
    bill       BYTEA,
    payment_hash BYTEA NOT NULL
);
CREATE INDEX hub_fees_provider ON hub_fees (provider, paid_at);
CREATE INDEX hub_fees_payment_hash ON hub_fees (payment_hash);

CREATE TABLE hub_bills (
    payment_hash BYTEA  PRIMARY KEY,
    provider     TEXT   NOT NULL,
    fees_msat    BIGINT NOT NULL,
    amount_msat  BIGINT NOT NULL,
    bolt11       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    due_at       BIGINT NOT NULL,
    paid_at      BIGINT
);
CREATE INDEX hub_bills_provider ON hub_bills (provider, paid_at);
