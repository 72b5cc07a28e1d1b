-- The health of each service for the hub's directory (see the SQLite migration).
CREATE TABLE health_hourly (
    hour      BIGINT NOT NULL,
    service   TEXT   NOT NULL,
    forwarded BIGINT NOT NULL DEFAULT 0,
    ok        BIGINT NOT NULL DEFAULT 0,
    probes    BIGINT NOT NULL DEFAULT 0,
    probes_up BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, service)
);

CREATE TABLE health_latency (
    hour    BIGINT NOT NULL,
    service TEXT   NOT NULL,
    bucket  BIGINT NOT NULL,
    calls   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, service, bucket)
);

CREATE TABLE health_probe (
    service    TEXT   PRIMARY KEY NOT NULL,
    up         BIGINT NOT NULL,
    checked_at BIGINT NOT NULL
);
