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

-- The descriptions the catalogue carries (docs/schema.md is generated from them).
COMMENT ON TABLE monitoring.asset_metrics IS 'Every numeric figure an asset reported for a run, one row per figure (long format: pivot on metric to compare days). The same numbers are the asset''s Dagster metadata.';
COMMENT ON COLUMN monitoring.asset_metrics.recorded_at IS 'When the figure was recorded (UTC).';
COMMENT ON COLUMN monitoring.asset_metrics.run_id IS 'The Dagster run.';
COMMENT ON COLUMN monitoring.asset_metrics.asset IS 'The asset key, e.g. raw/users.';
COMMENT ON COLUMN monitoring.asset_metrics.partition IS 'The snapshot date for raw assets, else NULL.';
COMMENT ON COLUMN monitoring.asset_metrics.metric IS 'records, pages, requests, retries, seconds, rejected_null_field, ndcg_at_k, ... (dagster/ prefix dropped).';
COMMENT ON COLUMN monitoring.asset_metrics.value IS 'The figure.';
COMMENT ON TABLE monitoring.check_results IS 'Every asset check evaluation with its outcome and headline numbers.';
COMMENT ON COLUMN monitoring.check_results.recorded_at IS 'When the check ran (UTC).';
COMMENT ON COLUMN monitoring.check_results.run_id IS 'The Dagster run.';
COMMENT ON COLUMN monitoring.check_results.asset IS 'The checked asset, e.g. core/listen_history.';
COMMENT ON COLUMN monitoring.check_results.check_name IS 'e.g. no_duplicate_ids.';
COMMENT ON COLUMN monitoring.check_results.passed IS 'Whether nothing was found.';
COMMENT ON COLUMN monitoring.check_results.severity IS 'ERROR or WARN: what a failure means (ERROR on a blocking check stops the ML downstream).';
COMMENT ON COLUMN monitoring.check_results.count IS 'Offending rows or records, when the check counts them.';
COMMENT ON COLUMN monitoring.check_results.rate IS 'count over the rows or records checked, when the check counts them.';
COMMENT ON COLUMN monitoring.check_results.metadata IS 'The check''s full metadata (samples of offending ids, thresholds).';
