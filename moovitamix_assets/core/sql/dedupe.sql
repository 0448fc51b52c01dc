-- Runs after type_<entity>.sql. Among the usable records of one id, the one with the
-- latest updated_at is kept (on a tie, the one served last); the others are rejected as
-- duplicate_id. Every served record then is either accepted or in rejected_records.
-- The window runs over four narrow columns, and only the superseded records are kept: a
-- copy of the typed records (JSON and lists) would not fit DuckDB's memory_limit.
CREATE OR REPLACE TABLE core_staging.superseded AS
SELECT served_position
FROM (
    SELECT served_position,
           row_number() OVER (PARTITION BY record_key ORDER BY updated_at DESC, served_position DESC) AS version_rank
    FROM core_staging.typed
    WHERE reject_reason IS NULL
)
WHERE version_rank > 1;

CREATE OR REPLACE VIEW core_staging.deduped AS
SELECT
    *,
    coalesce(
        reject_reason,
        CASE WHEN served_position IN (SELECT served_position FROM core_staging.superseded) THEN 'duplicate_id' END
    ) AS final_reason
FROM core_staging.typed;

CREATE SCHEMA IF NOT EXISTS quality;
CREATE TABLE IF NOT EXISTS quality.rejected_records (
    entity          VARCHAR   NOT NULL,  -- users, tracks or listen_history
    snapshot_date   DATE      NOT NULL,
    served_position BIGINT    NOT NULL,  -- 1-based position of the record in the pull
    record          JSON      NOT NULL,  -- the record as received
    reason          VARCHAR   NOT NULL,  -- reason codes, '; '-separated (see macros.sql)
    run_id          VARCHAR   NOT NULL,
    rejected_at     TIMESTAMP NOT NULL
);

DELETE FROM quality.rejected_records
WHERE entity = getvariable('entity') AND snapshot_date = getvariable('snapshot_date');

INSERT INTO quality.rejected_records
SELECT
    getvariable('entity'),
    getvariable('snapshot_date'),
    served_position,
    record,
    final_reason,
    getvariable('run_id'),
    timezone('UTC', now())  -- UTC wall time whatever the session's zone
FROM core_staging.deduped
WHERE final_reason IS NOT NULL;

-- The descriptions the catalogue carries (docs/schema.md is generated from them).
COMMENT ON TABLE quality.rejected_records IS 'Every served record that did not reach a core table, with its reasons: served = accepted + rejected for each snapshot. Replaced per (entity, snapshot_date) on each rebuild.';
COMMENT ON COLUMN quality.rejected_records.entity IS 'users, tracks or listen_history.';
COMMENT ON COLUMN quality.rejected_records.snapshot_date IS 'The raw snapshot the record was served in.';
COMMENT ON COLUMN quality.rejected_records.served_position IS '1-based position of the record in the pull (by page, then position in page).';
COMMENT ON COLUMN quality.rejected_records.record IS 'The record as received.';
COMMENT ON COLUMN quality.rejected_records.reason IS 'Reason codes, ''; ''-separated: missing_field:<f>, null_field:<f>, invalid_type:<f>, invalid_id:<f>, unparseable_timestamp:<f>, invalid_duration:<f>, duplicate_id.';
COMMENT ON COLUMN quality.rejected_records.run_id IS 'The Dagster run that rejected it.';
COMMENT ON COLUMN quality.rejected_records.rejected_at IS 'When it was rejected (UTC).';
