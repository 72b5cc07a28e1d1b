-- x402 payments claimed by the gateway: one row per EIP-3009 authorisation (replay key
-- `network/asset/payer/nonce`), inserted once before the payment is settled, so a payment
-- serves at most once whatever the concurrency and however many replicas share the database.
-- `expires_at` is the authorisation's validBefore: after it the authorisation can no longer be
-- settled on chain, and the row is pruned. `settle_header` is the PAYMENT-RESPONSE value of a
-- settled payment (NULL while it is being settled, or when its outcome is unknown), so a client
-- that lost the answer can present the payment again and get its credential back.
CREATE TABLE x402_payments (
    replay_key TEXT    NOT NULL PRIMARY KEY,
    claimed_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    settle_header TEXT
) WITHOUT ROWID;

CREATE INDEX x402_payments_expires_at ON x402_payments (expires_at);
