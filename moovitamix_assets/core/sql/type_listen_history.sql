-- The latest listen_history snapshot (one row per user), typed, with reasons for rejection.
CREATE SCHEMA IF NOT EXISTS core_staging;
-- A table, not a TEMP one: DuckDB spills tables to disk under its memory_limit, temp tables less so.
CREATE OR REPLACE TABLE core_staging.typed AS
SELECT
    served_position,
    record,
    TRY_CAST(json_extract_string(record, 'user_id') AS BIGINT) AS record_key,
    TRY_CAST(json_extract(record, 'items') AS BIGINT[]) AS items,
    as_timestamp(record, 'created_at') AS created_at,
    as_timestamp(record, 'updated_at') AS updated_at,
    reasons([
        id_problem(record, 'user_id'),
        id_list_problem(record, 'items'),
        timestamp_problem(record, 'created_at'),
        timestamp_problem(record, 'updated_at')
    ]) AS reject_reason
FROM core_staging.served;
