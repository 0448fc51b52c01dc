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
