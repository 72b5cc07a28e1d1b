-- The hub: providers registered on this gateway, and the platform fee each owes.
--
-- A provider is known by its slug (a DNS label: its services answer at `<slug>.<hub domain>`
-- and under `/<slug>/`). `payout` is the JSON of where its invoices are created (an LNbits
-- invoice key, a Lightning address): the hub never holds the provider's money. `token_hash` is
-- the SHA-256 of the provider's own admin token (the token itself is shown once, never stored).
-- Writes take the admin change sequence, so replicas pick providers up with services.
CREATE TABLE hub_providers (
    slug          TEXT    PRIMARY KEY NOT NULL,
    name          TEXT    NOT NULL,
    contact       TEXT    NOT NULL,
    payout        TEXT    NOT NULL,
    token_hash    BLOB    NOT NULL UNIQUE,
    status        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    trial_ends_at INTEGER NOT NULL,
    seq           INTEGER NOT NULL
) WITHOUT ROWID;

-- The fee ledger: one row per token minted for a provider's service, with the price the
-- provider asked and the fee added to the invoice (0 in the free trial). `paid_at` is set when
-- the token's payment is recognised (its first paid use, or its invoice reported settled by the
-- payee's LUD-21 `verify`); only those rows are owed. `payment_hash` is the token's invoice's.
CREATE TABLE hub_fees (
    token_id   BLOB    PRIMARY KEY NOT NULL,
    provider   TEXT    NOT NULL,
    service    TEXT    NOT NULL,
    price_msat INTEGER NOT NULL,
    fee_msat   INTEGER NOT NULL,
    issued_at  INTEGER NOT NULL,
    paid_at    INTEGER,
    bill       BLOB,
    payment_hash BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX hub_fees_provider ON hub_fees (provider, paid_at);
CREATE INDEX hub_fees_payment_hash ON hub_fees (payment_hash);

-- Bills: when a provider's owed fees not yet billed pass the threshold, the hub issues a
-- Lightning invoice (on its own backend) for them; each fee row then names its bill (`bill` =
-- the bill's payment hash). `fees_msat` is the exact sum of the rows; `amount_msat` what the
-- invoice asks (rounded down to a whole satoshi). Unpaid past `due_at`: the provider is
-- suspended until it pays.
CREATE TABLE hub_bills (
    payment_hash BLOB    PRIMARY KEY NOT NULL,
    provider     TEXT    NOT NULL,
    fees_msat    INTEGER NOT NULL,
    amount_msat  INTEGER NOT NULL,
    bolt11       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    paid_at      INTEGER
) WITHOUT ROWID;
CREATE INDEX hub_bills_provider ON hub_bills (provider, paid_at);
