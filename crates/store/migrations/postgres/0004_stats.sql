-- Statistics per UTC day and service (see the SQLite migration for the meaning of each column).
CREATE TABLE stats_daily (
    day            TEXT    NOT NULL,
    service        TEXT    NOT NULL,
    earned_msat    BIGINT  NOT NULL DEFAULT 0,
    challenges     BIGINT  NOT NULL DEFAULT 0,
    payments       BIGINT  NOT NULL DEFAULT 0,
    calls_served   BIGINT  NOT NULL DEFAULT 0,
    calls_refunded BIGINT  NOT NULL DEFAULT 0,
    free_calls     BIGINT  NOT NULL DEFAULT 0,
    rate_limited   BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (day, service)
);

ALTER TABLE token_usage ADD COLUMN charges BIGINT NOT NULL DEFAULT 1;
