CREATE SCHEMA IF NOT EXISTS monitoring;

-- Every numeric figure an asset reported for a run, one row per figure (long format:
-- pivot on `metric` to compare days).
CREATE TABLE IF NOT EXISTS monitoring.asset_metrics (
    recorded_at TIMESTAMP NOT NULL,
    run_id      VARCHAR   NOT NULL,
    asset       VARCHAR   NOT NULL,  -- e.g. raw/users
    partition   VARCHAR,             -- the snapshot date for raw assets, else NULL
    metric      VARCHAR   NOT NULL,  -- records, pages, requests, retries, seconds, rejected_null_field, ...
    value       DOUBLE    NOT NULL
);

-- Every asset check evaluation with its outcome and headline numbers.
CREATE TABLE IF NOT EXISTS monitoring.check_results (
    recorded_at TIMESTAMP NOT NULL,
    run_id      VARCHAR   NOT NULL,
    asset       VARCHAR   NOT NULL,
    check_name  VARCHAR   NOT NULL,
    passed      BOOLEAN   NOT NULL,
    severity    VARCHAR   NOT NULL,  -- ERROR or WARN: what a failure means
    count       BIGINT,              -- offending rows or records, when the check counts them
    rate        DOUBLE,
    metadata    JSON      NOT NULL
);
