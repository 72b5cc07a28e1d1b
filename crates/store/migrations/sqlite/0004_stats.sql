-- Statistics per UTC day and service, added to by every replica's periodic flush (an additive
-- upsert, so replicas sum up). `day` is `YYYY-MM-DD`; a row exists only once something happened.
CREATE TABLE stats_daily (
    day            TEXT    NOT NULL,
    service        TEXT    NOT NULL,
    earned_msat    INTEGER NOT NULL DEFAULT 0,
    challenges     INTEGER NOT NULL DEFAULT 0,
    payments       INTEGER NOT NULL DEFAULT 0,
    calls_served   INTEGER NOT NULL DEFAULT 0,
    calls_refunded INTEGER NOT NULL DEFAULT 0,
    free_calls     INTEGER NOT NULL DEFAULT 0,
    rate_limited   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, service)
) WITHOUT ROWID;

-- How many times a call of the token was ever consumed (refunds do not lower it): the consume
-- that returns 1 is the token's first paid use, counted once as a payment. Rows older than this
-- migration count as already used.
ALTER TABLE token_usage ADD COLUMN charges INTEGER NOT NULL DEFAULT 1;
