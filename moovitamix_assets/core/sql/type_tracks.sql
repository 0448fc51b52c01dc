-- The latest tracks snapshot, typed, each record with its reasons for rejection (or NULL).
CREATE SCHEMA IF NOT EXISTS core_staging;
-- A table, not a TEMP one: DuckDB spills tables to disk under its memory_limit, temp tables less so.
CREATE OR REPLACE TABLE core_staging.typed AS
SELECT
    served_position,
    record,
    TRY_CAST(json_extract_string(record, 'id') AS BIGINT) AS record_key,
    json_extract_string(record, 'name') AS name,
    json_extract_string(record, 'artist') AS artist,
    json_extract_string(record, 'songwriters') AS songwriter,
    json_extract_string(record, 'duration') AS duration,
    duration_seconds(json_extract_string(record, 'duration')) AS duration_seconds,
    json_extract_string(record, 'genres') AS genre,
    json_extract_string(record, 'album') AS album,
    as_timestamp(record, 'created_at') AS created_at,
    as_timestamp(record, 'updated_at') AS updated_at,
    reasons([
        id_problem(record, 'id'),
        text_problem(record, 'name'),
        text_problem(record, 'artist'),
        text_problem(record, 'songwriters'),
        duration_problem(record, 'duration'),
        text_problem(record, 'genres'),
        text_problem(record, 'album'),
        timestamp_problem(record, 'created_at'),
        timestamp_problem(record, 'updated_at')
    ]) AS reject_reason
FROM core_staging.served;
