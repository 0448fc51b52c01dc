-- Every attempt to deliver an alert, one row per attempt. The alert sensors keep these rows
-- in their cursors and write them here when the file is free (a run may hold DuckDB's one
-- writer lock for minutes; a sensor tick never waits for it), so a row can land a few ticks
-- after its attempt. (alert_key, attempts) is the key: writing the same rows twice is a no-op.
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.alert_deliveries (
    recorded_at     TIMESTAMP NOT NULL,
    alert_key       VARCHAR   NOT NULL,
    kind            VARCHAR   NOT NULL,
    run_id          VARCHAR,
    status          VARCHAR   NOT NULL,
    attempts        INTEGER   NOT NULL,
    error           VARCHAR,
    next_attempt_at TIMESTAMP,
    text            VARCHAR   NOT NULL,
    PRIMARY KEY (alert_key, attempts)
);
COMMENT ON TABLE monitoring.alert_deliveries IS 'Every attempt to deliver a run-failure or check-failure alert to the webhook, one row per attempt: an alert''s latest row (highest attempts) is its state. Written by the alert sensors, possibly a few ticks after the attempt (they never wait for the DuckDB lock).';
COMMENT ON COLUMN monitoring.alert_deliveries.recorded_at IS 'When the attempt ended (UTC).';
COMMENT ON COLUMN monitoring.alert_deliveries.alert_key IS 'What failed, once: run_failure:<run id>, or check_failure:<run id>:<asset>:<check>[:<partition>]. An alert key is posted at most once.';
COMMENT ON COLUMN monitoring.alert_deliveries.kind IS 'run_failure or check_failure.';
COMMENT ON COLUMN monitoring.alert_deliveries.run_id IS 'The Dagster run that failed or whose check failed.';
COMMENT ON COLUMN monitoring.alert_deliveries.status IS 'delivered (the webhook answered 2xx), retrying (failed, tried again at next_attempt_at), failed (failed on the last allowed attempt: given up), logged (no webhook set: written to the sensor''s log).';
COMMENT ON COLUMN monitoring.alert_deliveries.attempts IS 'The attempt this row records, 1 for the first.';
COMMENT ON COLUMN monitoring.alert_deliveries.error IS 'Why the attempt failed (connection error, timeout, HTTP status), NULL when delivered or logged.';
COMMENT ON COLUMN monitoring.alert_deliveries.next_attempt_at IS 'When the next attempt is due (UTC, exponential backoff), for status retrying only.';
COMMENT ON COLUMN monitoring.alert_deliveries.text IS 'The alert''s text, as posted.';
