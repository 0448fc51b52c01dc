-- One row per (day, endpoint) whose pull was verified whole and loaded into raw.<endpoint>,
-- written in the same transaction as the rows it describes. A day is complete when its
-- three endpoints are all here: core is built only from complete days.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS raw.snapshot_manifest (
    snapshot_date  DATE      NOT NULL,
    entity         VARCHAR   NOT NULL,
    records        BIGINT    NOT NULL,
    total_reported BIGINT    NOT NULL,
    pull_attempts  INTEGER   NOT NULL,
    records_moved  BIGINT    NOT NULL,
    run_id         VARCHAR   NOT NULL,
    loaded_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (snapshot_date, entity)
);
COMMENT ON TABLE raw.snapshot_manifest IS 'One row per (snapshot_date, entity) whose pull was verified consistent and loaded, written in the same transaction as its rows. A day is complete when all three endpoints have a row; core is built only from complete days.';
COMMENT ON COLUMN raw.snapshot_manifest.snapshot_date IS 'The daily partition.';
COMMENT ON COLUMN raw.snapshot_manifest.entity IS 'users, tracks or listen_history.';
COMMENT ON COLUMN raw.snapshot_manifest.records IS 'Rows loaded into raw.<entity> for the day.';
COMMENT ON COLUMN raw.snapshot_manifest.total_reported IS 'The `total` the API reported on the pass that was kept.';
COMMENT ON COLUMN raw.snapshot_manifest.pull_attempts IS 'Full passes over the pages it took to reach a consistent view (1 when the upstream held still).';
COMMENT ON COLUMN raw.snapshot_manifest.records_moved IS 'Records seen in one pass and not in another (inserted, deleted or shifted across a page boundary while the pull ran).';
COMMENT ON COLUMN raw.snapshot_manifest.run_id IS 'The Dagster run that loaded it.';
COMMENT ON COLUMN raw.snapshot_manifest.loaded_at IS 'When the day was committed (UTC).';
