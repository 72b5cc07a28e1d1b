-- The health of each service for the hub's directory, in hourly buckets (`hour` = unix seconds
-- / 3600), added to by every replica (additive upserts, so replicas sum up):
-- `forwarded` calls sent to the upstream, `ok` those answered below 500, `probes` periodic
-- probes of the upstream and `probes_up` those answered below 500 in time.
CREATE TABLE health_hourly (
    hour      INTEGER NOT NULL,
    service   TEXT    NOT NULL,
    forwarded INTEGER NOT NULL DEFAULT 0,
    ok        INTEGER NOT NULL DEFAULT 0,
    probes    INTEGER NOT NULL DEFAULT 0,
    probes_up INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, service)
) WITHOUT ROWID;

-- Upstream latency of forwarded calls: calls per latency bucket (log-linear milliseconds, see
-- the gateway's hub::health::latency), per hour and service; the median is read from them.
CREATE TABLE health_latency (
    hour    INTEGER NOT NULL,
    service TEXT    NOT NULL,
    bucket  INTEGER NOT NULL,
    calls   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, service, bucket)
) WITHOUT ROWID;

-- The last probe of each service: `up` 1 or 0, `checked_at` unix seconds.
CREATE TABLE health_probe (
    service    TEXT    PRIMARY KEY NOT NULL,
    up         INTEGER NOT NULL,
    checked_at INTEGER NOT NULL
) WITHOUT ROWID;
