-- The latest users snapshot, typed, each record with its reasons for rejection (or NULL).
CREATE SCHEMA IF NOT EXISTS core_staging;
-- A table, not a TEMP one: DuckDB spills tables to disk under its memory_limit, temp tables less so.
CREATE OR REPLACE TABLE core_staging.typed AS
SELECT
    served_position,
    record,
    TRY_CAST(json_extract_string(record, 'id') AS BIGINT) AS record_key,
    json_extract_string(record, 'first_name') AS first_name,
    json_extract_string(record, 'last_name') AS last_name,
    json_extract_string(record, 'email') AS email,
    json_extract_string(record, 'gender') AS gender,
    json_extract_string(record, 'favorite_genres') AS favorite_genre,
    as_timestamp(record, 'created_at') AS created_at,
    as_timestamp(record, 'updated_at') AS updated_at,
    reasons([
        id_problem(record, 'id'),
        text_problem(record, 'first_name'),
        text_problem(record, 'last_name'),
        text_problem(record, 'email'),
        text_problem(record, 'gender'),
        text_problem(record, 'favorite_genres'),
        timestamp_problem(record, 'created_at'),
        timestamp_problem(record, 'updated_at')
    ]) AS reject_reason
FROM core_staging.served;
