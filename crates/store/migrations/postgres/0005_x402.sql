-- x402 payments claimed by the gateway (see the SQLite migration for the meaning of each column).
CREATE TABLE x402_payments (
    replay_key TEXT   NOT NULL PRIMARY KEY,
    claimed_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    settle_header TEXT
);

CREATE INDEX x402_payments_expires_at ON x402_payments (expires_at);
