-- One table per endpoint; a row per received record, kept verbatim as JSON so that no
-- field is dropped and a field the contract does not know survives to be reported.
CREATE SCHEMA IF NOT EXISTS raw;
CREATE TABLE IF NOT EXISTS {table} (
    snapshot_date    DATE      NOT NULL,  -- the daily partition this pull belongs to
    page             INTEGER   NOT NULL,  -- the API page the record came on
    position_in_page INTEGER   NOT NULL,  -- 1-based position on that page
    record           JSON      NOT NULL,  -- the record as received
    ingested_at      TIMESTAMP NOT NULL,
    run_id           VARCHAR   NOT NULL
);
-- The descriptions the catalogue carries (docs/schema.md is generated from them).
COMMENT ON TABLE {table} IS 'Daily snapshots of the API endpoint the table is named after: one row per record served, kept verbatim as JSON. A day is replaced whole when it is pulled again.';
COMMENT ON COLUMN {table}.snapshot_date IS 'The daily partition this pull belongs to (the API has no as-of: a pull is always "now").';
COMMENT ON COLUMN {table}.page IS 'The API page the record came on.';
COMMENT ON COLUMN {table}.position_in_page IS '1-based position of the record on that page.';
COMMENT ON COLUMN {table}.record IS 'The record as received, every field kept, including fields the contract does not know.';
COMMENT ON COLUMN {table}.ingested_at IS 'When the pull was written (UTC).';
COMMENT ON COLUMN {table}.run_id IS 'The Dagster run that pulled it.';
