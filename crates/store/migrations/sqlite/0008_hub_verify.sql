-- LUD-21 `verify` URLs of the invoices issued for Lightning-address providers, so that any
-- replica's background verifier asks them (and a restart forgets none): one row per invoice
-- (`payment_hash`, the token's invoice, as in `hub_fees`) until it is reported settled (its
-- fee row is then marked paid, once) or expires. `next_at` is when it is due a look and
-- `wait_secs` the wait after that one (doubling, at most 60 s); a replica takes a look only by
-- moving `next_at` from the value it read, so two replicas never ask the same URL at once.
CREATE TABLE hub_verify (
    payment_hash BLOB    PRIMARY KEY NOT NULL,
    provider     TEXT    NOT NULL,
    url          TEXT    NOT NULL,
    amount_msat  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    next_at      INTEGER NOT NULL,
    wait_secs    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX hub_verify_next ON hub_verify (next_at);
CREATE INDEX hub_verify_expires ON hub_verify (expires_at);
