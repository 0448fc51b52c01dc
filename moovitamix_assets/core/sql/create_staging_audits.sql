-- The gates of the day staged in core_staging, as the staging step evaluated them: publish
-- reads them rather than evaluating them again, and refuses a day without a passed row for
-- every gate. Emptied when staging starts, written when its audits end.
CREATE SCHEMA IF NOT EXISTS core_staging;
CREATE TABLE IF NOT EXISTS core_staging.audits (
    snapshot_date DATE      NOT NULL,
    asset         VARCHAR   NOT NULL,
    check_name    VARCHAR   NOT NULL,
    passed        BOOLEAN   NOT NULL,
    message       VARCHAR,
    run_id        VARCHAR   NOT NULL,
    audited_at    TIMESTAMP NOT NULL
);
COMMENT ON TABLE core_staging.audits IS 'The gates (blocking checks) of the day staged in core_staging, written by the staging step; publish refuses a day without a passed row for every gate.';
COMMENT ON COLUMN core_staging.audits.snapshot_date IS 'The staged day.';
COMMENT ON COLUMN core_staging.audits.asset IS 'The staged asset, e.g. core_staging/users.';
COMMENT ON COLUMN core_staging.audits.check_name IS 'The gate, e.g. volume_above_floor.';
COMMENT ON COLUMN core_staging.audits.passed IS 'Whether the gate passed.';
COMMENT ON COLUMN core_staging.audits.message IS 'What the gate found, with its numbers.';
COMMENT ON COLUMN core_staging.audits.run_id IS 'The run that staged and audited the day.';
COMMENT ON COLUMN core_staging.audits.audited_at IS 'When (UTC).';
